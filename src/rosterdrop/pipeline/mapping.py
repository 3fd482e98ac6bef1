"""Map validated layout frames onto the one directory model (formats.md table)."""

from __future__ import annotations

import polars as pl

from rosterdrop.codes import Code
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.layouts import STAFF_ROLES, STUDENT_ROLE
from rosterdrop.pipeline.model import Model, conform

LINE = "_line"
Frames = dict[str, pl.DataFrame]


def _col(frame: pl.DataFrame, name: str) -> pl.Expr:
    """A column that may be absent (its header was missing): null then."""
    return pl.col(name) if name in frame.columns else pl.lit(None, pl.String)


def _provenance(file: str) -> list[pl.Expr]:
    return [pl.lit(file).alias("_file"), pl.col(LINE).alias("_line")]


def _split_list(expr: pl.Expr) -> pl.Expr:
    """A comma-separated list field → a list of trimmed, non-blank items."""
    return (
        expr.fill_null("")
        .str.split(",")
        .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
    )


# --- Apple School Manager ---------------------------------------------------------------


def asm_model(frames: Frames) -> Model:
    active = pl.lit(True).alias("active")
    locations = frames["locations.csv"].select(
        "location_id", "location_name", active, *_provenance("locations.csv")
    )
    people = [
        _asm_people(frames["students.csv"], "students.csv", "student"),
        _asm_people(frames["staff.csv"], "staff.csv", "staff"),
    ]
    courses = frames["courses.csv"]
    courses = courses.select(
        "course_id", _col(courses, "course_number").alias("course_number"),
        _col(courses, "course_name").alias("course_name"), "location_id", active,
        *_provenance("courses.csv"),
    )
    classes_in = frames["classes.csv"]
    classes = classes_in.select(
        "class_id", _col(classes_in, "class_number").alias("class_number"), "course_id",
        "location_id", _col(classes_in, "class_display_name").alias("class_display_name"),
        pl.lit([], pl.List(pl.String)).alias("term_ids"), active, *_provenance("classes.csv"),
    )
    rosters = frames["rosters.csv"].select(
        "roster_id", "class_id", "student_id", active, *_provenance("rosters.csv")
    )
    return Model(
        locations=conform("locations", locations),
        people=conform("people", pl.concat(people, how="vertical")),
        courses=conform("courses", courses),
        classes=conform("classes", classes),
        instructors=conform("instructors", _asm_instructors(classes_in)),
        rosters=conform("rosters", rosters),
    )


def _numbered(frame: pl.DataFrame, base: str) -> list[str]:
    """``base``, ``base_2``, ``base_3``… present in the frame, in numeric order."""
    def number(name: str) -> int:
        return 1 if name == base else int(name.rsplit("_", 1)[1])

    names = [c for c in frame.columns if c == base or c.startswith(base + "_")]
    return sorted((c for c in names if c == base or c.rsplit("_", 1)[1].isdigit()), key=number)


def _asm_people(frame: pl.DataFrame, file: str, role: str) -> pl.DataFrame:
    locations = _numbered(frame, "location_id")
    return frame.select(
        "person_id",
        pl.lit(role).alias("role"),
        *[_col(frame, c).alias(c) for c in (
            "person_number", "first_name", "middle_name", "last_name", "grade_level",
            "email_address", "sis_username", "password_policy")],
        pl.concat_list([pl.col(c) for c in locations]).list.drop_nulls().alias("location_ids")
        if locations else pl.lit([], pl.List(pl.String)).alias("location_ids"),
        pl.lit(True).alias("active"),
        *_provenance(file),
    )


def _asm_instructors(classes: pl.DataFrame) -> pl.DataFrame:
    columns = _numbered(classes, "instructor_id")
    if not columns:
        return pl.DataFrame()
    long = classes.select("class_id", LINE, *columns).unpivot(
        index=["class_id", LINE], on=columns, variable_name="_column", value_name="person_id"
    )
    order = {c: i for i, c in enumerate(columns)}
    return (
        long.filter(pl.col("person_id").is_not_null())
        .with_columns(pl.col("_column").replace_strict(order, return_dtype=pl.Int32).alias("_k"))
        .sort(LINE, "_k")
        .with_columns(
            pl.int_range(pl.len(), dtype=pl.Int32).over("class_id", LINE).alias("position"),
            pl.lit(True).alias("active"),
            pl.lit("classes.csv").alias("_file"),
        )
    )


# --- OneRoster --------------------------------------------------------------------------


def _active(frame: pl.DataFrame) -> pl.Expr:
    return (_col(frame, "status").fill_null("active") != "tobedeleted").alias("active")


def oneroster_model(frames: Frames, version: str, delta_files: set[str],
                    issues: IssueLog, *, orgs_unread: bool = False) -> Model:
    """``orgs_unread``: the column that gives people their schools could not be read
    (its header issue said so), so nobody is reported for having none."""
    orgs = frames["orgs.csv"]
    locations = orgs.select(
        pl.col("sourcedId").alias("location_id"), pl.col("name").alias("location_name"),
        _active(orgs), *_provenance("orgs.csv"),
    )
    courses_in = frames["courses.csv"]
    courses = courses_in.select(
        pl.col("sourcedId").alias("course_id"),
        _col(courses_in, "courseCode").alias("course_number"),
        pl.col("title").alias("course_name"), pl.col("orgSourcedId").alias("location_id"),
        _active(courses_in), *_provenance("courses.csv"),
    )
    classes_in = frames["classes.csv"]
    classes = classes_in.select(
        pl.col("sourcedId").alias("class_id"),
        _col(classes_in, "classCode").alias("class_number"),
        pl.col("courseSourcedId").alias("course_id"),
        pl.col("schoolSourcedId").alias("location_id"),
        pl.col("title").alias("class_display_name"),
        _split_list(pl.col("termSourcedIds")).alias("term_ids"),
        _active(classes_in), *_provenance("classes.csv"),
    )
    sessions = frames["academicSessions.csv"]
    terms = sessions.select(
        pl.col("sourcedId").alias("term_id"),
        pl.col("startDate").str.to_date("%Y-%m-%d", strict=False).alias("start_date"),
        pl.col("endDate").str.to_date("%Y-%m-%d", strict=False).alias("end_date"),
        _active(sessions), *_provenance("academicSessions.csv"),
    )
    people = _oneroster_people(frames, version, issues, orgs_unread)
    instructors, rosters = _enrollments(frames["enrollments.csv"])

    delta: set[str] = set()
    kinds_of_file = {
        "orgs.csv": ("locations",), "users.csv": ("people",), "roles.csv": ("people",),
        "courses.csv": ("courses",), "classes.csv": ("classes",),
        "enrollments.csv": ("instructors", "rosters"), "academicSessions.csv": ("terms",),
    }
    for file in delta_files:
        delta.update(kinds_of_file.get(file, ()))
    return Model(
        locations=conform("locations", locations),
        people=conform("people", people),
        courses=conform("courses", courses),
        classes=conform("classes", classes),
        instructors=conform("instructors", instructors),
        rosters=conform("rosters", rosters),
        terms=conform("terms", terms),
        delta=frozenset(delta),
    )


def _oneroster_people(frames: Frames, version: str, issues: IssueLog,
                      orgs_unread: bool) -> pl.DataFrame:
    users = frames["users.csv"]
    if version == "1.1":  # the role and orgs are columns of users.csv itself
        users = users.with_columns(
            _col(users, "role").alias("_role"),
            _split_list(_col(users, "orgSourcedIds")).alias("location_ids"),
        )
    else:
        users = users.join(_roles_12(frames["roles.csv"]), on="sourcedId", how="left")
    kind = (
        pl.when(pl.col("_role") == STUDENT_ROLE).then(pl.lit("student"))
        .when(pl.col("_role").is_in(sorted(STAFF_ROLES))).then(pl.lit("staff"))
        .otherwise(None)
    )
    users = users.with_columns(kind.alias("role")).filter(pl.col("role").is_not_null())
    people = users.select(
        pl.col("sourcedId").alias("person_id"),
        "role",
        _col(users, "identifier").alias("person_number"),
        pl.col("givenName").alias("first_name"),
        _col(users, "middleName").alias("middle_name"),
        pl.col("familyName").alias("last_name"),
        _split_list(_col(users, "grades")).list.first().alias("grade_level"),
        _col(users, "email").alias("email_address"),
        _col(users, "username").alias("sis_username"),
        pl.col("location_ids").fill_null([]),
        (_active(users) & (_col(users, "enabledUser").fill_null("true") != "false"))
        .alias("active"),
        *_provenance("users.csv"),
    )
    if orgs_unread:
        return people
    no_location = people.filter(pl.col("location_ids").list.len() == 0)
    column = "orgSourcedIds" if version == "1.1" else "orgSourcedId"
    where = "users.csv" if version == "1.1" else "roles.csv"
    issues.extend(
        no_location.select(
            pl.lit("users.csv").alias("file"), pl.col("_line").alias("line"),
            pl.lit(column).alias("column"), pl.col("person_id").alias("value"),
            pl.format(
                "users.csv line {}: {} '{}' has no school (" + column + " in " + where
                + "); every imported person needs at least one org, so add it in the SIS.",
                pl.col("_line"), pl.col("role"), pl.col("person_id"),
            ).alias("message"),
        ),
        Code.VALUE_REQUIRED,
    )
    return people


def _roles_12(roles: pl.DataFrame) -> pl.DataFrame:
    """Per user: the primary role (primary roleType first) and every org in role order."""
    usable = roles.filter(_col(roles, "status").fill_null("active") != "tobedeleted")
    ordered = usable.sort(
        (pl.col("roleType") != "primary"), LINE
    )
    return ordered.group_by("userSourcedId", maintain_order=True).agg(
        pl.col("role").first().alias("_role"),
        pl.col("orgSourcedId").drop_nulls().unique(maintain_order=True).alias("location_ids"),
    ).rename({"userSourcedId": "sourcedId"})


def _enrollments(enrollments: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    active = _active(enrollments)
    # Only filter.active_terms reads the dates; a bad one was nulled (warned) by validate.
    dates = [
        _col(enrollments, column).str.to_date("%Y-%m-%d", strict=False).alias(name)
        for column, name in (("beginDate", "begin_date"), ("endDate", "end_date"))
    ]
    # Lazy, so that only the columns each result needs are filtered (3x faster at L).
    teachers = (
        enrollments.lazy()
        .filter(pl.col("role") == "teacher")
        .with_columns(active, (_col(enrollments, "primary").fill_null("false") != "true")
                      .alias("_secondary"))
        .sort("classSourcedId", "_secondary", "userSourcedId")
        .select(
            pl.col("classSourcedId").alias("class_id"),
            pl.col("userSourcedId").alias("person_id"),
            pl.int_range(pl.len(), dtype=pl.Int32).over("classSourcedId").alias("position"),
            pl.col("sourcedId").alias("source_id"),
            "active",
            pl.lit("userSourcedId").alias("_column"),
            *dates,
            *_provenance("enrollments.csv"),
        )
        .collect()
    )
    rosters = enrollments.lazy().filter(pl.col("role") == "student").select(
        pl.col("sourcedId").alias("roster_id"),
        pl.col("classSourcedId").alias("class_id"),
        pl.col("userSourcedId").alias("student_id"),
        active,
        *dates,
        *_provenance("enrollments.csv"),
    ).collect()
    return teachers, rosters
