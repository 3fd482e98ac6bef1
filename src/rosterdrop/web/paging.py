"""Paging maths (pure): keyset cursors for the history, page numbers for issues.

The history is paged by keyset: the next page starts after the last run shown,
``(created_at, run_id)`` descending, so page 500 costs what page 1 costs. A cursor
is that key, URL-safe; a cursor that does not decode is treated as the first page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class RunKey:
    created_at: datetime
    run_id: str


def encode_cursor(key: RunKey) -> str:
    raw = f"{key.created_at.astimezone(UTC).isoformat()}|{key.run_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> RunKey | None:
    if not cursor or len(cursor) > 200:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, run_id = raw.split("|", 1)
        created = datetime.fromisoformat(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if created.tzinfo is None or not run_id:
        return None
    return RunKey(created, run_id)


@dataclass(frozen=True)
class Page:
    """One page of ``total`` items, ``size`` a page; ``number`` counts from 1."""

    number: int
    size: int
    total: int

    @classmethod
    def of(cls, requested: str | int | None, size: int, total: int) -> Page:
        """The page asked for, clamped to the pages there are (junk: the first)."""
        try:
            number = int(requested or 1)
        except (TypeError, ValueError):
            number = 1
        last = max(1, -(-total // size))
        return cls(min(max(1, number), last), size, total)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None
