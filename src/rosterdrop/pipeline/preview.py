"""The preview of a plan: who and what a run would create, deactivate, reactivate or
remove, one row each — Apple School Manager's "Preview Accounts and Classes".

Written as ``preview.csv`` for dry runs and held runs, so an admin can read what
approving would do before doing it; the counts are the run's ``changes``.
"""

from __future__ import annotations

import polars as pl

from rosterdrop.pipeline.plan import Plan
from rosterdrop.pipeline.snapshot import INACTIVE

PREVIEW_SCHEMA = {
    "record": pl.String,  # person | class
    "action": pl.String,  # create | reactivate | deactivate | remove
    "id": pl.String,  # person_id or class_id
    "role": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
    "account": pl.String,  # the account name a new person gets, or the existing one's
    "class_name": pl.String,
    "location_id": pl.String,
}


def _people(frame: pl.DataFrame, action: str) -> pl.DataFrame:
    return frame.select(
        record=pl.lit("person"), action=pl.lit(action), id=pl.col("person_id"),
        role=pl.col("role"), first_name=pl.col("first_name"), last_name=pl.col("last_name"),
        account=pl.col("account"),
    )


def _classes(frame: pl.DataFrame, action: str) -> pl.DataFrame:
    name = (pl.col("class_display_name") if "class_display_name" in frame.columns
            else pl.lit(None, pl.String))
    location = (pl.col("location_id") if "location_id" in frame.columns
                else pl.lit(None, pl.String))
    return frame.select(record=pl.lit("class"), action=pl.lit(action), id=pl.col("class_id"),
                        class_name=name, location_id=location)


def preview_frame(plan: Plan) -> pl.DataFrame:
    """Every person and class the plan creates, reactivates, deactivates or removes."""
    people = plan.people
    was_inactive = plan.base.people.filter(pl.col("status") == INACTIVE).select("account_id")
    back = people.update.join(was_inactive, on="account_id", how="semi")
    removed = plan.classes.remove.join(plan.base.classes, on="class_id", how="left")
    parts = [
        _people(people.create, "create"),
        _people(back, "reactivate"),
        _people(people.deactivate, "deactivate"),
        _classes(plan.classes.create, "create"),
        _classes(removed, "remove"),
    ]
    return pl.concat(
        [part.select([pl.col(c).cast(t) if c in part.columns else pl.lit(None, t).alias(c)
                      for c, t in PREVIEW_SCHEMA.items()]) for part in parts],
        how="vertical",
    )
