"""When a tenant's pull is due: pure functions of the schedule and an instant.

A schedule is a series of *slots* (UTC instants). ``daily`` slots are at
``time`` in ``timezone`` each local day, so they follow daylight saving time:
02:00 America/Chicago is 08:00 UTC in winter and 07:00 UTC in summer. On the
day clocks spring forward over ``time`` (02:00 does not exist), the pull runs
at the first instant after the gap (03:00 CDT); on the day they fall back over
it (01:30 happens twice), it runs once, at the first occurrence. ``hourly``
slots are at ``time``'s minute of every real hour (23 or 25 on change days).
``interval`` slots are multiples of ``interval_minutes`` since midnight UTC.

The scheduler remembers the last slot it pulled for. A slot is due when it
is not later than now and later than that: so after downtime the missed
slots are caught up by exactly one pull at start, and a tenant never pulled
before pulls at once. No clock is read here; the caller passes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from rosterdrop.config import OneRosterSource

Frequency = Literal["daily", "hourly", "interval"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("schedule instants must be timezone-aware")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    frequency: Frequency
    at: time
    zone: ZoneInfo
    interval: timedelta = HOUR

    @classmethod
    def of(cls, source: OneRosterSource) -> Schedule:
        hour, minute = (int(part) for part in source.time.split(":"))
        return cls(source.frequency, time(hour, minute), ZoneInfo(source.timezone),
                   timedelta(minutes=source.interval_minutes))

    def describe(self) -> str:
        if self.frequency == "daily":
            return f"daily at {self.at:%H:%M} {self.zone.key}"
        if self.frequency == "hourly":
            return f"hourly at minute {self.at.minute:02d} ({self.zone.key})"
        return f"every {int(self.interval.total_seconds() // 60)} minutes"

    # --- slots ----------------------------------------------------------------------------

    def _daily(self, day: date) -> datetime:
        # fold=0: a wall time skipped by a spring-forward gap is read with the offset from
        # before the change, which lands just after the gap (02:00 CST = 03:00 CDT); a wall
        # time that happens twice is its first occurrence.
        return datetime.combine(day, self.at, tzinfo=self.zone).astimezone(UTC)

    def _hourly(self, hour_start: datetime) -> datetime:
        """The slot within the UTC hour starting at ``hour_start`` (local minute = at.minute)."""
        offset = hour_start.astimezone(self.zone).utcoffset() or timedelta(0)
        offset_minutes = int(offset.total_seconds() // 60) % 60
        return hour_start + timedelta(minutes=(self.at.minute - offset_minutes) % 60)

    def latest(self, now: datetime) -> datetime:
        """The most recent slot at or before ``now``."""
        now = _aware(now)
        if self.frequency == "daily":
            today = now.astimezone(self.zone).date()
            for back in range(4):
                slot = self._daily(today - timedelta(days=back))
                if slot <= now:
                    return slot
            raise AssertionError("no daily slot in four days")  # pragma: no cover
        if self.frequency == "hourly":
            hour = now.replace(minute=0, second=0, microsecond=0)
            for back in range(3):
                slot = self._hourly(hour - back * HOUR)
                if slot <= now:
                    return slot
            raise AssertionError("no hourly slot in three hours")  # pragma: no cover
        steps = (now - EPOCH) // self.interval
        return EPOCH + steps * self.interval

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment``."""
        moment = _aware(moment)
        if self.frequency == "daily":
            day = moment.astimezone(self.zone).date()
            for ahead in range(-1, 4):
                slot = self._daily(day + timedelta(days=ahead))
                if slot > moment:
                    return slot
            raise AssertionError("no daily slot in four days")  # pragma: no cover
        if self.frequency == "hourly":
            hour = moment.replace(minute=0, second=0, microsecond=0)
            for ahead in range(3):
                slot = self._hourly(hour + ahead * HOUR)
                if slot > moment:
                    return slot
            raise AssertionError("no hourly slot in three hours")  # pragma: no cover
        return self.latest(moment) + self.interval

    def slots(self, start: datetime, end: datetime) -> list[datetime]:
        """Every slot in ``(start, end]``, oldest first (for tests and the README)."""
        found = []
        slot = self.next_after(start)
        while slot <= _aware(end):
            found.append(slot)
            slot = self.next_after(slot)
        return found


@dataclass(frozen=True)
class Decision:
    """Pull now. ``slot``: the scheduled slot this pull covers (None: on request only)."""

    slot: datetime | None
    requested: bool


def decide(schedule: Schedule, now: datetime, last_slot: datetime | None, *,
           running: bool, requested: bool) -> Decision | None:
    """Whether to start a pull of one tenant now, and which slot it covers.

    Never while that tenant's pull is running (slots missed meanwhile are
    caught up by one pull afterwards). ``requested``: ``rosterdrop resync``
    asked for a pull now.
    """
    if running:
        return None
    slot: datetime | None = schedule.latest(now)
    if last_slot is not None and slot is not None and slot <= _aware(last_slot):
        slot = None
    if slot is None and not requested:
        return None
    return Decision(slot, requested)
