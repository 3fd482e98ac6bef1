"""The database schema: SQLModel table classes, one per table.

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
(report emails and their retries), ``tenant_state`` (a revision counter per
tenant, bumped by every write to its directory; it guards plans made against
an older snapshot and validates the snapshot cache).

Schema versions: ``schema_version`` holds one row with the version of the
schema in the file and a random ``store_id``. :data:`SCHEMA_VERSION` is the
version this code writes; :data:`UPGRADES` maps version *n* to the step that
brings a store from *n* to *n + 1* (ALTER TABLE and data moves, in one
transaction with the version bump). ``engine.open_store`` runs the missing
steps in order and then ``create_all``, which adds tables new in this version
(so a step never needs to create a whole new table). To change the schema:
bump :data:`SCHEMA_VERSION`, change the classes below, add the step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Index,
    Integer,
    Table,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 2
"""1: the first schema. 2: ``ix_people_lifecycle`` (the purge's "anyone due?" query
read every person of the tenant without it: 0.25 s per sync at L)."""

metadata = SQLModel.metadata

_UTC_TIME = DateTime(timezone=True)
_ID = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid
_CLUSTERED = {"sqlite_with_rowid": False}
"""SQLite keeps these rows in their (tenant, id) primary key: one b-tree, not two."""


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"

    id: int = Field(default=1, primary_key=True)
    version: int
    store_id: str
    """Random id of this database; snapshot caches are only valid for it."""


class TenantState(SQLModel, table=True):
    __tablename__ = "tenant_state"

    tenant: str = Field(primary_key=True)
    revision: int = 0


class Person(SQLModel, table=True):
    __tablename__ = "people"
    __table_args__ = (
        UniqueConstraint("tenant", "person_id", name="uq_people_person_id"),
        UniqueConstraint("tenant", "account", name="uq_people_account"),
        Index("ix_people_lifecycle", "tenant", "status", "deactivated_at"),
    )

    account_id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    tenant: str
    person_id: str
    previous_ids: str = "[]"
    role: str
    person_number: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    grade_level: str | None = None
    email_address: str | None = None
    sis_username: str | None = None
    password_policy: str | None = None
    location_ids: str | None = None
    account: str
    status: str = "active"
    source: str = "sis"
    created_at: datetime = Field(sa_type=_UTC_TIME)
    updated_at: datetime = Field(sa_type=_UTC_TIME)
    deactivated_at: datetime | None = Field(default=None, sa_type=_UTC_TIME)


class Location(SQLModel, table=True):
    __tablename__ = "locations"
    __table_args__ = _CLUSTERED

    tenant: str = Field(primary_key=True)
    location_id: str = Field(primary_key=True)
    location_name: str | None = None


class Course(SQLModel, table=True):
    __tablename__ = "courses"
    __table_args__ = _CLUSTERED

    tenant: str = Field(primary_key=True)
    course_id: str = Field(primary_key=True)
    course_number: str | None = None
    course_name: str | None = None
    location_id: str | None = None


class Class(SQLModel, table=True):
    __tablename__ = "classes"
    __table_args__ = _CLUSTERED

    tenant: str = Field(primary_key=True)
    class_id: str = Field(primary_key=True)
    class_number: str | None = None
    course_id: str | None = None
    location_id: str | None = None
    class_display_name: str | None = None
    term_ids: str | None = None


class ClassInstructor(SQLModel, table=True):
    __tablename__ = "class_instructors"
    __table_args__ = _CLUSTERED

    tenant: str = Field(primary_key=True)
    class_id: str = Field(primary_key=True)
    person_id: str = Field(primary_key=True)
    position: int | None = None
    source_id: str | None = None


class Roster(SQLModel, table=True):
    __tablename__ = "rosters"
    __table_args__ = _CLUSTERED

    tenant: str = Field(primary_key=True)
    roster_id: str = Field(primary_key=True)
    class_id: str | None = None
    student_id: str | None = None


class Run(SQLModel, table=True):
    __tablename__ = "runs"

    run_id: str = Field(primary_key=True)
    tenant: str = Field(index=True)
    source: str
    """sftp | watch | cli | resync"""
    file_name: str | None = None
    size: int | None = Field(default=None, sa_type=BigInteger)
    sha256: str | None = None
    layout: str | None = None
    status: str
    """running | completed | completed_with_warnings | failed | held | unchanged | discarded"""
    dry_run: bool = False
    applied: bool = False
    """The run's plan was applied (``last_applied_sha256`` looks at these)."""
    counts: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    issue_counts: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    document: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    timings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(sa_type=_UTC_TIME)
    finished_at: datetime | None = Field(default=None, sa_type=_UTC_TIME)
    applied_at: datetime | None = Field(default=None, sa_type=_UTC_TIME)
    artifact_dir: str | None = None
    held_plan: str | None = None
    """Where a held run keeps what ``approve`` needs (e.g. the upload's spool path)."""


class Job(SQLModel, table=True):
    __tablename__ = "jobs"

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    tenant: str = Field(index=True)
    path: str
    """The upload in the spool."""
    file_name: str = ""
    """The name it was uploaded under."""
    source: str = "watch"
    """sftp | watch | resync"""
    sha256: str | None = None
    kind: str = "bulk"
    """bulk | delta"""
    state: str = Field(default="queued", index=True)
    """queued | running | done"""
    lease_until: datetime | None = Field(default=None, sa_type=_UTC_TIME)
    worker: str | None = None
    attempts: int = 0
    run_id: str | None = None
    """Chosen before the run is created, so a retried job continues the same run."""
    created_at: datetime = Field(sa_type=_UTC_TIME)
    finished_at: datetime | None = Field(default=None, sa_type=_UTC_TIME)


class Mail(SQLModel, table=True):
    __tablename__ = "mails"

    id: int | None = Field(default=None, primary_key=True, sa_type=_ID)
    run_id: str = Field(foreign_key="runs.run_id", index=True, ondelete="CASCADE")
    status: str = "pending"
    """pending | sent | failed"""
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(default=None, sa_type=_UTC_TIME)
    created_at: datetime = Field(sa_type=_UTC_TIME)
    updated_at: datetime = Field(sa_type=_UTC_TIME)


def _table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__dict__["__table__"])


SCHEMA_VERSION_TABLE = _table(SchemaVersion)
TENANT_STATE = _table(TenantState)
PEOPLE = _table(Person)
RUNS = _table(Run)
JOBS = _table(Job)
MAILS = _table(Mail)

DIRECTORY_TABLES: dict[str, Table] = {
    "people": PEOPLE,
    "locations": _table(Location),
    "courses": _table(Course),
    "classes": _table(Class),
    "instructors": _table(ClassInstructor),
    "rosters": _table(Roster),
}
"""Snapshot kind → table."""

ALL_TABLES: tuple[Table, ...] = (
    SCHEMA_VERSION_TABLE,
    TENANT_STATE,
    *DIRECTORY_TABLES.values(),
    RUNS,
    JOBS,
    MAILS,
)
"""Every table of this schema, parents before children."""


def _add_people_lifecycle_index(conn: Connection) -> None:
    index = next(i for i in PEOPLE.indexes if i.name == "ix_people_lifecycle")
    index.create(conn, checkfirst=True)


UPGRADES: dict[int, Callable[[Connection], None]] = {1: _add_people_lifecycle_index}
"""``UPGRADES[n](connection)`` upgrades a version-*n* store to version *n + 1*."""
