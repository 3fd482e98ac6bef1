"""Validation of OneRoster 1.1 and 1.2 uploads."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from uploads import check, issues_of, manifest, oneroster_files, only


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_valid_oneroster_upload(version: str) -> None:
    """A clean OneRoster upload maps onto the model; parents are not imported."""
    checked = check(oneroster_files(version))
    assert checked.issues.frame().to_dicts() == []
    assert checked.layout == f"oneroster-{version}"
    assert checked.counts == {"locations": 3, "students": 2, "staff": 1, "courses": 2,
                              "classes": 2, "rosters": 2}
    model = checked.model
    assert model is not None
    assert model.instructors.select("class_id", "person_id").rows() == [("K1", "U9")]
    u1 = model.people.filter(model.people["person_id"] == "U1").to_dicts()[0]
    assert (u1["person_number"], u1["grade_level"], u1["sis_username"],
            u1["location_ids"]) == ("1001", "09", "ann", ["S1"])


def test_users_12_first_release_layout_accepted() -> None:
    """The first 1.2 users.csv had resourceSourcedIds after userMasterIdentifier."""
    files = oneroster_files("1.2")
    header, *rows = files["users.csv"].splitlines()
    header = header.replace("userMasterIdentifier,", "userMasterIdentifier,resourceSourcedIds,")
    rows = [r.replace(",,,,,,S1,", ",,,,,,,S1,").replace(",,,,,,S2,", ",,,,,,,S2,")
            for r in rows]
    files["users.csv"] = "\n".join([header, *rows]) + "\n"
    assert check(files).status == "ok"


def test_manifest_missing_is_warning_and_version_inferred() -> None:
    """Without manifest.csv the version comes from users.csv, with a warning."""
    files = oneroster_files("1.2")
    del files["manifest.csv"]
    checked = check(files)
    issue = only(checked, "MANIFEST_INVALID")
    assert issue["severity"] == "warning"
    assert checked.layout == "oneroster-1.2"


def test_manifest_unsupported_version() -> None:
    """oneroster.version 1.0 is a MANIFEST_INVALID error on its line."""
    files = oneroster_files()
    files["manifest.csv"] = files["manifest.csv"].replace("oneroster.version,1.1",
                                                          "oneroster.version,1.0")
    issue = only(check(files), "MANIFEST_INVALID")
    assert (issue["severity"], issue["file"], issue["line"], issue["value"]) == (
        "error", "manifest.csv", 3, "1.0")


def test_manifest_declares_absent_file() -> None:
    """A file declared bulk but not in the ZIP is an error; a typo'd property a warning."""
    files = oneroster_files()
    files["manifest.csv"] = manifest("1.1", extra="file.demographics,bulk\nfiel.x,absent\n")
    checked = check(files)
    by_severity = {i["severity"]: i for i in issues_of(checked, "MANIFEST_INVALID")}
    assert by_severity["error"]["value"] == "demographics.csv"
    assert by_severity["warning"]["value"] == "fiel.x"


def test_ignored_oneroster_files_listed() -> None:
    """Optional OneRoster files are accepted, ignored and listed."""
    files = oneroster_files()
    files["demographics.csv"] = "sourcedId,birthDate\nU1,2010-01-01\n"
    files["manifest.csv"] = manifest("1.1", extra="file.demographics,bulk\n")
    checked = check(files)
    assert checked.status == "ok"
    assert checked.files_ignored == ["demographics.csv"]


def test_format_unknown_mixed_layouts() -> None:
    """Files of both layouts in one ZIP are FORMAT_UNKNOWN."""
    files = oneroster_files()
    files["students.csv"] = "person_id\n"
    only(check(files), "FORMAT_UNKNOWN")


def test_format_unknown_nothing_recognised() -> None:
    """A ZIP of unrelated CSVs is FORMAT_UNKNOWN."""
    only(check({"data.csv": "a,b\n1,2\n"}), "FORMAT_UNKNOWN")


def test_unknown_column_is_warning_and_metadata_allowed() -> None:
    """OneRoster: metadata.* columns pass; other unknown columns warn and are ignored."""
    files = oneroster_files()
    files["orgs.csv"] = files["orgs.csv"].replace(
        "parentSourcedId\n", "parentSourcedId,metadata.code,colour\n").replace(
        ",D1\n", ",D1,x,red\n").replace("district,,\n", "district,,,y,blue\n")
    checked = check(files)
    issue = only(checked, "HEADER_UNKNOWN_COLUMN")
    assert (issue["severity"], issue["column"]) == ("warning", "colour")
    assert checked.status == "warnings"


def test_value_case_warns_and_normalises() -> None:
    """TRUE and Scheduled are accepted with VALUE_CASE warnings."""
    files = oneroster_files()
    files["users.csv"] = files["users.csv"].replace("U1,,,true", "U1,,,TRUE")
    files["classes.csv"] = files["classes.csv"].replace("A1,scheduled", "A1,Scheduled")
    checked = check(files)
    cases = sorted(issues_of(checked, "VALUE_CASE"), key=lambda i: i["file"])
    assert [(i["file"], i["line"], i["column"], i["value"]) for i in cases] == [
        ("classes.csv", 2, "classType", "Scheduled"), ("users.csv", 2, "enabledUser", "TRUE")]
    assert checked.status == "warnings"


def test_invalid_enum_in_used_field_is_error() -> None:
    """An org status outside the enumeration is an error (the sync reads it)."""
    files = oneroster_files()
    files["orgs.csv"] = files["orgs.csv"].replace("S1,,,North High", "S1,inactive,,North High")
    issue = only(check(files), "VALUE_INVALID")
    assert (issue["severity"], issue["file"], issue["line"], issue["column"]) == (
        "error", "orgs.csv", 3, "status")


def test_invalid_enum_in_unread_field_is_warning() -> None:
    """An org type outside the enumeration is a warning: the sync never reads org types
    (every org is a location), so the value is dropped and the upload goes ahead."""
    files = oneroster_files()
    files["orgs.csv"] = files["orgs.csv"].replace("North High,school", "North High,campus")
    checked = check(files)
    issue = only(checked, "VALUE_INVALID")
    assert (issue["severity"], issue["file"], issue["line"], issue["column"]) == (
        "warning", "orgs.csv", 3, "type")
    assert checked.status == "warnings" and checked.model is not None


def test_invalid_value_in_unused_field_is_warning() -> None:
    """A bad enrollment beginDate (unused) is a warning; the value is dropped."""
    files = oneroster_files()
    files["enrollments.csv"] = files["enrollments.csv"].replace(
        "E2,,,K1,S1,U1,student,false,,", "E2,,,K1,S1,U1,student,false,08/15/2024,")
    checked = check(files)
    issue = only(checked, "VALUE_INVALID")
    assert (issue["severity"], issue["line"], issue["column"], issue["value"]) == (
        "warning", 3, "beginDate", "08/15/2024")
    assert checked.status == "warnings"


def test_bad_session_date_is_error() -> None:
    """Session dates drive the term filter: a bad one is an error."""
    files = oneroster_files()
    files["academicSessions.csv"] = files["academicSessions.csv"].replace(
        "2027-01-15,Y1", "2027-13-15,Y1", 1)
    issue = only(check(files), "VALUE_INVALID")
    assert (issue["severity"], issue["file"], issue["column"]) == (
        "error", "academicSessions.csv", "endDate")


def test_delta_requires_status() -> None:
    """In a delta file status and dateLastModified are required."""
    files = oneroster_files()
    files["manifest.csv"] = manifest("1.1", mode="delta")
    checked = check(files)
    required = issues_of(checked, "VALUE_REQUIRED")
    assert {i["column"] for i in required} == {"status", "dateLastModified"}


def test_bulk_tobedeleted_counts_as_absent() -> None:
    """A bulk row with status tobedeleted is filtered out, and its enrollments go with it:
    filtered and listed, not an issue (they reference a record the upload does hold)."""
    files = oneroster_files()
    files["users.csv"] = files["users.csv"].replace(
        "U2,,,true", "U2,tobedeleted,2026-11-01T00:00:00.000Z,true")
    checked = check(files, patch={"rosters": False})
    assert checked.model is not None
    assert "U2" not in checked.model.people["person_id"].to_list()
    assert checked.issues.frame().to_dicts() == []
    assert checked.filtered == {"people": 1, "rosters": 1}
    row = checked.summary.filter(pl.col("record_id") == "E3").to_dicts()
    assert [(r["file"], r["line"], r["value"]) for r in row] == [("enrollments.csv", 4, "U2")]
    assert row[0]["reason"].startswith("filtered: not active; ")


def test_disabled_user_is_inactive() -> None:
    """enabledUser=false makes a person absent from a bulk sync."""
    files = oneroster_files()
    files["users.csv"] = files["users.csv"].replace("U9,,,true", "U9,,,false")
    checked = check(files)
    assert checked.model is not None
    assert "U9" not in checked.model.people["person_id"].to_list()
    # Its enrollment goes with it (filtered), patching has nothing to do.
    assert checked.patched == {}
    assert checked.filtered == {"people": 1, "instructors": 1}


def test_class_term_reference_missing() -> None:
    """A class naming an unknown term is REFERENCE_MISSING."""
    files = oneroster_files()
    files["classes.csv"] = files["classes.csv"].replace(",S2,T2,", ",S2,T7,")
    issue = only(check(files), "REFERENCE_MISSING")
    assert (issue["file"], issue["line"], issue["column"], issue["value"]) == (
        "classes.csv", 3, "termSourcedIds", "T7")


@pytest.mark.parametrize(
    ("today", "ahead", "kept"),
    [
        (date(2026, 11, 23), 0, ["K1"]),
        (date(2026, 12, 20), 30, ["K1", "K2"]),
        (date(2027, 1, 15), 0, ["K2"]),
        (date(2026, 7, 1), 0, []),
    ],
)
def test_active_terms_filter(today: date, ahead: int, kept: list[str]) -> None:
    """active_terms keeps classes whose term is current (or starts within ahead_days)."""
    checked = check(oneroster_files(), today=today,
                    filter={"active_terms": True, "ahead_days": ahead})
    assert checked.model is not None
    assert sorted(checked.model.classes["class_id"].to_list()) == kept
    assert checked.model.rosters["class_id"].is_in(kept).all()


def test_user_without_org_is_value_required() -> None:
    """An imported person with no org cannot be placed: VALUE_REQUIRED on orgSourcedIds."""
    files = oneroster_files()
    files["users.csv"] = files["users.csv"].replace("U2,,,true,S2,", "U2,,,true,,")
    issue = only(check(files), "VALUE_REQUIRED")
    assert (issue["file"], issue["line"], issue["column"]) == ("users.csv", 3,
                                                               "orgSourcedIds")


def test_multiline_quoted_field_keeps_line_numbers() -> None:
    """A quoted line break moves later records' physical line numbers."""
    files = oneroster_files()
    files["orgs.csv"] = files["orgs.csv"].replace("North High", '"North\nHigh"')
    files["orgs.csv"] = files["orgs.csv"].replace("South Middle,school", "South Middle,campus")
    issue = only(check(files), "VALUE_INVALID")
    assert issue["line"] == 5


def test_delta_may_leave_out_files_declared_absent() -> None:
    """A delta upload with only users.csv (the rest declared absent) is read as a delta."""
    files = oneroster_files()
    names = ["academicSessions", "classes", "courses", "enrollments", "orgs"]
    files["manifest.csv"] = (
        "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\nfile.users,delta\n"
        + "".join(f"file.{n},absent\n" for n in names))
    for name in names:
        del files[f"{name}.csv"]
    header, *rows = files["users.csv"].splitlines()
    rows = [r.replace(",,,", ",active,2026-11-20T00:00:00.000Z,", 1) for r in rows
            if r.startswith("U1")]
    files["users.csv"] = "\n".join([header, *rows]) + "\n"
    checked = check(files)
    assert checked.status == "ok", checked.issues.frame().to_dicts()
    assert checked.model is not None
    assert {"people", "locations", "classes", "rosters"} <= checked.model.delta
    assert checked.model.people["person_id"].to_list() == ["U1"]


def test_bulk_upload_still_needs_every_file() -> None:
    """Declaring a required file absent in a bulk upload does not excuse it."""
    files = oneroster_files()
    files["manifest.csv"] = files["manifest.csv"].replace("file.courses,bulk", "file.courses,absent")
    del files["courses.csv"]
    assert only(check(files), "FILE_MISSING")["file"] == "courses.csv"
