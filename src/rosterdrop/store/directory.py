"""The tenant directory in the database: load a snapshot, apply a plan, edit, purge.

Bulk work bypasses the ORM: snapshots are read straight into polars (SQLite:
``fetchmany`` batches; PostgreSQL: ``COPY … TO STDOUT``) and plans are
written with one statement per table and kind of change (SQLite:
``executemany`` fed lazily from the frame, inserts many rows per statement;
PostgreSQL: ``COPY`` into the table, or into a temporary table joined by one
``UPDATE``/``DELETE``).

Every write bumps the tenant's revision in ``tenant_state``. ``apply_plan``
bumps it only from the revision the plan's snapshot was read at, so a plan
made against an older directory is refused (:class:`PlanOutdated`) instead of
being applied on top of someone else's change.

**Snapshot cache.** Reading 1M rows back from the database would dominate a
sync that changes 1% of them, so after each apply the store also writes the
new snapshot (computed in memory by ``rosterdrop.sync.advance``) as Arrow IPC
files under ``cache_dir/<tenant>/<store_id>-<revision>/``. ``load_snapshot``
uses that folder when its revision is the tenant's current one and reads the
database otherwise (then writes the cache for next time). Any write that does
not go through these functions must bump ``tenant_state.revision``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import structlog
from sqlalchemy import Connection, Table, delete, func, select, text, update

from rosterdrop.errors import NotFound, StoreError, UsageError
from rosterdrop.paths import private_file, private_folder
from rosterdrop.pipeline.imports import ExistingAccount, ImportCheck, read_import
from rosterdrop.pipeline.people import edit_problems
from rosterdrop.pipeline.plan import Plan, advance
from rosterdrop.pipeline.retention import choose_purge
from rosterdrop.pipeline.snapshot import (
    ACTIVE,
    IMPORTED,
    INACTIVE,
    KEYS,
    LOCAL,
    PERSON_FIELDS,
    SIS,
    SNAPSHOT_SCHEMAS,
    TABLE_KINDS,
    Snapshot,
    snapshot_frame,
)
from rosterdrop.store.engine import Store, translate
from rosterdrop.store.people import _person_dict, list_people
from rosterdrop.store.tables import ALL_TABLES, DIRECTORY_TABLES, PEOPLE

log = structlog.get_logger(__name__)

BATCH = 100_000
ROWS_PER_INSERT = 128
SQLITE_MAX_VARIABLES = 999
"""The bound parameters one SQLite statement may have (older builds: 999; 3.32+: 32,766)."""
LIST_COLUMNS = {"previous_ids", "location_ids", "term_ids"}
"""Snapshot list columns, stored as JSON arrays in text columns."""
EDITABLE_FIELDS = PERSON_FIELDS
"""What ``set_person`` may change (the synced fields)."""


class PlanOutdated(StoreError):
    """The directory changed after the plan's snapshot was read; plan again."""


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise UsageError("timestamps passed to the store must be timezone-aware")
    return moment.astimezone(UTC)


def _stamp(store: Store, moment: datetime) -> str:
    """A UTC timestamp as text both backends store (SQLite: SQLAlchemy's own format)."""
    text_ = _utc(moment).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text_ if store.is_sqlite else text_ + "+00:00"


def _raw(conn: Connection) -> Any:
    """The DB-API connection under ``conn`` (same transaction)."""
    return conn.connection.dbapi_connection


def _placeholder(store: Store) -> str:
    return "?" if store.is_sqlite else "%s"


# --- revision ----------------------------------------------------------------------------------


def current_revision(conn: Connection, tenant: str) -> int:
    value = conn.execute(
        text("SELECT revision FROM tenant_state WHERE tenant = :t"), {"t": tenant}
    ).scalar_one_or_none()
    return int(value or 0)


def _bump(conn: Connection, tenant: str, expected: int | None = None) -> int:
    """Add one to the tenant's revision (only from ``expected`` when given)."""
    conn.execute(
        text(
            "INSERT INTO tenant_state (tenant, revision) VALUES (:t, 0) "
            "ON CONFLICT (tenant) DO NOTHING"
        ),
        {"t": tenant},
    )
    if expected is None:
        result = conn.execute(
            text("UPDATE tenant_state SET revision = revision + 1 WHERE tenant = :t"),
            {"t": tenant},
        )
    else:
        result = conn.execute(
            text(
                "UPDATE tenant_state SET revision = revision + 1 "
                "WHERE tenant = :t AND revision = :r"
            ),
            {"t": tenant, "r": expected},
        )
        if result.rowcount != 1:
            raise PlanOutdated(
                f"the directory of tenant {tenant!r} changed after the plan was made "
                f"(it is no longer at revision {expected}); plan the sync again"
            )
    return current_revision(conn, tenant)


# --- reading -----------------------------------------------------------------------------------


def _select_list(store: Store, kind: str) -> tuple[list[str], dict[str, Any]]:
    """SQL column expressions for a snapshot kind, and the dtypes they arrive as."""
    exprs: list[str] = []
    arrive: dict[str, Any] = {}
    for name, dtype in SNAPSHOT_SCHEMAS[kind].items():
        if name == "deactivated_on":
            exprs.append(
                "substr(deactivated_at, 1, 10)"
                if store.is_sqlite
                else "to_char(deactivated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            )
            arrive[name] = pl.String
        elif name in LIST_COLUMNS:
            exprs.append(name)
            arrive[name] = pl.String
        else:
            exprs.append(name)
            arrive[name] = dtype
    return exprs, arrive


def _decode(kind: str, frame: pl.DataFrame) -> pl.DataFrame:
    schema = SNAPSHOT_SCHEMAS[kind]
    columns = []
    for name, dtype in schema.items():
        if name in LIST_COLUMNS:
            columns.append(pl.col(name).str.json_decode(dtype).alias(name))
        elif name == "deactivated_on":
            columns.append(pl.col(name).str.to_date("%Y-%m-%d").alias(name))
        else:
            columns.append(pl.col(name).cast(dtype))
    return frame.select(columns)


def _read_table(store: Store, conn: Connection, kind: str, tenant: str) -> pl.DataFrame:
    table = DIRECTORY_TABLES[kind].name
    exprs, arrive = _select_list(store, kind)
    sql = f"SELECT {', '.join(exprs)} FROM {table} WHERE tenant = "
    cursor = _raw(conn).cursor()
    try:
        if store.is_sqlite:
            cursor.execute(sql + "?", (tenant,))
            chunks = []
            while rows := cursor.fetchmany(BATCH):
                chunks.append(pl.DataFrame(rows, schema=arrive, orient="row"))
            frame = pl.concat(chunks) if chunks else pl.DataFrame(schema=arrive)
        else:
            buffer = io.BytesIO()
            copy_sql = f"COPY ({sql}%s) TO STDOUT WITH (FORMAT csv)"
            with cursor.copy(copy_sql, (tenant,)) as copy:
                for data in copy:
                    buffer.write(data)
            frame = (
                pl.read_csv(
                    buffer.getvalue(),
                    has_header=False,
                    schema=arrive,
                )
                if buffer.tell()
                else pl.DataFrame(schema=arrive)
            )
    finally:
        cursor.close()
    return _decode(kind, frame)


def _read_snapshot(store: Store, tenant: str) -> Snapshot:
    with translate(f"reading the directory of tenant {tenant!r}"), store.read() as conn:
        revision = current_revision(conn, tenant)
        frames = {kind: _read_table(store, conn, kind, tenant) for kind in TABLE_KINDS}
    return Snapshot(
        **frames,
        taken_accounts=frames["people"]["account"].rename("account"),
        revision=revision,
    )


def load_snapshot(
    store: Store, tenant: str, today: date | None = None, *, use_cache: bool = True
) -> Snapshot:
    """The tenant's directory as it is now (from the cache when it is current).

    ``today`` does not change the result: every account still in the store
    (active, or deactivated and not yet purged) is in ``taken_accounts``; the
    retention purge (:func:`purge`) is what frees names. ``use_cache=False``
    reads the database (and leaves the cache alone).
    """
    del today
    if not use_cache:
        return _read_snapshot(store, tenant)
    store.cache_lane.wait()
    folder = store.cache_path(tenant)
    if folder is not None:
        with translate("reading the revision"), store.engine.connect() as conn:
            revision = current_revision(conn, tenant)
        cached = _read_cache(folder / f"{store.store_id}-{revision}", revision)
        if cached is not None:
            return cached
    snapshot = _read_snapshot(store, tenant)
    if folder is not None and snapshot.revision > 0:
        _write_cache(store, tenant, snapshot)
    return snapshot


# --- snapshot cache ----------------------------------------------------------------------------


def _read_cache(path: Path, revision: int) -> Snapshot | None:
    if not path.is_dir():
        return None
    try:
        frames = {
            kind: pl.read_ipc(path / f"{kind}.arrow") for kind in TABLE_KINDS
        }
        frames = {kind: snapshot_frame(kind, frame) for kind, frame in frames.items()}
    except (OSError, pl.exceptions.PolarsError) as exc:
        log.warning("snapshot_cache_unreadable", path=str(path), error=str(exc))
        return None
    return Snapshot(
        **frames,
        taken_accounts=frames["people"]["account"].rename("account"),
        revision=revision,
    )


def _write_cache(store: Store, tenant: str, snapshot: Snapshot) -> None:
    """Write ``snapshot`` as the tenant's cache; a failure only costs speed later."""
    folder = store.cache_path(tenant)
    if folder is None:
        return
    final = folder / f"{store.store_id}-{snapshot.revision}"
    temporary = folder / f".tmp-{uuid.uuid4().hex}"
    try:
        private_folder(temporary)
        for kind in TABLE_KINDS:
            snapshot.frame(kind).write_ipc(temporary / f"{kind}.arrow", compression="uncompressed")
            private_file(temporary / f"{kind}.arrow")
        os.replace(temporary, final)
        for old in folder.iterdir():
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    except (OSError, pl.exceptions.PolarsError, StoreError) as exc:
        log.warning("snapshot_cache_write_failed", tenant=tenant, error=str(exc))
        shutil.rmtree(temporary, ignore_errors=True)


def _refresh_cached_people(store: Store, tenant: str, before: int) -> None:
    """After a write that changed only people: carry the cache of revision ``before``
    forward with the people table read again (small next to the rosters)."""
    folder = store.cache_path(tenant)
    if folder is None:
        return
    store.cache_lane.wait()
    cached = _read_cache(folder / f"{store.store_id}-{before}", before)
    if cached is None:
        return
    with translate(f"reading the people of tenant {tenant!r}"), store.read() as conn:
        revision = current_revision(conn, tenant)
        people = _read_table(store, conn, "people", tenant)
    frames = {kind: cached.frame(kind) for kind in TABLE_KINDS if kind != "people"}
    _write_cache(
        store,
        tenant,
        Snapshot(
            people=people,
            **frames,
            taken_accounts=people["account"].rename("account"),
            revision=revision,
        ),
    )


# --- writing -----------------------------------------------------------------------------------


class _Writer:
    """Bulk statements for one write transaction; counts the rows each one writes."""

    def __init__(self, store: Store, conn: Connection, tenant: str) -> None:
        self.store = store
        self.conn = conn
        self.tenant = tenant
        self.counts: dict[str, int] = {}
        self._temp = itertools.count()

    def _done(self, table: Table, rows: int) -> None:
        self.counts[table.name] = self.counts.get(table.name, 0) + rows
        self.store.written(table.name, rows)

    def _with_tenant(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns(tenant=pl.lit(self.tenant, pl.String))

    def insert(self, table: Table, frame: pl.DataFrame, order: Sequence[str]) -> None:
        """Insert ``frame``'s rows, in ``order`` (B-trees fill fastest in key order)."""
        if frame.height == 0:
            return
        frame = self._with_tenant(frame.sort(order))
        columns = frame.columns
        if self.store.is_sqlite:
            rows = self._insert_sqlite(table.name, columns, frame.iter_rows())
        else:
            rows = self._copy_in(table.name, frame)
        self._done(table, rows)

    def update(self, table: Table, frame: pl.DataFrame, key: Sequence[str]) -> None:
        """``SET`` every non-key column of ``frame`` on the rows with its keys."""
        if frame.height == 0:
            return
        frame = self._with_tenant(frame.sort(key))
        match = ["tenant", *key]
        values = [name for name in frame.columns if name not in match]
        if self.store.is_sqlite:
            sets = ", ".join(f"{name} = ?" for name in values)
            where = " AND ".join(f"{name} = ?" for name in match)
            sql = f"UPDATE {table.name} SET {sets} WHERE {where}"
            rows = self._executemany(sql, frame.select(*values, *match).iter_rows())
        else:
            temp = self._temp_table(table.name, frame)
            sets = ", ".join(f"{name} = u.{name}" for name in values)
            where = " AND ".join(f"t.{name} = u.{name}" for name in match)
            rows = self._execute(f"UPDATE {table.name} AS t SET {sets} FROM {temp} AS u WHERE {where}")
        self._done(table, rows)

    def delete(self, table: Table, keys: pl.DataFrame) -> None:
        if keys.height == 0:
            return
        keys = self._with_tenant(keys.sort(keys.columns))
        match = ["tenant", *[name for name in keys.columns if name != "tenant"]]
        if self.store.is_sqlite:
            where = " AND ".join(f"{name} = ?" for name in match)
            sql = f"DELETE FROM {table.name} WHERE {where}"
            rows = self._executemany(sql, keys.select(match).iter_rows())
        else:
            temp = self._temp_table(table.name, keys.select(match))
            where = " AND ".join(f"t.{name} = u.{name}" for name in match)
            rows = self._execute(f"DELETE FROM {table.name} AS t USING {temp} AS u WHERE {where}")
        self._done(table, rows)

    # backend details

    def _insert_sqlite(self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
                       ) -> int:
        """``INSERT … VALUES (…), (…), …`` with many rows per statement.

        sqlite3's ``executemany`` pays a reset, a step and its own bookkeeping
        per statement: with narrow rows (rosters) that costs as much as the
        b-tree insert itself.
        """
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        one = "(" + ", ".join("?" * len(columns)) + ")"
        per = max(1, min(ROWS_PER_INSERT, SQLITE_MAX_VARIABLES // len(columns)))
        tail: list[tuple[Any, ...]] = []

        def full_statements() -> Iterator[tuple[Any, ...]]:
            while batch := list(itertools.islice(rows, per)):
                if len(batch) < per:
                    tail.extend(batch)
                    return
                yield tuple(itertools.chain.from_iterable(batch))

        written = self._executemany(head + ", ".join([one] * per), full_statements())
        if tail:
            written += self._executemany(head + ", ".join([one] * len(tail)),
                                         [tuple(itertools.chain.from_iterable(tail))])
        return written

    def _executemany(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> int:
        cursor = _raw(self.conn).cursor()
        try:
            cursor.executemany(sql, rows)
            return max(int(cursor.rowcount), 0)  # -1: no statement ran
        finally:
            cursor.close()

    def _execute(self, sql: str) -> int:
        cursor = _raw(self.conn).cursor()
        try:
            cursor.execute(sql)
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _copy_in(self, table: str, frame: pl.DataFrame) -> int:
        sql = f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)"
        cursor = _raw(self.conn).cursor()
        try:
            with cursor.copy(sql) as copy:
                for start in range(0, frame.height, BATCH):
                    buffer = io.BytesIO()
                    frame.slice(start, BATCH).write_csv(buffer, include_header=False)
                    copy.write(buffer.getvalue())
            return frame.height
        finally:
            cursor.close()

    def _temp_table(self, table: str, frame: pl.DataFrame) -> str:
        name = f"rosterdrop_tmp_{next(self._temp)}"
        self._execute(
            f"CREATE TEMPORARY TABLE {name} ON COMMIT DROP AS "
            f"SELECT {', '.join(frame.columns)} FROM {table} WITH NO DATA"
        )
        self._copy_in(name, frame)
        self._execute(f"ANALYZE {name}")
        return name


def _json_list(name: str) -> pl.Expr:
    """A List(String) column as a JSON array text (null stays null)."""
    encoded = pl.struct(pl.col(name).alias("v")).struct.json_encode()
    text_ = encoded.str.slice(5).str.strip_suffix("}")
    return pl.when(pl.col(name).is_null()).then(None).otherwise(text_).alias(name)


def _encode(frame: pl.DataFrame) -> pl.DataFrame:
    """Snapshot columns → stored columns (JSON lists; no ``deactivated_on``)."""
    return frame.select(
        [_json_list(name) if name in LIST_COLUMNS else pl.col(name) for name in frame.columns
         if name != "deactivated_on"]
    )


def _insert_people(
    store: Store, conn: Connection, writer: _Writer, created: pl.DataFrame, stamp: str
) -> pl.Series:
    """Insert new people; returns the account_ids they got, in ``created`` order."""
    if created.height == 0:
        return pl.Series("account_id", [], pl.Int64)
    rows = _encode(created).with_columns(
        created_at=pl.lit(stamp), updated_at=pl.lit(stamp), deactivated_at=pl.lit(None, pl.String)
    )
    if store.is_sqlite:
        # Under BEGIN IMMEDIATE nobody else inserts before we commit: count on from the
        # highest id ever given (a purge may have deleted the highest one still stored).
        start = int(conn.execute(text(
            "SELECT max(coalesce((SELECT max(account_id) FROM people), 0), "
            "coalesce((SELECT value FROM counters WHERE name = 'account_id'), 0))"
        )).scalar_one())
        conn.execute(text(
            "INSERT INTO counters (name, value) VALUES ('account_id', :v) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value"),
            {"v": start + created.height})
        # Numbered in person_id order, so the rowid and the person_id index both fill
        # in key order (random-order inserts into an index cost ~3 µs a row more).
        ids = created["person_id"].rank("ordinal").cast(pl.Int64) + start
        writer.insert(DIRECTORY_TABLES["people"], rows.with_columns(account_id=ids), ["account_id"])
        return ids.alias("account_id")
    # PostgreSQL: the sequence numbers the rows as COPY inserts them; read the ids back.
    # Every id handed out from here on is above ``floor``, and no one else inserts
    # people of this tenant before we commit (we hold its tenant_state row).
    floor = conn.execute(
        text("SELECT nextval(pg_get_serial_sequence('people', 'account_id'))")
    ).scalar_one()
    writer.insert(DIRECTORY_TABLES["people"], rows.drop("account_id"), ["person_id"])
    given = conn.execute(
        text("SELECT person_id, account_id FROM people WHERE tenant = :t AND account_id > :f"),
        {"t": writer.tenant, "f": floor},
    ).all()
    mapping = pl.DataFrame(given, schema={"person_id": pl.String, "account_id": pl.Int64},
                           orient="row")
    return created.select("person_id").join(
        mapping, on="person_id", how="left", maintain_order="left"
    )["account_id"]


def apply_plan(store: Store, tenant: str, plan: Plan, now: datetime) -> dict[str, int]:
    """Write ``plan`` in one transaction; returns the rows written per table.

    Only the plan's rows are touched. Raises :class:`PlanOutdated` when the
    directory changed after the plan's snapshot was read, ``UsageError`` for a
    ``failed`` plan, and ``StoreError`` for database failures (nothing is
    written then).
    """
    if plan.failed:
        raise UsageError("the plan has errors (see the run's issues); nothing was applied")
    if plan.is_empty():
        return {}  # nothing to write: the revision (and the cache) stay as they are
    stamp = _stamp(store, now)
    people = plan.people
    tables = DIRECTORY_TABLES
    with translate(f"applying the sync of tenant {tenant!r}"), store.write() as conn:
        revision = _bump(conn, tenant, expected=plan.base.revision)
        writer = _Writer(store, conn, tenant)

        account_ids = _insert_people(store, conn, writer, people.create, stamp)
        writer.update(
            tables["people"],
            _encode(people.update)
            .drop("account")  # source too: an imported account taken over becomes "sis"
            .with_columns(updated_at=pl.lit(stamp), deactivated_at=pl.lit(None, pl.String)),
            ["account_id"],
        )
        writer.update(
            tables["people"],
            people.deactivate.select(
                "account_id",
                status=pl.lit(INACTIVE),
                updated_at=pl.lit(stamp),
                # The plan's day (the server's local date), not this moment's UTC date:
                # retention is counted in local days, and deactivated_on is read back
                # from this column's date part.
                deactivated_at=pl.col("deactivated_on").dt.strftime(
                    "%Y-%m-%d 00:00:00.000000" + ("" if store.is_sqlite else "+00:00")),
            ),
            ["account_id"],
        )
        for kind in ("locations", "courses", "classes", "instructors", "rosters"):
            changes = plan.table(kind)
            writer.delete(tables[kind], changes.remove)
            writer.update(tables[kind], _encode(changes.update), KEYS[kind])
            writer.insert(tables[kind], _encode(changes.create), KEYS[kind])
    written = writer.counts
    if store.cache_path(tenant) is not None:
        def cache_the_result() -> None:
            after = advance(plan, account_ids=account_ids)  # deactivated on the plan's day
            _write_cache(store, tenant, _with_revision(after, revision))

        store.cache_lane.submit(cache_the_result)
    return written


def _with_revision(snapshot: Snapshot, revision: int) -> Snapshot:
    frames = {kind: snapshot.frame(kind) for kind in TABLE_KINDS}
    return Snapshot(**frames, taken_accounts=snapshot.taken_accounts, revision=revision)


# --- people: list, edit, purge -----------------------------------------------------------------


def _edited_value(name: str, value: Any) -> Any:
    if name == "location_ids":
        if value is None:
            items: list[str] = []
        elif isinstance(value, str):
            items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            items = [str(part).strip() for part in value if str(part).strip()]
        else:
            raise UsageError("location_ids must be a comma-separated list of location ids")
        return json.dumps(items)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"{name} must be text")
    value = value.strip()
    if value == "":
        return None
    if name == "role" and value not in ("student", "staff"):
        raise UsageError("role must be 'student' or 'staff'")
    if name == "password_policy" and value not in ("4", "6", "8"):
        raise UsageError("password_policy must be 4, 6 or 8")
    return value


def set_person(
    store: Store,
    tenant: str,
    person_id: str,
    fields: Mapping[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Edit an account locally: it becomes ``source = "local"`` and syncs stop updating it.

    Only the synced fields (:data:`EDITABLE_FIELDS`) can be set; blank means
    null; ``location_ids`` takes a list or comma-separated text. Returns the
    person as :func:`list_people` shows them.
    """
    unknown = sorted(set(fields) - set(EDITABLE_FIELDS))
    if unknown:
        raise UsageError(
            f"cannot set {', '.join(unknown)}; editable fields: {', '.join(EDITABLE_FIELDS)}"
        )
    if not fields:
        raise UsageError(f"nothing to set; editable fields: {', '.join(EDITABLE_FIELDS)}")
    values = {name: _edited_value(name, value) for name, value in fields.items()}
    with translate("reading the tenant's locations"), store.engine.connect() as conn:
        known = {str(v) for v in conn.execute(
            select(DIRECTORY_TABLES["locations"].c.location_id)
            .where(DIRECTORY_TABLES["locations"].c.tenant == tenant)).scalars()}
    texts = {name: (None if value is None else str(value).strip() or None)
             for name, value in fields.items() if name != "location_ids"}
    if "location_ids" in fields:
        raw = fields["location_ids"]
        texts["location_ids"] = ",".join(raw) if isinstance(raw, list | tuple) else raw
    problems = edit_problems(texts, known)
    if problems:
        raise UsageError(f"cannot edit person {person_id!r}: " + "; ".join(problems))
    moment = _utc(now or datetime.now(UTC))
    people = PEOPLE
    match = (people.c.tenant == tenant) & (people.c.person_id == person_id)
    with translate(f"editing person {person_id!r}"), store.write() as conn:
        result = conn.execute(
            update(people).where(match).values(**values, source=LOCAL, updated_at=moment)
        )
        if result.rowcount != 1:
            raise NotFound(f"no person {person_id!r} in tenant {tenant!r}")
        before = current_revision(conn, tenant)
        _bump(conn, tenant)
        row = conn.execute(select(people).where(match)).one()
    _refresh_cached_people(store, tenant, before)
    return _person_dict(row._mapping)


def reset_person(store: Store, tenant: str, person_id: str,
                 now: datetime | None = None) -> dict[str, Any]:
    """Hand a local account back to the SIS (``source = "sis"``): the next sync
    overwrites its values with the SIS's and ends it when the SIS no longer sends it."""
    moment = _utc(now or datetime.now(UTC))
    people = PEOPLE
    match = (people.c.tenant == tenant) & (people.c.person_id == person_id)
    with translate(f"resetting person {person_id!r}"), store.write() as conn:
        row = conn.execute(select(people.c.source).where(match)).one_or_none()
        if row is None:
            raise NotFound(f"no person {person_id!r} in tenant {tenant!r}")
        if row.source != LOCAL:
            raise UsageError(f"person {person_id!r} is not a local account (source = "
                             f"{row.source}); nothing to reset")
        conn.execute(update(people).where(match).values(source=SIS, sis_seen=None,
                                                        updated_at=moment))
        before = current_revision(conn, tenant)
        _bump(conn, tenant)
        person = conn.execute(select(people).where(match)).one()
    _refresh_cached_people(store, tenant, before)
    return _person_dict(person._mapping)


class _Refused(Exception):
    """Leaves a write transaction without committing it (the import has problems)."""

    def __init__(self, check: ImportCheck) -> None:
        super().__init__("the import has problems")
        self.check = check


def _import_context(conn: Connection, tenant: str) -> tuple[set[str], list[ExistingAccount]]:
    """The tenant's location ids and accounts, as ``read_import`` checks a file against."""
    locations = DIRECTORY_TABLES["locations"]
    known = {str(v) for v in conn.execute(
        select(locations.c.location_id).where(locations.c.tenant == tenant)).scalars()}
    people = PEOPLE
    rows = conn.execute(
        select(people.c.person_id, people.c.account, people.c.email_address, people.c.status)
        .where(people.c.tenant == tenant))
    return known, [ExistingAccount(*row) for row in rows]


def import_people(store: Store, tenant: str, data: bytes, file: str, *,
                  dry_run: bool = False, now: datetime | None = None) -> ImportCheck:
    """Import the accounts of a people import file (``pipeline.imports``), all or nothing.

    Each row becomes an active person with ``source = "imported"`` and the
    placeholder person_id ``imported:<account>``, inserted in one transaction
    that bumps the tenant's revision (a plan made before is refused as
    outdated). A file with problems, or ``dry_run``, writes nothing. Returns the
    check: its people, or its issues.
    """
    if dry_run:
        with translate(f"reading the directory of tenant {tenant!r}"), store.read() as conn:
            return read_import(data, file, *_import_context(conn, tenant))
    stamp = _stamp(store, _utc(now or datetime.now(UTC)))
    try:
        with translate(f"importing people into tenant {tenant!r}"), store.write() as conn:
            before = current_revision(conn, tenant)
            # First: holds the tenant's row, so no sync writes between the check and the insert.
            _bump(conn, tenant)
            check = read_import(data, file, *_import_context(conn, tenant))
            if not check.valid or not check.people:  # nothing to write: roll the bump back
                raise _Refused(check)
            frame = snapshot_frame("people", pl.DataFrame(
                [{
                    "account_id": None,
                    "person_id": p.person_id,
                    "previous_ids": [],
                    "role": p.role,
                    "person_number": p.person_number,
                    "first_name": p.first_name,
                    "last_name": p.last_name,
                    "email_address": p.email_address,
                    "sis_username": p.sis_username,
                    "location_ids": list(p.location_ids),
                    "account": p.account,
                    "status": ACTIVE,
                    "source": IMPORTED,
                    "deactivated_on": None,
                } for p in check.people],
                schema_overrides={"account_id": pl.Int64, "previous_ids": pl.List(pl.String),
                                  "location_ids": pl.List(pl.String),
                                  "deactivated_on": pl.Date},
            ))
            _insert_people(store, conn, _Writer(store, conn, tenant), frame, stamp)
    except _Refused as refused:
        return refused.check
    _refresh_cached_people(store, tenant, before)
    return check


def purge(store: Store, tenant: str, today: date, retention_days: int, *,
          dry_run: bool = False) -> list[str]:
    """Delete the people deactivated ``retention_days`` or more before ``today``.

    Their account names become free. Returns the purged account names (with
    ``dry_run``, the names that would be purged; nothing is deleted).
    """
    people = PEOPLE
    cutoff = today - timedelta(days=retention_days - 1)
    before_cutoff = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    # Most runs purge nothing: ask with a cheap read before taking the write lock.
    due = select(func.count()).select_from(people).where(
        (people.c.tenant == tenant) & (people.c.status == "inactive")
        & (people.c.deactivated_at < before_cutoff))
    with translate(f"looking for people to purge in tenant {tenant!r}"), \
            store.engine.connect() as conn:
        if not conn.execute(due).scalar_one():
            return []
    with translate(f"purging deactivated people of tenant {tenant!r}"), store.write() as conn:
        exprs, arrive = _select_list(store, "people")
        wanted = ("account_id", "account", "status", "deactivated_on")
        index = [list(SNAPSHOT_SCHEMAS["people"]).index(name) for name in wanted]
        sql = (
            f"SELECT {', '.join(exprs[i] for i in index)} FROM people "
            f"WHERE tenant = {_placeholder(store)} AND status = 'inactive'"
        )
        cursor = _raw(conn).cursor()
        try:
            cursor.execute(sql, (tenant,))
            rows = cursor.fetchall()
        finally:
            cursor.close()
        frame = pl.DataFrame(
            rows, schema={name: arrive[name] for name in wanted}, orient="row"
        ).with_columns(pl.col("deactivated_on").str.to_date("%Y-%m-%d"))
        chosen = choose_purge(frame, today, retention_days)
        if chosen.height == 0 or dry_run:
            return sorted(chosen["account"].to_list())
        ids = chosen["account_id"].to_list()
        for start in range(0, len(ids), 10_000):
            conn.execute(
                delete(people).where(
                    (people.c.tenant == tenant)
                    & people.c.account_id.in_(ids[start : start + 10_000])
                )
            )
        before = current_revision(conn, tenant)
        _bump(conn, tenant)
    _refresh_cached_people(store, tenant, before)
    return sorted(chosen["account"].to_list())


def dump_tables(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted (for tests and diagnostics)."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    with translate("dumping the store"), store.read() as conn:
        for table in ALL_TABLES:
            rows = conn.execute(select(table)).all()
            result[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return result


__all__ = [
    "EDITABLE_FIELDS",
    "PlanOutdated",
    "apply_plan",
    "current_revision",
    "dump_tables",
    "import_people",
    "list_people",
    "load_snapshot",
    "purge",
    "reset_person",
    "set_person",
]
