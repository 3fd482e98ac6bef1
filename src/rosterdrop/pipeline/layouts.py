"""The two upload layouts, as data: files, columns, and what each field must hold.

Validation (``validate.py``) is generic over these tables, so a rule in
formats.md is one line here, not a branch in code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    """What a field holds, which decides how it is checked."""

    TEXT = "text"
    ID = "id"  # letters, digits and - _ . @ /
    ID_LIST = "id_list"  # comma-separated IDs in one field
    ENUM = "enum"
    ENUM_LIST = "enum_list"
    BOOL = "bool"
    DATE = "date"  # YYYY-MM-DD
    DATETIME = "datetime"  # YYYY-MM-DDTHH:MM:SS.sssZ
    EMAIL = "email"
    PASSWORD_POLICY = "password_policy"  # 4, 6, 8 or blank


@dataclass(frozen=True)
class Field:
    kind: Kind = Kind.TEXT
    required: bool = False
    used: bool = True
    """Used by the sync: a bad value is an error; otherwise a warning and dropped."""
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileSpec:
    name: str
    columns: tuple[str, ...]
    """Base columns, every one required in the header, in their usual order."""
    fields: dict[str, Field] = field(default_factory=dict)
    unique: str | None = None
    optional_columns: tuple[str, ...] = ()
    extra_column: re.Pattern[str] | None = None
    """Further columns allowed by pattern (ASM location_id_2…, OneRoster metadata.*)."""
    extra_field: Field = Field()

    def field(self, column: str) -> Field:
        if column in self.fields:
            return self.fields[column]
        if self.extra_column is not None and self.extra_column.fullmatch(column):
            return self.extra_field
        return Field()

    def allows(self, column: str) -> bool:
        return (
            column in self.columns
            or column in self.optional_columns
            or bool(self.extra_column and self.extra_column.fullmatch(column))
        )


ID = Field(Kind.ID)
ID_REQ = Field(Kind.ID, required=True)
TEXT_REQ = Field(Kind.TEXT, required=True)
UNUSED = Field(used=False)

# --- Apple School Manager -------------------------------------------------------------

ASM_FILES: dict[str, FileSpec] = {
    spec.name: spec
    for spec in (
        FileSpec(
            "locations.csv",
            ("location_id", "location_name"),
            {"location_id": ID_REQ, "location_name": TEXT_REQ},
            unique="location_id",
        ),
        FileSpec(
            "students.csv",
            ("person_id", "person_number", "first_name", "middle_name", "last_name",
             "grade_level", "email_address", "sis_username", "password_policy", "location_id"),
            {
                "person_id": ID_REQ,
                "first_name": TEXT_REQ,
                "last_name": TEXT_REQ,
                "email_address": Field(Kind.EMAIL),
                "password_policy": Field(Kind.PASSWORD_POLICY),
                "location_id": ID_REQ,
            },
            unique="person_id",
            extra_column=re.compile(r"location_id_([2-9]|[1-9][0-9]{1,2})"),
            extra_field=ID,
        ),
        FileSpec(
            "staff.csv",
            ("person_id", "person_number", "first_name", "middle_name", "last_name",
             "email_address", "sis_username", "location_id"),
            {
                "person_id": ID_REQ,
                "first_name": TEXT_REQ,
                "last_name": TEXT_REQ,
                "email_address": Field(Kind.EMAIL),
                "location_id": ID_REQ,
            },
            unique="person_id",
            extra_column=re.compile(r"location_id_([2-9]|[1-9][0-9]{1,2})"),
            extra_field=ID,
        ),
        FileSpec(
            "courses.csv",
            ("course_id", "course_number", "course_name", "location_id"),
            {"course_id": ID_REQ, "location_id": ID_REQ},
            unique="course_id",
        ),
        FileSpec(
            "classes.csv",
            ("class_id", "class_number", "course_id", "instructor_id", "instructor_id_2",
             "instructor_id_3", "location_id"),
            {
                "class_id": ID_REQ,
                "course_id": ID_REQ,
                "instructor_id": ID,
                "instructor_id_2": ID,
                "instructor_id_3": ID,
                "location_id": ID_REQ,
            },
            unique="class_id",
            optional_columns=("class_display_name",),
            extra_column=re.compile(r"instructor_id_([4-9]|1[0-5])"),
            extra_field=ID,
        ),
        FileSpec(
            "rosters.csv",
            ("roster_id", "class_id", "student_id"),
            {"roster_id": ID_REQ, "class_id": ID_REQ, "student_id": ID_REQ},
            unique="roster_id",
        ),
    )
}

# --- OneRoster ---------------------------------------------------------------------------

STATUS = ("active", "tobedeleted")
BOOL = Field(Kind.BOOL)
METADATA = re.compile(r"metadata\..+")

ORG_TYPES = ("department", "school", "district", "local", "state", "national")
USER_ROLES_11 = ("administrator", "aide", "guardian", "parent", "proctor", "relative",
                 "student", "teacher")
ROLES_12 = ("aide", "counselor", "districtAdministrator", "guardian", "parent", "principal",
            "proctor", "relative", "siteAdministrator", "student", "systemAdministrator",
            "teacher")
ENROLLMENT_ROLES = ("administrator", "proctor", "student", "teacher")
CLASS_TYPES = ("homeroom", "scheduled")
SESSION_TYPES = ("gradingPeriod", "semester", "schoolYear", "term")

STAFF_ROLES = frozenset({
    "teacher", "aide", "administrator", "proctor", "counselor", "principal",
    "siteAdministrator", "districtAdministrator", "systemAdministrator",
})
STUDENT_ROLE = "student"

COMMON = ("sourcedId", "status", "dateLastModified")
COMMON_FIELDS = {
    "sourcedId": ID_REQ,
    "status": Field(Kind.ENUM, values=STATUS),
    "dateLastModified": Field(Kind.DATETIME, used=False),
}


def _oneroster_files(version: str) -> dict[str, FileSpec]:
    v12 = version == "1.2"
    user_columns: tuple[str, ...]
    if v12:
        user_columns = (
            *COMMON, "enabledUser", "username", "userIds", "givenName", "familyName",
            "middleName", "identifier", "email", "sms", "phone", "agentSourcedIds", "grades",
            "password", "userMasterIdentifier", "preferredGivenName", "preferredMiddleName",
            "preferredFamilyName", "primaryOrgSourcedId", "pronouns",
        )
    else:
        user_columns = (
            *COMMON, "enabledUser", "orgSourcedIds", "role", "username", "userIds",
            "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone",
            "agentSourcedIds", "grades", "password",
        )
    user_fields = {
        **COMMON_FIELDS,
        "enabledUser": Field(Kind.BOOL, required=True),
        "givenName": TEXT_REQ,
        "familyName": TEXT_REQ,
        "email": Field(Kind.EMAIL),
        "agentSourcedIds": Field(Kind.ID_LIST, used=False),
    }
    if v12:
        user_fields["primaryOrgSourcedId"] = Field(Kind.ID, used=False)
    else:
        user_fields["orgSourcedIds"] = Field(Kind.ID_LIST)
        user_fields["role"] = Field(Kind.ENUM, required=True, values=USER_ROLES_11)

    files = [
        FileSpec(
            "orgs.csv",
            (*COMMON, "name", "type", "identifier", "parentSourcedId"),
            {**COMMON_FIELDS, "name": TEXT_REQ,
             "type": Field(Kind.ENUM, required=True, values=ORG_TYPES),
             "parentSourcedId": Field(Kind.ID, used=False)},
            unique="sourcedId",
        ),
        FileSpec(
            "users.csv", user_columns, user_fields, unique="sourcedId",
            optional_columns=("resourceSourcedIds",) if v12 else (),
        ),
        FileSpec(
            "courses.csv",
            (*COMMON, "schoolYearSourcedId", "title", "courseCode", "grades", "orgSourcedId",
             "subjects", "subjectCodes"),
            {**COMMON_FIELDS, "title": TEXT_REQ, "orgSourcedId": ID_REQ,
             "schoolYearSourcedId": Field(Kind.ID, used=False)},
            unique="sourcedId",
        ),
        FileSpec(
            "classes.csv",
            (*COMMON, "title", "grades", "courseSourcedId", "classCode", "classType",
             "location", "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes",
             "periods"),
            {**COMMON_FIELDS, "title": TEXT_REQ, "courseSourcedId": ID_REQ,
             "classType": Field(Kind.ENUM, required=True, values=CLASS_TYPES, used=False),
             "schoolSourcedId": ID_REQ,
             "termSourcedIds": Field(Kind.ID_LIST, required=True)},
            unique="sourcedId",
        ),
        FileSpec(
            "enrollments.csv",
            (*COMMON, "classSourcedId", "schoolSourcedId", "userSourcedId", "role", "primary",
             "beginDate", "endDate"),
            {**COMMON_FIELDS, "classSourcedId": ID_REQ, "schoolSourcedId": ID_REQ,
             "userSourcedId": ID_REQ,
             "role": Field(Kind.ENUM, required=True, values=ENROLLMENT_ROLES),
             "primary": BOOL,
             "beginDate": Field(Kind.DATE, used=False),
             "endDate": Field(Kind.DATE, used=False)},
            unique="sourcedId",
        ),
        FileSpec(
            "academicSessions.csv",
            (*COMMON, "title", "type", "startDate", "endDate", "parentSourcedId",
             "schoolYear"),
            {**COMMON_FIELDS, "title": Field(required=True, used=False),
             "type": Field(Kind.ENUM, required=True, values=SESSION_TYPES, used=False),
             "startDate": Field(Kind.DATE, required=True),
             "endDate": Field(Kind.DATE, required=True),
             "parentSourcedId": Field(Kind.ID, used=False)},
            unique="sourcedId",
        ),
    ]
    if v12:
        files.append(
            FileSpec(
                "roles.csv",
                (*COMMON, "userSourcedId", "roleType", "role", "beginDate", "endDate",
                 "orgSourcedId", "userProfileSourcedId"),
                {**COMMON_FIELDS, "userSourcedId": ID_REQ,
                 "roleType": Field(Kind.ENUM, required=True, values=("primary", "secondary")),
                 "role": Field(Kind.ENUM, required=True, values=ROLES_12),
                 "beginDate": Field(Kind.DATE, used=False),
                 "endDate": Field(Kind.DATE, used=False),
                 "orgSourcedId": ID_REQ,
                 "userProfileSourcedId": Field(Kind.ID, used=False)},
                unique="sourcedId",
            )
        )
    return {
        spec.name: FileSpec(
            spec.name, spec.columns, spec.fields, spec.unique, spec.optional_columns,
            METADATA, UNUSED,
        )
        for spec in files
    }


ONEROSTER_FILES: dict[str, dict[str, FileSpec]] = {
    "1.1": _oneroster_files("1.1"),
    "1.2": _oneroster_files("1.2"),
}
ONEROSTER_ONLY_NAMES = frozenset(
    {"manifest.csv", "orgs.csv", "users.csv", "enrollments.csv", "academicSessions.csv",
     "roles.csv", "demographics.csv", "userProfiles.csv", "lineItems.csv", "results.csv",
     "categories.csv", "resources.csv", "classResources.csv", "courseResources.csv",
     "userResources.csv", "scoreScales.csv"}
)
"""File names that only OneRoster uses (courses/classes exist in both layouts)."""
ASM_ONLY_NAMES = frozenset({"locations.csv", "students.csv", "staff.csv", "rosters.csv"})
