"""Filter Data: keep the records the tenant syncs (pipeline.md "Filter").

Nothing a filter removes is an issue: removed records are counted per kind and
listed in the patch summary ("filtered: <filter>; <why>"), and so is
everything that exists only to reference them (the instructor and roster rows
of removed classes and people). Patching is left with the references that are
broken in the upload itself. Removed ids are remembered so that a reference
the filter cannot remove with its target (a kept class whose course a school
filter removed) can say which filter removed the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from rosterdrop.config import FilterSettings
from rosterdrop.pipeline.model import ID_COLUMN, Model

SUMMARY_SCHEMA = {
    "file": pl.String,
    "line": pl.Int64,
    "record_id": pl.String,
    "field": pl.String,
    "value": pl.String,
    "reason": pl.String,
}
GONE_SCHEMA = {"id": pl.String, "tag": pl.String, "reason": pl.String}

NOT_ACTIVE, ROLE, SCHOOL = "not active", "role", "school"
INACTIVE_TERM, ENROLLMENT_DATES, IDLE_STAFF = "inactive term", "enrollment dates", "idle staff"
"""The filters, as the patch summary names them: ``filtered: <tag>; <why>``."""


@dataclass
class Filtered:
    model: Model
    counts: dict[str, int] = field(default_factory=dict)
    summary: list[pl.DataFrame] = field(default_factory=list)
    gone: dict[str, pl.DataFrame] = field(default_factory=dict)
    """Kind → (id, tag, reason) of records the filter removed."""


def apply_filter(model: Model, settings: FilterSettings, today: date,
                 family: str) -> Filtered:
    """``family``: "asm" or "oneroster" (active_terms applies to OneRoster only)."""
    result = Filtered(model)
    # Staff who teach a class of the upload, before any filter (drop_idle_staff).
    taught = model.instructors.filter(
        pl.col("class_id").is_in(model.classes["class_id"].implode())
    )["person_id"].unique()
    _drop_inactive(result)
    _drop_roles(result, settings.roles)
    if settings.schools:
        _keep_schools(result, settings.schools)
    if settings.active_terms and family == "oneroster":
        _keep_current_terms(result, today, settings.ahead_days)
        _keep_current_enrollments(result, today, settings.ahead_days)
        _drop_courses_without_classes(result)
    if settings.drop_idle_staff:
        _drop_idle_staff(result, taught)
    _drop_enrollments_of_removed(result, family)
    return result


def _record(result: Filtered, kind: str, removed: pl.DataFrame, field_name: pl.Expr,
            value: pl.Expr, tag: pl.Expr, why: pl.Expr) -> None:
    """Count and list ``removed`` rows of ``kind`` (already taken out of the model)."""
    if removed.height == 0:
        return
    result.counts[kind] = result.counts.get(kind, 0) + removed.height
    id_column = ID_COLUMN.get(kind, "class_id")
    result.summary.append(removed.select(
        pl.col("_file").alias("file"), pl.col("_line").alias("line"),
        pl.col(id_column).alias("record_id"), field_name.alias("field"),
        value.cast(pl.String).alias("value"),
        pl.format("filtered: {}; {}", tag, why).alias("reason"),
    ))
    if kind in ID_COLUMN:
        gone = removed.select(pl.col(id_column).alias("id"), tag.alias("tag"),
                              why.alias("reason"))
        previous = result.gone.get(kind)
        result.gone[kind] = gone if previous is None else pl.concat([previous, gone])


def _remove(result: Filtered, kind: str, mask: pl.Expr, field_name: str | pl.Expr,
            value: pl.Expr, tag: str, why: pl.Expr) -> None:
    """Remove rows of ``kind`` where ``mask`` holds, recording why."""
    frame = result.model.frame(kind)
    # Filter by the expression, not a boolean Series: polars 2.1 panics formatting a
    # literal-built column (ASM's role) of a frame filtered by a Series.
    hit = mask.fill_null(False)
    removed = frame.filter(hit)
    if removed.height == 0:
        return
    result.model = result.model.with_frames(**{kind: frame.filter(~hit)})
    name = pl.lit(field_name) if isinstance(field_name, str) else field_name
    _record(result, kind, removed, name, value, pl.lit(tag), why)


def _drop_inactive(result: Filtered) -> None:
    """Not-active records of bulk files count as absent; delta keeps them as tombstones."""
    for kind in ("locations", "people", "courses", "classes", "instructors", "rosters", "terms"):
        if kind in result.model.delta:
            continue
        reason = (
            pl.lit("not active in the SIS (status tobedeleted or enabledUser false)")
            if kind == "people" else pl.lit("not active in the SIS (status tobedeleted)")
        )
        _remove(result, kind, ~pl.col("active"), "status", pl.lit("inactive"), NOT_ACTIVE,
                reason)


def _drop_roles(result: Filtered, roles: Sequence[str]) -> None:
    if set(roles) >= {"student", "staff"}:
        return
    _remove(
        result, "people", ~pl.col("role").is_in(roles), "role", pl.col("role"), ROLE,
        pl.format("filter.roles does not include {}", pl.col("role")),
    )


def _keep_schools(result: Filtered, schools: list[str]) -> None:
    reason = "filter.schools does not include location {}"
    _remove(
        result, "locations", ~pl.col("location_id").is_in(schools), "location_id",
        pl.col("location_id"), SCHOOL, pl.format("filter.schools does not include {}",
                                                 pl.col("location_id")),
    )
    people = result.model.people.with_columns(
        pl.col("location_ids").list.eval(pl.element().filter(pl.element().is_in(schools)))
        .alias("_kept")
    )
    outside = pl.col("_kept").list.len() == 0
    result.model = result.model.with_frames(people=people)
    _remove(
        result, "people", outside, "location_id", pl.col("location_ids").list.join(","),
        SCHOOL, pl.format("filter.schools includes none of this person's locations ({})",
                          pl.col("location_ids").list.join(",")),
    )
    result.model = result.model.with_frames(
        people=result.model.people.with_columns(pl.col("_kept").alias("location_ids"))
        .drop("_kept")
    )
    for kind in ("courses", "classes"):
        _remove(
            result, kind, ~pl.col("location_id").is_in(schools), "location_id",
            pl.col("location_id"), SCHOOL, pl.format(reason, pl.col("location_id")),
        )


def _window(today: date, ahead_days: int) -> str:
    return today.isoformat() + (f" or starts within {ahead_days} days" if ahead_days else "")


def _keep_current_terms(result: Filtered, today: date, ahead_days: int) -> None:
    """Keep classes with a term that has begun (or begins within ahead_days) and not ended."""
    horizon = today + timedelta(days=ahead_days)
    terms = result.model.terms
    current = terms.filter(
        (pl.col("start_date") <= horizon) & (pl.col("end_date") > today)
    )["term_id"].implode()
    known = terms["term_id"].implode()
    keep = pl.col("term_ids").list.eval(pl.element().is_in(current)).list.any()
    # A class whose terms are all unknown is left for the reference check to report.
    unknown_only = ~pl.col("term_ids").list.eval(pl.element().is_in(known)).list.any()
    _remove(
        result, "classes", ~keep & ~unknown_only, "termSourcedIds",
        pl.col("term_ids").list.join(","), INACTIVE_TERM,
        pl.format("filter.active_terms: none of its terms ({}) is current on "
                  + _window(today, ahead_days), pl.col("term_ids").list.join(",")),
    )


def _keep_current_enrollments(result: Filtered, today: date, ahead_days: int) -> None:
    """Drop OneRoster enrollments that ended before today (endDate is their last day) or
    begin after today + ahead_days. A missing date does not limit the enrollment."""
    horizon = today + timedelta(days=ahead_days)
    ended = pl.col("end_date") < today
    field_name = pl.when(ended).then(pl.lit("endDate")).otherwise(pl.lit("beginDate"))
    value = pl.when(ended).then(pl.col("end_date")).otherwise(pl.col("begin_date"))
    why = (
        pl.when(ended)
        .then(pl.format("filter.active_terms: the enrollment ended ({}) before "
                        + today.isoformat(), pl.col("end_date")))
        .otherwise(pl.format("filter.active_terms: the enrollment begins ({}) after "
                             + horizon.isoformat(), pl.col("begin_date")))
    )
    outside = pl.col("active") & (ended | (pl.col("begin_date") > horizon))
    for kind in ("instructors", "rosters"):
        _remove(result, kind, outside, field_name, value, ENROLLMENT_DATES, why)


def _drop_courses_without_classes(result: Filtered) -> None:
    """With active_terms, a course none of whose classes is kept is not active either."""
    if "classes" in result.model.delta:
        return  # the directory may hold its classes
    kept = result.model.classes["course_id"].unique().implode()
    _remove(
        result, "courses", pl.col("active") & ~pl.col("course_id").is_in(kept),
        "sourcedId", pl.col("course_id"), INACTIVE_TERM,
        pl.lit("filter.active_terms: no class of this course is kept"),
    )


def _drop_idle_staff(result: Filtered, taught: pl.Series) -> None:
    """Staff who teach a class of the upload, but none the filters kept. Staff who teach
    no class at all (principals, counselors) are not idle: they are kept."""
    model = result.model
    if {"classes", "instructors"} & model.delta:
        return  # the directory may hold their classes
    teaching = model.instructors.filter(
        pl.col("class_id").is_in(model.classes["class_id"].implode())
    )["person_id"].unique().implode()
    _remove(
        result, "people",
        pl.col("active") & (pl.col("role") == "staff")
        & pl.col("person_id").is_in(taught.implode()) & ~pl.col("person_id").is_in(teaching),
        "role", pl.col("role"), IDLE_STAFF,
        pl.lit("filter.drop_idle_staff: teaches none of the classes the filters keep"),
    )


def _drop_enrollments_of_removed(result: Filtered, family: str) -> None:
    """Instructor and roster rows go with the class or person a filter removed: they
    are filtered too (same tag), not patched, so nothing here is an issue."""
    model = result.model

    def gone(kind: str) -> pl.DataFrame:
        removed = result.gone.get(kind)
        if removed is None:
            return pl.DataFrame(schema=GONE_SCHEMA)
        kept = model.frame(kind)[ID_COLUMN[kind]].implode()
        # An id still in the upload (a delta tombstone, say) is not gone.
        return removed.filter(~pl.col("id").is_in(kept)).unique("id", keep="first")

    classes, people = gone("classes"), gone("people")
    if classes.height == 0 and people.height == 0:
        return
    asm = family == "asm"
    class_field = "class_id" if asm else "classSourcedId"
    for kind, person, person_field, what in (
        ("instructors", "person_id", pl.col("_column"), "staff member"),
        ("rosters", "student_id", pl.lit("student_id" if asm else "userSourcedId"), "student"),
    ):
        frame = result.model.frame(kind)
        hit = (
            pl.col("class_id").is_in(classes["id"].implode())
            | pl.col(person).is_in(people["id"].implode())
        ).fill_null(False)
        removed = frame.filter(hit)
        if removed.height == 0:
            continue
        result.model = result.model.with_frames(**{kind: frame.filter(~hit)})
        removed = (
            removed
            .join(classes.rename({"id": "class_id", "tag": "_ctag", "reason": "_cwhy"}),
                  on="class_id", how="left", maintain_order="left")
            .join(people.rename({"id": person, "tag": "_ptag", "reason": "_pwhy"}),
                  on=person, how="left", maintain_order="left")
        )
        by_class = pl.col("_ctag").is_not_null()
        _record(
            result, kind, removed,
            pl.when(by_class).then(pl.lit(class_field)).otherwise(person_field),
            pl.when(by_class).then(pl.col("class_id")).otherwise(pl.col(person)),
            pl.coalesce("_ctag", "_ptag"),
            pl.when(by_class)
            .then(pl.format("its class {} was removed ({})", pl.col("class_id"),
                            pl.col("_cwhy")))
            .otherwise(pl.format("its " + what + " {} was removed ({})", pl.col(person),
                                 pl.col("_pwhy"))),
        )


def summary_frame(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    return pl.concat([p.cast(SUMMARY_SCHEMA) for p in parts], how="vertical")  # type: ignore[arg-type]
