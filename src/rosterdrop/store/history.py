"""Run history: one row per sync run, newest first.

The runner creates a run when it starts (``status = "running"``), updates it
as steps finish, and marks it ``applied`` when its plan was written.
``last_applied_sha256`` lets the runner record a byte-identical re-upload as
``unchanged`` without planning it again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update

from rosterdrop.errors import NotFound, UsageError
from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import RUNS

RUN_STATUSES = (
    "running",
    "completed",
    "completed_with_warnings",
    "failed",
    "held",
    "unchanged",
    "discarded",
)
RUN_SOURCES = ("sftp", "watch", "cli", "resync", "oneroster-api")


@dataclass
class RunRecord:
    """One run, as stored."""

    run_id: str
    tenant: str
    source: str
    status: str = "running"
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    layout: str | None = None
    dry_run: bool = False
    applied: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
    issue_counts: dict[str, Any] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)
    """The full ``sync --json`` document (empty in ``list_runs`` unless asked for)."""
    timings: dict[str, Any] = field(default_factory=dict)
    """Seconds per pipeline step."""
    created_at: datetime | None = None
    finished_at: datetime | None = None
    applied_at: datetime | None = None
    artifact_dir: str | None = None
    held_plan: str | None = None


_FIELDS = tuple(f.name for f in fields(RunRecord))
_TIMES = ("created_at", "finished_at", "applied_at")


def new_run_id(now: datetime) -> str:
    """A short id that sorts by time: ``20261123-113845-ab12cd34`` (UTC); 32 random bits
    keep runs started in the same second apart."""
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def _check(values: dict[str, Any]) -> dict[str, Any]:
    status = values.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise UsageError(f"unknown run status {status!r}")
    source = values.get("source")
    if source is not None and source not in RUN_SOURCES:
        raise UsageError(f"unknown run source {source!r}")
    for name in _TIMES:
        moment = values.get(name)
        if moment is not None:
            if moment.tzinfo is None:
                raise UsageError(f"{name} must be timezone-aware")
            values[name] = moment.astimezone(UTC)
    return values


def _record(row: RowMapping) -> RunRecord:
    values = {name: row[name] for name in _FIELDS if name in row}
    for name in _TIMES:
        moment = values.get(name)
        if moment is not None:  # SQLite keeps naive UTC; PostgreSQL answers in its zone
            values[name] = (
                moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
            )
    return RunRecord(**values)


def create_run(store: Store, run: RunRecord) -> RunRecord:
    """Store a new run (``created_at`` defaults to now)."""
    values = _check({name: getattr(run, name) for name in _FIELDS})
    if values["created_at"] is None:
        values["created_at"] = datetime.now(UTC)
    with translate(f"recording run {run.run_id}"), store.write() as conn:
        conn.execute(insert(RUNS).values(**values))
    return RunRecord(**values)


def update_run(store: Store, run_id: str, **changes: Any) -> RunRecord:
    """Change some fields of a run; returns the run as stored."""
    unknown = sorted(set(changes) - set(_FIELDS) | ({"run_id"} & set(changes)))
    if unknown:
        raise UsageError(f"cannot update run field(s) {', '.join(unknown)}")
    table = RUNS
    with translate(f"updating run {run_id}"), store.write() as conn:
        if changes:
            result = conn.execute(
                update(table).where(table.c.run_id == run_id).values(**_check(dict(changes)))
            )
            if result.rowcount != 1:
                raise NotFound(f"no run {run_id!r}")
        row = conn.execute(select(table).where(table.c.run_id == run_id)).mappings().first()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    return _record(row)


def get_run(store: Store, run_id: str) -> RunRecord:
    table = RUNS
    with translate(f"reading run {run_id}"), store.engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.run_id == run_id)).mappings().first()
    if row is None:
        raise NotFound(f"no run {run_id!r}")
    return _record(row)


def list_runs(
    store: Store,
    tenant: str | None = None,
    limit: int = 20,
    *,
    with_document: bool = False,
) -> list[RunRecord]:
    """Recent runs, newest first (all tenants unless ``tenant``)."""
    table = RUNS
    columns = [c for c in table.c if with_document or c.name != "document"]
    query = select(*columns).order_by(table.c.created_at.desc(), table.c.run_id.desc())
    if tenant is not None:
        query = query.where(table.c.tenant == tenant)
    query = query.limit(max(0, limit))
    with translate("listing runs"), store.engine.connect() as conn:
        return [_record(row) for row in conn.execute(query).mappings()]


def last_applied_sha256(store: Store, tenant: str) -> str | None:
    """The sha256 of the tenant's most recently applied upload, if any."""
    table = RUNS
    query = (
        select(table.c.sha256)
        .where((table.c.tenant == tenant) & table.c.applied.is_(True))
        .order_by(table.c.applied_at.desc(), table.c.run_id.desc())
        .limit(1)
    )
    with translate("reading the last applied upload"), store.engine.connect() as conn:
        value = conn.execute(query).scalar_one_or_none()
    return None if value is None else str(value)
