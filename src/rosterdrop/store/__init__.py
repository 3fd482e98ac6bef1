"""The I/O shell around the sync core: the database (SQLite or PostgreSQL).

Import the modules themselves (nothing is re-exported here, so that a command
that reads the history does not load polars and the directory code).

- ``engine``: ``open_store(url) -> Store``, error translation to StoreError;
- ``tables``: the schema and its upgrade path;
- ``directory``: ``load_snapshot``, ``apply_plan``, ``list_people``,
  ``set_person``, ``purge``;
- ``history``: runs (create, update, get, list, last applied upload).
"""
