"""A run's moves from status to status: the only place a run's status changes.

``running`` → ``completed`` | ``completed_with_warnings`` | ``failed`` | ``held``
| ``unchanged``; ``held`` → (approve) any ending of a run, or ``discarded``
(the table is ``rosterdrop.documents.TRANSITIONS``). Each move is a
conditional update on the status it leaves, so a run moved by another process
meanwhile (two admins approving, a peer finishing) raises ``ConflictError``
instead of being moved twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rosterdrop.documents import TRANSITIONS, RunStatus
from rosterdrop.errors import ConflictError, UsageError
from rosterdrop.store.engine import Store
from rosterdrop.store.history import RunRecord, get_run, update_run


def move(store: Store, run: RunRecord, to: RunStatus, *, finished_at: datetime,
         **fields: Any) -> RunRecord:
    """Move ``run`` from its status to ``to``, recording ``fields`` in the same update."""
    if to not in TRANSITIONS[run.status]:
        raise ConflictError(f"run {run.run_id} is {run.status}; it cannot become {to}")
    return update_run(store, run.run_id, expected=run.status, status=to,
                      finished_at=finished_at, **fields)


def held_run(store: Store, run_id: str) -> RunRecord:
    """The held run ``run_id``; ``UsageError`` when it is in any other status."""
    run = get_run(store, run_id)
    if run.status is not RunStatus.HELD:
        raise UsageError(f"run {run_id} is {run.status}, not held; only held runs can be "
                         f"approved or discarded")
    if run.dry_run:
        raise UsageError(f"run {run_id} is a dry run: 'held' says what a real run of its "
                         f"upload would do; upload it (or run sync without --dry-run) to "
                         f"hold it for approval")
    return run
