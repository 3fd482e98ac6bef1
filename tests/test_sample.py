"""``rosterdrop sample``: synthetic uploads that are deterministic, shaped like
performance.md's workloads, and valid per formats.md except for a few email
warnings."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from rosterdrop.errors import InputError, UsageError
from rosterdrop.tools.sample import LAYOUTS, Layout, ascii_fold, school_count, write_sample

STUDENTS = 1_500

# Headers copied from formats.md (not from sample.py, so a typo there shows up here).
ORGS = "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId"
SESSIONS = ("sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,"
            "schoolYear")
COURSES = ("sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,"
           "orgSourcedId,subjects,subjectCodes")
CLASSES = ("sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,"
           "location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods")
ENROLLMENTS = ("sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,"
               "role,primary,beginDate,endDate")
EXPECTED_HEADERS: dict[str, dict[str, str]] = {
    "oneroster-1.1": {
        "manifest.csv": "propertyName,value",
        "orgs.csv": ORGS,
        "academicSessions.csv": SESSIONS,
        "courses.csv": COURSES,
        "classes.csv": CLASSES,
        "users.csv": "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,"
        "userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,"
        "grades,password",
        "enrollments.csv": ENROLLMENTS,
    },
    "oneroster-1.2": {
        "manifest.csv": "propertyName,value",
        "orgs.csv": ORGS,
        "academicSessions.csv": SESSIONS,
        "courses.csv": COURSES,
        "classes.csv": CLASSES,
        "users.csv": "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,"
        "familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,"
        "userMasterIdentifier,preferredGivenName,preferredMiddleName,preferredFamilyName,"
        "primaryOrgSourcedId,pronouns",
        "roles.csv": "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,"
        "endDate,orgSourcedId,userProfileSourcedId",
        "enrollments.csv": ENROLLMENTS,
    },
    "asm": {
        "locations.csv": "location_id,location_name",
        "students.csv": "person_id,person_number,first_name,middle_name,last_name,grade_level,"
        "email_address,sis_username,password_policy,location_id",
        "staff.csv": "person_id,person_number,first_name,middle_name,last_name,email_address,"
        "sis_username,location_id",
        "courses.csv": "course_id,course_number,course_name,location_id",
        "classes.csv": "class_id,class_number,course_id,instructor_id,instructor_id_2,"
        "instructor_id_3,location_id",
        "rosters.csv": "roster_id,class_id,student_id",
    },
}
MANIFEST_FILES = {
    "1.1": "academicSessions categories classResources classes courseResources courses "
    "demographics enrollments lineItems orgs resources results users",
    "1.2": "academicSessions categories classResources classes courseResources courses "
    "demographics enrollments lineItemLearningObjectiveIds lineItemScoreScales lineItems orgs "
    "resources resultLearningObjectiveIds resultScoreScales results roles scoreScales "
    "userProfiles userResources users",
}
ID = re.compile(r"^[A-Za-z0-9_.-]+$")
DATE = r"^\d{4}-\d{2}-\d{2}$"


def read_zip(path: Path) -> dict[str, pl.DataFrame]:
    with zipfile.ZipFile(path) as zf:
        return {
            name: pl.read_csv(io.BytesIO(zf.read(name)), infer_schema=False)
            for name in zf.namelist()
        }


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, int]]]:
    folder = tmp_path_factory.mktemp("samples")
    made: dict[str, tuple[Path, dict[str, int]]] = {}
    for layout in LAYOUTS:
        path = folder / f"{layout}.zip"
        made[layout] = (path, write_sample(path, layout=layout, students=STUDENTS, seed=7))
    return made


def assert_within(frame: pl.DataFrame, column: str, targets: pl.Series) -> None:
    values = frame[column].drop_nulls()
    missing = values.filter(~values.is_in(targets.implode()))
    assert missing.is_empty(), f"{column} names unknown ids: {missing.head(5).to_list()}"


def assert_unique(frame: pl.DataFrame, column: str) -> None:
    assert frame[column].null_count() == 0, f"{column} has blanks"
    assert frame[column].n_unique() == frame.height, f"{column} has duplicates"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, layout: Layout) -> None:
    """The same (layout, students, seed) writes byte-identical ZIPs; another seed does not."""
    a, b, c = tmp_path / "a.zip", tmp_path / "b.zip", tmp_path / "c.zip"
    write_sample(a, layout=layout, students=300, seed=1)
    write_sample(b, layout=layout, students=300, seed=1)
    write_sample(c, layout=layout, students=300, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert {info.date_time for info in zf.infolist()} == {(2026, 8, 1, 0, 0, 0)}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_files_and_headers_exactly_as_formats_md(
    samples: dict[str, tuple[Path, dict[str, int]]], layout: Layout
) -> None:
    """Each layout's ZIP holds exactly its files, flat, each header exactly as formats.md lists it."""
    path, _ = samples[layout]
    expected = EXPECTED_HEADERS[layout]
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(expected)
        for name, header in expected.items():
            first_line = zf.read(name).split(b"\n", 1)[0].decode()
            assert first_line == header, name
            assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in zf.infolist())


def test_counts_follow_the_performance_shape(
    samples: dict[str, tuple[Path, dict[str, int]]],
) -> None:
    """Counts match the files and performance.md's shape: staff = students/14, ~8 classes per
    student in sections of ~25, one primary teacher per class, some co-teachers."""
    path, counts = samples["oneroster-1.1"]
    files = read_zip(path)
    users, enrollments = files["users.csv"], files["enrollments.csv"]
    assert counts["students"] == STUDENTS == users.filter(pl.col("role") == "student").height
    assert counts["staff"] == round(STUDENTS / 14) == users.height - STUDENTS
    assert counts["schools"] == school_count(STUDENTS) == files["orgs.csv"].height - 1
    assert counts["courses"] == files["courses.csv"].height
    assert counts["classes"] == files["classes.csv"].height
    assert counts["enrollments"] == enrollments.height
    assert STUDENTS * 8 / 25 * 0.85 <= counts["classes"] <= STUDENTS * 8 / 25 * 1.2

    per_student = enrollments.filter(pl.col("role") == "student").group_by("userSourcedId").len()
    assert per_student.height == STUDENTS
    assert per_student["len"].unique().to_list() == [8]
    teachers = enrollments.filter(pl.col("role") == "teacher")
    primary = teachers.filter(pl.col("primary") == "true").group_by("classSourcedId").len()
    assert primary.height == counts["classes"] and primary["len"].max() == 1
    assert teachers.filter(pl.col("primary") == "false").height > 0
    # students are enrolled only in classes of their own school,
    # and every enrollment is in one of the person's schools
    schools = users.select("sourcedId", schools=pl.col("orgSourcedIds").str.split(","))
    joined = enrollments.join(schools, left_on="userSourcedId", right_on="sourcedId")
    assert joined.select(pl.col("schools").list.contains(pl.col("schoolSourcedId")).all()).item()


def test_school_count_interpolates_the_workload_table() -> None:
    """Schools are 5 / 40 / 150 / 1,000 for 2k / 25k / 100k / 1M students, at least 1."""
    assert [school_count(n) for n in (2_000, 25_000, 100_000, 1_000_000)] == [5, 40, 150, 1000]
    assert school_count(1) == 1
    assert 40 < school_count(50_000) < 150
    sizes = [school_count(n) for n in range(1, 200_000, 997)]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("layout", ["oneroster-1.1", "oneroster-1.2"])
def test_oneroster_ids_unique_and_references_resolve(
    samples: dict[str, tuple[Path, dict[str, int]]], layout: Layout
) -> None:
    """OneRoster: sourcedIds unique per file, every reference names an existing record."""
    files = read_zip(samples[layout][0])
    for name, frame in files.items():
        if name != "manifest.csv":
            assert_unique(frame, "sourcedId")
    orgs, users, sessions = files["orgs.csv"], files["users.csv"], files["academicSessions.csv"]
    classes, courses, enrollments = files["classes.csv"], files["courses.csv"], files[
        "enrollments.csv"]
    schools = orgs.filter(pl.col("type") == "school")["sourcedId"]
    assert_within(orgs, "parentSourcedId", orgs["sourcedId"])
    assert_within(sessions, "parentSourcedId", sessions["sourcedId"])
    assert_within(courses, "orgSourcedId", schools)
    assert_within(courses, "schoolYearSourcedId", sessions["sourcedId"])
    assert_within(classes, "courseSourcedId", courses["sourcedId"])
    assert_within(classes, "schoolSourcedId", schools)
    assert_within(classes, "termSourcedIds", sessions["sourcedId"])  # one term per class
    assert_within(enrollments, "classSourcedId", classes["sourcedId"])
    assert_within(enrollments, "schoolSourcedId", schools)
    assert_within(enrollments, "userSourcedId", users["sourcedId"])
    if layout == "oneroster-1.1":
        org_lists = users.select(pl.col("orgSourcedIds").str.split(",").explode())
        assert_within(org_lists, "orgSourcedIds", schools)
        assert users["orgSourcedIds"].str.contains(",").any()  # some staff in two schools
    else:
        roles = files["roles.csv"]
        assert_unique(roles, "sourcedId")
        assert_within(roles, "userSourcedId", users["sourcedId"])
        assert_within(roles, "orgSourcedId", schools)
        assert_within(users, "primaryOrgSourcedId", schools)
        primary = roles.filter(pl.col("roleType") == "primary")
        assert primary["userSourcedId"].sort().to_list() == users["sourcedId"].sort().to_list()


def test_asm_ids_unique_and_references_resolve(
    samples: dict[str, tuple[Path, dict[str, int]]],
) -> None:
    """ASM: IDs unique (person_id across students and staff), every reference resolves,
    classes have a first instructor and some a second or third."""
    files = read_zip(samples["asm"][0])
    for name, column in [("locations.csv", "location_id"), ("courses.csv", "course_id"),
                         ("classes.csv", "class_id"), ("rosters.csv", "roster_id")]:
        assert_unique(files[name], column)
    students, staff = files["students.csv"], files["staff.csv"]
    assert_unique(pl.concat([students.select("person_id"), staff.select("person_id")]),
                  "person_id")
    locations = files["locations.csv"]["location_id"]
    for name in ("students.csv", "staff.csv", "courses.csv", "classes.csv"):
        assert_within(files[name], "location_id", locations)
    classes = files["classes.csv"]
    assert_within(classes, "course_id", files["courses.csv"]["course_id"])
    for column in ("instructor_id", "instructor_id_2", "instructor_id_3"):
        assert_within(classes, column, staff["person_id"])
    assert classes["instructor_id"].null_count() == 0
    assert classes["instructor_id_2"].null_count() < classes.height
    assert_within(files["rosters.csv"], "class_id", classes["class_id"])
    assert_within(files["rosters.csv"], "student_id", students["person_id"])
    assert set(students["password_policy"].drop_nulls()) == {"4", "6", "8"}
    assert students["password_policy"].null_count() > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_values_are_valid(
    samples: dict[str, tuple[Path, dict[str, int]]], layout: Layout
) -> None:
    """IDs use only letters, digits, '-', '_', '.'; enumerations, booleans and dates are
    allowed values; bulk rows leave status and dateLastModified blank."""
    files = read_zip(samples[layout][0])
    id_columns = {"sourcedId", "userSourcedId", "classSourcedId", "courseSourcedId",
                  "schoolSourcedId", "orgSourcedId", "parentSourcedId", "termSourcedIds",
                  "person_id", "location_id", "course_id", "class_id", "roster_id",
                  "student_id", "instructor_id", "instructor_id_2", "instructor_id_3"}
    for name, frame in files.items():
        for column in id_columns & set(frame.columns):
            bad = [v for v in frame[column].drop_nulls() if not ID.match(v)]
            assert not bad, f"{name}.{column}: {bad[:3]}"
        for column in ("status", "dateLastModified"):
            if name != "manifest.csv" and column in frame.columns:
                assert frame[column].null_count() == frame.height
    if layout == "asm":
        return
    allowed = {
        ("orgs.csv", "type"): {"district", "school"},
        ("academicSessions.csv", "type"): {"schoolYear", "semester", "gradingPeriod", "term"},
        ("classes.csv", "classType"): {"homeroom", "scheduled"},
        ("enrollments.csv", "role"): {"student", "teacher"},
        ("enrollments.csv", "primary"): {"true", "false"},
        ("users.csv", "enabledUser"): {"true"},
    }
    if layout == "oneroster-1.1":
        allowed[("users.csv", "role")] = {"student", "teacher", "administrator", "aide"}
    else:
        allowed[("roles.csv", "roleType")] = {"primary", "secondary"}
        allowed[("roles.csv", "role")] = {
            "student", "teacher", "aide", "principal", "siteAdministrator"}
    for (name, column), values in allowed.items():
        assert set(files[name][column]) <= values, (name, column)
    sessions = files["academicSessions.csv"]
    for column in ("startDate", "endDate"):
        assert sessions[column].str.contains(DATE).all()
    assert (sessions["startDate"] < sessions["endDate"]).all()
    manifest = dict(files["manifest.csv"].iter_rows())
    version = layout.removeprefix("oneroster-")
    assert manifest["manifest.version"] == "1.0"
    assert manifest["oneroster.version"] == version
    supplied = {name.removesuffix(".csv") for name in files} - {"manifest"}
    declared = {key.removeprefix("file."): value for key, value in manifest.items()
                if key.startswith("file.")}
    assert sorted(declared) == sorted(MANIFEST_FILES[version].split())
    assert {name for name, mode in declared.items() if mode == "bulk"} == supplied
    assert {mode for name, mode in declared.items() if name not in supplied} == {"absent"}


def test_people_look_real(samples: dict[str, tuple[Path, dict[str, int]]]) -> None:
    """Names carry accents and apostrophes, middle names are sometimes blank, ~2 % of emails
    are missing and a handful hold an apostrophe; person numbers and usernames are unique."""
    users = read_zip(samples["oneroster-1.1"][0])["users.csv"]
    names = pl.concat([users["givenName"], users["familyName"]])
    assert names.str.contains("'").any()
    assert names.str.contains("[éëöüễñçåøłš]").any()
    assert 0 < users["middleName"].null_count() < users.height
    missing = users["email"].null_count()
    assert 0.01 * users.height <= missing <= 0.03 * users.height
    with_apostrophe = users.filter(pl.col("email").str.contains("'"))
    assert 1 <= with_apostrophe.height <= 5
    assert with_apostrophe["email"].str.contains(r"^[a-z]+'[a-z]+\.[a-z]+\d+@").all()
    others = users["email"].drop_nulls().filter(~users["email"].drop_nulls().str.contains("'"))
    assert others.str.contains(r"^[a-z0-9.]+@[a-z.]+\.example$").all()
    assert_unique(users, "identifier")
    assert_unique(users, "username")


def test_ascii_fold_for_emails() -> None:
    """Emails and usernames fold names to lower-case ASCII; apostrophes only when asked."""
    assert ascii_fold("Nguyễn") == "nguyen"
    assert ascii_fold("Øvergaard") == "overgaard"
    assert ascii_fold("O'Brien") == "obrien"
    assert ascii_fold("D'Angelo", keep="'") == "d'angelo"
    assert ascii_fold("Weiß") == "weiss"
    assert ascii_fold("De la Cruz") == "delacruz"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tiny_district_is_still_valid(tmp_path: Path, layout: Layout) -> None:
    """One student still gives one K-12 school, a teacher, 8 classes and valid references."""
    counts = write_sample(tmp_path / "one.zip", layout=layout, students=1)
    assert counts["schools"] == 1 and counts["students"] == 1 and counts["staff"] == 1
    assert counts["classes"] == 8
    assert counts.get("enrollments", counts.get("rosters")) in (8, 16)


def test_bad_arguments_and_unwritable_paths(tmp_path: Path) -> None:
    """Errors are rosterdrop's own: UsageError for arguments, InputError for the path,
    and no partial file is left behind."""
    with pytest.raises(UsageError):
        write_sample(tmp_path / "x.zip", layout="csv", students=10)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        write_sample(tmp_path / "x.zip", layout="asm", students=0)
    with pytest.raises(InputError):
        write_sample(tmp_path / "missing" / "x.zip", layout="asm", students=10)
    assert list(tmp_path.iterdir()) == []


def test_cli_sample_writes_and_summarises(tmp_path: Path) -> None:
    """`rosterdrop sample` writes the ZIP and prints the counts."""
    from rosterdrop.cli import cli

    out = tmp_path / "demo.zip"
    result = CliRunner().invoke(
        cli, ["sample", str(out), "--layout", "oneroster-1.2", "--students", "200", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "200 students" in result.output
    assert zipfile.is_zipfile(out)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_validate_finds_only_email_warnings(
    samples: dict[str, tuple[Path, dict[str, int]]], layout: Layout,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rosterdrop validate --json` on a sample ends with warnings only, all of them
    EMAIL_MISSING or EMAIL_INVALID."""
    from rosterdrop.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROSTERDROP_CONFIG", raising=False)
    path, counts = samples[layout]
    result = CliRunner().invoke(cli, ["validate", str(path), "--json"])
    assert not isinstance(result.exception, Exception), result.exception  # no traceback
    document = json.loads(result.output)
    assert document["status"] == "warnings", document["errors"][:3]
    assert result.exit_code == 0
    assert set(document["issue_counts"]) == {"EMAIL_MISSING", "EMAIL_INVALID"}
    assert document["counts"]["students"] == counts["students"]
    assert document["counts"]["staff"] == counts["staff"]
    assert document["counts"]["classes"] == counts["classes"]
