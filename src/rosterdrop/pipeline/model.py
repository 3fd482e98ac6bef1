"""The directory model every upload is mapped onto.

Both layouts (ASM, OneRoster 1.1/1.2) become the same seven polars frames.
All values are strings (trimmed; blank → null) except where noted. Every
frame also carries provenance, ``_file`` and ``_line`` (the physical line the
record starts on), so later steps can point the admin at the source record.

``active`` is False for records the SIS marks as not active (OneRoster
``status=tobedeleted``, people with ``enabledUser=false``). In a bulk upload
the filter drops them (they count as absent); in a delta upload they are
tombstones that deactivate or remove what they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

PROVENANCE: dict[str, Any] = {"_file": pl.String, "_line": pl.Int64}

LOCATIONS: dict[str, Any] = {
    "location_id": pl.String,
    "location_name": pl.String,
    "active": pl.Boolean,
}
PEOPLE: dict[str, Any] = {
    "person_id": pl.String,
    "role": pl.String,  # "student" | "staff"
    "person_number": pl.String,
    "first_name": pl.String,
    "middle_name": pl.String,
    "last_name": pl.String,
    "grade_level": pl.String,
    "email_address": pl.String,
    "sis_username": pl.String,
    "password_policy": pl.String,
    "location_ids": pl.List(pl.String),  # ordered, first is the primary location
    "active": pl.Boolean,
}
COURSES: dict[str, Any] = {
    "course_id": pl.String,
    "course_number": pl.String,
    "course_name": pl.String,
    "location_id": pl.String,
    "active": pl.Boolean,
}
CLASSES: dict[str, Any] = {
    "class_id": pl.String,
    "class_number": pl.String,
    "course_id": pl.String,
    "location_id": pl.String,
    "class_display_name": pl.String,
    "term_ids": pl.List(pl.String),  # OneRoster only; empty for ASM
    "active": pl.Boolean,
}
ENROLLMENT_DATES: dict[str, Any] = {
    "begin_date": pl.Date,  # OneRoster enrollment beginDate (inclusive); null for ASM
    "end_date": pl.Date,  # OneRoster enrollment endDate (inclusive); null for ASM
}
"""Read for the filter only (``filter.active_terms``); never stored in the snapshot."""
INSTRUCTORS: dict[str, Any] = {
    "class_id": pl.String,
    "person_id": pl.String,
    "position": pl.Int32,  # 0 = first instructor
    "source_id": pl.String,  # OneRoster enrollment sourcedId; null for ASM
    "active": pl.Boolean,
    "_column": pl.String,  # where the reference stands (instructor_id_2, userSourcedId)
    **ENROLLMENT_DATES,
}
ROSTERS: dict[str, Any] = {
    "roster_id": pl.String,
    "class_id": pl.String,
    "student_id": pl.String,
    "active": pl.Boolean,
    **ENROLLMENT_DATES,
}
TERMS: dict[str, Any] = {
    "term_id": pl.String,
    "start_date": pl.Date,
    "end_date": pl.Date,  # exclusive
    "active": pl.Boolean,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "locations": LOCATIONS,
    "people": PEOPLE,
    "courses": COURSES,
    "classes": CLASSES,
    "instructors": INSTRUCTORS,
    "rosters": ROSTERS,
    "terms": TERMS,
}
KINDS = tuple(SCHEMAS)
"""The model's record kinds, in dependency order."""

ID_COLUMN = {
    "locations": "location_id",
    "people": "person_id",
    "courses": "course_id",
    "classes": "class_id",
    "rosters": "roster_id",
    "terms": "term_id",
}

COUNT_KINDS = ("locations", "students", "staff", "courses", "classes", "rosters")
"""The kinds the JSON ``counts`` object reports (people split by role)."""


def empty_frame(kind: str) -> pl.DataFrame:
    return pl.DataFrame(schema={**SCHEMAS[kind], **PROVENANCE})


def conform(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``frame`` to the kind's schema; absent columns are null."""
    return cast_to(frame, {**SCHEMAS[kind], **PROVENANCE})


def cast_to(frame: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns, cast; absent columns are null."""
    return frame.select(
        [
            pl.col(name).cast(dtype) if name in frame.columns else pl.lit(None, dtype).alias(name)
            for name, dtype in schema.items()
        ]
    )


@dataclass(frozen=True)
class Model:
    locations: pl.DataFrame = field(default_factory=lambda: empty_frame("locations"))
    people: pl.DataFrame = field(default_factory=lambda: empty_frame("people"))
    courses: pl.DataFrame = field(default_factory=lambda: empty_frame("courses"))
    classes: pl.DataFrame = field(default_factory=lambda: empty_frame("classes"))
    instructors: pl.DataFrame = field(default_factory=lambda: empty_frame("instructors"))
    rosters: pl.DataFrame = field(default_factory=lambda: empty_frame("rosters"))
    terms: pl.DataFrame = field(default_factory=lambda: empty_frame("terms"))
    delta: frozenset[str] = frozenset()
    """Kinds delivered as OneRoster delta files: they change only what they name."""
    dropped_emails: frozenset[str] = frozenset()
    """person_ids whose email was unusable and left out of this sync: an account that has
    a stored email keeps it (the plan never writes a bad email over a good one)."""

    def frame(self, kind: str) -> pl.DataFrame:
        return getattr(self, kind)  # type: ignore[no-any-return]

    def with_frames(self, **frames: pl.DataFrame) -> Model:
        return replace(self, **frames)  # type: ignore[arg-type]

    def counts(self) -> dict[str, int]:
        role = self.people["role"]
        return {
            "locations": self.locations.height,
            "students": int((role == "student").sum()),
            "staff": int((role == "staff").sum()),
            "courses": self.courses.height,
            "classes": self.classes.height,
            "rosters": self.rosters.height,
        }
