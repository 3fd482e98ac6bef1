"""Filters that do what an admin means (issue 16, part 6): nothing a filter removes is
an issue; what it removes, and what only references that, is counted in ``filtered``
and listed in the patch summary. ``today`` is uploads.TODAY, 2026-11-23."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from rosterdrop.config import parse_settings
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import open_store
from uploads import asm_files, check, make_zip, oneroster_files


def reasons(summary: pl.DataFrame) -> dict[str, str]:
    """record_id → reason of the patch summary."""
    return dict(zip(summary["record_id"].to_list(), summary["reason"].to_list(), strict=True))


# --- roles: nothing a role filter removes is an issue -----------------------------------


@pytest.mark.parametrize("patching", [True, False])
def test_staff_only_oneroster_has_no_issue(patching: bool) -> None:
    """roles = ["staff"] on an upload with students: the students and their enrollments
    are filtered, listed, and not issues — with patching off too (the old rule made each
    enrollment a PATCHED_REFERENCE warning, or a REFERENCE_MISSING error)."""
    checked = check(oneroster_files(), filter={"roles": ["staff"]},
                    patch={"instructors": patching, "rosters": patching})
    assert checked.issues.frame().to_dicts() == []
    assert checked.status == "ok"
    assert checked.filtered == {"people": 2, "rosters": 2}
    assert checked.patched == {}
    assert checked.model is not None
    assert checked.model.people["person_id"].to_list() == ["U9"]
    assert checked.model.rosters.height == 0
    assert checked.model.instructors.height == 1  # the teacher's enrollment stays
    why = reasons(checked.summary)
    assert set(why) == {"U1", "U2", "E2", "E3"}
    assert why["U1"] == "filtered: role; filter.roles does not include student"
    assert why["E2"].startswith("filtered: role; its student U1 was removed (")
    rows = checked.summary.filter(pl.col("record_id") == "E3").to_dicts()
    assert [(r["file"], r["line"], r["field"], r["value"]) for r in rows] == [
        ("enrollments.csv", 4, "userSourcedId", "U2")]


def test_students_only_asm_drops_instructor_references_quietly() -> None:
    """roles = ["student"] on ASM: the staff go, the classes stay without instructors."""
    checked = check(asm_files(), filter={"roles": ["student"]}, patch={"instructors": False})
    assert checked.issues.frame().to_dicts() == []
    assert checked.filtered == {"people": 2, "instructors": 2}
    assert checked.model is not None and checked.model.classes.height == 2
    instructor_rows = checked.summary.filter(pl.col("field") == "instructor_id")
    assert sorted(instructor_rows["value"].to_list()) == ["T1", "T2"]


def test_a_reference_broken_in_the_upload_is_still_patched() -> None:
    """Patching stays for what the upload itself gets wrong: a roster row naming a student
    who is in no file is a warning even while a role filter removes other people."""
    files = oneroster_files()
    files["enrollments.csv"] += "E4,,,K1,S1,U404,student,false,,\n"
    checked = check(files, filter={"roles": ["student"]})
    assert [(i["code"], i["value"]) for i in checked.issues.frame().to_dicts()] == [
        ("PATCHED_REFERENCE", "U404")]
    assert checked.patched == {"rosters": 1}
    assert checked.filtered == {"people": 1, "instructors": 1}


@pytest.mark.parametrize("backend_url", ["sqlite"], indirect=True)
def test_staff_only_sync_completes(tmp_path: Path, backend_url: str) -> None:
    """The same filter in a real sync, patching off: completed, no warnings, and the
    patch summary the admin gets lists the filtered students and enrollments."""
    settings = parse_settings({
        "state_dir": str(tmp_path / "state"), "store": {"url": backend_url},
        "tenants": {"t": {"name": "T", "report_to": ["a@t.example"],
                          "account_domain": "t.example",
                          "filter": {"roles": ["staff"]},
                          "patch": {"instructors": False, "rosters": False}}},
    })
    settings.state_dir.mkdir(parents=True)
    upload = tmp_path / "u.zip"
    upload.write_bytes(make_zip(dict(oneroster_files())))
    with open_store(settings.database_url) as store:
        run = Runner(settings, store).sync("t", upload, source="cli")
    doc: dict[str, Any] = run.document.to_json()
    assert run.status == "completed", doc
    assert doc["issue_counts"] == {}
    assert doc["filtered"] == {"people": 2, "rosters": 2}
    [summary] = list(settings.state_dir.glob("**/patch-summary.csv"))
    listed = pl.read_csv(summary, infer_schema=False)
    assert sorted(listed["record_id"].to_list()) == ["E2", "E3", "U1", "U2"]
    assert listed["reason"].str.starts_with("filtered: role; ").all()


# --- active within the next N days ------------------------------------------------------


def term_files() -> dict[str, str | bytes]:
    """The OneRoster baseline plus a past summer term: K1 (fall, current), K2 (spring,
    from 2027-01-15), K3 (summer, ended 2026-08-01) of course C3; teacher U8 teaches only
    K3, U9 teaches K1, U7 is an administrator who teaches nothing; enrollments with
    dates around today (2026-11-23) and today + 30 days (2026-12-23)."""
    files: dict[str, str | bytes] = dict(oneroster_files())
    files["academicSessions.csv"] = str(files["academicSessions.csv"]) + (
        "T0,,,Summer,term,2026-06-01,2026-08-01,Y1,2027\n")
    files["courses.csv"] = str(files["courses.csv"]) + "C3,,,Y1,Summer Art,ART,09,S1,,\n"
    files["classes.csv"] = str(files["classes.csv"]) + (
        "K3,,,Summer Art 1,09,C3,R1,scheduled,,S1,T0,,,3\n")
    files["users.csv"] = str(files["users.csv"]) + (
        "U3,,,true,S1,student,cy,,Cy,Ng,,1003,cy.ng@d.example,,,,09,\n"
        "U4,,,true,S1,student,di,,Di,Wu,,1004,di.wu@d.example,,,,09,\n"
        "U8,,,true,S1,teacher,sam,,Sam,Poe,,9008,sam.poe@d.example,,,,,\n"
        "U7,,,true,S1,administrator,pat,,Pat,Oz,,9007,pat.oz@d.example,,,,,\n"
    )
    header = str(files["enrollments.csv"]).splitlines()[0]
    files["enrollments.csv"] = header + "\n" + (
        "E1,,,K1,S1,U9,teacher,true,,\n"
        "E2,,,K1,S1,U1,student,false,2026-08-01,2026-11-22\n"  # ended yesterday
        "E3,,,K2,S2,U2,student,false,,\n"                      # its class starts in January
        "E4,,,K1,S1,U2,student,false,2026-12-24,\n"            # begins after today + 30
        "E5,,,K3,S1,U8,teacher,true,,\n"                       # its class ended in August
        "E6,,,K1,S1,U3,student,false,2026-08-01,2026-11-23\n"  # its last day is today
        "E7,,,K1,S1,U4,student,false,2026-12-23,\n"            # begins on today + 30
    )
    return files


def test_active_within_30_days_drops_what_is_not_current() -> None:
    """Past and future enrollments, classes out of term and courses with no kept class
    are filtered, counted and listed; the boundary days are kept; no issue."""
    checked = check(term_files(), filter={"active_terms": True, "ahead_days": 30})
    assert checked.issues.frame().to_dicts() == []
    model = checked.model
    assert model is not None
    assert model.classes["class_id"].to_list() == ["K1"]
    assert model.courses["course_id"].to_list() == ["C1"]
    assert sorted(model.rosters["roster_id"].to_list()) == ["E6", "E7"]
    assert model.instructors["source_id"].to_list() == ["E1"]
    assert sorted(model.people["person_id"].to_list()) == ["U1", "U2", "U3", "U4", "U7",
                                                          "U8", "U9"]
    assert checked.filtered == {"classes": 2, "courses": 2, "rosters": 3, "instructors": 1}
    why = reasons(checked.summary)
    assert why["E2"] == ("filtered: enrollment dates; filter.active_terms: the enrollment "
                         "ended (2026-11-22) before 2026-11-23")
    assert why["E4"] == ("filtered: enrollment dates; filter.active_terms: the enrollment "
                         "begins (2026-12-24) after 2026-12-23")
    assert why["C3"] == "filtered: inactive term; filter.active_terms: no class of this " \
        "course is kept"
    assert why["K3"].startswith("filtered: inactive term; ")
    # An instructor row is listed under its class (record_id), like a patched one.
    [e5] = checked.summary.filter(pl.col("line") == 6).to_dicts()
    assert (e5["file"], e5["record_id"], e5["field"]) == ("enrollments.csv", "K3",
                                                          "classSourcedId")
    assert e5["reason"].startswith("filtered: inactive term; its class K3 was removed (")


def test_enrollment_dates_only_count_with_active_terms() -> None:
    """Without active_terms nothing is filtered by date or term."""
    checked = check(term_files())
    assert checked.issues.frame().to_dicts() == []
    assert checked.filtered == {}
    assert checked.model is not None and checked.model.rosters.height == 5


def test_course_whose_classes_are_all_past_is_dropped() -> None:
    """ahead_days = 0: the summer course goes with its class; C2's spring class is not
    current either, so C2 goes too; C1 (a fall class) stays."""
    checked = check(term_files(), filter={"active_terms": True})
    assert checked.model is not None
    assert checked.model.courses["course_id"].to_list() == ["C1"]
    assert checked.filtered["courses"] == 2


@pytest.mark.parametrize("drop", [True, False])
def test_drop_idle_staff(drop: bool) -> None:
    """drop_idle_staff drops U8 (teaches only the past K3), keeps U9 (teaches K1) and U7
    (teaches no class at all: not idle); off, every staff member stays."""
    checked = check(term_files(),
                    filter={"active_terms": True, "ahead_days": 30, "drop_idle_staff": drop})
    assert checked.issues.frame().to_dicts() == []
    assert checked.model is not None
    staff = checked.model.people.filter(pl.col("role") == "staff")["person_id"].to_list()
    assert sorted(staff) == (["U7", "U9"] if drop else ["U7", "U8", "U9"])
    assert checked.filtered.get("people", 0) == (1 if drop else 0)
    if drop:
        assert reasons(checked.summary)["U8"] == (
            "filtered: idle staff; filter.drop_idle_staff: teaches none of the classes "
            "the filters keep")


def test_idle_staff_without_a_term_filter() -> None:
    """drop_idle_staff follows any filter: a school filter that removes T2's only class
    (at S2) makes T2 idle, even though T2's own location is kept."""
    files = asm_files()
    files["staff.csv"] = str(files["staff.csv"]).replace("bjones,S2", "bjones,S1")
    checked = check(files, filter={"schools": ["S1"], "drop_idle_staff": True})
    assert checked.issues.frame().to_dicts() == []
    assert checked.model is not None
    assert sorted(checked.model.people["person_id"].to_list()) == ["P1", "P2", "T1"]
    assert reasons(checked.summary)["T2"].startswith("filtered: idle staff; ")
