"""Run history: one row per sync run, newest first.

The runner creates a run when it starts (``RunStatus.RUNNING``), updates it
as steps finish, and marks it ``applied`` when its plan was written.
``last_applied_sha256`` lets the runner record a byte-identical re-upload as
``unchanged`` without planning it again. Statuses, sources and the run document
are the typed ones of ``rosterdrop.documents``; the document is stored as its
JSON form. A status change can name the status it expects to replace
(``expected=``), so two processes (or two admins) never both move the same run.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, insert, select, update

from rosterdrop.documents import DeliveryRecord, RunDocument, RunSource, RunStatus, RunSummary
from rosterdrop.errors import ConflictError, NotFound, UsageError
from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import RUNS


@dataclass
class RunRecord:
    """One run, as stored."""

    run_id: str
    tenant: str
    source: RunSource
    status: RunStatus = RunStatus.RUNNING
    file_name: str | None = None
    size: int | None = None
    sha256: str | None = None
    layout: str | None = None
    dry_run: bool = False
    applied: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
    issue_counts: dict[str, Any] = field(default_factory=dict)
    document: RunDocument | None = None
    """The full ``sync --json`` document (None while running, and in ``list_runs``
    unless asked for)."""
    timings: dict[str, Any] = field(default_factory=dict)
    """Seconds per pipeline step."""
    created_at: datetime | None = None
    finished_at: datetime | None = None
    applied_at: datetime | None = None
    artifact_dir: str | None = None

    def summary(self, deliveries: Sequence[DeliveryRecord] = ()) -> RunSummary:
        return RunSummary(deliveries=tuple(deliveries),
            run_id=self.run_id, tenant=self.tenant, source=self.source, status=self.status,
            file=self.file_name, sha256=self.sha256, layout=self.layout,
            dry_run=self.dry_run, created_at=self.created_at, finished_at=self.finished_at,
            document=self.document, counts=dict(self.counts),
            issue_counts=dict(self.issue_counts),
        )


_FIELDS = tuple(f.name for f in fields(RunRecord))
_TIMES = ("created_at", "finished_at", "applied_at")


def new_run_id(now: datetime) -> str:
    """A short id that sorts by time: ``20261123-113845-ab12cd34`` (UTC); 32 random bits
    keep runs started in the same second apart."""
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def _check(values: dict[str, Any]) -> dict[str, Any]:
    """Values as the table keeps them: enums by value, the document as JSON, UTC times."""
    for name, kind in (("status", RunStatus), ("source", RunSource)):
        value = values.get(name)
        if value is not None:
            try:
                values[name] = kind(value).value
            except ValueError:
                raise UsageError(f"unknown run {name} {value!r}") from None
    if "document" in values:
        document = values["document"]
        values["document"] = document.to_json() if document is not None else {}
    for name in _TIMES:
        moment = values.get(name)
        if moment is not None:
            if moment.tzinfo is None:
                raise UsageError(f"{name} must be timezone-aware")
            values[name] = moment.astimezone(UTC)
    return values


def _record(row: RowMapping) -> RunRecord:
    values: dict[str, Any] = {name: row[name] for name in _FIELDS if name in row}
    values["status"] = RunStatus(values["status"])
    values["source"] = RunSource(values["source"])
    document = values.get("document")
    values["document"] = RunDocument.from_json(document) if document else None
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
        row = conn.execute(select(RUNS).where(RUNS.c.run_id == run.run_id)).mappings().one()
    return _record(row)


def update_run(store: Store, run_id: str, *, expected: RunStatus | None = None,
               **changes: Any) -> RunRecord:
    """Change some fields of a run; returns the run as stored.

    With ``expected``, the change is made only while the run's status is still
    ``expected``; otherwise ``ConflictError`` (someone else moved it first).
    """
    unknown = sorted(set(changes) - set(_FIELDS) | ({"run_id"} & set(changes)))
    if unknown:
        raise UsageError(f"cannot update run field(s) {', '.join(unknown)}")
    table = RUNS
    where = table.c.run_id == run_id
    if expected is not None:
        where &= table.c.status == expected.value
    with translate(f"updating run {run_id}"), store.write() as conn:
        if changes:
            result = conn.execute(update(table).where(where).values(**_check(dict(changes))))
            if result.rowcount != 1:
                current = conn.execute(
                    select(table.c.status).where(table.c.run_id == run_id)).scalar_one_or_none()
                if current is None:
                    raise NotFound(f"no run {run_id!r}")
                raise ConflictError(f"run {run_id} is {current} now, no longer {expected}")
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
