"""Sync scenarios over several uploads for one tenant, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rosterdrop.config import Settings, parse_settings
from rosterdrop.runs.runner import Runner
from rosterdrop.store.directory import dump_tables, list_people, set_person
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import get_run
from uploads import asm_files, make_zip, manifest, oneroster_files

STUDENT = ("P{n},10{n},First{n},,Last{n},9,first{n}.last{n}@d.example,fl{n},,S1\n")


def district(students: int = 10) -> dict[str, str | bytes]:
    """An ASM district with ``students`` students in one class at S1."""
    files: dict[str, str | bytes] = dict(asm_files())
    header = str(files["students.csv"]).splitlines()[0]
    files["students.csv"] = header + "\n" + "".join(
        STUDENT.format(n=n) for n in range(1, students + 1))
    files["rosters.csv"] = "roster_id,class_id,student_id\n" + "".join(
        f"R{n},K1,P{n}\n" for n in range(1, students + 1))
    return files


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def settings(tmp_path: Path, backend_url: str) -> Settings:
    return parse_settings({
        "state_dir": str(tmp_path / "state"),
        "store": {"url": backend_url},
        "tenants": {"t": {"name": "Test District", "report_to": ["admin@t.example"],
                          "account_domain": "t.example",
                          "guard": {"max_deactivate_percent": 20, "min_population": 5}}},
    })


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened


@pytest.fixture
def runner(settings: Settings, store: Store) -> Runner:
    return Runner(settings, store, clock=Clock())


def upload(tmp_path: Path, files: dict[str, str | bytes], name: str = "u.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(make_zip(files))
    return path


def outbox(settings: Settings) -> list[email.message.Message]:
    return [email.message_from_bytes(p.read_bytes())
            for p in sorted((settings.state_dir / "outbox").glob("*.eml"))]


def people(store: Store, inactive: bool = True) -> dict[str, dict[str, Any]]:
    return {p["person_id"]: p for p in list_people(store, "t", None, inactive)}


def test_first_sync_creates_and_records(runner: Runner, store: Store, settings: Settings,
                                        tmp_path: Path) -> None:
    """A first upload creates everyone, writes artifacts and history, and sends one email."""
    run = runner.sync("t", upload(tmp_path, district()), source="cli")
    assert run.status == "completed" and run.applied
    doc = run.document.to_json()
    assert doc["changes"]["created"]["students"] == 10
    assert doc["changes"]["created"]["staff"] == 2
    accounts = {p["account"] for p in people(store).values()}
    assert "first1.last1@t.example" in accounts
    folder = Path(run.artifact_dir or "")
    assert {p.name for p in folder.iterdir()} == {"report.json", "issues.csv",
                                                  "patch-summary.csv", "modified.zip"}
    mails = outbox(settings)
    assert len(mails) == 1 and "sync completed" in mails[0]["Subject"]
    assert get_run(store, run.run_id).status == "completed"


def test_identical_upload_is_unchanged(runner: Runner, store: Store, settings: Settings,
                                       tmp_path: Path) -> None:
    """The same bytes again are recorded as unchanged and write nothing."""
    path = upload(tmp_path, district())
    runner.sync("t", path, source="cli")
    before = dump_tables(store)
    again = runner.sync("t", path, source="cli")
    assert again.status == "unchanged" and not again.applied
    assert dump_tables(store)["people"] == before["people"]
    assert len(outbox(settings)) == 2
    assert "unchanged" in outbox(settings)[1]["Subject"]


def test_an_earlier_upload_sent_again_is_applied_again(runner: Runner, store: Store,
                                                      tmp_path: Path) -> None:
    """Only the bytes of the *last* applied upload are unchanged: yesterday's upload re-sent
    after today's (a SIS retrying an old file, or a copy that waited in a paused tenant's
    queue) is applied for what it holds, so the directory follows the newest applied file."""
    first = upload(tmp_path, district())
    runner.sync("t", first, source="cli")
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("Last2,", "Renamed2,")
    assert runner.sync("t", upload(tmp_path, files, "2.zip"), source="cli").applied
    assert people(store)["P2"]["last_name"] == "Renamed2"
    again = runner.sync("t", upload(tmp_path, district(), "3.zip"), source="cli")
    assert again.status in ("completed", "completed_with_warnings") and again.applied
    assert again.document.to_json()["changes"]["updated"]["students"] == 1
    assert people(store)["P2"]["last_name"] == "Last2"


def test_update_deactivate_reactivate(runner: Runner, store: Store, tmp_path: Path) -> None:
    """An edit updates, an absence deactivates, a return reactivates the same account."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("Last2,", "Renamed2,")
    files["students.csv"] = "\n".join(
        line for line in str(files["students.csv"]).splitlines() if not line.startswith("P3,"))
    files["rosters.csv"] = str(files["rosters.csv"]).replace("R3,K1,P3\n", "")
    second = runner.sync("t", upload(tmp_path, files, "2.zip"), source="cli")
    assert second.status in ("completed", "completed_with_warnings"), second.document.to_json()["errors"]
    changes = second.document.to_json()["changes"]
    assert changes["updated"]["students"] == 1
    assert changes["deactivated"]["students"] == 1
    state = people(store)
    assert state["P2"]["last_name"] == "Renamed2"
    assert state["P3"]["status"] == "inactive"
    account = state["P3"]["account"]
    third = runner.sync("t", upload(tmp_path, district(), "3.zip"), source="cli")
    assert third.document.to_json()["changes"]["updated"]["students"] == 2
    assert people(store)["P3"]["status"] == "active"
    assert people(store)["P3"]["account"] == account


def test_guard_holds_then_approve_applies(runner: Runner, store: Store, settings: Settings,
                                          tmp_path: Path) -> None:
    """Deactivating over the threshold holds the run; approve applies it."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    held = runner.sync("t", upload(tmp_path, district(6), "small.zip"), source="cli")
    assert held.status == "held" and not held.applied
    assert [e["code"] for e in held.document.to_json()["errors"]] == ["CHANGE_THRESHOLD"]
    assert f"rosterdrop approve {held.run_id}" in held.document.to_json()["errors"][0]["message"]
    assert people(store)["P9"]["status"] == "active"
    assert "held" in outbox(settings)[-1]["Subject"]
    approved = runner.approve(held.run_id)
    assert approved.run_id == held.run_id and approved.status == "completed"
    assert people(store)["P9"]["status"] == "inactive"


def test_guard_discard_and_newer_upload_discards(runner: Runner, store: Store,
                                                 tmp_path: Path) -> None:
    """discard drops a held run; a newer upload discards any held run of the tenant."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    held = runner.sync("t", upload(tmp_path, district(6), "a.zip"), source="cli")
    assert runner.discard(held.run_id).status == "discarded"
    held2 = runner.sync("t", upload(tmp_path, district(5), "b.zip"), source="cli")
    assert held2.status == "held"
    newer = runner.sync("t", upload(tmp_path, district(11), "c.zip"), source="cli")
    assert newer.status == "completed"
    assert get_run(store, held2.run_id).status == "discarded"
    assert people(store)["P9"]["status"] == "active"


def test_dry_run_applies_nothing(runner: Runner, store: Store, tmp_path: Path) -> None:
    """--dry-run reports the changes and leaves the store as it was."""
    run = runner.sync("t", upload(tmp_path, district()), source="cli", dry_run=True)
    assert run.status == "completed" and run.document.to_json()["dry_run"] is True
    assert run.document.to_json()["changes"]["created"]["students"] == 10
    assert people(store) == {}


def test_failed_upload_applies_nothing(runner: Runner, store: Store, settings: Settings,
                                       tmp_path: Path) -> None:
    """An upload with errors fails; nothing is applied; the email says failed."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    before = dump_tables(store)
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("First1,", ",")
    run = runner.sync("t", upload(tmp_path, files, "bad.zip"), source="cli")
    assert run.status == "failed" and not run.applied
    bookkeeping = ("runs", "mails")
    assert {k: v for k, v in dump_tables(store).items() if k not in bookkeeping} == {
        k: v for k, v in before.items() if k not in bookkeeping}
    assert "failed" in outbox(settings)[-1]["Subject"]


def test_local_edit_is_kept(runner: Runner, store: Store, tmp_path: Path) -> None:
    """A locally edited account is not overwritten; ACCOUNT_LOCAL lists the SIS value."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    set_person(store, "t", "P1", {"last_name": "Local"})
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("Last1,", "Sis1,")
    run = runner.sync("t", upload(tmp_path, files, "2.zip"), source="cli")
    assert run.status == "completed_with_warnings"
    local = [w for w in run.document.to_json()["warnings"] if w["code"] == "ACCOUNT_LOCAL"]
    assert len(local) == 1 and "Sis1" in local[0]["message"]
    assert people(store)["P1"]["last_name"] == "Local"
    assert people(store)["P1"]["source"] == "local"


def test_duplicate_prevention_ambiguous_stops_run(runner: Runner, store: Store,
                                                  tmp_path: Path) -> None:
    """Two new SIS ids matching one account by name and email is MATCH_AMBIGUOUS."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("P1,", "Q1,").replace(
        "P2,102,First2,,Last2,9,first2.last2", "Q2,102,First1,,Last1,9,first1.last1")
    files["rosters.csv"] = str(files["rosters.csv"]).replace(",P1\n", ",Q1\n").replace(
        ",P2\n", ",Q2\n")
    before = dump_tables(store)["people"]
    run = runner.sync("t", upload(tmp_path, files, "dup.zip"), source="cli")
    assert run.status == "failed"
    assert "MATCH_AMBIGUOUS" in run.document.to_json()["issue_counts"]
    assert dump_tables(store)["people"] == before


def test_duplicate_prevention_matches_one(runner: Runner, store: Store,
                                          tmp_path: Path) -> None:
    """A new SIS id with the same name and email takes over the existing account."""
    runner.sync("t", upload(tmp_path, district()), source="cli")
    account = people(store)["P1"]["account"]
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("P1,", "NEW1,")
    files["rosters.csv"] = str(files["rosters.csv"]).replace(",P1\n", ",NEW1\n")
    run = runner.sync("t", upload(tmp_path, files, "moved.zip"), source="cli")
    assert run.status == "completed", run.document.to_json()["errors"]
    state = people(store)
    assert "P1" not in state and state["NEW1"]["account"] == account


def test_oneroster_delta_deactivates(runner: Runner, store: Store, tmp_path: Path) -> None:
    """A delta users.csv with tobedeleted deactivates only the person it names."""
    runner.sync("t", upload(tmp_path, oneroster_files("1.1")), source="cli")
    files = oneroster_files("1.1")
    files["manifest.csv"] = manifest("1.1", mode="delta")
    stamp = "2026-11-20T00:00:00.000Z"
    header, *rows = files["users.csv"].splitlines()
    rows = [r.replace(",,,", f",active,{stamp},", 1) for r in rows if r.startswith("U2")]
    rows = [r.replace(",active,", ",tobedeleted,", 1) for r in rows]
    files["users.csv"] = "\n".join([header, *rows]) + "\n"
    for name in ("orgs.csv", "courses.csv", "classes.csv", "academicSessions.csv",
                 "enrollments.csv"):
        files[name] = files[name].splitlines()[0] + "\n"
    run = runner.sync("t", upload(tmp_path, files, "delta.zip"), source="cli")
    assert run.status in ("completed", "completed_with_warnings"), run.document.to_json()["errors"]
    state = people(store)
    assert state["U2"]["status"] == "inactive"
    assert state["U1"]["status"] == "active" and state["U9"]["status"] == "active"
