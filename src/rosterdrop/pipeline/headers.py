"""The columns rosterdrop writes for each file, in order (sample exports, API pulls).

OneRoster 1.1 and 1.2 CSV and Apple School Manager CSV, exactly as docs/formats.md
lists them; the manifest's ``file.<name>`` properties in the order of the bindings.
"""

from __future__ import annotations

from typing import Final

ORGS_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId",
)
SESSIONS_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate",
    "parentSourcedId", "schoolYear",
)
COURSES_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title", "courseCode",
    "grades", "orgSourcedId", "subjects", "subjectCodes",
)
CLASSES_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId",
    "classCode", "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects",
    "subjectCodes", "periods",
)
ENROLLMENTS_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
    "userSourcedId", "role", "primary", "beginDate", "endDate",
)
USERS_11_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role",
    "username", "userIds", "givenName", "familyName", "middleName", "identifier", "email",
    "sms", "phone", "agentSourcedIds", "grades", "password",
)
USERS_12_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "enabledUser", "username", "userIds",
    "givenName", "familyName", "middleName", "identifier", "email", "sms", "phone",
    "agentSourcedIds", "grades", "password", "userMasterIdentifier", "preferredGivenName",
    "preferredMiddleName", "preferredFamilyName", "primaryOrgSourcedId", "pronouns",
)
ROLES_HEADER: Final = (
    "sourcedId", "status", "dateLastModified", "userSourcedId", "roleType", "role",
    "beginDate", "endDate", "orgSourcedId", "userProfileSourcedId",
)
MANIFEST_HEADER: Final = ("propertyName", "value")
ASM_HEADERS: Final = {
    "locations.csv": ("location_id", "location_name"),
    "students.csv": (
        "person_id", "person_number", "first_name", "middle_name", "last_name", "grade_level",
        "email_address", "sis_username", "password_policy", "location_id",
    ),
    "staff.csv": (
        "person_id", "person_number", "first_name", "middle_name", "last_name",
        "email_address", "sis_username", "location_id",
    ),
    "courses.csv": ("course_id", "course_number", "course_name", "location_id"),
    "classes.csv": (
        "class_id", "class_number", "course_id", "instructor_id", "instructor_id_2",
        "instructor_id_3", "location_id",
    ),
    "rosters.csv": ("roster_id", "class_id", "student_id"),
}

# The manifest's file.<name> properties, in the order of the CSV bindings.
MANIFEST_FILES: Final[dict[str, tuple[str, ...]]] = {
    "1.1": (
        "academicSessions", "categories", "classes", "classResources", "courses",
        "courseResources", "demographics", "enrollments", "lineItems", "orgs", "resources",
        "results", "users",
    ),
    "1.2": (
        "academicSessions", "categories", "classes", "classResources", "courses",
        "courseResources", "demographics", "enrollments", "lineItemLearningObjectiveIds",
        "lineItems", "lineItemScoreScales", "orgs", "resources", "resultLearningObjectiveIds",
        "results", "resultScoreScales", "roles", "scoreScales", "userProfiles",
        "userResources", "users",
    ),
}
