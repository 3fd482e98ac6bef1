"""Migration-safe matching (issue 16, part 3), as the user's scenarios: a student never
takes a staff account, require_match stops a migration with an unmatched person, and
every match made is listed and counted."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from test_run_lifecycle import Sent, codes
from test_sync_runner import Clock, people, upload

from rosterdrop.config import Settings, parse_settings
from rosterdrop.documents import RunStatus
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import Store, open_store
from uploads import asm_files


def make_settings(tmp_path: Path, backend_url: str, **duplicates: object) -> Settings:
    return parse_settings({
        "state_dir": str(tmp_path / "state"),
        "store": {"url": backend_url},
        "tenants": {"t": {"report_to": ["admin@t.example"], "account_domain": "t.example",
                          "duplicates": duplicates,
                          "guard": {"max_deactivate_percent": 100, "min_population": 0}}},
    })


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _open(settings: Settings) -> Store:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return open_store(settings.database_url)


def test_a_student_never_takes_over_a_teachers_account(tmp_path: Path,
                                                       backend_url: str) -> None:
    """Tina Turner teaches; she leaves, and a new *student* arrives with her name and email:
    a new student account is made, Tina's stays a (deactivated) staff account."""
    settings = make_settings(tmp_path, backend_url)
    files = asm_files()
    files["staff.csv"] += "T9,9009,Tina,,Turner,tina.turner@d.example,tturner,S1\n"
    with _open(settings) as store:
        runner = Runner(settings, store, clock=Clock(), mailer=Sent())
        assert runner.sync("t", upload(tmp_path, files), source="cli").applied
        tina = people(store)["T9"]
        after = asm_files()
        after["students.csv"] += "P9,1009,Tina,,Turner,9,tina.turner@d.example,,,S1\n"
        run = runner.sync("t", upload(tmp_path, after, "v2.zip"), source="cli")
        assert run.applied and run.document is not None and run.document.matched == 0
        now = people(store)
        assert now["T9"]["role"] == "staff" and now["T9"]["status"] == "inactive"
        assert now["T9"]["account"] == tina["account"]
        assert now["P9"]["role"] == "student" and now["P9"]["account"] != tina["account"]
        assert not (Path(run.artifact_dir or "") / "matches.csv").exists()


def test_a_migration_with_one_unmatched_person_does_not_complete(tmp_path: Path,
                                                                 backend_url: str) -> None:
    """SIS A's export is applied; SIS B's export has new ids for everyone, and one student
    nobody knows. With require_match the sync fails naming her; nothing is applied."""
    settings = make_settings(tmp_path, backend_url, require_match=True)
    old = asm_files()
    migrated = asm_files()
    for name in ("students.csv", "staff.csv", "classes.csv", "rosters.csv"):
        migrated[name] = (migrated[name].replace("P1,", "B-P1,").replace("P2,", "B-P2,")
                          .replace("P3,", "B-P3,").replace("T1,", "B-T1,")
                          .replace("T2,", "B-T2,").replace(",P1\n", ",B-P1\n")
                          .replace(",P2\n", ",B-P2\n").replace(",P3\n", ",B-P3\n")
                          .replace(",T1,", ",B-T1,").replace(",T2,", ",B-T2,"))
    unmatched = migrated.copy()
    unmatched["students.csv"] += "B-P7,1007,Nia,,Long,9,nia.long@d.example,,,S1\n"
    with _open(settings) as store:
        runner = Runner(settings, store, clock=Clock(), mailer=Sent())
        # the first sync of SIS A: nobody to match yet, so require_match is off for it
        first = Runner(make_settings(tmp_path, backend_url), store, clock=Clock(),
                       mailer=Sent()).sync("t", upload(tmp_path, old), source="cli")
        assert first.applied
        before = people(store)
        failed = runner.sync("t", upload(tmp_path, unmatched, "b.zip"), source="cli")
        assert failed.status is RunStatus.FAILED and not failed.applied
        assert codes(failed) == ["MATCH_MISSING"]
        message = failed.document.errors[0].message  # type: ignore[union-attr]
        assert "B-P7" in message and "nia.long@d.example" in message
        assert failed.document.errors[0].line == 5  # type: ignore[union-attr]
        assert people(store) == before
        # the other five matched, and the failed run's matches.csv says whom
        listed = read_csv(Path(failed.artifact_dir or "") / "matches.csv")
        assert sorted(r["person_id"] for r in listed) == ["B-P1", "B-P2", "B-P3", "B-T1",
                                                          "B-T2"]
        # the same migration without the stranger completes, taking over every account
        done = runner.sync("t", upload(tmp_path, migrated, "b2.zip"), source="cli")
        assert done.applied and done.document is not None and done.document.matched == 5
        after = people(store)
        assert sorted(after) == ["B-P1", "B-P2", "B-P3", "B-T1", "B-T2"]
        assert {p["account"] for p in after.values()} == {p["account"]
                                                          for p in before.values()}
        rows = {r["person_id"]: r
                for r in read_csv(Path(done.artifact_dir or "") / "matches.csv")}
        assert rows["B-P1"]["previous_id"] == "P1"
        assert rows["B-P1"]["account"] == before["P1"]["account"]
        assert "email_address" in rows["B-P1"]["matched_on"]


def test_require_match_needs_prevent() -> None:
    from rosterdrop.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="require_match"):
        parse_settings({"tenants": {"t": {"duplicates": {"prevent": False,
                                                         "require_match": True}}}})
