"""Duplicate prevention (pipeline.md "Prevent duplicate accounts").

An incoming person whose person_id is unknown to the store is compared with
every existing account of the tenant *of the same role*, active or inactive
(a student never takes over a staff account, nor the reverse), on the
tenant's ``duplicates.match_on`` fields: all of them must be equal; names and emails
are compared trimmed and case-insensitively, person_number and sis_username
trimmed; a blank value never matches. Exactly one candidate → the person
takes over that account (same account_id and name; the new SIS id replaces
the old one, which is kept in ``previous_ids``). Imported accounts (``people
import``) are candidates like any other; their placeholder person_id is no SIS
id, so their ``previous_id`` is null.

``MATCH_AMBIGUOUS`` (an error) when a person has more than one candidate, or
when one account would be claimed twice: by two incoming people, or by an
incoming person while the account's own SIS id is still in the upload. The
message lists the candidate accounts by name and account_id, and the other
claimants by SIS id: no other personal data. Everything is joins.

``MATCH_MISSING`` (an error, only with ``duplicates.require_match``, the
migration mode) when an unknown person matches no account at all: the
message names the person and the values tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from rosterdrop.codes import Code
from rosterdrop.pipeline.imports import PLACEHOLDER_PREFIX
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.messages import joined, person_issues, quoted

CASE_INSENSITIVE = frozenset({"first_name", "last_name", "middle_name", "email_address"})


def _normalised(name: str) -> pl.Expr:
    value = pl.col(name).cast(pl.String).str.strip_chars()
    if name in CASE_INSENSITIVE:
        value = value.str.to_lowercase()
    return pl.when(value == "").then(None).otherwise(value).alias(f"_m_{name}")


@dataclass(frozen=True)
class Matches:
    """The outcome of duplicate prevention for the unknown incoming people."""

    matched: pl.DataFrame
    """One row per unambiguous match: ``person_id`` (incoming) → ``account_id`` and
    ``account`` (existing), ``previous_id`` (the account's SIS id until now, null for an
    account that had none)."""
    ambiguous: pl.Series
    """Incoming person_ids reported as ``MATCH_AMBIGUOUS``."""
    missing: pl.Series
    """Incoming person_ids that matched no account (``MATCH_MISSING`` under require_match)."""


MATCHED_SCHEMA = {"person_id": pl.String, "account_id": pl.Int64, "account": pl.String,
                  "previous_id": pl.String}


def match_duplicates(
    unknown: pl.DataFrame,
    existing: pl.DataFrame,
    claimed: pl.Series,
    match_on: Sequence[str],
    issues: IssueLog,
    *,
    require_match: bool = False,
) -> Matches:
    """Match ``unknown`` incoming people (model rows) to ``existing`` accounts.

    ``existing`` is the snapshot's people frame; ``claimed`` holds the
    account_ids that incoming people already claim by their own person_id.
    """
    no_one = pl.Series("person_id", [], pl.String)
    if not match_on or unknown.height == 0:
        return Matches(pl.DataFrame(schema=MATCHED_SCHEMA), no_one, no_one)
    fields_ = [*match_on, "role"]
    keys = [f"_m_{name}" for name in fields_]
    left = unknown.select(
        "person_id", "_file", "_line", *[_normalised(name) for name in fields_]
    )
    right = existing.select(
        "account_id",
        # An imported account's person_id is a placeholder, not an SIS id it had (also
        # once the account was edited or reset before the SIS sent its person).
        pl.when(pl.col("person_id").str.starts_with(PLACEHOLDER_PREFIX)).then(None)
        .otherwise(pl.col("person_id")).alias("_own_id"),
        "account",
        *[_normalised(name) for name in fields_],
    ).drop_nulls(keys)
    pairs = left.drop_nulls(keys).join(right, on=keys, how="inner")
    missing = left.join(pairs.select("person_id"), on="person_id", how="anti")
    if require_match and missing.height:
        tried = [pl.lit(f"{name} ") + quoted(pl.col(f"_m_{name}")) for name in match_on]
        issues.extend(
            person_issues(
                missing,
                pl.lit("new person '") + pl.col("person_id")
                + pl.lit("' (") + pl.col("_m_role").fill_null("no role")
                + pl.lit(") matches no existing account; tried ")
                + pl.concat_str(tried, separator=", ")
                + pl.lit(". duplicates.require_match is on (a migration): every new person "
                         "must match exactly one existing account of the same role; import "
                         "the account (rosterdrop people import), correct the values in the "
                         "SIS, or turn require_match off."),
            ),
            Code.MATCH_MISSING,
        )
    if pairs.height == 0:
        return Matches(pl.DataFrame(schema=MATCHED_SCHEMA), no_one, missing["person_id"])
    pairs = pairs.with_columns(
        _n=pl.len().over("person_id"),
        _label=pl.col("account") + pl.lit(" (account ") + pl.col("account_id").cast(pl.String)
        + pl.lit(")"),
    )
    fields = joined(list(match_on))

    # More than one candidate for one incoming person.
    several = (
        pairs.filter(pl.col("_n") > 1)
        .sort("account_id")
        .group_by("person_id", maintain_order=True)
        .agg(
            pl.col("_file").first(),
            pl.col("_line").first(),
            pl.len().alias("n"),
            pl.col("_label").str.join(", ").alias("labels"),
        )
    )

    # One candidate, but the account is claimed more than once.
    single = pairs.filter(pl.col("_n") == 1)
    own = (
        existing.filter(pl.col("account_id").is_in(claimed.implode()))
        .select("account_id", claimant=pl.lit("person '") + pl.col("person_id")
                + pl.lit("' (the account's current SIS id)"))
    )
    claims = pl.concat(
        [
            single.select(
                "account_id",
                claimant=pl.lit("person '") + pl.col("person_id") + pl.lit("'"),
            ),
            own.join(single.select("account_id").unique(), on="account_id", how="semi"),
        ]
    )
    contested = single.join(
        claims.group_by("account_id").agg(pl.len().alias("_claims")), on="account_id"
    ).filter(pl.col("_claims") > 1)
    others = (
        contested.select("person_id", "account_id")
        .join(claims, on="account_id")
        .filter(pl.col("claimant") != pl.lit("person '") + pl.col("person_id") + pl.lit("'"))
        .sort("claimant")
        .group_by("person_id")
        .agg(pl.col("claimant").str.join(" and ").alias("others"))
    )
    contested = contested.join(others, on="person_id", how="left")

    fix = (
        "; make these values unique in the SIS (or correct the person's SIS id), "
        "or change duplicates.match_on."
    )
    if several.height:
        issues.extend(
            person_issues(
                several,
                pl.lit("new person '") + pl.col("person_id") + pl.lit("' matches ")
                + pl.col("n").cast(pl.String)
                + pl.lit(f" existing accounts on {fields}: ") + pl.col("labels")
                + pl.lit(fix),
            ),
            Code.MATCH_AMBIGUOUS,
        )
    if contested.height:
        issues.extend(
            person_issues(
                contested,
                pl.lit("new person '") + pl.col("person_id")
                + pl.lit("' matches the existing account ") + pl.col("_label")
                + pl.lit(f" on {fields}, and so does ") + pl.col("others")
                + pl.lit(fix),
            ),
            Code.MATCH_AMBIGUOUS,
        )
    ambiguous = pl.concat([several["person_id"], contested["person_id"]]).unique()
    matched = single.filter(~pl.col("person_id").is_in(ambiguous.implode())).select(
        "person_id", "account_id", "account", previous_id=pl.col("_own_id")
    )
    return Matches(matched, ambiguous.rename("person_id"), missing["person_id"])
