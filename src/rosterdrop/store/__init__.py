"""The I/O shell around the sync core: the database (SQLite or PostgreSQL).

- ``engine``: ``open_store(url) -> Store``, error translation to StoreError;
- ``tables``: the schema and its upgrade path;
- ``directory``: ``load_snapshot``, ``apply_plan``, ``list_people``,
  ``set_person``, ``purge``;
- ``history``: runs (create, update, get, list, last applied upload).
"""

from rosterdrop.store.directory import (
    PlanOutdated,
    apply_plan,
    list_people,
    load_snapshot,
    purge,
    set_person,
)
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import (
    RunRecord,
    create_run,
    get_run,
    last_applied_sha256,
    list_runs,
    new_run_id,
    update_run,
)

__all__ = [
    "PlanOutdated",
    "RunRecord",
    "Store",
    "apply_plan",
    "create_run",
    "get_run",
    "last_applied_sha256",
    "list_people",
    "list_runs",
    "load_snapshot",
    "new_run_id",
    "open_store",
    "purge",
    "set_person",
    "update_run",
]
