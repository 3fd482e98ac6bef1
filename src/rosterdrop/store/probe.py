"""Looking at a store without opening it for work: is it there, reachable, and which
schema version does it hold? For ``rosterdrop doctor``, which must not create or upgrade
anything. A plain SQLite file is read with the standard library (no SQLAlchemy to
load); other URLs through SQLAlchemy with a connect timeout.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

SQLITE_FILE = "sqlite:///"


class Reach(StrEnum):
    ABSENT = "absent"  # a SQLite file not made yet
    EMPTY = "empty"  # reachable, no schema yet
    READY = "ready"  # reachable, with a schema version
    INVALID = "invalid"  # the URL itself is wrong
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Probe:
    reach: Reach
    shown: str
    """The store as it may be shown (a password hidden)."""
    version: int | None = None
    reason: str = ""


def probe_store(url: str, *, timeout_seconds: float) -> Probe:
    if url.startswith(SQLITE_FILE) and "?" not in url:
        return _probe_sqlite(Path(url.removeprefix(SQLITE_FILE)))
    from sqlalchemy import create_engine, inspect, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from rosterdrop.store.tables import SCHEMA_VERSION_TABLE

    try:
        parsed = make_url(url)
    except ArgumentError:
        return Probe(Reach.INVALID, url, reason="not a database URL")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _probe_sqlite(Path(parsed.database or ""))
    if backend != "postgresql":
        return Probe(Reach.INVALID, url, reason=f"unsupported database {backend!r}")
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, connect_args={"connect_timeout": int(timeout_seconds)})
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(SCHEMA_VERSION_TABLE.name):
                return Probe(Reach.EMPTY, shown)
            version = conn.execute(select(SCHEMA_VERSION_TABLE.c.version)).scalar_one_or_none()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return Probe(Reach.UNREACHABLE, shown, reason=reason[0] if reason else str(exc))
    finally:
        engine.dispose()
    return Probe(Reach.READY, shown, int(version) if version is not None else None)


def _probe_sqlite(database: Path) -> Probe:
    shown = f"SQLite {database}"
    if not database.is_file():
        return Probe(Reach.ABSENT, shown)
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if "no such table" in str(exc):
            return Probe(Reach.EMPTY, shown)
        return Probe(Reach.UNREACHABLE, shown, reason=str(exc))
    return Probe(Reach.READY, shown, int(row[0]) if row else None)
