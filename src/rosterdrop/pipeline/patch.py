"""References after filtering: errors for the ones patching cannot fix, and
Patch Data for dangling instructors and roster rows (pipeline.md "Patch")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import polars as pl

from rosterdrop.codes import Code
from rosterdrop.config import PatchSettings
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import Model

ASM_FIELDS = {
    "class.course": "course_id", "class.location": "location_id",
    "course.location": "location_id", "person.location": "location_id",
    "class.term": "termSourcedIds", "roster.class": "class_id", "roster.student": "student_id",
}
ONEROSTER_FIELDS = {
    "class.course": "courseSourcedId", "class.location": "schoolSourcedId",
    "course.location": "orgSourcedId", "person.location": "orgSourcedIds",
    "class.term": "termSourcedIds", "roster.class": "classSourcedId",
    "roster.student": "userSourcedId",
}
TARGET_FILE = {
    "asm": {"courses": "courses.csv", "locations": "locations.csv", "terms": "—",
            "classes": "classes.csv", "people": "students.csv/staff.csv"},
    "oneroster": {"courses": "courses.csv", "locations": "orgs.csv",
                  "terms": "academicSessions.csv", "classes": "classes.csv",
                  "people": "users.csv"},
}
SINGULAR = {"courses": "course", "locations": "location", "terms": "term",
            "classes": "class", "people": "person"}


@dataclass
class Patched:
    model: Model
    counts: dict[str, int]
    summary: list[pl.DataFrame]


def _ids(model: Model, kind: str, id_column: str) -> pl.Series:
    return model.frame(kind)[id_column]


def _dangling_message(field: str, target: str, family: str, gone: pl.DataFrame | None,
                      fix: str) -> pl.Expr:
    missing = pl.format(
        "{} line {}: " + field + " '{}' names a " + SINGULAR[target] + " that is not in "
        + TARGET_FILE[family][target] + "; " + fix,
        pl.col("_file"), pl.col("_line"), pl.col("_ref"),
    )
    if gone is None or gone.height == 0:
        return missing
    return (
        pl.when(pl.col("_reason").is_not_null())
        .then(pl.format(
            "{} line {}: " + field + " '{}' names a " + SINGULAR[target]
            + " that was removed by a filter ({}); widen that filter in the tenant settings "
            "or correct the reference in the SIS.",
            pl.col("_file"), pl.col("_line"), pl.col("_ref"), pl.col("_reason"),
        ))
        .otherwise(missing)
    )


def check_references(model: Model, family: str, gone: dict[str, pl.DataFrame],
                     issues: IssueLog, unavailable: frozenset[str] = frozenset(),
                     *, roles_file: bool = False) -> None:
    """REFERENCE_MISSING for references patching does not handle.

    ``unavailable``: kinds whose file or ID column could not be read (an issue said so
    already); references to them are not checked, lest every one be reported.
    ``roles_file``: OneRoster 1.2, where a person's schools are the orgSourcedId of their
    roles in roles.csv (the issue still points at the person's line in users.csv)."""
    fields = ASM_FIELDS if family == "asm" else ONEROSTER_FIELDS
    labels = dict(fields)
    if roles_file:
        fields = {**fields, "person.location": "orgSourcedId"}
        labels["person.location"] = "roles.csv orgSourcedId"
    fix = "add the record to the export or correct the reference in the SIS."

    def check(source: pl.DataFrame, ref: pl.Expr, target: str, target_id: str,
              key: str) -> None:
        if target in model.delta or target in unavailable:
            return  # the store may hold it (the plan decides), or it could not be read
        valid = _ids(model, target, target_id)
        refs = source.with_columns(ref.alias("_ref")).filter(
            pl.col("_ref").is_not_null() & ~pl.col("_ref").is_in(valid.implode())
        )
        if refs.height == 0:
            return
        reasons = gone.get(target)
        if reasons is not None and reasons.height:
            refs = refs.join(
                reasons.unique("id").rename({"id": "_ref", "reason": "_reason"}),
                on="_ref", how="left",
            )
        issues.extend(
            refs.select(
                pl.col("_file").alias("file"), pl.col("_line").alias("line"),
                pl.lit(fields[key]).alias("column"), pl.col("_ref").alias("value"),
                _dangling_message(labels[key], target, family, reasons, fix).alias("message"),
            ),
            Code.REFERENCE_MISSING,
        )

    live = pl.col("active")
    classes = model.classes.filter(live)
    courses = model.courses.filter(live)
    check(classes, pl.col("course_id"), "courses", "course_id", "class.course")
    check(classes, pl.col("location_id"), "locations", "location_id", "class.location")
    check(courses, pl.col("location_id"), "locations", "location_id", "course.location")
    people = model.people.filter(live).explode("location_ids")
    check(people, pl.col("location_ids"), "locations", "location_id", "person.location")
    if family != "asm":
        terms = classes.explode("term_ids")
        check(terms, pl.col("term_ids"), "terms", "term_id", "class.term")


def apply_patch(model: Model, settings: PatchSettings, family: str,
                issues: IssueLog, unavailable: frozenset[str] = frozenset()) -> Patched:
    """Drop instructor and roster references to records that are missing or not active.

    References to what a filter removed never get here: the filter removed them with
    their target (filter.py), so everything patched is broken in the upload itself.
    ``unavailable`` (``classes``, ``students``, ``staff``): kinds that could not be
    read; references to them are left alone (the run fails on the header issue)."""
    counts: dict[str, int] = {}
    summary: list[pl.DataFrame] = []
    fields = ASM_FIELDS if family == "asm" else ONEROSTER_FIELDS
    people = model.people.filter(pl.col("active"))
    staff = people.filter(pl.col("role") == "staff")["person_id"].implode()
    students = people.filter(pl.col("role") == "student")["person_id"].implode()
    classes = model.classes.filter(pl.col("active"))["class_id"].implode()
    # Who a dangling person reference does name, when it names someone: a teacher
    # enrolled as a student is "names staff member T1 (Tina Turner), not a student".
    who = model.people.select(
        pl.col("person_id").alias("_ref"),
        pl.col("role").replace_strict({"staff": "staff member"}, default=pl.col("role"))
        .alias("_is"),
        pl.concat_str([pl.col("first_name"), pl.col("last_name")], separator=" ",
                      ignore_nulls=True).alias("_name"),
        pl.col("active").alias("_live"),
    ).unique("_ref", keep="first", maintain_order=True)

    def patch(kind: str, checks: list[tuple[pl.Expr, str, str, str]], enabled: bool) -> None:
        nonlocal model
        if not checks:
            return
        frame = model.frame(kind)
        # Tombstones in a delta remove rows; they need no live target.
        hits = [(bad & pl.col("active")).fill_null(False) for bad, _, _, _ in checks]
        bad_rows = frame.select(pl.any_horizontal(hits)).to_series()
        if not bad_rows.any():
            return
        model = model.with_frames(**{kind: frame.filter(~bad_rows)})

        def first_hit(values: list[pl.Expr]) -> pl.Expr:
            """The value of the first check that failed (a class before a person)."""
            chain: Any = pl.when(hits[0]).then(values[0])
            for hit, value in zip(hits[1:], values[1:], strict=True):
                chain = chain.when(hit).then(value)
            return cast(pl.Expr, chain)

        dropped = frame.filter(bad_rows).with_columns(
            first_hit([pl.col(field) if field.startswith("_") else pl.lit(field)
                       for _, _, field, _ in checks]).alias("_field"),
            first_hit([pl.col(column) for _, column, _, _ in checks]).alias("_ref"),
            first_hit([pl.lit(what) for _, _, _, what in checks]).alias("_what"),
        )
        dropped = dropped.join(who, on="_ref", how="left", maintain_order="left")
        person = (pl.col("_what") != "class") & pl.col("_is").is_not_null()
        named = pl.format("{} '{}' names {} {} ({})", pl.col("_field"), pl.col("_ref"),
                          pl.col("_is"), pl.col("_ref"), pl.col("_name"))
        why = (
            pl.when(person & (pl.col("_is") != pl.col("_what")))
            .then(pl.format("{}, not a {}", named, pl.col("_what")))
            .when(person & ~pl.col("_live"))
            .then(pl.format("{}, who is not active in this upload", named))
            .otherwise(pl.format("{} '{}' does not name an active {} in this upload",
                                 pl.col("_field"), pl.col("_ref"), pl.col("_what")))
        )
        record = "roster_id" if kind == "rosters" else "class_id"
        outcome = ("it was removed for this sync" if enabled
                   else "turn on patching or correct the SIS")
        issues.extend(
            dropped.select(
                pl.col("_file").alias("file"), pl.col("_line").alias("line"),
                pl.col("_field").alias("column"), pl.col("_ref").alias("value"),
                pl.format("{} line {}: {}; " + outcome + ".", pl.col("_file"),
                          pl.col("_line"), why).alias("message"),
            ),
            Code.PATCHED_REFERENCE if enabled else Code.REFERENCE_MISSING,
        )
        counts[kind] = dropped.height
        summary.append(dropped.select(
            pl.col("_file").alias("file"), pl.col("_line").alias("line"),
            pl.col(record).alias("record_id"), pl.col("_field").alias("field"),
            pl.col("_ref").alias("value"), why.alias("reason"),
        ))

    instructor_checks = []
    roster_checks = []
    if "people" not in model.delta:
        if "staff" not in unavailable:
            instructor_checks.append((~pl.col("person_id").is_in(staff), "person_id",
                                      "_column", "staff member"))
        if "students" not in unavailable:
            roster_checks.append((~pl.col("student_id").is_in(students), "student_id",
                                  fields["roster.student"], "student"))
    if "classes" not in model.delta and "classes" not in unavailable:
        instructor_checks.insert(0, (~pl.col("class_id").is_in(classes), "class_id",
                                     "class_id", "class"))
        roster_checks.insert(0, (~pl.col("class_id").is_in(classes), "class_id",
                                 fields["roster.class"], "class"))
    patch("instructors", instructor_checks, settings.instructors)
    patch("rosters", roster_checks, settings.rosters)
    return Patched(model, counts, summary)
