"""The delivery ledger: one row per run and outlet (an SFTP destination or an alert).

A finished run that an outlet wants gets a ``pending`` row, due at once. A process
*claims* a due row with a conditional update that pushes its ``next_attempt_at``
out by the attempt's lease (so a crashed attempt falls due again by itself, in
this process or another), then records the outcome: ``delivered`` (with what was
delivered, e.g. the remote file) or ``failed`` with ``CODE: message`` and the next
attempt's time, None once the retries are spent. ``redeliver`` puts a run's rows
back to ``pending``. The ledger never touches the run itself: a delivery cannot
change a run's status. The record type is the typed document of ``documents.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, insert, select, update

from rosterdrop.documents import DeliveryRecord as DeliveryRecord  # re-exported
from rosterdrop.documents import DeliveryState as DeliveryState
from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import DELIVERIES


def _aware(value: Any) -> Any:
    from datetime import UTC

    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite hands back naive UTC
    return value


def _record(row: RowMapping) -> DeliveryRecord:
    return DeliveryRecord(
        id=int(row["id"]), run_id=row["run_id"], tenant=row["tenant"], outlet=row["outlet"],
        kind=row["kind"], status=DeliveryState(row["status"]), attempts=int(row["attempts"]),
        last_error=row["last_error"], detail=row["detail"],
        next_attempt_at=_aware(row["next_attempt_at"]), created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]), delivered_at=_aware(row["delivered_at"]),
    )


def add_pending(store: Store, run_id: str, tenant: str, outlets: Iterable[tuple[str, str]],
                now: datetime) -> int:
    """A ``pending`` row, due now, for each ``(outlet, kind)`` the run has none for yet;
    returns how many were added (a run recorded twice after a crash adds none)."""
    wanted = dict(outlets)
    if not wanted:
        return 0
    with translate(f"recording the deliveries of run {run_id}"), store.write() as conn:
        present = set(conn.execute(select(DELIVERIES.c.outlet)
                                   .where(DELIVERIES.c.run_id == run_id)).scalars())
        rows = [{"run_id": run_id, "tenant": tenant, "outlet": outlet, "kind": kind,
                 "status": DeliveryState.PENDING.value, "attempts": 0,
                 "next_attempt_at": now, "created_at": now, "updated_at": now}
                for outlet, kind in wanted.items() if outlet not in present]
        if rows:
            conn.execute(insert(DELIVERIES), rows)
    return len(rows)


def _unfinished() -> ColumnElement[bool]:
    return DELIVERIES.c.status.in_((DeliveryState.PENDING.value, DeliveryState.FAILED.value))


def due(store: Store, now: datetime, *, limit: int = 50) -> list[DeliveryRecord]:
    """Rows whose next attempt is due (pending or failed with a retry time), oldest first."""
    with translate("listing due deliveries"), store.engine.connect() as conn:
        rows = conn.execute(
            select(DELIVERIES)
            .where(_unfinished(), DELIVERIES.c.next_attempt_at <= now)
            .order_by(DELIVERIES.c.next_attempt_at, DELIVERIES.c.id).limit(limit)
        ).mappings().all()
    return [_record(r) for r in rows]


def claim(store: Store, record: DeliveryRecord, now: datetime, lease_until: datetime) -> bool:
    """Take a row that is still due for one attempt, its next attempt moved to
    ``lease_until``; False if another process took it first (its update moved it)."""
    with translate(f"claiming delivery {record.id}"), store.write() as conn:
        taken = conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == record.id, _unfinished(),
                   DELIVERIES.c.next_attempt_at <= now)
            .values(status=DeliveryState.PENDING.value, next_attempt_at=lease_until,
                    updated_at=now)
        ).rowcount
    return bool(taken)


def delivered(store: Store, delivery_id: int, now: datetime, detail: str) -> None:
    with translate(f"recording delivery {delivery_id}"), store.write() as conn:
        conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id).values(
            status=DeliveryState.DELIVERED.value, detail=detail, last_error=None,
            next_attempt_at=None, updated_at=now, delivered_at=now))


def failed(store: Store, delivery_id: int, now: datetime, error: str,
           retry_at: datetime | None) -> None:
    """Count a failed attempt; ``retry_at`` None: given up."""
    with translate(f"recording delivery {delivery_id}"), store.write() as conn:
        conn.execute(update(DELIVERIES).where(DELIVERIES.c.id == delivery_id).values(
            status=DeliveryState.FAILED.value, attempts=DELIVERIES.c.attempts + 1,
            last_error=error[:2000], next_attempt_at=retry_at, updated_at=now))


def of_run(store: Store, run_id: str) -> list[DeliveryRecord]:
    with translate(f"reading the deliveries of run {run_id}"), store.engine.connect() as conn:
        rows = conn.execute(select(DELIVERIES).where(DELIVERIES.c.run_id == run_id)
                            .order_by(DELIVERIES.c.id)).mappings().all()
    return [_record(r) for r in rows]


def of_runs(store: Store, run_ids: Sequence[str]) -> dict[str, list[DeliveryRecord]]:
    """Deliveries of several runs at once (history lists), keyed by run id."""
    found: dict[str, list[DeliveryRecord]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return found
    with translate("reading deliveries"), store.engine.connect() as conn:
        rows = conn.execute(select(DELIVERIES).where(DELIVERIES.c.run_id.in_(list(run_ids)))
                            .order_by(DELIVERIES.c.id)).mappings().all()
    for row in rows:
        found[row["run_id"]].append(_record(row))
    return found


def listing(store: Store, *, tenant: str | None = None, limit: int = 100,
            state: DeliveryState | None = None) -> list[DeliveryRecord]:
    """The newest deliveries, of one tenant or all."""
    query = select(DELIVERIES)
    if tenant is not None:
        query = query.where(DELIVERIES.c.tenant == tenant)
    if state is not None:
        query = query.where(DELIVERIES.c.status == state.value)
    with translate("listing deliveries"), store.engine.connect() as conn:
        rows = conn.execute(query.order_by(DELIVERIES.c.created_at.desc(),
                                           DELIVERIES.c.id.desc()).limit(limit)
                            ).mappings().all()
    return [_record(r) for r in rows]


def reopen(store: Store, run_id: str, now: datetime, *,
           outlets: Iterable[tuple[str, str]] = (), tenant: str = "") -> int:
    """``rosterdrop redeliver``: every delivery of the run pending again, due now, its
    attempts counted afresh; ``outlets`` the run has no row for yet are added. Returns
    how many rows are now pending."""
    with translate(f"reopening the deliveries of run {run_id}"), store.write() as conn:
        conn.execute(update(DELIVERIES).where(DELIVERIES.c.run_id == run_id).values(
            status=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now,
            updated_at=now, last_error=None))
    add_pending(store, run_id, tenant, outlets, now)
    return len(of_run(store, run_id))


def give_up_removed(store: Store, tenant: str, keep: Iterable[str], now: datetime) -> int:
    """Unfinished deliveries of outlets no longer configured are given up (a destination
    removed from the config is not retried for ever; the rows stay as history)."""
    kept = list(keep)
    removed = DELIVERIES.c.outlet.not_in(kept) if kept else DELIVERIES.c.outlet.is_not(None)
    with translate("giving up deliveries of removed outlets"), store.write() as conn:
        return int(conn.execute(update(DELIVERIES).where(
            DELIVERIES.c.tenant == tenant, removed, _unfinished(),
            DELIVERIES.c.next_attempt_at.is_not(None)).values(
            status=DeliveryState.FAILED.value, next_attempt_at=None, updated_at=now,
            last_error="DELIVERY_FAILED: the outlet is no longer in the configuration")
        ).rowcount)
