"""Uploads in another roster format get one FORMAT_FOREIGN naming it; near misses of
rosterdrop's own layouts keep their normal diagnosis.

The corpus is tests/data/foreign/: one folder per format (headers from public specs
and samples, each folder's SOURCE.md says which; the rows are made up). ZIPs are
built from it in the test.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rosterdrop.config import LimitSettings
from rosterdrop.pipeline.archive import HEAD_BYTES, open_upload
from rosterdrop.pipeline.foreign import header_row, identify
from rosterdrop.pipeline.issues import IssueLog
from uploads import SAMPLES, asm_files, check, make_zip, needs_samples, oneroster_files

CORPUS = Path(__file__).parent / "data" / "foreign"

EXPECTED = {
    # folder: (the format as the issue's value names it, words of its how-to)
    "clever": ("Clever", "Clever gets its data from the district's SIS"),
    "sds-v1": ("Microsoft School Data Sync v1", "SDS's own CSV format"),
    "sds-v1-uk": ("Microsoft School Data Sync v1 (UK format)", "SDS's own CSV format"),
    "sds-v2": ("Microsoft School Data Sync v2", "not converted for SDS"),
    "sds-v2.1": ("Microsoft School Data Sync v2.1", "not converted for SDS"),
    "oneroster-1.0": ("OneRoster 1.0", "choose version 1.1 or 1.2"),
    "canvas": ("Canvas SIS CSV", "import format of the Canvas LMS"),
    "google-workspace": ("Google Workspace", "A list of accounts has no schools"),
    "google-class-list": ("Google Classroom or spreadsheet",
                          "A list of names and email addresses has no schools"),
}


def _corpus(folder: str) -> dict[str, str | bytes]:
    return {p.name: p.read_bytes() for p in sorted((CORPUS / folder).glob("*.csv"))}


def _issues(files: dict[str, str | bytes] | bytes) -> list[dict[str, object]]:
    return check(files).issues.frame().to_dicts()


def test_corpus_has_a_folder_per_expected_format() -> None:
    """Every corpus folder is checked below, and every one says where its header is from."""
    folders = {p.name for p in CORPUS.iterdir() if p.is_dir()}
    assert folders == set(EXPECTED)
    for folder in folders:
        source = (CORPUS / folder / "SOURCE.md").read_text(encoding="utf-8")
        assert "https://" in source and "icen" in source, folder  # a URL and its licence


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_foreign_upload_gets_exactly_one_format_foreign(folder: str) -> None:
    """The whole upload is one error naming the format, what rosterdrop reads and how to
    get it from the system that made the files; nothing is read past the header rows."""
    label, how = EXPECTED[folder]
    checked = check(_corpus(folder))
    issues = checked.issues.frame().to_dicts()
    assert [(i["code"], i["severity"]) for i in issues] == [("FORMAT_FOREIGN", "error")], issues
    issue = issues[0]
    assert issue["value"] == label
    message = str(issue["message"])
    assert message.startswith(f"This upload is a {label} ")
    assert "OneRoster CSV 1.1 or 1.2, or Apple School Manager CSV" in message
    assert how in message
    assert issue["file"] in _corpus(folder)
    assert f"({issue['file']} has " in message
    assert checked.layout is None and checked.model is None
    assert checked.status == "failed"


def test_clever_is_no_longer_called_a_mix_of_asm_and_oneroster() -> None:
    """Clever's students.csv and enrollments.csv used to read as ASM mixed with OneRoster."""
    issues = _issues(_corpus("clever"))
    assert "mixes" not in str(issues[0]["message"])
    assert "students.csv has Clever's School_id and Student_id columns" in str(
        issues[0]["message"])


def test_sds_v2_role_case_is_not_a_value_case_flood() -> None:
    """SDS v2 writes roles as 'Student': one FORMAT_FOREIGN, no VALUE_CASE per row."""
    files = _corpus("sds-v2")
    rows = "".join(f"SEC1,STU{n},Student\n" for n in range(100, 146))
    files["enrollments.csv"] = bytes(files["enrollments.csv"]) + rows.encode()
    assert [i["code"] for i in _issues(files)] == ["FORMAT_FOREIGN"]


def test_validate_cli_reports_the_one_issue(tmp_path: Path) -> None:
    """`rosterdrop validate --json` on a Canvas ZIP: exit 1, one error, no warnings."""
    upload = tmp_path / "canvas.zip"
    upload.write_bytes(make_zip(_corpus("canvas")))
    result = subprocess.run(
        [sys.executable, "-m", "rosterdrop", "validate", str(upload), "--json"], cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "failed" and doc["layout"] is None
    assert doc["issue_counts"] == {"FORMAT_FOREIGN": 1} and doc["warnings"] == []
    assert "Canvas SIS CSV" in doc["errors"][0]["message"]


def test_archive_problems_already_found_are_kept() -> None:
    """A non-CSV file beside a Clever export is still reported (it is a fact about the ZIP);
    nothing from the layout, header or value checks is added."""
    files = {**_corpus("clever"), "readme.txt": "exported by hand"}
    assert sorted(str(i["code"]) for i in _issues(files)) == [
        "FORMAT_FOREIGN", "ZIP_UNEXPECTED_FILE"]


# --- near misses keep their normal diagnosis --------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_oneroster_without_manifest_is_not_foreign(version: str) -> None:
    """OneRoster 1.1/1.2 that lacks its manifest is read as before, with the warning."""
    files = oneroster_files(version)
    del files["manifest.csv"]
    checked = check(files)
    assert checked.layout == f"oneroster-{version}"
    codes = [i["code"] for i in checked.issues.frame().to_dicts()]
    assert codes == ["MANIFEST_INVALID"]


def test_oneroster_11_with_a_10_column_name_is_not_foreign() -> None:
    """A 1.1 export without manifest whose classes.csv says termSourcedId (1.0's name) is
    still 1.1: its users.csv has enabledUser, which 1.0 never had."""
    files = oneroster_files("1.1")
    del files["manifest.csv"]
    files["classes.csv"] = str(files["classes.csv"]).replace("termSourcedIds", "termSourcedId")
    checked = check(files)
    assert checked.layout == "oneroster-1.1"
    issues = checked.issues.frame().to_dicts()
    assert "FORMAT_FOREIGN" not in {i["code"] for i in issues}
    assert {i["file"] for i in issues if i["code"] != "MANIFEST_INVALID"} == {"classes.csv"}


@pytest.mark.parametrize(("file", "column", "typo"), [
    ("students.csv", "first_name", "frist_name"),
    ("locations.csv", "location_id", "locaton_id"),
    ("rosters.csv", "roster_id", "Roster ID"),
])
def test_asm_with_a_header_typo_is_not_foreign(file: str, column: str, typo: str) -> None:
    """An ASM upload with one misspelt column gets the header diagnosis for that file."""
    files = asm_files()
    files[file] = files[file].replace(column, typo, 1)
    checked = check(files)
    assert checked.layout == "asm"
    issues = checked.issues.frame().to_dicts()
    assert issues and "FORMAT_FOREIGN" not in {i["code"] for i in issues}
    assert {i["file"] for i in issues} == {file}


def test_asm_with_a_stray_clever_file_is_not_foreign() -> None:
    """One Clever file in an ASM upload is an unexpected file of the ASM upload."""
    files: dict[str, str | bytes] = {**asm_files(),
                                     "teachers.csv": _corpus("clever")["teachers.csv"]}
    issues = _issues(files)
    assert [(i["code"], i["file"]) for i in issues] == [("ZIP_UNEXPECTED_FILE", "teachers.csv")]


def test_a_manifest_rules_foreign_out() -> None:
    """With a manifest.csv the upload is OneRoster, whatever else its files look like."""
    assert identify(["manifest.csv", "students.csv"],
                    {"manifest.csv": ["propertyName", "value"],
                     "students.csv": ["School_id", "Student_id"]}) is None


def test_unknown_csvs_stay_format_unknown() -> None:
    """A CSV of no known format is still FORMAT_UNKNOWN, not guessed at."""
    assert [i["code"] for i in _issues({"data.csv": "a,b\n1,2\n"})] == ["FORMAT_UNKNOWN"]


@needs_samples
@pytest.mark.parametrize("sample", ["roster-hub-v1p1-bulk", "moodle-v1p2-delta",
                                    "moodle-v1p1-dirty"])
def test_real_oneroster_headers_are_never_foreign(sample: str) -> None:
    """Real public OneRoster 1.1/1.2 exports (read in place), even without their manifest."""
    folder = SAMPLES / sample
    headers = {p.name: header_row(p.read_bytes()) for p in folder.glob("*.csv")
               if p.name != "manifest.csv"}
    assert identify(sorted(headers), headers) is None


# --- the pure recogniser ----------------------------------------------------------------


def test_sds_v21_users_only_flow() -> None:
    """SDS v2.1 managing users only (orgs, users, roles) is still recognised, as v2.1."""
    headers = {name: header_row((CORPUS / "sds-v2.1" / name).read_bytes())
               for name in ("orgs.csv", "users.csv", "roles.csv")}
    found = identify(sorted(headers), headers)
    assert found is not None and found.label == "Microsoft School Data Sync v2.1"


def test_oneroster_10_needs_its_own_columns() -> None:
    """OneRoster-style files with dateLastModified but no 1.0-only column are left alone."""
    headers = {"orgs.csv": ["sourcedId", "status", "dateLastModified", "name", "type"]}
    assert identify(["orgs.csv"], headers) is None
    headers["users.csv"] = ["sourcedId", "status", "dateLastModified", "userId", "role"]
    found = identify(sorted(headers), headers)
    assert found is not None and found.label == "OneRoster 1.0" and found.file == "users.csv"


@pytest.mark.parametrize(("raw", "expected"), [
    (b"a,b,c\r\n1,2,3\r\n", ["a", "b", "c"]),
    (b"\xef\xbb\xbfSchool_id,Student_id\n", ["School_id", "Student_id"]),
    ("SIS ID,Name\n".encode("utf-16"), ["SIS ID", "Name"]),
    (b'"Last Name","First Name","Email Address"\n', ["Last Name", "First Name",
                                                     "Email Address"]),
    (b"person_id;first_name\n", ["person_id", "first_name"]),
    (b"Caf\xe9 Name,x\n", ["Café Name", "x"]),
    (b"", []),
    (b"\n\n", []),
])
def test_header_row(raw: bytes, expected: list[str]) -> None:
    """The first line, whatever the encoding, line ends or quoting."""
    assert header_row(raw) == expected


_COLUMNS = st.sampled_from([
    "School_id", "Student_id", "SIS ID", "sourcedId", "status", "dateLastModified",
    "userId", "enabledUser", "classSourcedId", "userSourcedId", "role", "user_id",
    "login_id", "person_id", "First Name", "Email Address [Required]", "x",
]) | st.text(max_size=12)
_NAMES = st.sampled_from([
    "users.csv", "students.csv", "enrollments.csv", "Student.csv", "roles.csv",
    "courses.csv", "classes.csv", "manifest.csv", "a.csv",
])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_NAMES, st.lists(_COLUMNS, max_size=8), max_size=6))
def test_identify_never_raises_and_spares_asm_and_manifests(
        headers: dict[str, list[str]]) -> None:
    """Any names and headers: an answer, never an exception; never foreign with a manifest
    or an ASM column, and always a file of the upload as the evidence."""
    found = identify(sorted(headers), headers)
    columns = {c.strip().lower() for row in headers.values() for c in row}
    if "manifest.csv" in headers or "person_id" in columns:
        assert found is None
    if found is not None:
        assert found.file in headers and found.file in found.message()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_header_row_never_raises(raw: bytes) -> None:
    """Arbitrary bytes give a list of strings."""
    row = header_row(raw)
    assert all(isinstance(c, str) for c in row)


# --- reading only the head ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["deflated", "stored"])
def test_head_inflates_only_its_limit(method: str) -> None:
    """A large entry gives its first HEAD_BYTES and no more; the entry still reads whole."""
    body = b"user_id,login_id,status\n" + b"".join(
        f"U{n},login{n},active\n".encode() for n in range(400_000))
    compression = zipfile.ZIP_DEFLATED if method == "deflated" else zipfile.ZIP_STORED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr("users.csv", body)
    issues = IssueLog()
    opened = open_upload(buffer.getvalue(), LimitSettings(), issues)
    assert opened is not None
    with opened:
        head = opened.head("users.csv")
        assert head == body[:HEAD_BYTES]
        assert opened.read("users.csv") == body
    assert len(issues) == 0


def test_head_of_a_damaged_entry_is_none_and_reports_nothing() -> None:
    """A head that cannot be had is None, silently: reading the upload reports it later."""
    raw = bytearray(make_zip({"users.csv": "user_id,login_id\n" * 1000}))
    at = raw.find(b"PK\x03\x04")
    raw[at + 30: at + 39] = b"xxxxxxxxx"  # the local header names another file
    issues = IssueLog()
    opened = open_upload(bytes(raw), LimitSettings(), issues)
    assert opened is not None
    with opened:
        assert opened.head("users.csv") is None
    assert len(issues) == 0


def test_head_of_corrupt_deflate_data_is_none() -> None:
    """Garbage where deflate data should be (a reserved block type): None, no exception;
    the full read then reports the entry."""
    raw = bytearray(make_zip({"users.csv": "user_id,login_id\nU1,a\n"}))
    start = raw.find(b"users.csv") + len("users.csv")  # the local header's name ends here
    raw[start: start + 4] = b"\xff\xff\xff\xff"
    issues = IssueLog()
    opened = open_upload(bytes(raw), LimitSettings(), issues)
    assert opened is not None
    with opened:
        assert opened.head("users.csv") is None
        assert len(issues) == 0
        assert opened.read("users.csv") is None
    assert [i.code for i in issues] == ["ZIP_UNREADABLE"]


# --- a folder holding the CSV files -------------------------------------------------------


def test_folder_of_csvs_is_one_nested_folder_issue() -> None:
    """The export folder zipped: one ZIP_NESTED_FOLDER naming the folder and its CSV files,
    and no FORMAT_UNKNOWN saying the ZIP holds no CSV files."""
    files = {f"export/{name}": content for name, content in asm_files().items()}
    issues = _issues({"export/": "", **files})
    assert [(i["code"], i["file"]) for i in issues] == [("ZIP_NESTED_FOLDER", "export/")]
    message = str(issues[0]["message"])
    assert "holding 6 CSV files" in message
    assert all(f"'{name}'" in message for name in files)
    assert "no CSV files" not in message


def test_folder_of_many_csvs_names_six_and_counts_the_rest() -> None:
    """More than six files: six are named, the rest counted."""
    files = {f"data/f{n}.csv": "a\n" for n in range(9)}
    message = str(_issues(files)[0]["message"])
    assert "holding 9 CSV files" in message and "and 3 more" in message
    assert "'data/f5.csv'" in message and "'data/f6.csv'" not in message


def test_folder_without_csvs_still_says_none_were_found() -> None:
    """A folder of non-CSV files (an Excel workbook's insides) keeps FORMAT_UNKNOWN too:
    there really are no CSV files."""
    issues = _issues({"xl/workbook.xml": "<workbook/>", "xl/styles.xml": "<styles/>"})
    assert [i["code"] for i in issues] == ["ZIP_NESTED_FOLDER", "FORMAT_UNKNOWN"]
    assert "no CSV files" in str(issues[1]["message"])
