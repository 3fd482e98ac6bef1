"""The I/O shell around the sync core: the database (SQLite or PostgreSQL).

Import the modules themselves (nothing is re-exported here, so that a command
that reads the history does not load polars and the directory code).

- ``engine``: ``open_store(url) -> Store``, error translation to StoreError;
- ``tables``: the schema and its upgrade path;
- ``directory``: ``load_snapshot``, ``apply_plan``, ``list_people``,
  ``set_person``, ``purge``;
- ``history``: runs (create, update, get, list, last applied upload).

The one name defined here is :data:`SCHEMA_VERSION` (``tables`` imports it), so
that ``rosterdrop doctor`` can compare a database's version without loading
SQLAlchemy.
"""

SCHEMA_VERSION = 9
"""1: the first schema. 2: ``ix_people_lifecycle`` (the purge's "anyone due?" query read
every person of the tenant without it; benchmarks/README.md). 3: the never-written
columns ``runs.held_plan`` and ``jobs.sha256`` dropped. 4: ``tenant_state.paused_at``
(``rosterdrop tenant pause``). 5: ``people.sis_seen`` (a local account's SIS values as
last reported). 6: ``counters`` (SQLite never hands an account_id out twice). 7: ``audit`` and
``web_sessions`` (the console). 8: ``ix_runs_console`` (the console's dashboard and history
pick run ids from it without reading the run documents; benchmarks/README.md, P11). 9:
``deliveries`` and ``api_tokens`` (outlets: docs/outlets.md). See tables.py."""
