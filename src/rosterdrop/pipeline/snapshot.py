"""The tenant's current directory, as the store holds it, in polars frames.

A :class:`Snapshot` is what ``plan_sync`` diffs the model against. The store
builds it (``rosterdrop.store.directory.load_snapshot``); tests and the pure
core build it with :meth:`Snapshot.of` / :meth:`Snapshot.empty`. Every frame
has exactly the columns and dtypes of its ``*_SCHEMA`` below, no provenance.

People are never deleted by a sync, only deactivated: a deactivated person
keeps their row (and account name) until retention purges it, so a person
who comes back is reactivated with the same ``account_id`` and ``account``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from rosterdrop.pipeline.model import ENROLLMENT_DATES, SCHEMAS, cast_to

PERSON_FIELDS = (
    "role",
    "person_number",
    "first_name",
    "middle_name",
    "last_name",
    "grade_level",
    "email_address",
    "sis_username",
    "password_policy",
    "location_ids",
)
"""The synced fields of a person: a change in any of them is an update."""

PEOPLE_SCHEMA: dict[str, Any] = {
    "account_id": pl.Int64,  # stable key of the account, assigned by the store
    "person_id": pl.String,  # current SIS id
    "previous_ids": pl.List(pl.String),  # SIS ids replaced by duplicate prevention
    **{name: SCHEMAS["people"][name] for name in PERSON_FIELDS},
    "account": pl.String,  # managed account name, local@domain; never changes
    "status": pl.String,  # "active" | "inactive"
    # "sis" | "local" (edited locally: the SIS no longer updates it) | "imported" (people
    # import: not from the SIS, not ended by it; an SIS person who matches it takes it over)
    "source": pl.String,
    # A local account's SIS values as last reported (ACCOUNT_LOCAL only when they change)
    "sis_seen": pl.String,
    "deactivated_on": pl.Date,
}


def _model_columns(kind: str, *drop: str) -> dict[str, Any]:
    return {k: v for k, v in SCHEMAS[kind].items() if k not in {"active", *drop}}


LOCATIONS_SCHEMA = _model_columns("locations")
COURSES_SCHEMA = _model_columns("courses")
CLASSES_SCHEMA = _model_columns("classes")
INSTRUCTORS_SCHEMA = _model_columns("instructors", "_column", *ENROLLMENT_DATES)
ROSTERS_SCHEMA = _model_columns("rosters", *ENROLLMENT_DATES)

SNAPSHOT_SCHEMAS: dict[str, dict[str, Any]] = {
    "people": PEOPLE_SCHEMA,
    "locations": LOCATIONS_SCHEMA,
    "courses": COURSES_SCHEMA,
    "classes": CLASSES_SCHEMA,
    "instructors": INSTRUCTORS_SCHEMA,
    "rosters": ROSTERS_SCHEMA,
}
TABLE_KINDS = tuple(SNAPSHOT_SCHEMAS)

KEYS: dict[str, tuple[str, ...]] = {
    "people": ("account_id",),
    "locations": ("location_id",),
    "courses": ("course_id",),
    "classes": ("class_id",),
    "instructors": ("class_id", "person_id"),
    "rosters": ("roster_id",),
}
"""The key of each snapshot frame (unique within a tenant)."""

ACTIVE, INACTIVE = "active", "inactive"
SIS, LOCAL, IMPORTED = "sis", "local", "imported"


def snapshot_frame(kind: str, frame: pl.DataFrame | None = None) -> pl.DataFrame:
    """``frame`` selected and cast to the kind's snapshot schema (absent columns null)."""
    schema = SNAPSHOT_SCHEMAS[kind]
    if frame is None:
        return pl.DataFrame(schema=schema)
    return cast_to(frame, schema)


@dataclass(frozen=True)
class Snapshot:
    """One tenant's directory at one store revision."""

    people: pl.DataFrame = field(default_factory=lambda: snapshot_frame("people"))
    locations: pl.DataFrame = field(default_factory=lambda: snapshot_frame("locations"))
    courses: pl.DataFrame = field(default_factory=lambda: snapshot_frame("courses"))
    classes: pl.DataFrame = field(default_factory=lambda: snapshot_frame("classes"))
    instructors: pl.DataFrame = field(default_factory=lambda: snapshot_frame("instructors"))
    rosters: pl.DataFrame = field(default_factory=lambda: snapshot_frame("rosters"))
    taken_accounts: pl.Series = field(
        default_factory=lambda: pl.Series("account", [], pl.String)
    )
    """Every account name that blocks reuse: active, deactivated, or deleted
    within retention (in this store: every account still in the people table,
    because purge removes a person only once retention has passed)."""
    revision: int = 0
    """The store's revision counter for the tenant when the snapshot was read;
    ``apply_plan`` refuses a plan whose snapshot is no longer current."""

    @classmethod
    def empty(cls) -> Snapshot:
        return cls()

    @classmethod
    def of(
        cls,
        *,
        revision: int = 0,
        taken_accounts: Iterable[str] = (),
        **frames: pl.DataFrame,
    ) -> Snapshot:
        """A snapshot from frames with at least the key columns, conformed to the schemas.

        ``taken_accounts`` are names taken besides those of ``people``.
        """
        unknown = set(frames) - set(TABLE_KINDS)
        if unknown:
            raise TypeError(f"unknown snapshot frame(s): {', '.join(sorted(unknown))}")
        conformed = {kind: snapshot_frame(kind, frames.get(kind)) for kind in TABLE_KINDS}
        taken = pl.concat(
            [
                conformed["people"]["account"].drop_nulls(),
                pl.Series("account", list(taken_accounts), pl.String),
            ]
        ).unique(maintain_order=True)
        return cls(**conformed, taken_accounts=taken.rename("account"), revision=revision)

    def frame(self, kind: str) -> pl.DataFrame:
        return getattr(self, kind)  # type: ignore[no-any-return]

    def active_people(self) -> int:
        return int((self.people["status"] == ACTIVE).sum())

    def sorted(self) -> Snapshot:
        """The same snapshot with every frame in key order (for comparisons)."""
        frames = {kind: self.frame(kind).sort(KEYS[kind]) for kind in TABLE_KINDS}
        return Snapshot(
            **frames, taken_accounts=self.taken_accounts.sort(), revision=self.revision
        )
