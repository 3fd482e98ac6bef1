"""The pure core of the sync: snapshot in, plan out; no database, clock or files.

``plan_sync(snapshot, model, tenant, today, issues)`` diffs the filtered,
patched :class:`~rosterdrop.model.Model` against the tenant's current
directory (:class:`Snapshot`, loaded by ``rosterdrop.store``) and returns a
:class:`Plan` holding exactly the rows to write. Duplicate prevention
(``duplicates.py``), managed account names (``accounts.py``), the change guard
(``guard.py``) and retention (``retention.py``) are steps of it or beside it.

How a run uses it, with the store as the I/O shell around it::

    snapshot = load_snapshot(store, tenant_key)             # store.directory
    plan = plan_sync(snapshot, model, tenant, today, issues)
    decision = check_guard(plan, tenant.guard, run_id)     # held? decision.record(issues)
    if not issues.has_errors() and not decision.held and not dry_run:
        written = apply_plan(store, tenant_key, plan, now)   # rows written per table
    document["changes"] = plan.changes()

``plan.failed`` is True when planning itself found errors; ``apply_plan``
refuses such a plan, and one whose snapshot is outdated (``PlanOutdated``:
plan again). Held runs are best re-planned on ``approve``.
"""

from rosterdrop.sync.guard import GuardDecision, check_guard
from rosterdrop.sync.plan import Plan, TableChanges, advance, plan_sync
from rosterdrop.sync.retention import choose_purge
from rosterdrop.sync.snapshot import Snapshot

__all__ = [
    "GuardDecision",
    "Plan",
    "Snapshot",
    "TableChanges",
    "advance",
    "check_guard",
    "choose_purge",
    "plan_sync",
]
