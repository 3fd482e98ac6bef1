"""Filter Data: keep the records the tenant syncs (pipeline.md "Filter").

Removed records are not issues: they are counted per kind and listed in the
patch summary, and remembered so a later dangling reference can say which
filter removed its target.
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


@dataclass
class Filtered:
    model: Model
    counts: dict[str, int] = field(default_factory=dict)
    summary: list[pl.DataFrame] = field(default_factory=list)
    gone: dict[str, pl.DataFrame] = field(default_factory=dict)
    """Kind → (id, reason) of records the filter removed."""


def _summary(frame: pl.DataFrame, id_column: str, field_name: str, value: pl.Expr,
             reason: pl.Expr) -> pl.DataFrame:
    return frame.select(
        pl.col("_file").alias("file"), pl.col("_line").alias("line"),
        pl.col(id_column).alias("record_id"), pl.lit(field_name).alias("field"),
        value.cast(pl.String).alias("value"), reason.alias("reason"),
    )


def apply_filter(model: Model, settings: FilterSettings, today: date) -> Filtered:
    result = Filtered(model)
    _drop_inactive(result)
    _drop_roles(result, settings.roles)
    if settings.schools:
        _keep_schools(result, settings.schools)
    if settings.active_terms:
        _keep_current_terms(result, today, settings.ahead_days)
    _drop_orphans(result)
    return result


def _remove(result: Filtered, kind: str, mask: pl.Expr, field_name: str, value: pl.Expr,
            reason: pl.Expr) -> None:
    """Remove rows of ``kind`` where ``mask`` holds, recording why."""
    frame = result.model.frame(kind)
    removed = frame.filter(mask)
    if removed.height == 0:
        return
    result.model = result.model.with_frames(**{kind: frame.filter(~mask)})
    count_kind = kind
    result.counts[count_kind] = result.counts.get(count_kind, 0) + removed.height
    id_column = ID_COLUMN.get(kind, "class_id")
    result.summary.append(_summary(removed, id_column, field_name, value, reason))
    if kind in ID_COLUMN:
        gone = removed.select(pl.col(id_column).alias("id"), reason.alias("reason"))
        previous = result.gone.get(kind)
        result.gone[kind] = gone if previous is None else pl.concat([previous, gone])


def _drop_inactive(result: Filtered) -> None:
    """Not-active records of bulk files count as absent; delta keeps them as tombstones."""
    for kind in ("locations", "people", "courses", "classes", "instructors", "rosters", "terms"):
        if kind in result.model.delta:
            continue
        reason = (
            pl.lit("not active in the SIS (status tobedeleted or enabledUser false)")
            if kind == "people" else pl.lit("not active in the SIS (status tobedeleted)")
        )
        _remove(result, kind, ~pl.col("active"), "status", pl.lit("inactive"), reason)


def _drop_roles(result: Filtered, roles: Sequence[str]) -> None:
    if set(roles) >= {"student", "staff"}:
        return
    _remove(
        result, "people", ~pl.col("role").is_in(roles), "role", pl.col("role"),
        pl.format("filter.roles does not include {}", pl.col("role")),
    )


def _keep_schools(result: Filtered, schools: list[str]) -> None:
    reason = "filter.schools does not include location {}"
    _remove(
        result, "locations", ~pl.col("location_id").is_in(schools), "location_id",
        pl.col("location_id"), pl.format("filter.schools does not include {}",
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
        pl.format("filter.schools includes none of this person's locations ({})",
                  pl.col("location_ids").list.join(",")),
    )
    result.model = result.model.with_frames(
        people=result.model.people.with_columns(pl.col("_kept").alias("location_ids"))
        .drop("_kept")
    )
    for kind in ("courses", "classes"):
        _remove(
            result, kind, ~pl.col("location_id").is_in(schools), "location_id",
            pl.col("location_id"), pl.format(reason, pl.col("location_id")),
        )


def _keep_current_terms(result: Filtered, today: date, ahead_days: int) -> None:
    """Keep classes with a term that has begun (or begins within ahead_days) and not ended."""
    horizon = today + timedelta(days=ahead_days)
    terms = result.model.terms
    current = terms.filter(
        (pl.col("start_date") <= horizon) & (pl.col("end_date") > today)
    )["term_id"]
    known = terms["term_id"]
    classes = result.model.classes
    keep = pl.col("term_ids").list.eval(pl.element().is_in(current)).list.any()
    # A class whose terms are all unknown is left for the reference check to report.
    unknown_only = ~pl.col("term_ids").list.eval(pl.element().is_in(known)).list.any()
    result.model = result.model.with_frames(classes=classes)
    _remove(
        result, "classes", ~keep & ~unknown_only, "termSourcedIds",
        pl.col("term_ids").list.join(","),
        pl.format(
            "filter.active_terms: none of its terms ({}) is current on "
            + today.isoformat() + (f" or starts within {ahead_days} days" if ahead_days else ""),
            pl.col("term_ids").list.join(","),
        ),
    )


def _drop_orphans(result: Filtered) -> None:
    """Enrollments go with the classes a filter removed (not patching: nothing dangles)."""
    gone_classes = result.gone.get("classes")
    if gone_classes is None:
        return
    ids = gone_classes["id"]
    for kind in ("instructors", "rosters"):
        _remove(
            result, kind, pl.col("class_id").is_in(ids), "class_id", pl.col("class_id"),
            pl.format("its class {} was removed by a filter", pl.col("class_id")),
        )


def summary_frame(parts: list[pl.DataFrame]) -> pl.DataFrame:
    if not parts:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    return pl.concat([p.cast(SUMMARY_SCHEMA) for p in parts], how="vertical")  # type: ignore[arg-type]
