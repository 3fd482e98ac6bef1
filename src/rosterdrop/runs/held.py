"""Held runs: runs the change threshold stopped, waiting for an admin.

A held run keeps its upload (runs/kept.py) until it is approved (planned again
against the directory as it is then, and applied) or discarded. A newer upload
of the tenant that is really run discards older held runs: an admin never
approves a stale export over a newer one.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from rosterdrop.documents import RunSource, RunStatus
from rosterdrop.errors import ConflictError
from rosterdrop.runs.lifecycle import held_run as held_run
from rosterdrop.runs.lifecycle import move
from rosterdrop.store.engine import Store
from rosterdrop.store.history import RunRecord, get_run, list_runs

log = structlog.get_logger("rosterdrop.runner")

HELD_LOOKBACK = 200
"""Runs looked at for held ones (a tenant has one held run at most, its newest)."""


def held_runs(store: Store, tenant: str) -> list[RunRecord]:
    """The tenant's runs waiting for an admin (a dry run's 'held' is only a preview)."""
    return [r for r in list_runs(store, tenant, limit=HELD_LOOKBACK)
            if r.status is RunStatus.HELD and not r.dry_run]


def discard(store: Store, run: RunRecord, now: datetime) -> RunRecord:
    log.info("run_discarded", tenant=run.tenant, run_id=run.run_id)
    return move(store, run, RunStatus.DISCARDED, finished_at=now, **_discarded(run))


def discard_older(store: Store, tenant: str, newer: str, now: datetime) -> None:
    """A newer upload runs: its tenant's held runs are out of date."""
    for listed in held_runs(store, tenant):
        if listed.run_id == newer or listed.source is RunSource.CLASSES_CLEAR:
            continue  # an admin's year-end clear is not an older export
        run = get_run(store, listed.run_id)  # with its document
        try:
            move(store, run, RunStatus.DISCARDED, finished_at=now, **_discarded(run))
        except ConflictError:
            continue  # approved or discarded meanwhile
        log.info("run_discarded", tenant=tenant, run_id=run.run_id, newer_run=newer)


def _discarded(run: RunRecord) -> dict[str, object]:
    """The stored document follows the status, so history and the email agree."""
    return {} if run.document is None else {"document": run.document.with_status(
        RunStatus.DISCARDED)}
