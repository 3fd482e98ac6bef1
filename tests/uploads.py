"""Small uploads built inside tests: valid baselines to break one thing at a time."""

from __future__ import annotations

import contextlib
import io
import subprocess
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rosterdrop.config import LimitSettings, TenantSettings
from rosterdrop.pipeline.check import Checked, check_upload

TODAY = date(2026, 11, 23)

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
"""Real public exports (AGPL/GPL: read in place, never copied); not in every clone."""

needs_samples = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason=f"public sample exports not present at {SAMPLES}"
)


def make_zip(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            archive.writestr(name, data)
    return buffer.getvalue()


def asm_files() -> dict[str, str]:
    """A valid ASM upload: 2 schools, 3 students, 2 staff, 2 courses, 2 classes."""
    return {
        "locations.csv": "location_id,location_name\nS1,North High\nS2,South Middle\n",
        "students.csv": (
            "person_id,person_number,first_name,middle_name,last_name,grade_level,"
            "email_address,sis_username,password_policy,location_id\n"
            "P1,1001,José,,García,9,jose.garcia@d.example,jgarcia,8,S1\n"
            "P2,1002,Zoë,Ann,O'Brien,10,zoe.obrien@d.example,zobrien,,S1\n"
            "P3,1003,Li,,Chen,6,li.chen@d.example,lchen,4,S2\n"
        ),
        "staff.csv": (
            "person_id,person_number,first_name,middle_name,last_name,email_address,"
            "sis_username,location_id\n"
            "T1,9001,Ann,,Smith,ann.smith@d.example,asmith,S1\n"
            "T2,9002,Bob,,Jones,bob.jones@d.example,bjones,S2\n"
        ),
        "courses.csv": (
            "course_id,course_number,course_name,location_id\n"
            "C1,MATH9,Algebra,S1\nC2,SCI6,Science,S2\n"
        ),
        "classes.csv": (
            "class_id,class_number,course_id,instructor_id,instructor_id_2,instructor_id_3,"
            "location_id\n"
            "K1,1,C1,T1,,,S1\nK2,2,C2,T2,,,S2\n"
        ),
        "rosters.csv": (
            "roster_id,class_id,student_id\nR1,K1,P1\nR2,K1,P2\nR3,K2,P3\n"
        ),
    }


USERS_11 = (
    "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,"
    "givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password"
)
USERS_12 = (
    "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,"
    "middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,"
    "userMasterIdentifier,preferredGivenName,preferredMiddleName,preferredFamilyName,"
    "primaryOrgSourcedId,pronouns"
)


def manifest(version: str, mode: str = "bulk", extra: str = "") -> str:
    names = ["academicSessions", "classes", "courses", "enrollments", "orgs", "users"]
    if version == "1.2":
        names.append("roles")
    rows = "".join(f"file.{n},{mode}\n" for n in names)
    return f"propertyName,value\nmanifest.version,1.0\noneroster.version,{version}\n{rows}{extra}"


def oneroster_files(version: str = "1.1") -> dict[str, str]:
    """A valid OneRoster bulk upload: 1 district, 2 schools, 2 students, 1 teacher."""
    files = {
        "manifest.csv": manifest(version),
        "orgs.csv": (
            "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId\n"
            "D1,,,Springfield District,district,,\n"
            "S1,,,North High,school,,D1\n"
            "S2,,,South Middle,school,,D1\n"
        ),
        "courses.csv": (
            "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,"
            "orgSourcedId,subjects,subjectCodes\n"
            "C1,,,Y1,Algebra,MATH9,09,S1,,\n"
            "C2,,,Y1,Science,SCI6,06,S2,,\n"
        ),
        "classes.csv": (
            "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,"
            "classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods\n"
            "K1,,,Algebra 1,09,C1,A1,scheduled,,S1,T1,,,1\n"
            "K2,,,Science 1,06,C2,S1,scheduled,,S2,T2,,,2\n"
        ),
        "academicSessions.csv": (
            "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,"
            "schoolYear\n"
            "Y1,,,2026-27,schoolYear,2026-08-01,2027-07-01,,2027\n"
            "T1,,,Fall,semester,2026-08-01,2027-01-15,Y1,2027\n"
            "T2,,,Spring,semester,2027-01-15,2027-07-01,Y1,2027\n"
        ),
        "enrollments.csv": (
            "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,"
            "role,primary,beginDate,endDate\n"
            "E1,,,K1,S1,U9,teacher,true,,\n"
            "E2,,,K1,S1,U1,student,false,,\n"
            "E3,,,K2,S2,U2,student,false,,\n"
        ),
    }
    if version == "1.1":
        files["users.csv"] = USERS_11 + "\n" + (
            "U1,,,true,S1,student,ann,,Ann,Lee,,1001,ann.lee@d.example,,,,09,\n"
            "U2,,,true,S2,student,bo,,Bo,Kim,,1002,bo.kim@d.example,,,,06,\n"
            "U9,,,true,S1,teacher,tess,,Tess,Ray,,9001,tess.ray@d.example,,,,,\n"
            "G1,,,true,,parent,gp,,Gus,Lee,,,gus@d.example,,,,,\n"
        )
    else:
        files["users.csv"] = USERS_12 + "\n" + (
            "U1,,,true,ann,,Ann,Lee,,1001,ann.lee@d.example,,,,09,,,,,,S1,\n"
            "U2,,,true,bo,,Bo,Kim,,1002,bo.kim@d.example,,,,06,,,,,,S2,\n"
            "U9,,,true,tess,,Tess,Ray,,9001,tess.ray@d.example,,,,,,,,,,S1,\n"
        )
        files["roles.csv"] = (
            "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,"
            "orgSourcedId,userProfileSourcedId\n"
            "R1,,,U1,primary,student,,,S1,\n"
            "R2,,,U2,primary,student,,,S2,\n"
            "R9,,,U9,primary,teacher,,,S1,\n"
        )
    return files


def check(files: dict[str, str | bytes] | bytes, today: date = TODAY,
          **tenant: Any) -> Checked:
    data = files if isinstance(files, bytes) else make_zip(files)
    return check_upload(
        data, tenant=TenantSettings.model_validate(tenant), limits=LimitSettings(),
        today=today, name="upload.zip",
    )


def issues_of(checked: Checked, code: str) -> list[dict[str, Any]]:
    return [i for i in checked.issues.frame().to_dicts() if i["code"] == code]


def only(checked: Checked, code: str) -> dict[str, Any]:
    found = issues_of(checked, code)
    assert len(found) == 1, (code, checked.issues.frame().to_dicts())
    return found[0]


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``folder`` (skips where mounting is not
    allowed); unmounted afterwards."""
    folder.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
