"""Validation of Apple School Manager uploads: one broken thing at a time."""

from __future__ import annotations

from uploads import asm_files, check, issues_of, only


def test_valid_asm_upload_is_ok() -> None:
    """A clean ASM upload validates with no issues and counts every record."""
    checked = check(asm_files())
    assert checked.issues.frame().to_dicts() == []
    assert checked.status == "ok"
    assert checked.layout == "asm"
    assert checked.counts == {"locations": 2, "students": 3, "staff": 2, "courses": 2,
                              "classes": 2, "rosters": 3}


def test_missing_file() -> None:
    """An absent required file is FILE_MISSING naming it."""
    files = asm_files()
    del files["rosters.csv"]
    issue = only(check(files), "FILE_MISSING")
    assert issue["severity"] == "error" and issue["file"] == "rosters.csv"
    assert "rosters.csv" in issue["message"]


def test_file_name_case() -> None:
    """Students.csv is FILE_NAME_CASE and the message names the exact expected name."""
    files = asm_files()
    files["Students.csv"] = files.pop("students.csv")
    issue = only(check(files), "FILE_NAME_CASE")
    assert issue["file"] == "Students.csv" and issue["severity"] == "error"
    assert "'students.csv'" in issue["message"]


def test_empty_file() -> None:
    """A zero-byte required file is FILE_EMPTY."""
    files = asm_files()
    files["courses.csv"] = ""
    issue = only(check(files), "FILE_EMPTY")
    assert issue["file"] == "courses.csv" and issue["severity"] == "error"


def test_unknown_csv_in_asm_upload() -> None:
    """An extra CSV that ASM does not define is refused."""
    files = asm_files()
    files["notes.csv"] = "a,b\n1,2\n"
    issue = only(check(files), "ZIP_UNEXPECTED_FILE")
    assert issue["file"] == "notes.csv"


def test_header_missing_column() -> None:
    """A base column absent from the header is HEADER_MISSING_COLUMN on line 1."""
    files = asm_files()
    files["locations.csv"] = "location_id\nS1\nS2\n"
    issue = only(check(files), "HEADER_MISSING_COLUMN")
    assert (issue["file"], issue["line"], issue["column"]) == ("locations.csv", 1,
                                                               "location_name")


def test_header_column_case() -> None:
    """Person_ID is HEADER_COLUMN_CASE and its values are still checked."""
    files = asm_files()
    files["staff.csv"] = files["staff.csv"].replace("person_id", "Person_ID", 1)
    checked = check(files)
    issue = only(checked, "HEADER_COLUMN_CASE")
    assert (issue["file"], issue["line"], issue["column"]) == ("staff.csv", 1, "Person_ID")
    assert "'person_id'" in issue["message"]


def test_header_unknown_column_is_error_in_asm() -> None:
    """ASM defines every column: an unknown one is an error."""
    files = asm_files()
    files["courses.csv"] = files["courses.csv"].replace(
        "location_id\n", "location_id,room\n").replace(",S1\n", ",S1,12\n").replace(
        ",S2\n", ",S2,14\n")
    issue = only(check(files), "HEADER_UNKNOWN_COLUMN")
    assert (issue["severity"], issue["file"], issue["column"]) == ("error", "courses.csv",
                                                                   "room")


def test_header_duplicate_column() -> None:
    """The same column twice is HEADER_DUPLICATE_COLUMN."""
    files = asm_files()
    files["locations.csv"] = ("location_id,location_name,location_name\n"
                              "S1,North,North\nS2,South,South\n")
    issue = only(check(files), "HEADER_DUPLICATE_COLUMN")
    assert (issue["file"], issue["line"], issue["column"]) == ("locations.csv", 1,
                                                               "location_name")


def test_optional_columns_accepted() -> None:
    """location_id_2, instructor_id_4 and class_display_name are allowed extras."""
    files = asm_files()
    files["staff.csv"] = (
        "person_id,person_number,first_name,middle_name,last_name,email_address,"
        "sis_username,location_id,location_id_2\n"
        "T1,9001,Ann,,Smith,ann.smith@d.example,asmith,S1,S2\n"
        "T2,9002,Bob,,Jones,bob.jones@d.example,bjones,S2,\n"
    )
    files["classes.csv"] = (
        "class_id,class_number,course_id,instructor_id,instructor_id_2,instructor_id_3,"
        "location_id,instructor_id_4,class_display_name\n"
        "K1,1,C1,T1,,,S1,T2,Algebra (period 1)\n"
        "K2,2,C2,T2,,,S2,,\n"
    )
    checked = check(files)
    assert checked.issues.frame().to_dicts() == []
    model = checked.model
    assert model is not None
    ann = model.people.filter(model.people["person_id"] == "T1")
    assert ann["location_ids"].to_list() == [["S1", "S2"]]
    k1 = model.instructors.filter(model.instructors["class_id"] == "K1").sort("position")
    assert k1["person_id"].to_list() == ["T1", "T2"]


def test_value_required() -> None:
    """A blank required value is VALUE_REQUIRED with its physical line and column."""
    files = asm_files()
    files["students.csv"] = files["students.csv"].replace("P2,1002,Zoë", "P2,1002,  ")
    issue = only(check(files), "VALUE_REQUIRED")
    assert (issue["file"], issue["line"], issue["column"]) == ("students.csv", 3,
                                                               "first_name")


def test_password_policy_invalid() -> None:
    """password_policy must be 4, 6, 8 or blank."""
    files = asm_files()
    files["students.csv"] = files["students.csv"].replace("jgarcia,8,", "jgarcia,5,")
    issue = only(check(files), "VALUE_INVALID")
    assert (issue["severity"], issue["line"], issue["column"], issue["value"]) == (
        "error", 2, "password_policy", "5")


def test_bad_id_characters() -> None:
    """IDs may hold letters, digits and - _ . @ / only."""
    files = asm_files()
    files["courses.csv"] = files["courses.csv"].replace("C2,SCI6", "C 2#,SCI6")
    checked = check(files)
    issue = next(i for i in issues_of(checked, "VALUE_INVALID") if i["file"] == "courses.csv")
    assert (issue["line"], issue["column"], issue["value"]) == (3, "course_id", "C 2#")


def test_id_duplicate_in_file() -> None:
    """The second use of an ID is ID_DUPLICATE naming the first line."""
    files = asm_files()
    files["rosters.csv"] += "R2,K2,P3\n"
    issue = only(check(files), "ID_DUPLICATE")
    assert (issue["file"], issue["line"], issue["value"]) == ("rosters.csv", 5, "R2")
    assert "line 3" in issue["message"]


def test_person_id_shared_by_student_and_staff() -> None:
    """person_id is unique across students and staff together."""
    files = asm_files()
    files["staff.csv"] = files["staff.csv"].replace("T2,9002", "P3,9002").replace(
        ",T2,", ",P3,")
    issue = only(check(files), "ID_DUPLICATE")
    assert (issue["file"], issue["line"], issue["column"]) == ("staff.csv", 3, "person_id")
    assert "students.csv line 4" in issue["message"]


def test_reference_missing_course() -> None:
    """A class naming an unknown course is REFERENCE_MISSING."""
    files = asm_files()
    files["classes.csv"] = files["classes.csv"].replace("K2,2,C2", "K2,2,C9")
    issue = only(check(files), "REFERENCE_MISSING")
    assert (issue["file"], issue["line"], issue["column"], issue["value"]) == (
        "classes.csv", 3, "course_id", "C9")


def test_reference_missing_person_location() -> None:
    """A student at an unknown location is REFERENCE_MISSING."""
    files = asm_files()
    files["students.csv"] = files["students.csv"].replace("lchen,4,S2", "lchen,4,S7")
    issue = only(check(files), "REFERENCE_MISSING")
    assert (issue["file"], issue["line"], issue["value"]) == ("students.csv", 4, "S7")


def test_dangling_instructor_patched() -> None:
    """An instructor who is not in staff.csv is dropped with a PATCHED_REFERENCE warning."""
    files = asm_files()
    files["classes.csv"] = files["classes.csv"].replace("K2,2,C2,T2,", "K2,2,C2,T2,T7")
    checked = check(files)
    issue = only(checked, "PATCHED_REFERENCE")
    assert (issue["severity"], issue["file"], issue["line"], issue["column"],
            issue["value"]) == ("warning", "classes.csv", 3, "instructor_id_2", "T7")
    assert checked.status == "warnings"
    assert checked.patched == {"instructors": 1}
    assert checked.summary.height == 1


def test_dangling_roster_patched() -> None:
    """A roster row naming a missing student is removed and listed."""
    files = asm_files()
    files["rosters.csv"] += "R4,K2,P9\n"
    checked = check(files)
    issue = only(checked, "PATCHED_REFERENCE")
    assert (issue["file"], issue["line"], issue["column"], issue["value"]) == (
        "rosters.csv", 5, "student_id", "P9")
    assert checked.model is not None and checked.model.rosters.height == 3


def test_roster_row_with_two_dangling_references_is_reported_once_for_its_class() -> None:
    """A row whose class and student are both missing is one issue, naming the class;
    the rows around it are kept."""
    files = asm_files()
    files["rosters.csv"] += "R4,K9,P9\nR5,K2,P8\n"
    checked = check(files)
    found = issues_of(checked, "PATCHED_REFERENCE")
    assert [(i["line"], i["column"], i["value"]) for i in found] == [
        (5, "class_id", "K9"), (6, "student_id", "P8")]
    assert checked.model is not None and checked.model.rosters.height == 3
    assert checked.patched == {"rosters": 2} and checked.summary.height == 2


def test_patching_off_makes_dangling_references_errors() -> None:
    """With patch.rosters off, the same row is a REFERENCE_MISSING error."""
    files = asm_files()
    files["rosters.csv"] += "R4,K2,P9\n"
    checked = check(files, patch={"rosters": False})
    issue = only(checked, "REFERENCE_MISSING")
    assert (issue["severity"], issue["line"]) == ("error", 5)


def test_email_missing_and_invalid() -> None:
    """Missing email warns; an apostrophe or malformed email warns and is dropped."""
    files = asm_files()
    files["students.csv"] = (
        files["students.csv"]
        .replace("jose.garcia@d.example", "")
        .replace("zoe.obrien@d.example", "zoe.o'brien@d.example")
        .replace("li.chen@d.example", "li.chen@@d")
    )
    checked = check(files)
    missing = only(checked, "EMAIL_MISSING")
    assert (missing["severity"], missing["file"], missing["line"], missing["column"]) == (
        "warning", "students.csv", 2, "email_address")
    invalid = sorted(issues_of(checked, "EMAIL_INVALID"), key=lambda i: i["line"])
    assert [(i["line"], i["value"]) for i in invalid] == [
        (3, "zoe.o'brien@d.example"), (4, "li.chen@@d")]
    assert "apostrophe" in invalid[0]["message"]
    assert checked.model is not None
    assert checked.model.people["email_address"].null_count() == 3


def test_semicolon_separated_asm() -> None:
    """ASM files may use ';' as separator, decided per file."""
    files = asm_files()
    files["courses.csv"] = files["courses.csv"].replace(",", ";")
    checked = check(files)
    assert checked.status == "ok", checked.issues.frame().to_dicts()


def test_school_filter_names_itself_in_reference_error() -> None:
    """A class whose course sits at a filtered-out school: the message names the filter."""
    files = asm_files()
    files["courses.csv"] = files["courses.csv"].replace("C2,SCI6,Science,S2",
                                                        "C2,SCI6,Science,S1")
    files["classes.csv"] = files["classes.csv"].replace("K1,1,C1", "K1,1,C2")
    checked = check(files, filter={"schools": ["S2"]})
    issue = next(i for i in issues_of(checked, "REFERENCE_MISSING")
             if i["file"] == "classes.csv")
    assert "filter.schools" in issue["message"]
    assert checked.filtered["courses"] >= 1


def test_school_filter_removes_other_schools() -> None:
    """Only the chosen school's records survive; filtered counts are reported."""
    checked = check(asm_files(), filter={"schools": ["S1"]})
    assert checked.issues.frame().to_dicts() == []
    model = checked.model
    assert model is not None
    assert model.people["person_id"].sort().to_list() == ["P1", "P2", "T1"]
    assert model.classes["class_id"].to_list() == ["K1"]
    assert checked.filtered == {"locations": 1, "people": 2, "courses": 1, "classes": 1,
                                "instructors": 1, "rosters": 1}


def test_roles_filter() -> None:
    """roles = ["student"] drops staff; their instructor references go with them
    (filtered, not patched: no issue), and the classes stay, with no instructor."""
    checked = check(asm_files(), filter={"roles": ["student"]})
    model = checked.model
    assert model is not None
    assert set(model.people["role"].to_list()) == {"student"}
    assert model.classes.height == 2 and model.instructors.height == 0
    assert checked.issues.frame().to_dicts() == []
    assert checked.patched == {}
    assert checked.filtered == {"people": 2, "instructors": 2}
