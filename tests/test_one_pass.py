"""One pass: every check that can still run does, and nothing floods from what is missing.

A header problem or a missing file used to stop the people and reference checks, so an
unknown school or term surfaced only on the next upload. Now the model is built from what
can be read; the checks after it skip only the consequences of what is missing; and such
a partial model is never planned (``Checked.model`` is None, the run fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rosterdrop.config import parse_settings
from rosterdrop.runs.runner import Runner
from rosterdrop.store.directory import load_snapshot
from rosterdrop.store.engine import open_store
from uploads import TODAY, asm_files, check, issues_of, make_zip, manifest, oneroster_files, only


def _codes(checked: object) -> set[str]:
    return {i.code for i in checked.issues}  # type: ignore[attr-defined]


def _drop(files: dict[str, str], name: str, *columns: str) -> None:
    rows = [line.split(",") for line in files[name].splitlines()]
    keep = [i for i, c in enumerate(rows[0]) if c not in columns]
    files[name] = "".join(",".join(r[i] for i in keep) + "\n" for r in rows)


def test_header_error_does_not_hide_an_unknown_school() -> None:
    """students.csv lacks last_name, and a class names school S9: both in the first
    report, and no 'last_name is blank' for each student."""
    files = asm_files()
    _drop(files, "students.csv", "last_name")
    files["classes.csv"] = files["classes.csv"].replace("K2,2,C2,T2,,,S2", "K2,2,C2,T2,,,S9")
    checked = check(files)
    assert only(checked, "HEADER_MISSING_COLUMN")["column"] == "last_name"
    reference = only(checked, "REFERENCE_MISSING")
    assert (reference["file"], reference["line"], reference["column"], reference["value"]) == (
        "classes.csv", 3, "location_id", "S9")
    assert not issues_of(checked, "VALUE_REQUIRED")
    assert checked.status == "failed" and checked.model is None
    assert checked.counts["students"] == 3  # the students were read all the same


def test_oneroster_header_error_does_not_hide_an_unknown_term() -> None:
    files = oneroster_files("1.1")
    _drop(files, "users.csv", "familyName")
    files["classes.csv"] = files["classes.csv"].replace(",S2,T2,", ",S2,T7,")
    checked = check(files)
    assert _codes(checked) == {"HEADER_MISSING_COLUMN", "REFERENCE_MISSING"}
    reference = only(checked, "REFERENCE_MISSING")
    assert (reference["column"], reference["value"]) == ("termSourcedIds", "T7")
    assert checked.model is None


def test_file_the_manifest_declares_absent_is_one_clear_issue() -> None:
    """courses.csv left out and declared absent in a bulk upload: one FILE_MISSING that
    names the manifest, and no 'names a course that is not in courses.csv' for every
    class; an unknown term in classes.csv is still found in the same report."""
    files = oneroster_files("1.1")
    del files["courses.csv"]
    files["manifest.csv"] = manifest("1.1").replace("file.courses,bulk", "file.courses,absent")
    files["classes.csv"] = files["classes.csv"].replace(",S1,T1,", ",S1,T9,")
    checked = check(files)
    assert _codes(checked) == {"FILE_MISSING", "REFERENCE_MISSING"}
    missing = only(checked, "FILE_MISSING")
    assert missing["message"] == (
        "manifest.csv declares courses.csv absent, but a bulk upload needs it (every class "
        "names its course there); export courses.csv with its records and declare it bulk "
        "in the manifest (file.courses,bulk). References to it were not checked.")
    assert only(checked, "REFERENCE_MISSING")["value"] == "T9"
    assert checked.status == "failed" and checked.model is None


def test_missing_asm_file_still_checks_the_others() -> None:
    """No courses.csv: its FILE_MISSING, no flood of class→course references, but a bad
    email in students.csv is reported in the same round."""
    files = asm_files()
    del files["courses.csv"]
    files["students.csv"] = files["students.csv"].replace("li.chen@d.example", "li chen@d")
    checked = check(files)
    assert _codes(checked) == {"FILE_MISSING", "EMAIL_INVALID"}
    assert only(checked, "EMAIL_INVALID")["line"] == 4
    assert checked.model is None


def test_missing_email_column_is_not_also_every_person_missing_an_email() -> None:
    files = asm_files()
    _drop(files, "students.csv", "email_address")
    checked = check(files)
    assert _codes(checked) == {"HEADER_MISSING_COLUMN"}


def test_missing_org_column_is_not_also_every_user_without_a_school() -> None:
    files = oneroster_files("1.1")
    _drop(files, "users.csv", "orgSourcedIds")
    checked = check(files)
    assert _codes(checked) == {"HEADER_MISSING_COLUMN"}


def test_unreadable_students_do_not_flood_the_rosters() -> None:
    """students.csv is empty (no header): its FILE_EMPTY, and no roster row is patched
    away for naming a student that is not there."""
    files = asm_files()
    files["students.csv"] = ""
    checked = check(files)
    assert _codes(checked) == {"FILE_EMPTY"}
    assert checked.model is None


def test_header_blamed_orgs_do_not_flood_the_references() -> None:
    """orgs.csv's header ends in a name no record has: the header is blamed once, the
    records are read without the surplus name, and the rest of the report is there."""
    files = oneroster_files("1.1")
    header, rest = files["orgs.csv"].split("\n", 1)
    files["orgs.csv"] = header + ",extra\n" + rest
    files["users.csv"] = files["users.csv"].replace("bo.kim@d.example", "bo'kim@d.example")
    checked = check(files)
    assert _codes(checked) == {"HEADER_FIELD_COUNT", "EMAIL_INVALID"}
    assert "'extra' is not a column of the layout" in only(checked, "HEADER_FIELD_COUNT")["message"]


def test_header_blamed_orgs_that_cannot_be_read_do_not_flood_the_references() -> None:
    """orgs.csv's header has a name too many and lacks a column the layout has: no org
    is read, and no user or class is then said to name an unknown school."""
    files = oneroster_files("1.1")
    header, rest = files["orgs.csv"].split("\n", 1)
    files["orgs.csv"] = header.replace("identifier", "identifer") + ",extra\n" + rest
    files["users.csv"] = files["users.csv"].replace("bo.kim@d.example", "bo'kim@d.example")
    checked = check(files)
    assert {"HEADER_FIELD_COUNT", "EMAIL_INVALID"} <= _codes(checked)
    assert not _codes(checked) & {"REFERENCE_MISSING", "PATCHED_REFERENCE", "ROW_COLUMN_COUNT"}


def test_a_misnamed_file_is_still_read() -> None:
    """Users.csv for users.csv: FILE_NAME_CASE, and what is wrong inside it is in the
    same report."""
    files = oneroster_files("1.1")
    files["Users.csv"] = files.pop("users.csv").replace("U2,,,true", "U2,,,yes")
    checked = check(files)
    assert _codes(checked) == {"FILE_NAME_CASE", "VALUE_INVALID"}
    assert "It was checked as users.csv" in only(checked, "FILE_NAME_CASE")["message"]
    assert only(checked, "VALUE_INVALID")["column"] == "enabledUser"


def test_teacher_enrolled_as_a_student_names_the_staff_member() -> None:
    files = oneroster_files("1.1")
    files["enrollments.csv"] = files["enrollments.csv"].replace(
        "E3,,,K2,S2,U2,student", "E3,,,K2,S2,U9,student")
    checked = check(files)
    issue = only(checked, "PATCHED_REFERENCE")
    assert issue["message"] == (
        "enrollments.csv line 4: userSourcedId 'U9' names staff member U9 (Tess Ray), not a "
        "student; it was removed for this sync.")


def test_student_listed_as_instructor_names_the_student() -> None:
    files = asm_files()
    files["classes.csv"] = files["classes.csv"].replace("K2,2,C2,T2,", "K2,2,C2,P3,")
    checked = check(files, patch={"instructors": False})
    issue = only(checked, "REFERENCE_MISSING")
    assert issue["message"] == (
        "classes.csv line 3: instructor_id 'P3' names student P3 (Li Chen), not a staff "
        "member; turn on patching or correct the SIS.")


def test_a_partial_upload_is_never_planned(tmp_path: Path, backend_url: str) -> None:
    """A real sync of an upload whose staff.csv lacks email_address (and names an unknown
    school): failed, both issues in its document, nothing planned or applied, and it
    does not validate (so it can never supersede a queued upload)."""
    settings = parse_settings({
        "state_dir": str(tmp_path / "state"), "store": {"url": backend_url},
        "tenants": {"t": {"name": "T", "report_to": ["a@t.example"],
                          "account_domain": "t.example"}},
    })
    settings.state_dir.mkdir(parents=True)
    files = asm_files()
    _drop(files, "staff.csv", "email_address")
    files["courses.csv"] = files["courses.csv"].replace("C2,SCI6,Science,S2", "C2,SCI6,Science,S7")
    upload = tmp_path / "u.zip"
    upload.write_bytes(make_zip(dict(files)))
    with open_store(settings.database_url) as store:
        runner = Runner(settings, store)
        run = runner.sync("t", upload, source="cli")
        doc: dict[str, Any] = run.document.to_json()
        assert run.status == "failed", doc
        assert doc["issue_counts"] == {"HEADER_MISSING_COLUMN": 1, "REFERENCE_MISSING": 1}
        assert doc["changes"] == {"created": {}, "updated": {}, "deactivated": {},
                                  "removed": {}, "unchanged": {}}
        assert load_snapshot(store, "t", TODAY).people.height == 0
        assert runner.validates("t", upload, "u.zip") is False


def test_an_entry_refused_as_a_zip_bomb_is_not_also_missing() -> None:
    """students.csv inflates past the ratio limit: its ZIP_UNSAFE says so; no
    'students.csv is missing, add it', and no roster row patched for its students."""
    files = asm_files()
    files["students.csv"] = files["students.csv"].replace(",José,", "," + "J" * 2_000_000 + ",")
    checked = check(files)
    assert [(i.code, i.file) for i in checked.issues] == [("ZIP_UNSAFE", "students.csv")]
    assert checked.model is None


def test_oneroster_12_unknown_school_of_a_role_names_roles_csv() -> None:
    files = oneroster_files("1.2")
    files["roles.csv"] = files["roles.csv"].replace("R2,,,U2,primary,student,,,S2",
                                                    "R2,,,U2,primary,student,,,S8")
    issue = only(check(files), "REFERENCE_MISSING")
    assert (issue["file"], issue["line"], issue["column"], issue["value"]) == (
        "users.csv", 3, "orgSourcedId", "S8")
    assert issue["message"].startswith(
        "users.csv line 3: roles.csv orgSourcedId 'S8' names a location that is not in orgs.csv")
