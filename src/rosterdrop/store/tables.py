"""The database schema: SQLAlchemy Core tables, one per table.

Directory tables (every row keyed by ``tenant``):

- ``people``: one row per managed account, ``account_id`` its stable key.
  ``person_id`` is the current SIS id (unique per tenant), ``previous_ids``
  the ids duplicate prevention replaced. A sync deactivates people; only the
  retention purge deletes them, which frees their account name.
- ``locations``, ``courses``, ``classes``, ``class_instructors``, ``rosters``:
  mirrors of the model, keyed by (tenant, SIS id).

List values (``location_ids``, ``term_ids``, ``previous_ids``) are JSON
arrays in text columns, the same on SQLite and PostgreSQL. Timestamps are
UTC.

Run bookkeeping: ``runs`` (history), ``jobs`` (the daemon's queue), ``mails``
(report emails and their retries), ``audit`` (who approved, edited, uploaded …),
``web_sessions`` (console sign-ins), ``deliveries`` (what each run sent to the
tenant's outlets), ``api_tokens`` (OneRoster API sign-ins), ``tenant_state`` (a revision counter per
tenant, bumped by every write to its directory; it guards plans made against
an older snapshot and validates the snapshot cache).

Schema versions: ``schema_version`` holds one row with the version of the
schema in the file and a random ``store_id``. :data:`SCHEMA_VERSION` is the
version this code writes; :data:`UPGRADES` maps version *n* to the step that
brings a store from *n* to *n + 1* (ALTER TABLE and data moves, in one
transaction with the version bump). ``engine.open_store`` runs the missing
steps in order and then ``create_all``, which adds tables new in this version
(so a step never needs to create a whole new table). To change the schema:
bump :data:`SCHEMA_VERSION` (in ``store/__init__.py``), change the tables below,
add the step.

Plain Core tables (no ORM, no SQLModel): every reader and writer works with
these ``Table`` objects, and importing them costs the CLI's ``history`` and
``show`` no ORM. Columns are ``NOT NULL`` unless ``nullable=True``; the
``default=`` values are applied by SQLAlchemy on insert (there are no server
defaults).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    inspect,
    text,
)

from rosterdrop.store import SCHEMA_VERSION as SCHEMA_VERSION  # defined there: doctor reads it

metadata = MetaData()

_UTC_TIME = DateTime(timezone=True)
_ID = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid
_CLUSTERED: dict[str, Any] = {"sqlite_with_rowid": False}
"""SQLite keeps these rows in their (tenant, id) primary key: one b-tree, not two."""


def _text(name: str, **kwargs: Any) -> Column[Any]:
    """A VARCHAR column, NOT NULL unless ``nullable=True``."""
    kwargs.setdefault("nullable", False)
    return Column(name, String(), **kwargs)


def _optional(name: str) -> Column[Any]:
    return Column(name, String(), nullable=True)


def _key(name: str) -> Column[Any]:
    return Column(name, String(), primary_key=True, nullable=False)


def _time(name: str, *, nullable: bool = False) -> Column[Any]:
    return Column(name, _UTC_TIME, nullable=nullable)


def _int(name: str, **kwargs: Any) -> Column[Any]:
    kwargs.setdefault("nullable", False)
    return Column(name, Integer(), **kwargs)


def _json(name: str) -> Column[Any]:
    return Column(name, JSON(), nullable=False, default=dict)


def _serial(name: str) -> Column[Any]:
    return Column(name, _ID, primary_key=True, nullable=False)


SCHEMA_VERSION_TABLE = Table(
    "schema_version", metadata,
    _int("id", primary_key=True, default=1),
    _int("version"),
    _text("store_id"),  # random id of this database; snapshot caches are only valid for it
)

TENANT_STATE = Table(
    "tenant_state", metadata,
    _key("tenant"),
    _int("revision", default=0),
    _time("paused_at", nullable=True),  # ``tenant pause``: uploads kept, not applied
)

PEOPLE = Table(
    "people", metadata,
    _serial("account_id"),
    _text("tenant"),
    _text("person_id"),
    _text("previous_ids", default="[]"),
    _text("role"),
    _optional("person_number"),
    _optional("first_name"),
    _optional("middle_name"),
    _optional("last_name"),
    _optional("grade_level"),
    _optional("email_address"),
    _optional("sis_username"),
    _optional("password_policy"),
    _optional("location_ids"),
    _text("account"),
    _text("status", default="active"),
    _text("source", default="sis"),
    _optional("sis_seen"),  # a local account's SIS values as last reported
    _time("created_at"),
    _time("updated_at"),
    _time("deactivated_at", nullable=True),
    UniqueConstraint("tenant", "person_id", name="uq_people_person_id"),
    UniqueConstraint("tenant", "account", name="uq_people_account"),
    Index("ix_people_lifecycle", "tenant", "status", "deactivated_at"),
)

LOCATIONS = Table(
    "locations", metadata,
    _key("tenant"),
    _key("location_id"),
    _optional("location_name"),
    **_CLUSTERED,
)

COURSES = Table(
    "courses", metadata,
    _key("tenant"),
    _key("course_id"),
    _optional("course_number"),
    _optional("course_name"),
    _optional("location_id"),
    **_CLUSTERED,
)

CLASSES = Table(
    "classes", metadata,
    _key("tenant"),
    _key("class_id"),
    _optional("class_number"),
    _optional("course_id"),
    _optional("location_id"),
    _optional("class_display_name"),
    _optional("term_ids"),
    **_CLUSTERED,
)

CLASS_INSTRUCTORS = Table(
    "class_instructors", metadata,
    _key("tenant"),
    _key("class_id"),
    _key("person_id"),
    _int("position", nullable=True),
    _optional("source_id"),
    **_CLUSTERED,
)

ROSTERS = Table(
    "rosters", metadata,
    _key("tenant"),
    _key("roster_id"),
    _optional("class_id"),
    _optional("student_id"),
    **_CLUSTERED,
)

RUNS = Table(
    "runs", metadata,
    _key("run_id"),
    _text("tenant", index=True),
    _text("source"),  # sftp | watch | cli | resync | oneroster-api
    _optional("file_name"),
    Column("size", BigInteger(), nullable=True),
    _optional("sha256"),
    _optional("layout"),
    _text("status"),
    # running | completed | completed_with_warnings | failed | held | unchanged | discarded
    Column("dry_run", Boolean(), nullable=False, default=False),
    Column("applied", Boolean(), nullable=False, default=False),
    # applied: the run's plan was applied (``last_applied_sha256`` looks at these)
    _json("counts"),
    _json("issue_counts"),
    _json("document"),
    _json("timings"),
    _time("created_at"),
    _time("finished_at", nullable=True),
    _time("applied_at", nullable=True),
    _optional("artifact_dir"),
    Index("ix_runs_created", "created_at", "run_id"),  # the console's history, by keyset
    # The console's lists pick their run ids from this index alone: reading created_at
    # from the table walks each row's document (benchmarks/README.md, P11).
    Index("ix_runs_console", "tenant", "status", "created_at", "run_id"),
)

JOBS = Table(
    "jobs", metadata,
    _serial("id"),
    _text("tenant", index=True),
    _text("path"),  # the upload in the spool
    _text("file_name", default=""),  # the name it was uploaded under
    _text("source", default="watch"),  # sftp | watch | resync
    _text("kind", default="bulk"),  # bulk | delta
    _text("state", default="queued", index=True),  # queued | running | done
    _time("lease_until", nullable=True),
    _optional("worker"),
    _int("attempts", default=0),
    _optional("run_id"),  # chosen before the run is created, so a retried job continues the run
    _time("created_at"),
    _time("finished_at", nullable=True),
)

MAILS = Table(
    "mails", metadata,
    _serial("id"),
    Column("run_id", String(), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False,
           index=True),
    _text("status", default="pending"),  # pending | sent | failed
    _int("attempts", default=0),
    _optional("last_error"),
    _time("next_attempt_at", nullable=True),
    _time("created_at"),
    _time("updated_at"),
)

DIRECTORY_TABLES: dict[str, Table] = {
    "people": PEOPLE,
    "locations": LOCATIONS,
    "courses": COURSES,
    "classes": CLASSES,
    "instructors": CLASS_INSTRUCTORS,
    "rosters": ROSTERS,
}
"""Snapshot kind → table."""

COUNTERS = Table(
    "counters", metadata,
    _key("name"),
    Column("value", BigInteger(), nullable=False),
)
"""High-water marks SQLite keeps itself (``account_id``: never handed out twice, also
after a purge deleted the highest; PostgreSQL's sequences already never do)."""

AUDIT = Table(
    "audit", metadata,
    _serial("id"),
    _time("at"),
    _text("actor"),  # "web:<username>" | "cli:<os user>"
    _text("action"),  # approve | discard | edit | reset | upload | sync_now | pause | resume | redeliver
    _optional("tenant"),
    _text("target_kind", default=""),  # run | person | tenant | upload
    _text("target", default=""),  # the run id, person_id, tenant key or file name
    _text("detail", default=""),
    Index("ix_audit_target", "target_kind", "target", "at"),
    Index("ix_audit_tenant", "tenant", "at"),
)
"""Who did what to which run, person or tenant (store/audit.py): console and CLI."""

WEB_SESSIONS = Table(
    "web_sessions", metadata,
    _key("token_hash"),  # sha256 of the cookie's random token: a stolen table logs no one in
    _text("username"),
    _text("csrf_token"),
    _time("created_at"),
    _time("expires_at"),
    Index("ix_web_sessions_expires", "expires_at"),
)
"""Console sign-ins (store/sessions.py): the server decides when one ends."""

DELIVERIES = Table(
    "deliveries", metadata,
    _serial("id"),
    Column("run_id", String(), ForeignKey("runs.run_id", ondelete="CASCADE"), nullable=False),
    _text("tenant"),
    _text("outlet"),  # the destination's or alert's key (config: name, or made from it)
    _text("kind"),  # sftp | slack | teams | webhook
    _text("status", default="pending"),  # pending | delivered | failed
    _int("attempts", default=0),
    _optional("last_error"),  # "CODE: message" of the last failed attempt
    _optional("detail"),  # what was delivered: the remote file, the HTTP status
    _time("next_attempt_at", nullable=True),  # failed: when to try again (None: given up)
    _time("created_at"),
    _time("updated_at"),
    _time("delivered_at", nullable=True),
    UniqueConstraint("run_id", "outlet", name="uq_deliveries_run_outlet"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_tenant", "tenant", "created_at"),
)
"""Outlets (store/deliveries.py): one row per run and destination or alert."""

API_TOKENS = Table(
    "api_tokens", metadata,
    _key("token_hash"),  # sha256 of the bearer token, as for web_sessions
    _text("tenant"),
    _text("client_id"),
    _text("scopes"),  # space-separated, as granted
    _time("created_at"),
    _time("expires_at"),
    Index("ix_api_tokens_expires", "expires_at"),
)
"""OneRoster API access tokens (client credentials), shared by every process."""

ALL_TABLES: tuple[Table, ...] = (
    SCHEMA_VERSION_TABLE,
    TENANT_STATE,
    COUNTERS,
    *DIRECTORY_TABLES.values(),
    RUNS,
    JOBS,
    MAILS,
    AUDIT,
    WEB_SESSIONS,
    DELIVERIES,
    API_TOKENS,
)
"""Every table of this schema, parents before children."""


def _add_people_lifecycle_index(conn: Connection) -> None:
    index = next(i for i in PEOPLE.indexes if i.name == "ix_people_lifecycle")
    index.create(conn, checkfirst=True)


def _drop_unwritten_columns(conn: Connection) -> None:
    for table, column in (("runs", "held_plan"), ("jobs", "sha256")):
        present = {c["name"] for c in inspect(conn).get_columns(table)}
        if column in present:
            conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))


def _add_paused_at(conn: Connection) -> None:
    present = {c["name"] for c in inspect(conn).get_columns("tenant_state")}
    if "paused_at" not in present:
        kind = "DATETIME" if conn.dialect.name == "sqlite" else "TIMESTAMP WITH TIME ZONE"
        conn.execute(text(f"ALTER TABLE tenant_state ADD COLUMN paused_at {kind}"))


def _add_runs_created_index(conn: Connection) -> None:
    index = next(i for i in RUNS.indexes if i.name == "ix_runs_created")
    index.create(conn, checkfirst=True)


def _add_runs_console_index(conn: Connection) -> None:
    index = next(i for i in RUNS.indexes if i.name == "ix_runs_console")
    index.create(conn, checkfirst=True)


def _add_sis_seen(conn: Connection) -> None:
    if "sis_seen" not in {c["name"] for c in inspect(conn).get_columns("people")}:
        conn.execute(text("ALTER TABLE people ADD COLUMN sis_seen VARCHAR"))


UPGRADES: dict[int, Callable[[Connection], None]] = {
    1: _add_people_lifecycle_index,
    2: _drop_unwritten_columns,
    3: _add_paused_at,
    4: _add_sis_seen,
    5: lambda conn: None,  # 6 adds the counters table: create_all makes it
    6: _add_runs_created_index,  # 7 also adds the audit and web_sessions tables (create_all)
    7: _add_runs_console_index,
    8: lambda conn: None,  # 9 adds the deliveries and api_tokens tables (create_all)
}
"""``UPGRADES[n](connection)`` upgrades a version-*n* store to version *n + 1*."""
