"""`rosterdrop people import` (issue 16, part 4): accounts made outside the SIS (federated
sign-ins, accounts already in Apple School Manager) become known to rosterdrop, so the next
sync's duplicate prevention hands them to the SIS person instead of making a second account.

Three levels: the pure check of the file (pipeline/imports.py), the store's all-or-nothing
write on both backends, and the admin's scenario through the real CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_cli_sync import as_json, run
from test_store import DAY0, TENANT, make_plan, people_by_id, person, school, sync

from rosterdrop.pipeline.imports import ExistingAccount, read_import
from rosterdrop.store.directory import (
    PlanOutdated,
    apply_plan,
    import_people,
    load_snapshot,
)
from rosterdrop.store.engine import Store, open_store
from uploads import asm_files, make_zip

HEADER = "email_address,first_name,last_name,role,account,person_number,sis_username,location_ids"

# --- the pure check ----------------------------------------------------------------------------


def test_a_valid_file_with_bom_crlf_and_quoted_location_list() -> None:
    """The file as Excel's "CSV UTF-8" writes it: BOM, CRLF. The account defaults to the
    email (lower case); a quoted field holds the location list; blank rows are skipped."""
    text = (f"{HEADER}\r\n"
            "Jane.Doe@D.example,Jane,Doe,staff,,9003,jdoe,\"S1, S2\"\r\n"
            "\r\n"
            "kid@d.example,Kid,Lee,Student,kid.lee@fed.example,,,S2\r\n")
    check = read_import(b"\xef\xbb\xbf" + text.encode(), "import.csv", {"S1", "S2"}, [])
    assert check.valid, check.issues
    jane, kid = check.people
    assert (jane.line, jane.account, jane.email_address, jane.role) == (
        2, "jane.doe@d.example", "Jane.Doe@D.example", "staff")
    assert jane.location_ids == ("S1", "S2") and jane.person_number == "9003"
    assert jane.person_id == "imported:jane.doe@d.example"
    # line 3 is blank: Kid is on physical line 4; role is read case-insensitively
    assert (kid.line, kid.account, kid.role, kid.sis_username) == (
        4, "kid.lee@fed.example", "student", None)


def test_every_problem_is_reported_with_line_and_column() -> None:
    """One file, many mistakes: each is its own IMPORT_INVALID with the physical line (a
    quoted line break makes a record two lines long), the column and the value; nothing
    of the file is returned to import, not even its good rows."""
    existing = [ExistingAccount("T1", "ann.smith@appleid.example", "ann.smith@d.example"),
                ExistingAccount("P9", "gone@appleid.example", None, "inactive")]
    text = (
        "email_address,first_name,last_name,role,account,colour\n"   # 1: unknown column
        "ok@d.example,Good,Row,staff,,\n"                            # 2: fine on its own
        "o'neil@d.example,Pat,O'Neil,staff,,\n"                      # 3: apostrophe
        "not-an-email,,Blank,staff,,\n"                              # 4: invalid, blank first
        "x@d.example,\"Two\nLines\",Name,teacher,,\n"                # 5-6: unknown role
        "OK@d.example,Again,Row,staff,,\n"                           # 7: email twice
        "ann.smith@d.example,Ann,Smith,staff,,\n"                    # 8: existing email
        "new@d.example,New,Person,staff,gone@appleid.example,\n"     # 9: existing account
        "a@d.example,A,B,staff,\n"                                   # 10: too few fields
    )
    check = read_import(text.encode(), "import.csv", set(), existing)
    assert not check.valid and check.people == ()
    found = {(i.line, i.column) for i in check.issues}
    assert found == {
        (1, "colour"), (3, "email_address"), (4, "email_address"), (4, "first_name"),
        (5, "role"), (7, "email_address"), (8, "email_address"), (9, "account"), (10, None),
    }
    assert all(i.code == "IMPORT_INVALID" and i.severity == "error" for i in check.issues)
    by_place = {(i.line, i.column): i for i in check.issues}
    assert "apostrophe" in by_place[3, "email_address"].message
    assert by_place[5, "role"].value == "teacher" and "student or staff" in by_place[
        5, "role"].message
    assert "also on line 2" in by_place[7, "email_address"].message
    assert "ann.smith@appleid.example (person 'T1')" in by_place[8, "email_address"].message
    assert "person 'P9', inactive" in by_place[9, "account"].message
    assert by_place[1, "colour"].message.startswith("import.csv line 1: unknown column")


@pytest.mark.parametrize(("data", "line", "column", "says"), [
    (b"first_name,last_name,role\nA,B,staff\n", 1, "email_address", "required column"),
    (b"Email_Address,first_name,last_name,role\n", 1, "Email_Address", "lower case"),
    (b"", 1, None, "empty"),
    (b"email_address,first_name,last_name,role\na@d.example,Jos\xe9,B,staff\n", 2, None,
     "UTF-8"),
    (f"{HEADER}\na@d.example,A,B,staff,,,,\"S1;S3\"\n".encode(), 2, "location_ids",
     "unknown location(s) S1;S3"),
    (f"{HEADER}\na@d.example,A,B,staff,a@d.example,,,\nb@d.example,C,D,staff,A@d.example,,,\n"
     .encode(), 3, "account", "also on line 2"),
])
def test_one_problem(data: bytes, line: int, column: str | None, says: str) -> None:
    check = read_import(data, "f.csv", {"S1", "S2"}, [])
    assert [(i.line, i.column) for i in check.issues] == [(line, column)], check.issues
    assert says in check.issues[0].message


# --- the store ---------------------------------------------------------------------------------


@pytest.fixture
def store(backend_url: str, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each backend, with a snapshot cache (conftest's ``backend_url``)."""
    with open_store(backend_url, cache_dir=tmp_path / "cache") as opened:
        yield opened


IMPORT = (b"email_address,first_name,last_name,role,account,location_ids\n"
          b"pat.new@school.org,Pat,New,staff,pat@fed.example,L1\n")


def test_import_is_one_write_that_outdates_earlier_plans(store: Store) -> None:
    """The import bumps the revision (a plan made before it is refused, as after a
    `people set`) and keeps the snapshot cache in step with the database."""
    sync(store, school())
    stale, _ = make_plan(store, school(4))
    revision = load_snapshot(store, TENANT).revision
    check = import_people(store, TENANT, IMPORT, "i.csv", now=DAY0)
    assert check.valid and len(check.people) == 1
    pat = people_by_id(store)["imported:pat@fed.example"]
    assert (pat["source"], pat["status"], pat["account"], pat["location_ids"]) == (
        "imported", "active", "pat@fed.example", ["L1"])
    assert load_snapshot(store, TENANT).revision == revision + 1
    assert load_snapshot(store, TENANT).sorted().people.equals(
        load_snapshot(store, TENANT, use_cache=False).sorted().people)
    with pytest.raises(PlanOutdated):
        apply_plan(store, TENANT, stale, DAY0 + timedelta(days=1))
    # all or nothing: the same file again is refused as a whole and writes nothing
    again = import_people(store, TENANT, IMPORT, "i.csv", now=DAY0)
    assert not again.valid and load_snapshot(store, TENANT).revision == revision + 1


def test_an_sis_person_takes_over_an_imported_account(store: Store) -> None:
    """The takeover is written: source sis, the SIS id, the SIS values; the placeholder
    id is not an SIS id, so it is not in previous_ids (nor matches.csv's previous_id)."""
    sync(store, school())
    assert import_people(store, TENANT, IMPORT, "i.csv", now=DAY0).valid
    model = school(people=[*(person(f"S{i}", f"Stu{i}", "Kid") for i in range(5)),
                           person("T1", "Tea", "Cher", "staff"),
                           person("T7", "Pat", "New", "staff", email_address="Pat.New@school.org")])
    plan, log = make_plan(store, model)
    assert not log.has_errors() and plan.people.create.height == 0
    assert plan.people.matched.select("person_id", "account", "previous_id").rows() == [
        ("T7", "pat@fed.example", None)]
    apply_plan(store, TENANT, plan, DAY0 + timedelta(days=1))
    pat = people_by_id(store)["T7"]
    assert (pat["source"], pat["account"], pat["location_ids"]) == (
        "sis", "pat@fed.example", ["L1", "L2"])
    people = load_snapshot(store, TENANT, use_cache=False).people
    assert people.filter(person_id="T7")["previous_ids"].to_list() == [[]]
    assert load_snapshot(store, TENANT).sorted().people.equals(people.sort("account_id"))


# --- the admin's scenario, through the CLI -----------------------------------------------------

CONFIG = """
state_dir = "state"
[tenants.t]
name = "Test"
report_to = ["a@t.example"]
[tenants.t.guard]
max_deactivate_percent = 0
"""
# (the guard is off: a bulk sync that wrongly ended the imported account would apply it)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "rd.toml").write_text(CONFIG)
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    return tmp_path


def people(workdir: Path) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = as_json(
        run(workdir, "people", "--tenant", "t", "--inactive", "--json"))
    return listed


def test_import_then_first_sync_takes_the_account_over(workdir: Path) -> None:
    """Ann Smith already signs in with a federated account. Imported before the first
    sync, the SIS's T1 (same name and email) takes it over: no second account."""
    (workdir / "ann.csv").write_text(
        "email_address,first_name,last_name,role,account\n"
        "ann.smith@d.example,Ann,Smith,staff,ann@fed.example\n")
    imported = run(workdir, "people", "import", "ann.csv", "--tenant", "t")
    assert imported.returncode == 0, imported.stderr
    assert "1 account(s) imported" in imported.stdout
    [ann] = people(workdir)
    assert (ann["source"], ann["person_id"]) == ("imported", "imported:ann@fed.example")

    synced = as_json(run(workdir, "sync", "u.zip", "--tenant", "t", "--json"))
    assert synced["status"] == "completed" and synced["matched"] == 1
    assert synced["changes"]["created"]["staff"] == 1  # Bob only
    listed = people(workdir)
    assert len(listed) == 5
    [ann] = [p for p in listed if p["last_name"] == "Smith"]
    assert (ann["person_id"], ann["source"], ann["account"], ann["location_ids"]) == (
        "T1", "sis", "ann@fed.example", ["S1"])
    assert not any(str(p["account"]).startswith("ann.smith") for p in listed)
    shown = as_json(run(workdir, "show", synced["run_id"], "--json"))
    matches = (workdir / shown["artifacts"]["matches.csv"]).read_text().splitlines()
    assert matches[1].startswith("T1,") and ",ann@fed.example,," in matches[1]


def test_a_file_with_problems_imports_nothing(workdir: Path) -> None:
    """Every problem is listed (human and --json) with its line and column; exit 1; the
    good row is not imported either."""
    assert run(workdir, "sync", "u.zip", "--tenant", "t").returncode == 0
    before = people(workdir)
    (workdir / "bad.csv").write_text(
        "email_address,first_name,last_name,role,location_ids\n"
        "good@d.example,Good,Row,staff,S1\n"
        "bob.jones@d.example,Bob,Jones,staff,S2\n"
        "x@d.example,X,Y,parent,S9\n")
    human = run(workdir, "people", "import", "bad.csv", "--tenant", "t")
    assert human.returncode == 1 and "nothing was imported" in human.stdout
    assert "bad.csv line 3: email_address 'bob.jones@d.example' already belongs" in human.stdout
    document = as_json(run(workdir, "people", "--tenant", "t", "import", "bad.csv", "--json"))
    assert document["status"] == "failed" and document["people"] == []
    assert [(e["line"], e["column"], e["value"]) for e in document["errors"]] == [
        (3, "email_address", "bob.jones@d.example"), (4, "role", "parent"),
        (4, "location_ids", "S9")]
    assert people(workdir) == before


def test_dry_run_writes_nothing(workdir: Path) -> None:
    (workdir / "ok.csv").write_text("email_address,first_name,last_name,role\n"
                                    "new@d.example,New,Person,student\n")
    dry = run(workdir, "people", "import", "ok.csv", "--tenant", "t", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    document = json.loads(dry.stdout)
    assert document["status"] == "valid" and document["dry_run"] is True
    assert [p["account"] for p in document["people"]] == ["new@d.example"]
    assert people(workdir) == []
    (workdir / "bad.csv").write_text("email_address,first_name,last_name\n")
    refused = run(workdir, "people", "import", "bad.csv", "--tenant", "t", "--dry-run")
    assert refused.returncode == 1 and "'role' is missing" in refused.stdout
    usage = run(workdir, "people", "import", "ok.csv", "--tenant", "nobody", "--dry-run")
    assert usage.returncode == 2 and "unknown tenant 'nobody'" in usage.stderr


def test_an_imported_account_the_sis_does_not_send_stays_active(workdir: Path) -> None:
    """Not the SIS's to end: the next bulk syncs keep it, without a warning."""
    assert run(workdir, "sync", "u.zip", "--tenant", "t").returncode == 0
    (workdir / "fed.csv").write_text("email_address,first_name,last_name,role,location_ids\n"
                                     "guest@d.example,Gus,Guest,staff,S2\n")
    assert run(workdir, "people", "import", "fed.csv", "--tenant", "t").returncode == 0
    files = dict(asm_files())
    files["rosters.csv"] += "\n"  # other bytes, the same roster: a real plan, not unchanged
    (workdir / "v2.zip").write_bytes(make_zip(files))
    second = as_json(run(workdir, "sync", "v2.zip", "--tenant", "t", "--json"))
    assert second["status"] == "completed", second["warnings"]
    assert second["changes"]["deactivated"] == {"students": 0, "staff": 0}
    [guest] = [p for p in people(workdir) if p["last_name"] == "Guest"]
    assert (guest["status"], guest["source"]) == ("active", "imported")
