"""Checks on people that span files or need the mapped model: IDs and emails."""

from __future__ import annotations

import re
from dataclasses import replace

import polars as pl

from rosterdrop.codes import Code
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import Model

EMAIL_PATTERN = r"^[^@\s,;<>()\[\]\\\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$"


def _email_column() -> pl.Expr:
    return (
        pl.when(pl.col("_file") == "users.csv").then(pl.lit("email"))
        .otherwise(pl.lit("email_address"))
    )


def check_people(model: Model, issues: IssueLog,
                 unread_email: frozenset[str] = frozenset()) -> Model:
    """person_id unique across students and staff; emails present and usable.

    Invalid emails are dropped for this sync (warnings), so the returned
    model carries only emails managed accounts can use. ``unread_email``: files
    whose email column is missing (its header issue says so): nobody in them is
    reported for having no email.
    """
    people = model.people
    _check_cross_file_ids(people, issues)

    email = pl.col("email_address")
    missing = people.filter(email.is_null() & ~pl.col("_file").is_in(sorted(unread_email)))
    issues.extend(
        missing.select(
            pl.col("_file").alias("file"), pl.col("_line").alias("line"),
            _email_column().alias("column"),
            pl.format(
                "{} line {}: {} {} has no email address, so accounts that need one cannot "
                "be made; add the email in the SIS if needed.",
                pl.col("_file"), pl.col("_line"), pl.col("role"), pl.col("person_id"),
            ).alias("message"),
        ),
        Code.EMAIL_MISSING,
    )
    apostrophe = email.str.contains("'", literal=True) | email.str.contains("’", literal=True)
    malformed = ~email.str.contains(EMAIL_PATTERN) | email.str.contains("..", literal=True)
    bad = people.filter(email.is_not_null() & (apostrophe | malformed))
    issues.extend(
        bad.select(
            pl.col("_file").alias("file"), pl.col("_line").alias("line"),
            _email_column().alias("column"), email.alias("value"),
            pl.when(apostrophe)
            .then(pl.format(
                "{} line {}: email '{}' contains an apostrophe, which managed accounts do "
                "not support (an account that has an email keeps it); correct the email in "
                "the SIS and sync again.",
                pl.col("_file"), pl.col("_line"), email))
            .otherwise(pl.format(
                "{} line {}: email '{}' is not a valid email address and was left out of "
                "this sync (an account that has an email keeps it); correct it in the SIS.",
                pl.col("_file"), pl.col("_line"), email))
            .alias("message"),
        ),
        Code.EMAIL_INVALID,
    )
    if bad.height == 0:
        return model.with_frames(people=people)
    people = people.with_columns(
        pl.when(apostrophe | malformed).then(None).otherwise(email).alias("email_address")
    )
    dropped = frozenset(bad["person_id"].drop_nulls().to_list())
    return replace(model.with_frames(people=people), dropped_emails=dropped)


def _check_cross_file_ids(people: pl.DataFrame, issues: IssueLog) -> None:
    """A person_id may not name both a student and a staff member."""
    both = people.filter(pl.col("person_id").is_duplicated()).filter(
        pl.col("_file").n_unique().over("person_id") > 1
    )
    if both.height == 0:
        return
    first = both.group_by("person_id").agg(
        pl.col("_file").first().alias("_other_file"), pl.col("_line").first().alias("_other")
    )
    later = both.join(first, on="person_id").filter(pl.col("_file") != pl.col("_other_file"))
    issues.extend(
        later.select(
            pl.col("_file").alias("file"), pl.col("_line").alias("line"),
            pl.lit("person_id").alias("column"), pl.col("person_id").alias("value"),
            pl.format(
                "{} line {}: person_id '{}' is also used in {} line {}; a person_id must be "
                "unique across students and staff, so correct one of them in the SIS.",
                pl.col("_file"), pl.col("_line"), pl.col("person_id"),
                pl.col("_other_file"), pl.col("_other"),
            ).alias("message"),
        ),
        Code.ID_DUPLICATE,
    )


REQUIRED_FIELDS = ("first_name", "last_name")
SIS_ONLY_FIELDS = ("role",)


def edit_problems(fields: dict[str, str | None], known_locations: set[str]) -> list[str]:
    """Why a local edit (``people set``) cannot be made, as an upload's checks would say;
    empty when it can. ``fields`` hold the new values (blank: None)."""
    problems = []
    for name in SIS_ONLY_FIELDS:
        if name in fields:
            problems.append(f"{name} cannot be set locally: it comes from the SIS file the "
                            f"person is in (students.csv or staff.csv, or the OneRoster role)")
    for name in REQUIRED_FIELDS:
        if name in fields and not fields[name]:
            problems.append(f"{name} cannot be blank: every account needs one")
    email = fields.get("email_address")
    if email:
        if "'" in email or "’" in email:
            problems.append(f"email_address {email!r} contains an apostrophe, which managed "
                            f"accounts do not allow")
        elif re.match(EMAIL_PATTERN, email) is None or ".." in email:
            problems.append(f"email_address {email!r} is not a valid email address")
    raw = fields.get("location_ids")
    if raw:
        unknown = sorted({part.strip() for part in raw.split(",") if part.strip()}
                         - known_locations)
        if unknown:
            problems.append(f"location_ids names unknown location(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known_locations)) or 'none'}")
    return problems
