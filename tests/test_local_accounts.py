"""Local accounts as Apple School Manager treats them (issue 16, part 5), as an admin runs
them: `people set` validates like an upload, a local account the SIS drops stays active
(and is reported), `people reset` hands it back to the SIS."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_sync import as_json, run

from uploads import asm_files, make_zip

CONFIG = """
state_dir = "state"
[tenants.t]
name = "Test"
report_to = ["a@t.example"]
[tenants.t.guard]
max_deactivate_percent = 100
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "rd.toml").write_text(CONFIG)
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    assert run(tmp_path, "sync", "u.zip", "--tenant", "t").returncode == 0
    return tmp_path


def person(workdir: Path, person_id: str) -> dict[str, object]:
    rows = as_json(run(workdir, "people", "--tenant", "t", "--inactive", "--json"))
    return next(r for r in rows if r["person_id"] == person_id)


@pytest.mark.parametrize(("assignment", "says"), [
    ("email_address=o'brien@d.example", "apostrophe"),
    ("email_address=not-an-address", "not a valid email"),
    ("first_name=", "cannot be blank"),
    ("location_ids=S1,S9", "unknown location(s) S9"),
    ("role=staff", "cannot be set locally"),
])
def test_people_set_refuses_what_an_upload_would_refuse(workdir: Path, assignment: str,
                                                        says: str) -> None:
    before = person(workdir, "P1")
    refused = run(workdir, "people", "set", "P1", assignment, "--tenant", "t")
    assert refused.returncode == 2, refused.stdout
    assert says in refused.stderr and "Traceback" not in refused.stderr
    assert person(workdir, "P1") == before


def test_a_local_account_the_sis_drops_stays_and_reset_hands_it_back(workdir: Path) -> None:
    edited = run(workdir, "people", "set", "P1", "last_name=Garcia-Lopez", "--tenant", "t")
    assert edited.returncode == 0, edited.stderr
    assert person(workdir, "P1")["source"] == "local"
    files = dict(asm_files())
    files["students.csv"] = "\n".join(
        line for line in files["students.csv"].splitlines() if not line.startswith("P1,"))
    files["rosters.csv"] = "\n".join(
        line for line in files["rosters.csv"].splitlines() if not line.endswith(",P1"))
    (workdir / "v2.zip").write_bytes(make_zip(files))
    second = as_json(run(workdir, "sync", "v2.zip", "--tenant", "t", "--json"))
    assert second["status"] == "completed_with_warnings"
    assert [w["code"] for w in second["warnings"]] == ["ACCOUNT_LOCAL"]
    assert "people reset P1" in second["warnings"][0]["message"]
    kept = person(workdir, "P1")
    assert kept["status"] == "active" and kept["last_name"] == "Garcia-Lopez"
    assert person(workdir, "P2")["status"] == "active"
    # both spellings of the command work: --tenant after the subcommand's arguments
    reset = run(workdir, "people", "reset", "P1", "--tenant", "t")
    assert reset.returncode == 0, reset.stderr
    assert person(workdir, "P1")["source"] == "sis"
    again = run(workdir, "people", "--tenant", "t", "reset", "P1")
    assert again.returncode == 2 and "not a local account" in again.stderr
    (workdir / "v3.zip").write_bytes(make_zip({**files, "rosters.csv": files["rosters.csv"]
                                                + "\n"}))
    third = as_json(run(workdir, "sync", "v3.zip", "--tenant", "t", "--json"))
    assert third["changes"]["deactivated"]["students"] == 1
    assert person(workdir, "P1")["status"] == "inactive"


def test_an_invalid_email_in_an_update_keeps_the_stored_one(workdir: Path) -> None:
    """The SIS sends José with a broken email: the sync warns (EMAIL_INVALID, saying the
    stored email is kept) and his account keeps the good address it had."""
    before = person(workdir, "P1")
    assert before["email_address"] == "jose.garcia@d.example"
    files = dict(asm_files())
    files["students.csv"] = files["students.csv"].replace("jose.garcia@d.example",
                                                          "jose garcia@@d.example")
    (workdir / "bad.zip").write_bytes(make_zip(files))
    document = as_json(run(workdir, "sync", "bad.zip", "--tenant", "t", "--json"))
    assert document["status"] == "completed_with_warnings"
    [warning] = [w for w in document["warnings"] if w["code"] == "EMAIL_INVALID"]
    assert "keeps it" in warning["message"]
    assert person(workdir, "P1")["email_address"] == "jose.garcia@d.example"


def test_account_local_is_reported_when_the_sis_values_change_not_every_run(
        workdir: Path) -> None:
    """After `people set`, the first sync reports the SIS values it did not apply; the
    next syncs with the same SIS values say nothing; a new SIS value is reported again."""
    assert run(workdir, "people", "set", "P1", "last_name=Garcia-Lopez",
               "--tenant", "t").returncode == 0

    def sync(name: str, students: str) -> list[str]:
        files = {**asm_files(), "students.csv": students}
        (workdir / name).write_bytes(make_zip(files))
        document = as_json(run(workdir, "sync", name, "--tenant", "t", "--json"))
        return [w["code"] for w in document["warnings"]]

    students = asm_files()["students.csv"]
    # each upload changes someone else a little: never byte-identical to the last applied
    assert sync("1.zip", students.replace("Zoë,Ann,", "Zoë,Annie,")) == ["ACCOUNT_LOCAL"]
    # the same SIS values for P1 again
    assert sync("2.zip", students.replace("Zoë,Ann,", "Zoë,Anne,")) == []
    assert sync("3.zip", students.replace("Zoë,Ann,", "Zoë,Anna,")) == []
    assert sync("4.zip", students.replace("José,,García", "Josè,,García")
                .replace("Zoë,Ann,", "Zoë,Anna,")) == ["ACCOUNT_LOCAL"]
    assert person(workdir, "P1")["last_name"] == "Garcia-Lopez"  # the local edit stays
