"""Opening the store: SQLite (a file in the state folder) or PostgreSQL.

``open_store(url)`` returns a :class:`Store`, the one handle the rest of the
store works through. SQLite runs in WAL mode with ``synchronous=NORMAL``
(checkpoints on a background thread after each write, ``checkpoint.py``),
foreign keys on and a busy timeout; write transactions start with ``BEGIN
IMMEDIATE`` so two writers queue instead of failing half-way. PostgreSQL
URLs (``postgresql://`` or ``postgresql+psycopg://``) use psycopg 3; reads of
a whole snapshot run in one REPEATABLE READ transaction.

Every SQLAlchemy, DB-API and file error is translated here into
:class:`~rosterdrop.errors.StoreError` (:func:`translate`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rosterdrop.errors import StoreError
from rosterdrop.paths import private_file, private_folder
from rosterdrop.store.tables import (
    ALL_TABLES,
    SCHEMA_VERSION,
    SCHEMA_VERSION_TABLE,
    UPGRADES,
    metadata,
)

if TYPE_CHECKING:
    # The background threads (and structlog, which checkpoint.py logs with) are
    # loaded on the first write or cache job, not by a command that only reads.
    from rosterdrop.store.checkpoint import Checkpointer, Lane

SQLITE_BUSY_MS = 30_000
_WRITE = "rosterdrop_write"
_CACHE_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0][:500]


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Re-raise database and file errors met while doing ``what`` as StoreError."""
    try:
        yield
    except StoreError:
        raise
    except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
        raise StoreError(f"{what}: {_short(exc)}") from exc
    except Exception as exc:
        if not _from_driver_or_frames(exc):
            raise
        raise StoreError(f"{what}: {_short(exc)}") from exc


def _from_driver_or_frames(exc: Exception) -> bool:
    """psycopg's and polars' errors, recognised without importing either (the CLI's
    history and show commands never load them)."""
    return any(cls.__module__.split(".", 1)[0] in ("psycopg", "polars")
               for cls in type(exc).__mro__)


class Store:
    """An open database plus, optionally, a folder for snapshot caches.

    ``written(table, rows)`` is called after every bulk statement of a write;
    it does nothing here, and exists so tests can inject faults half-way
    through a transaction by subclassing.
    """

    def __init__(self, engine: Engine, cache_dir: Path | None = None) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self.dialect = engine.dialect.name
        self._store_id: str | None = None
        self._cache_lane: Lane | None = None
        self._checkpointer: Checkpointer | None = None
        self._checkpoints = self.is_sqlite and engine.url.database not in (None, "", ":memory:")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def cache_lane(self) -> Lane:
        """Snapshot caches are written here after a commit; readers ``wait()`` first."""
        if self._cache_lane is None:
            from rosterdrop.store.checkpoint import Lane

            self._cache_lane = Lane("rosterdrop-cache")
        return self._cache_lane

    @property
    def checkpointer(self) -> Checkpointer | None:
        """WAL checkpoints after each write (a SQLite file only; None otherwise)."""
        if self._checkpointer is None and self._checkpoints:
            from rosterdrop.store.checkpoint import Checkpointer

            self._checkpointer = Checkpointer(self.engine)
        return self._checkpointer

    @property
    def store_id(self) -> str:
        if self._store_id is None:
            with translate("reading the store id"), self.engine.connect() as conn:
                self._store_id = str(conn.execute(select(SCHEMA_VERSION_TABLE.c.store_id)).scalar_one())
        return self._store_id

    def cache_path(self, tenant: str) -> Path | None:
        """The tenant's snapshot cache folder, or None without caching."""
        if self.cache_dir is None or not _CACHE_TENANT.match(tenant):
            return None
        return self.cache_dir / tenant

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (committed on success, rolled back on any exception)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn
        checkpointer = self.checkpointer
        if checkpointer is not None:
            checkpointer.request()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that sees one consistent state of the database."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def written(self, table: str, rows: int) -> None:
        """Hook: a bulk statement wrote ``rows`` rows to ``table``."""

    def ping(self) -> None:
        """One round trip to the database; StoreError when it does not answer."""
        with translate("reaching the store"), self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def close(self) -> None:
        if self._cache_lane is not None:
            self._cache_lane.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:":
        with translate(f"creating the folder for {database}"):
            private_folder(Path(database).parent)
            # The directory holds children's names and emails: readable by its owner only
            # (SQLite gives its -wal and -shm files the database file's permissions).
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
            for file in (database, f"{database}-wal", f"{database}-shm"):
                private_file(Path(file))  # an older version's may be looser
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below); the sqlite3 module must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "wal_autocheckpoint=0",  # checkpoint.py does it, after the commit
            "synchronous=NORMAL",
            "foreign_keys=ON",
            f"busy_timeout={SQLITE_BUSY_MS}",
            "cache_size=-65536",
            "temp_store=MEMORY",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_store(url: str, *, cache_dir: Path | None = None, cache: bool = True) -> Store:
    """Open (and create or upgrade) the store at ``url``.

    ``cache_dir``: where snapshot caches live; by default, for SQLite, a
    ``cache`` folder next to the database file, and none for PostgreSQL
    (pass ``state_dir / "cache"``: a sync that changes 1% of an L district
    then reads its snapshot in ~0.1 s instead of ~0.7 s). ``cache=False``
    turns caching off.
    """
    with translate(f"opening the store {url!r}"):
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"invalid database URL {url!r}: {exc}") from exc
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            engine = _sqlite_engine(url, parsed.database)
            if cache_dir is None and parsed.database and parsed.database != ":memory:":
                cache_dir = Path(parsed.database).parent / "cache"
        elif backend == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            elif parsed.drivername != "postgresql+psycopg":
                raise StoreError(f"unsupported PostgreSQL driver {parsed.drivername!r}; use psycopg")
            engine = create_engine(parsed, pool_pre_ping=True)
        else:
            raise StoreError(f"unsupported database {backend!r}; use sqlite or postgresql")
        store = Store(engine, cache_dir if cache else None)
        try:
            ensure_schema(store)
        except BaseException:
            engine.dispose()
            raise
        return store


def _schema_is_current(store: Store) -> bool:
    """A read-only look: every table is there and the version is this code's."""
    with translate("reading the schema version"), store.read() as conn:
        if not {table.name for table in ALL_TABLES} <= set(inspect(conn).get_table_names()):
            return False
        version = conn.execute(select(SCHEMA_VERSION_TABLE.c.version)).scalar_one_or_none()
    return version is not None and int(version) == SCHEMA_VERSION


def ensure_schema(store: Store) -> None:
    """Create a new schema, or upgrade an older one step by step (see tables.py).

    A current schema is only read: opening the store for ``history`` takes no
    write lock (it does not queue behind a running sync) and starts no thread."""
    if _schema_is_current(store):
        return
    with translate("creating or upgrading the schema"), store.write() as conn:
        if not store.is_sqlite:
            # One process at a time creates or upgrades (SQLite: BEGIN IMMEDIATE did it).
            conn.execute(text("SELECT pg_advisory_xact_lock(727100001)"))
        metadata.create_all(conn, tables=[SCHEMA_VERSION_TABLE], checkfirst=True)
        row = conn.execute(select(SCHEMA_VERSION_TABLE.c.version)).scalar_one_or_none()
        if row is None:
            metadata.create_all(conn, tables=list(ALL_TABLES), checkfirst=True)
            conn.execute(
                SCHEMA_VERSION_TABLE.insert().values(
                    id=1, version=SCHEMA_VERSION, store_id=uuid.uuid4().hex
                )
            )
            return
        version = int(row)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the database has schema version {version}, newer than this rosterdrop "
                f"({SCHEMA_VERSION}); upgrade rosterdrop"
            )
        while version < SCHEMA_VERSION:
            UPGRADES[version](conn)
            version += 1
        metadata.create_all(conn, tables=list(ALL_TABLES), checkfirst=True)
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": version})
