"""The two upload layouts, as data: files, columns, and what each field must hold.

Validation (``validate.py``) is generic over these tables, so a rule in
formats.md is one line here, not a branch in code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
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
    """Read by the sync (the mapping to the directory model takes it): a bad or over-long
    value is an error and a missing column is ``HEADER_MISSING_COLUMN``. Otherwise a bad
    value is a warning and dropped, and a missing column ``HEADER_MISSING_UNUSED``."""
    values: tuple[str, ...] = ()
    limit: int | None = None
    """Most characters a value may have; None: the kind's limit in ``MAX_LENGTH``."""

    def max_length(self) -> int:
        return self.limit if self.limit is not None else MAX_LENGTH[self.kind]


MAX_LENGTH: dict[Kind, int] = {
    Kind.ID: 255,
    Kind.ID_LIST: 8192,  # a person in 40 schools with 128-character ids still fits
    Kind.ENUM: 255,
    Kind.ENUM_LIST: 1024,
    Kind.BOOL: 255,
    Kind.DATE: 255,
    Kind.DATETIME: 255,
    Kind.EMAIL: 254,  # RFC 5321: a forward path holds at most 256 octets, <> included
    Kind.PASSWORD_POLICY: 255,
    Kind.TEXT: 1024,
}
"""Every field's length limit, in characters, by what it holds. Names and other short
text fields (``SHORT_TEXT``) have 255. No real roster value comes near these; they exist
so that a broken export (a quote never closed, a 10 MB cell) cannot reach the store."""
NAME_LENGTH = 255
SHORT_TEXT = frozenset({
    # Apple School Manager
    "location_name", "person_number", "first_name", "middle_name", "last_name", "grade_level",
    "sis_username", "course_number", "course_name", "class_number", "class_display_name",
    # OneRoster
    "name", "identifier", "username", "givenName", "familyName", "middleName",
    "preferredGivenName", "preferredMiddleName", "preferredFamilyName", "title",
    "courseCode", "classCode", "schoolYear", "pronouns",
})


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

    def read_by_sync(self, column: str) -> bool:
        """The sync reads this column: missing, it is an error (``HEADER_MISSING_COLUMN``)."""
        return self.field(column).used

    def allows(self, column: str) -> bool:
        return (
            column in self.columns
            or column in self.optional_columns
            or bool(self.extra_column and self.extra_column.fullmatch(column))
        )


def _complete(spec: FileSpec, unread: frozenset[str] = frozenset()) -> FileSpec:
    """``spec`` with a Field for every column it names: the ``unread`` ones marked not
    used, short text fields limited to ``NAME_LENGTH``."""
    fields = {}
    for column in (*spec.columns, *spec.optional_columns):
        rule = spec.fields.get(column, Field())
        if column in unread:
            rule = replace(rule, used=False)
        if rule.limit is None and rule.kind is Kind.TEXT and column in SHORT_TEXT:
            rule = replace(rule, limit=NAME_LENGTH)
        fields[column] = rule
    return replace(spec, fields=fields)


ID = Field(Kind.ID)
ID_REQ = Field(Kind.ID, required=True)
TEXT_REQ = Field(Kind.TEXT, required=True)
UNUSED = Field(used=False)

# --- Apple School Manager -------------------------------------------------------------

ASM_FILES: dict[str, FileSpec] = {
    spec.name: _complete(spec)  # the sync reads every ASM column
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
        spec.name: _complete(
            replace(spec, extra_column=METADATA, extra_field=UNUSED),
            ONEROSTER_UNREAD[spec.name],
        )
        for spec in files
    }


ONEROSTER_UNREAD: dict[str, frozenset[str]] = {
    "orgs.csv": frozenset({"dateLastModified", "type", "identifier", "parentSourcedId"}),
    "users.csv": frozenset({
        "dateLastModified", "userIds", "sms", "phone", "agentSourcedIds", "password",
        "userMasterIdentifier", "preferredGivenName", "preferredMiddleName",
        "preferredFamilyName", "primaryOrgSourcedId", "pronouns", "resourceSourcedIds"}),
    "courses.csv": frozenset({
        "dateLastModified", "schoolYearSourcedId", "grades", "subjects", "subjectCodes"}),
    "classes.csv": frozenset({
        "dateLastModified", "grades", "classType", "location", "subjects", "subjectCodes",
        "periods"}),
    # beginDate/endDate are read by filter.active_terms only, where a blank date is no
    # limit: the sync does without them, so a bad one is dropped and a missing one warned.
    "enrollments.csv": frozenset({"dateLastModified", "schoolSourcedId", "beginDate",
                                  "endDate"}),
    "academicSessions.csv": frozenset({
        "dateLastModified", "title", "type", "parentSourcedId", "schoolYear"}),
    "roles.csv": frozenset({"dateLastModified", "beginDate", "endDate",
                            "userProfileSourcedId"}),
}
"""The OneRoster columns the sync never reads (``mapping.py`` does not take them): every
other column of the layout is read. Apple School Manager's are all read."""


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
