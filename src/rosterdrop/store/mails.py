"""The mail ledger: one row per run's report email, so that every finished run's
email goes out exactly once, across crashes and processes.

``pending`` while an attempt is under way (or was cut short by a crash),
``sent`` once delivered, ``failed`` with ``next_attempt_at`` when an attempt
failed. ``take_due`` hands a due report to exactly one process: the one whose
conditional update matches.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, insert, select, update

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import MAILS


class MailState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


STALE_PENDING = timedelta(minutes=10)
"""A ``pending`` report older than this was cut short (its process died): retry it."""


def mail_state(store: Store, run_id: str) -> MailState | None:
    with translate(f"reading the mail state of run {run_id}"), store.engine.connect() as conn:
        value = conn.execute(
            select(MAILS.c.status).where(MAILS.c.run_id == run_id)).scalar_one_or_none()
    return None if value is None else MailState(value)


def failed_attempts(store: Store, run_id: str) -> int:
    with translate(f"reading the mail attempts of run {run_id}"), store.engine.connect() as conn:
        value = conn.execute(
            select(MAILS.c.attempts).where(MAILS.c.run_id == run_id)).scalar_one_or_none()
    return int(value or 0)


def set_mail_state(store: Store, run_id: str, state: MailState, now: datetime, *,
                   error: str | None = None, retry_at: datetime | None = None) -> int:
    """Record a report's state; a ``failed`` one counts an attempt and waits until
    ``retry_at`` (None: never again). Returns the failed attempts so far."""
    failed = int(state is MailState.FAILED)
    with translate(f"recording the mail state of run {run_id}"), store.write() as conn:
        attempts = conn.execute(
            select(MAILS.c.attempts).where(MAILS.c.run_id == run_id)).scalar_one_or_none()
        done = (attempts or 0) + failed
        values = {"status": state.value, "attempts": done, "last_error": error,
                  "updated_at": now, "next_attempt_at": retry_at if failed else None}
        if attempts is None:
            conn.execute(insert(MAILS).values(run_id=run_id, created_at=now, **values))
        else:
            conn.execute(update(MAILS).where(MAILS.c.run_id == run_id).values(**values))
    return done


def _due(now: datetime) -> ColumnElement[bool]:
    failed_due = (MAILS.c.status == MailState.FAILED.value) & (MAILS.c.next_attempt_at <= now)
    cut_short = ((MAILS.c.status == MailState.PENDING.value)
                 & (MAILS.c.updated_at <= now - STALE_PENDING))
    return failed_due | cut_short


def due_runs(store: Store, now: datetime) -> list[str]:
    """Runs whose report is due for another attempt."""
    with translate("listing report emails to retry"), store.engine.connect() as conn:
        return [str(r) for r in conn.execute(select(MAILS.c.run_id).where(_due(now))).scalars()]


def take_due(store: Store, run_id: str, now: datetime) -> bool:
    """Mark a due report ``pending`` for this process; False if another took it first."""
    with translate(f"taking the report email of run {run_id}"), store.write() as conn:
        taken = conn.execute(update(MAILS).where((MAILS.c.run_id == run_id) & _due(now))
                             .values(status=MailState.PENDING.value, updated_at=now)).rowcount
    return bool(taken)
