"""The first report on a real export names every header problem once, in the admin's terms.

Each test is a defect seen on real exports (issue 17): near-miss column names, Excel's
blank trailing columns, a header that fits no record, missing columns the sync never
reads, case-corrected values, and over-long values.
"""

from __future__ import annotations

import random
import string

import pytest

from rosterdrop.pipeline.check import Checked
from rosterdrop.pipeline.validate import near_score
from uploads import USERS_11, USERS_12, asm_files, check, issues_of, oneroster_files, only


def _codes(checked: Checked) -> list[tuple[str, str]]:
    frame = checked.issues.frame()
    return sorted(zip(frame["code"].to_list(), frame["severity"].to_list(), strict=True))


def _rename(files: dict[str, str], name: str, old: str, new: str) -> None:
    header, rest = files[name].split("\n", 1)
    columns = header.split(",")
    columns[columns.index(old)] = new
    files[name] = ",".join(columns) + "\n" + rest


def _drop(files: dict[str, str], name: str, *columns: str) -> None:
    rows = [line.split(",") for line in files[name].splitlines()]
    keep = [i for i, c in enumerate(rows[0]) if c not in columns]
    assert len(keep) == len(rows[0]) - len(columns)
    files[name] = "".join(",".join(r[i] for i in keep) + "\n" for r in rows)


# --- HEADER_NEAR_MISS -------------------------------------------------------------------


def test_grade_for_grades_is_one_error_and_its_values_are_read_as_grades() -> None:
    """`grade` for `grades` (read by the sync) is one error naming both, not an unknown
    plus a missing column, and the data in `grade` is not dropped silently: it is read
    as grades (so it is checked), though the error keeps anything from being applied."""
    files = oneroster_files("1.1")
    _rename(files, "users.csv", "grades", "grade")
    checked = check(files)
    assert _codes(checked) == [("HEADER_NEAR_MISS", "error")]
    issue = only(checked, "HEADER_NEAR_MISS")
    assert (issue["file"], issue["line"], issue["column"], issue["value"]) == (
        "users.csv", 1, "grade", "grades")
    assert "the column 'grade' is not part of the users.csv layout" in issue["message"]
    assert "did you mean 'grades'?" in issue["message"]
    assert "Its values were checked as grades" in issue["message"]
    assert "nothing is applied until the name is right" in issue["message"]
    assert checked.status == "failed"
    assert checked.model is not None
    grades = dict(zip(checked.model.people["person_id"], checked.model.people["grade_level"],
                      strict=True))
    assert grades["U1"] == "09" and grades["U2"] == "06"


@pytest.mark.parametrize(("version", "file", "wrong", "right"), [
    ("1.1", "users.csv", "userId", "userIds"),
    ("1.1", "users.csv", "agents", "agentSourcedIds"),
    ("1.1", "courses.csv", "schoolYearId", "schoolYearSourcedId"),
    ("1.1", "classes.csv", "dataLastModified", "dateLastModified"),
    ("1.2", "users.csv", "prefferedGivenName", "preferredGivenName"),
])
def test_near_miss_of_an_unread_column_is_one_warning(version: str, file: str, wrong: str,
                                                      right: str) -> None:
    """The real near misses of columns the sync never reads: one warning each, and the
    upload goes ahead."""
    files = oneroster_files(version)
    _rename(files, file, right, wrong)
    checked = check(files)
    assert _codes(checked) == [("HEADER_NEAR_MISS", "warning")]
    issue = only(checked, "HEADER_NEAR_MISS")
    assert (issue["file"], issue["column"], issue["value"]) == (file, wrong, right)
    assert f"did you mean '{right}'?" in issue["message"]
    assert "the sync does not read that column" in issue["message"]
    assert checked.status == "warnings" and checked.model is not None


def test_strict_headers_make_a_near_miss_of_an_unread_column_an_error() -> None:
    files = oneroster_files("1.1")
    _rename(files, "users.csv", "userIds", "userId")
    checked = check(files, strict_headers=True)
    assert _codes(checked) == [("HEADER_NEAR_MISS", "error")]
    assert "strict_headers is on for this tenant" in only(checked, "HEADER_NEAR_MISS")["message"]


def test_case_difference_stays_header_column_case() -> None:
    files = oneroster_files("1.1")
    _rename(files, "users.csv", "givenName", "GivenName")
    checked = check(files)
    assert _codes(checked) == [("HEADER_COLUMN_CASE", "error")]


def test_asm_near_miss_is_an_error() -> None:
    """ASM matches exactly and reads every column: `Person ID` is a near miss, an error."""
    files = asm_files()
    _rename(files, "staff.csv", "person_id", "Person ID")
    checked = check(files)
    assert _codes(checked) == [("HEADER_NEAR_MISS", "error")]
    assert "did you mean 'person_id'?" in only(checked, "HEADER_NEAR_MISS")["message"]


def test_unrelated_names_are_no_near_miss() -> None:
    assert near_score("sis", "sms") is None  # too short to guess
    assert near_score("beginDate", "endDate") is None
    assert near_score("nickname", "username") is None
    assert near_score("grade", "grades") == 1
    assert near_score("dataLastModified", "dateLastModified") == 2


def test_an_unknown_column_far_from_every_missing_one_stays_unknown() -> None:
    files = oneroster_files("1.1")
    _rename(files, "users.csv", "grades", "nickname")
    checked = check(files)
    assert _codes(checked) == [("HEADER_MISSING_COLUMN", "error"),
                               ("HEADER_UNKNOWN_COLUMN", "warning")]


def test_two_equally_near_names_are_not_guessed_between() -> None:
    """`agent` and `agents` are both as near `agentSourcedIds`: neither is linked."""
    files = oneroster_files("1.1")
    _rename(files, "users.csv", "agentSourcedIds", "agents")
    _rename(files, "users.csv", "password", "agent")
    checked = check(files)
    assert not issues_of(checked, "HEADER_NEAR_MISS")
    assert sorted(i["column"] for i in issues_of(checked, "HEADER_UNKNOWN_COLUMN")) == [
        "agent", "agents"]
    assert sorted(i["column"] for i in issues_of(checked, "HEADER_MISSING_UNUSED")) == [
        "agentSourcedIds", "password"]


# --- HEADER_BLANK_COLUMNS ---------------------------------------------------------------


def test_excel_blank_trailing_columns_are_one_warning() -> None:
    """`…,role,,,` with empty cells below: one warning for the file, no duplicates."""
    files = asm_files()
    files["staff.csv"] = "".join(line + ",,,\n" for line in files["staff.csv"].splitlines())
    checked = check(files)
    assert _codes(checked) == [("HEADER_BLANK_COLUMNS", "warning")]
    issue = only(checked, "HEADER_BLANK_COLUMNS")
    assert issue["message"].startswith(
        "staff.csv line 1: the header ends in 3 columns with no name and no values "
        "(columns 9-11")
    assert "ignored" in issue["message"]
    assert checked.status == "warnings" and checked.model is not None


def test_blank_trailing_names_over_records_without_those_fields() -> None:
    """The records may leave out the blank columns altogether: still one warning, and no
    record is blamed for having too few fields."""
    files = oneroster_files("1.1")
    header, rest = files["users.csv"].split("\n", 1)
    files["users.csv"] = header + ",,\n" + rest
    checked = check(files)
    assert _codes(checked) == [("HEADER_BLANK_COLUMNS", "warning")]
    assert checked.model is not None and checked.model.people.height == 3


def test_blank_name_over_values_is_an_unknown_column() -> None:
    """A column without a name that holds values is not silently dropped."""
    files = asm_files()
    lines = files["locations.csv"].splitlines()
    files["locations.csv"] = lines[0] + ",\n" + lines[1] + ",north campus\n" + lines[2] + ",\n"
    checked = check(files)
    assert _codes(checked) == [("HEADER_UNKNOWN_COLUMN", "error")]
    message = only(checked, "HEADER_UNKNOWN_COLUMN")["message"]
    assert message.startswith("locations.csv line 1: column 3 has no name in the header but "
                              "holds values (line 2: 'north campus')")


# --- HEADER_FIELD_COUNT ----------------------------------------------------------------


def test_header_with_more_names_than_the_records_is_blamed_once() -> None:
    """users.csv's header names a column no record has: one issue for the header, not
    'line N: expected 19 fields' for every record; the surplus name is not a column of
    the layout, so the records are still checked without it and the first report names
    what is wrong in them too (here an invalid email)."""
    files = oneroster_files("1.1")
    header, rest = files["users.csv"].split("\n", 1)
    files["users.csv"] = (header.replace("givenName,", "givenName,nickName,") + "\n"
                          + rest.replace("bo.kim@d.example", "bo.kim@@d.example"))
    checked = check(files)
    assert not issues_of(checked, "ROW_COLUMN_COUNT")
    issue = only(checked, "HEADER_FIELD_COUNT")
    assert issue["message"] == (
        "users.csv line 1: the header row names 19 columns, but 4 of the 4 records have 18 "
        "fields: the header has 1 name too many (or the records lack a column). 'nickName' "
        "is not a column of the layout and no record has it, so the records were checked "
        "without it (nothing is applied until the header is right); remove it from the "
        "header row and export again.")
    invalid = only(checked, "EMAIL_INVALID")
    assert (invalid["file"], invalid["line"]) == ("users.csv", 3)
    assert {i.code for i in checked.issues} == {"HEADER_FIELD_COUNT", "EMAIL_INVALID"}
    assert checked.status == "failed"  # the header error stops the sync


def test_a_surplus_header_name_that_may_be_a_misspelt_column_stops_the_file() -> None:
    """The header has one name too many, but the names the layout does not know are a
    misspelling of a column the header lacks (``grade``) as well as the surplus: which
    name holds no data cannot be told, so no record is read rather than read shifted."""
    files = oneroster_files("1.1")
    header, rest = files["users.csv"].split("\n", 1)
    header = header.replace("grades", "grade").replace("givenName,", "givenName,nickName,")
    files["users.csv"] = header + "\n" + rest
    checked = check(files)
    issue = only(checked, "HEADER_FIELD_COUNT")
    assert issue["message"].endswith(
        "No record of users.csv was read, so the checks that need it were skipped; correct "
        "the header row and export again.")
    # Nothing follows from the unread people: no dangling enrollments, no missing emails.
    assert not issues_of(checked, "ROW_COLUMN_COUNT")
    assert not issues_of(checked, "REFERENCE_MISSING") and not issues_of(checked, "EMAIL_MISSING")
    assert checked.status == "failed" and checked.model is None


def test_a_few_ragged_rows_under_a_sound_header_stay_row_column_count() -> None:
    """Two of three records are ragged, but no count other than the header's is shared by
    most: the rows are blamed, each with the usual hint."""
    files = asm_files()
    files["rosters.csv"] = files["rosters.csv"].replace("R2,K1,P2", "R2,K1")
    files["rosters.csv"] = files["rosters.csv"].replace("R3,K2,P3", "R3,K2,P3,extra")
    checked = check(files)
    assert not issues_of(checked, "HEADER_FIELD_COUNT")
    ragged = issues_of(checked, "ROW_COLUMN_COUNT")
    assert [i["line"] for i in ragged] == [3, 4]
    assert ragged[0]["message"].startswith(
        "rosters.csv line 3: expected 3 fields, as in the header, but found 2")


# --- HEADER_MISSING_UNUSED -------------------------------------------------------------


def test_missing_columns_the_sync_never_reads_are_warnings() -> None:
    """sms, phone, agentSourcedIds, periods and subjectCodes are most of the noise on a
    real export: warnings, and the upload goes ahead."""
    files = oneroster_files("1.1")
    _drop(files, "users.csv", "sms", "phone", "agentSourcedIds")
    _drop(files, "classes.csv", "periods", "subjectCodes")
    checked = check(files)
    found = issues_of(checked, "HEADER_MISSING_UNUSED")
    assert sorted((i["file"], i["column"], i["severity"]) for i in found) == [
        ("classes.csv", "periods", "warning"), ("classes.csv", "subjectCodes", "warning"),
        ("users.csv", "agentSourcedIds", "warning"), ("users.csv", "phone", "warning"),
        ("users.csv", "sms", "warning")]
    assert "the sync does not read it, so nothing is lost" in found[0]["message"]
    assert {i.code for i in checked.issues} == {"HEADER_MISSING_UNUSED"}
    assert checked.status == "warnings" and checked.model is not None


def test_strict_headers_make_a_missing_unread_column_an_error() -> None:
    files = oneroster_files("1.1")
    _drop(files, "users.csv", "sms")
    checked = check(files, strict_headers=True)
    issue = only(checked, "HEADER_MISSING_UNUSED")
    assert issue["severity"] == "error"
    assert "strict_headers is on for this tenant" in issue["message"]
    assert checked.status == "failed"


def test_a_missing_column_the_sync_reads_stays_an_error() -> None:
    files = oneroster_files("1.1")
    _drop(files, "users.csv", "username")
    checked = check(files)
    issue = only(checked, "HEADER_MISSING_COLUMN")
    assert (issue["column"], issue["severity"]) == ("username", "error")
    assert checked.status == "failed" and checked.model is None


# --- VALUE_CASE ------------------------------------------------------------------------


def test_value_case_names_the_value_it_was_read_as() -> None:
    files = oneroster_files("1.2")
    files["users.csv"] = files["users.csv"].replace("U1,,,true", "U1,,,TRUE")
    files["roles.csv"] = files["roles.csv"].replace("U1,primary", "U1,Primary")
    checked = check(files)
    messages = sorted(i["message"] for i in issues_of(checked, "VALUE_CASE"))
    assert messages == [
        "roles.csv line 2: roleType 'Primary' was read as 'primary' (allowed: primary, "
        "secondary); the SIS should export it exactly.",
        "users.csv line 2: enabledUser 'TRUE' was read as 'true' (allowed: true, false); "
        "the SIS should export it exactly.",
    ]


# --- VALUE_TOO_LONG --------------------------------------------------------------------


def test_ten_million_character_first_name_is_refused_and_never_echoed() -> None:
    """Letters that do not compress, so the ZIP's ratio limit does not step in first."""
    files = asm_files()
    name = "".join(random.Random(17).choices(string.ascii_letters, k=10_000_000))
    files["students.csv"] = files["students.csv"].replace(",José,", "," + name + ",")
    checked = check(files)
    issue = only(checked, "VALUE_TOO_LONG")
    assert (issue["file"], issue["line"], issue["column"], issue["severity"]) == (
        "students.csv", 2, "first_name", "error")
    assert issue["message"].startswith(
        "students.csv line 2: first_name is 10,000,000 characters long, more than the 255 "
        "rosterdrop accepts")
    assert len(issue["value"]) == 61 and issue["value"].endswith("…")
    assert max(len(i.message) + len(i.value or "") for i in checked.issues) < 600
    assert checked.status == "failed"


def test_over_long_value_in_an_unread_column_is_dropped_with_a_warning() -> None:
    files = oneroster_files("1.1")
    files["users.csv"] = files["users.csv"].replace(
        "ann.lee@d.example,,", "ann.lee@d.example," + "5" * 2000 + ",")
    checked = check(files)
    issue = only(checked, "VALUE_TOO_LONG")
    assert (issue["column"], issue["severity"]) == ("sms", "warning")
    assert "2,000 characters long, more than the 1,024" in issue["message"]
    assert issue["message"].endswith("the value was dropped.")
    assert checked.status == "warnings" and checked.model is not None


def test_a_long_email_is_too_long_not_also_malformed() -> None:
    files = asm_files()
    long_email = "a" * 250 + "@d.example"
    files["staff.csv"] = files["staff.csv"].replace("ann.smith@d.example", long_email)
    checked = check(files)
    issue = only(checked, "VALUE_TOO_LONG")
    assert (issue["column"], issue["line"]) == ("email_address", 2)
    assert "more than the 254" in issue["message"]
    assert not issues_of(checked, "EMAIL_INVALID")


def test_users_header_constants_still_match_the_layouts() -> None:
    """The helpers above edit the baseline headers; they must be the layouts' own."""
    assert USERS_11.split(",")[-3:] == ["agentSourcedIds", "grades", "password"]
    assert "preferredGivenName" in USERS_12.split(",")
