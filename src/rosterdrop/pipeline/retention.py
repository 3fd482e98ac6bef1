"""Retention: which deactivated people to purge, and so free their account names.

A person deactivated on day D is purged on day ``D + retention_days`` or
later (``retention_days = 0``: at the first purge after deactivation). Until
then the row stays, a returning person is reactivated with the same account,
and the account name blocks reuse.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from rosterdrop.pipeline.snapshot import INACTIVE


def choose_purge(people: pl.DataFrame, today: date, retention_days: int) -> pl.DataFrame:
    """The rows of ``people`` (snapshot schema) whose retention has passed."""
    cutoff = today - timedelta(days=retention_days)
    return people.filter(
        (pl.col("status") == INACTIVE)
        & pl.col("deactivated_on").is_not_null()
        & (pl.col("deactivated_on") <= cutoff)
    )
