"""The store on real databases: SQLite files in tmp_path, and PostgreSQL when
``ROSTERDROP_TEST_PG`` is a URL (``postgresql+psycopg://postgres@127.0.0.1:5432/test``);
each PostgreSQL test runs in a schema of its own, dropped afterwards."""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import inspect, text

from rosterdrop.config import TenantSettings
from rosterdrop.documents import RunDocument, RunStatus
from rosterdrop.errors import NotFound, StoreError, UsageError
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import KINDS, Model, conform, empty_frame
from rosterdrop.pipeline.plan import Plan, plan_sync
from rosterdrop.pipeline.snapshot import TABLE_KINDS
from rosterdrop.store import engine as engine_module
from rosterdrop.store import tables
from rosterdrop.store.directory import (
    PlanOutdated,
    apply_plan,
    dump_tables,
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

PG_URL = os.environ.get("ROSTERDROP_TEST_PG", "")
TENANT = "springfield"
SETTINGS = TenantSettings(account_domain="x.org")
DAY0 = datetime(2026, 11, 23, 11, 38, 45, tzinfo=UTC)


@pytest.fixture
def store_url(backend_url: str) -> str:
    """A URL to an empty store on each backend (conftest's ``backend_url``)."""
    return backend_url


@pytest.fixture
def store(store_url: str, tmp_path: Path) -> Iterator[Store]:
    """An open store with a snapshot cache folder in tmp_path."""
    with open_store(store_url, cache_dir=tmp_path / "cache") as opened:
        yield opened


# --- models ------------------------------------------------------------------------------------


def frame(kind: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    data = [{"_file": f"{kind}.csv", "_line": i + 2, "active": True, **r}
            for i, r in enumerate(rows)]
    return conform(kind, pl.DataFrame(data)) if data else empty_frame(kind)


def person(pid: str, first: str, last: str, role: str = "student", **extra: Any) -> dict[str, Any]:
    return {"person_id": pid, "role": role, "first_name": first, "last_name": last,
            "email_address": f"{pid.lower()}@school.org", "location_ids": ["L1", "L2"], **extra}


def school(students: int = 5, **replace: list[dict[str, Any]]) -> Model:
    rows: dict[str, list[dict[str, Any]]] = {
        "locations": [{"location_id": "L1", "location_name": "North"},
                      {"location_id": "L2", "location_name": "South"}],
        "people": [*(person(f"S{i}", f"Stu{i}", "Kid") for i in range(students)),
                   person("T1", "Tea", "Cher", "staff")],
        "courses": [{"course_id": "K1", "course_name": "Math", "location_id": "L1"}],
        "classes": [{"class_id": c, "course_id": "K1", "location_id": "L1",
                     "class_display_name": f"Math {c}", "term_ids": ["T1", "T2"]}
                    for c in ("C1", "C2")],
        "instructors": [{"class_id": c, "person_id": "T1", "position": 0, "source_id": f"E{c}"}
                        for c in ("C1", "C2")],
        "rosters": [{"roster_id": f"R{c}{i}", "class_id": c, "student_id": f"S{i}"}
                    for c in ("C1", "C2") for i in range(students)],
    }
    rows.update(replace)
    return Model(**{kind: frame(kind, rows.get(kind, [])) for kind in KINDS})


def make_plan(store: Store, model: Model, settings: TenantSettings = SETTINGS,
              today: date | None = None) -> tuple[Plan, IssueLog]:
    log = IssueLog()
    snapshot = load_snapshot(store, TENANT)
    return plan_sync(snapshot, model, settings, today or DAY0.date(), log), log


def sync(store: Store, model: Model, now: datetime = DAY0) -> dict[str, int]:
    plan, _ = make_plan(store, model, today=now.date())
    assert not plan.failed
    return apply_plan(store, TENANT, plan, now)


def people_by_id(store: Store) -> dict[str, dict[str, Any]]:
    return {p["person_id"]: p for p in list_people(store, TENANT, include_inactive=True)}


def assert_same_snapshot(store: Store) -> None:
    cached = load_snapshot(store, TENANT).sorted()
    database = load_snapshot(store, TENANT, use_cache=False).sorted()
    assert cached.revision == database.revision
    for kind in TABLE_KINDS:
        assert_frame_equal(cached.frame(kind), database.frame(kind))
    assert sorted(cached.taken_accounts.to_list()) == sorted(database.taken_accounts.to_list())


# --- sync --------------------------------------------------------------------------------------


def test_first_sync_writes_every_row(store: Store) -> None:
    """An empty store receives every record, one row each."""
    written = sync(store, school())
    assert written == {"people": 6, "locations": 2, "courses": 1, "classes": 2,
                       "class_instructors": 2, "rosters": 10}
    people = people_by_id(store)
    assert people["S0"] == {
        "person_id": "S0", "role": "student", "first_name": "Stu0", "last_name": "Kid",
        "email_address": "s0@school.org", "location_ids": ["L1", "L2"],
        "account": "stu0.kid@x.org", "status": "active", "source": "sis",
    }
    snapshot = load_snapshot(store, TENANT, use_cache=False)
    assert snapshot.classes.sort("class_id")["term_ids"].to_list() == [["T1", "T2"]] * 2
    assert snapshot.revision == 1


def test_large_first_sync_round_trips_every_row(store: Store) -> None:
    """Enough rows for several multi-row INSERT statements plus a short last one
    (SQLite), every row read back as written; account ids follow person_id order."""
    students = 150  # 300 rosters: 2 statements of 128 and one of 44; 151 people: 49s and a 4
    model = school(students)
    written = sync(store, model)
    assert written["rosters"] == 2 * students and written["people"] == students + 1
    snapshot = load_snapshot(store, TENANT, use_cache=False)
    assert_frame_equal(
        snapshot.rosters.select("roster_id", "class_id", "student_id").sort("roster_id"),
        model.rosters.select("roster_id", "class_id", "student_id").sort("roster_id"),
    )
    people = snapshot.people.sort("person_id")
    assert people["person_id"].to_list() == sorted(model.people["person_id"].to_list())
    assert people["account_id"].is_sorted() and people["account_id"].n_unique() == students + 1
    assert_same_snapshot(store)


def test_same_model_again_writes_nothing(store: Store) -> None:
    """Syncing the applied model again: all unchanged, 0 rows written, store identical."""
    sync(store, school())
    before = dump_tables(store)
    plan, _ = make_plan(store, school())
    assert plan.is_empty()
    assert plan.changes()["unchanged"] == {"locations": 2, "students": 5, "staff": 1,
                                           "courses": 1, "classes": 2, "rosters": 10}
    assert apply_plan(store, TENANT, plan, DAY0 + timedelta(days=1)) == {}
    assert dump_tables(store) == before


def test_only_changed_rows_are_written(store: Store) -> None:
    """An update, a deactivation, a class change and a swapped roster row: 6 rows."""
    sync(store, school())
    changed = school(
        people=[person("S0", "Stu0", "Kidman"), *(person(f"S{i}", f"Stu{i}", "Kid")
                                                  for i in (1, 2, 3)),
                person("T1", "Tea", "Cher", "staff")],
        rosters=[{"roster_id": f"R{c}{i}", "class_id": c, "student_id": f"S{i}"}
                 for c in ("C1", "C2") for i in range(4)]
        + [{"roster_id": "RNEW", "class_id": "C1", "student_id": "S0"}],
    )
    changed = changed.with_frames(
        classes=changed.classes.with_columns(
            class_display_name=pl.when(pl.col("class_id") == "C2").then(pl.lit("Algebra"))
            .otherwise("class_display_name")
        )
    )
    written = sync(store, changed, DAY0 + timedelta(days=1))
    assert written == {"people": 2, "classes": 1, "rosters": 3}
    people = people_by_id(store)
    assert people["S0"]["last_name"] == "Kidman" and people["S0"]["account"] == "stu0.kid@x.org"
    assert people["S4"]["status"] == "inactive"
    # By last name, then first name: Cher, Kid (Stu1-3), Kidman.
    assert [p["person_id"] for p in list_people(store, TENANT)] == [
        "T1", "S1", "S2", "S3", "S0"
    ]
    assert_same_snapshot(store)


def test_returning_person_is_reactivated_with_the_same_account(store: Store) -> None:
    """Deactivated, then back: same account_id and name, active again."""
    sync(store, school())
    first = load_snapshot(store, TENANT).people.filter(pl.col("person_id") == "S4")
    sync(store, school(4), DAY0 + timedelta(days=1))
    snapshot = load_snapshot(store, TENANT, use_cache=False)
    gone = snapshot.people.filter(pl.col("person_id") == "S4")
    assert gone["status"].item() == "inactive"
    assert gone["deactivated_on"].item() == date(2026, 11, 24)
    plan, _ = make_plan(store, school())
    assert plan.people.reactivated == 1
    apply_plan(store, TENANT, plan, DAY0 + timedelta(days=2))
    back = load_snapshot(store, TENANT, use_cache=False).people.filter(
        pl.col("person_id") == "S4"
    )
    assert back["account_id"].item() == first["account_id"].item()
    assert back["account"].item() == first["account"].item()
    assert back["status"].item() == "active" and back["deactivated_on"].item() is None
    assert_same_snapshot(store)


def test_duplicate_prevention_keeps_the_account(store: Store) -> None:
    """A new SIS id matched by names and email takes over the account, keeping its name."""
    sync(store, school(2))
    renumbered = school(
        2,
        people=[person("S0", "Stu0", "Kid"),
                {**person("NEW1", "Stu1", "Kid"), "email_address": "s1@school.org"},
                person("T1", "Tea", "Cher", "staff")],
        rosters=[],
    )
    written = sync(store, renumbered, DAY0 + timedelta(days=1))
    assert written["people"] == 1
    people = people_by_id(store)
    assert "S1" not in people and people["NEW1"]["account"] == "stu1.kid@x.org"
    snapshot = load_snapshot(store, TENANT, use_cache=False)
    row = snapshot.people.filter(pl.col("person_id") == "NEW1")
    assert row["previous_ids"].to_list() == [["S1"]]
    assert_same_snapshot(store)


def test_delta_upload_changes_only_what_it_names(store: Store) -> None:
    """Delta: a tombstone deactivates a person and removes their rosters; the rest stays."""
    sync(store, school())
    delta = Model(
        **{kind: empty_frame(kind) for kind in KINDS},
        delta=frozenset(KINDS),
    ).with_frames(
        people=frame("people", [{**person("S2", "Stu2", "Kid"), "active": False},
                                person("S9", "New", "Kid")]),
    )
    written = sync(store, delta, DAY0 + timedelta(days=1))
    assert written == {"people": 2, "rosters": 2}
    people = people_by_id(store)
    assert people["S2"]["status"] == "inactive" and people["S9"]["status"] == "active"
    assert len(people) == 7
    snapshot = load_snapshot(store, TENANT, use_cache=False)
    assert snapshot.rosters.height == 8 and snapshot.classes.height == 2
    assert_same_snapshot(store)


# --- atomicity and concurrency -----------------------------------------------------------------


class FailingStore(Store):
    """Fails right after the first bulk statement of a write."""

    def written(self, table: str, rows: int) -> None:
        raise RuntimeError(f"injected failure after writing {rows} rows to {table}")


@pytest.mark.parametrize("first_sync", [True, False])
def test_failed_apply_leaves_the_store_exactly_as_before(
    store: Store, first_sync: bool
) -> None:
    """An exception half-way through apply rolls everything back, cache included."""
    if not first_sync:
        sync(store, school())
    before = dump_tables(store)
    plan, _ = make_plan(store, school(3, classes=[], instructors=[], rosters=[]) if not first_sync
                        else school())
    assert plan.rows() > 1
    failing = FailingStore(store.engine, store.cache_dir)
    with pytest.raises(RuntimeError, match="injected failure"):
        apply_plan(failing, TENANT, plan, DAY0 + timedelta(days=1))
    assert dump_tables(store) == before
    assert load_snapshot(store, TENANT).revision == plan.base.revision
    # The same plan still applies cleanly afterwards.
    assert apply_plan(store, TENANT, plan, DAY0 + timedelta(days=1))
    assert_same_snapshot(store)


def test_plan_made_before_another_write_is_refused(store: Store) -> None:
    """A plan whose snapshot is outdated (another apply, a local edit) is not applied."""
    sync(store, school())
    stale, _ = make_plan(store, school(4))
    set_person(store, TENANT, "S0", {"first_name": "Stuart"}, now=DAY0)
    with pytest.raises(PlanOutdated):
        apply_plan(store, TENANT, stale, DAY0 + timedelta(days=1))
    assert people_by_id(store)["S4"]["status"] == "active"


# --- people: local edits, listing, retention ---------------------------------------------------


def test_local_edit_survives_later_syncs(store: Store) -> None:
    """set_person makes the account local; the SIS no longer overwrites it (ACCOUNT_LOCAL)."""
    sync(store, school())
    edited = set_person(store, TENANT, "S1", {"first_name": "Stuey", "location_ids": "L2"},
                        now=DAY0)
    assert edited["source"] == "local" and edited["first_name"] == "Stuey"
    assert edited["location_ids"] == ["L2"]
    plan, log = make_plan(store, school())
    # the one write notes what the SIS said (sis_seen); nothing changes for the admin
    assert plan.people.update["person_id"].to_list() == ["S1"]
    assert all(not n for n in plan.changes()["updated"].values())
    (issue,) = list(log)
    assert issue.code == "ACCOUNT_LOCAL" and "first_name 'Stu1'" in issue.message
    assert "location_ids 'L1,L2'" in issue.message
    assert people_by_id(store)["S1"]["first_name"] == "Stuey"
    # The edit carried the snapshot cache forward instead of dropping it.
    folder = store.cache_path(TENANT)
    assert folder is not None
    assert (folder / f"{store.store_id}-{plan.base.revision}").is_dir()
    assert_same_snapshot(store)


def test_set_person_refuses_unknown_fields_and_people(store: Store) -> None:
    """Only synced fields can be edited, and only for a person who exists."""
    sync(store, school())
    with pytest.raises(UsageError, match="cannot set account"):
        set_person(store, TENANT, "S1", {"account": "me@x.org"})
    with pytest.raises(UsageError, match="role"):
        set_person(store, TENANT, "S1", {"role": "admin"})
    with pytest.raises(NotFound):
        set_person(store, TENANT, "NOPE", {"first_name": "X"})
    with pytest.raises(NotFound):
        set_person(store, "other-tenant", "S1", {"first_name": "X"})


def test_list_people_search_and_inactive(store: Store) -> None:
    """Search is case-insensitive over ids, names, email and account; inactive on request."""
    sync(store, school())
    sync(store, school(4), DAY0 + timedelta(days=1))
    assert [p["person_id"] for p in list_people(store, TENANT, search="STU4")] == []
    assert [p["person_id"] for p in list_people(store, TENANT, search="STU4",
                                                include_inactive=True)] == ["S4"]
    assert [p["person_id"] for p in list_people(store, TENANT, search="cher")] == ["T1"]
    assert [p["person_id"] for p in list_people(store, TENANT, search="s2@SCHOOL")] == ["S2"]
    assert list_people(store, TENANT, search="%") == []
    assert list_people(store, "nobody") == []


def test_retention_purge_frees_names_only_after_retention(store: Store) -> None:
    """A deactivated account blocks its name until retention_days have passed."""
    ann = [person("A1", "Ann", "Lee")]
    sync(store, school(0, people=ann, rosters=[]))
    sync(store, school(0, people=[], rosters=[]), DAY0)  # A1 deactivated on DAY0
    newcomer = school(0, people=[person("A2", "Ann", "Lee")], rosters=[])
    plan, _ = make_plan(store, newcomer)
    assert plan.people.create["account"].to_list() == ["ann.lee.1@x.org"]

    assert purge(store, TENANT, DAY0.date() + timedelta(days=119), 120) == []
    plan, _ = make_plan(store, newcomer)
    assert plan.people.create["account"].to_list() == ["ann.lee.1@x.org"]

    assert purge(store, TENANT, DAY0.date() + timedelta(days=120), 120) == ["ann.lee@x.org"]
    assert "A1" not in people_by_id(store)
    plan, _ = make_plan(store, newcomer)
    assert plan.people.create["account"].to_list() == ["ann.lee@x.org"]
    apply_plan(store, TENANT, plan, DAY0 + timedelta(days=121))
    assert_same_snapshot(store)


# --- history -----------------------------------------------------------------------------------


def test_run_history(store: Store) -> None:
    """Runs are stored, updated, listed newest first per tenant, and found by id."""
    times = [DAY0 + timedelta(minutes=i) for i in range(3)]
    ids = [new_run_id(t) for t in times]
    assert ids[0].startswith("20261123-113845-") and len(ids[0]) == 24
    for run_id, tenant, at in zip(ids, [TENANT, "other", TENANT], times, strict=True):
        create_run(store, RunRecord(run_id=run_id, tenant=tenant, source="sftp",
                                    file_name="district.zip", size=123, sha256=f"sha-{run_id}",
                                    layout="asm", created_at=at))
    assert last_applied_sha256(store, TENANT) is None
    stored = RunDocument(run_id=ids[0], tenant=TENANT, file="district.zip",
                         sha256=f"sha-{ids[0]}", status=RunStatus.COMPLETED_WITH_WARNINGS)
    done = update_run(
        store, ids[0], status="completed_with_warnings", applied=True, applied_at=times[0],
        finished_at=times[0] + timedelta(seconds=3), counts={"created": {"students": 5}},
        issue_counts={"EMAIL_MISSING": 2}, document=stored,
        timings={"read": 0.5},
    )
    assert done.counts == {"created": {"students": 5}} and done.applied
    assert done.finished_at == times[0] + timedelta(seconds=3)
    update_run(store, ids[2], status="held")
    assert last_applied_sha256(store, TENANT) == f"sha-{ids[0]}"

    listed = list_runs(store, TENANT)
    assert [r.run_id for r in listed] == [ids[2], ids[0]]
    assert listed[1].document is None and listed[1].issue_counts == {"EMAIL_MISSING": 2}
    assert [r.run_id for r in list_runs(store, limit=1)] == [ids[2]]
    assert len(list_runs(store)) == 3
    full = get_run(store, ids[0])
    assert full.document == stored and full.document.to_json()["errors"] == []
    assert full.created_at == times[0] and full.created_at.tzinfo is not None
    with pytest.raises(NotFound):
        get_run(store, "20000101-000000-0000")
    with pytest.raises(UsageError):
        update_run(store, ids[0], status="exploded")
    with pytest.raises(UsageError):
        update_run(store, ids[0], colour="red")


# --- schema and errors -------------------------------------------------------------------------


def test_schema_upgrade_path(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopening runs the missing upgrade steps once; a newer schema is refused."""
    open_store(store_url).close()
    ran: list[int] = []

    def step(conn: Any) -> None:
        ran.append(1)
        conn.execute(text("ALTER TABLE runs ADD COLUMN note VARCHAR"))

    current = tables.SCHEMA_VERSION
    monkeypatch.setattr(engine_module, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(tables.UPGRADES, current, step)
    with open_store(store_url) as upgraded, upgraded.engine.connect() as conn:
        version = conn.execute(text("SELECT version FROM schema_version")).scalar_one()
        assert version == current + 1
        conn.execute(text("SELECT note FROM runs"))
    open_store(store_url).close()
    assert ran == [1]
    monkeypatch.setattr(engine_module, "SCHEMA_VERSION", current)
    with pytest.raises(StoreError, match="newer than this rosterdrop"):
        open_store(store_url)


def test_a_version_1_store_gets_the_people_lifecycle_index(store_url: str) -> None:
    """Upgrade step 1 → 2 adds ``ix_people_lifecycle`` to a store made by version 1."""
    with open_store(store_url) as store, store.write() as conn:
        conn.execute(text("DROP INDEX ix_people_lifecycle"))
        conn.execute(text("UPDATE schema_version SET version = 1"))
    with open_store(store_url) as store, store.engine.connect() as conn:
        names = {index["name"] for index in inspect(conn).get_indexes("people")}
        version = conn.execute(text("SELECT version FROM schema_version")).scalar_one()
    assert "ix_people_lifecycle" in names
    assert version == tables.SCHEMA_VERSION


def test_a_version_2_store_loses_the_columns_never_written(store_url: str) -> None:
    """Upgrade step 2 → 3 drops ``runs.held_plan`` and ``jobs.sha256``; rows survive."""
    with open_store(store_url) as store, store.write() as conn:
        conn.execute(text("ALTER TABLE runs ADD COLUMN held_plan VARCHAR"))
        conn.execute(text("ALTER TABLE jobs ADD COLUMN sha256 VARCHAR"))
        conn.execute(text("UPDATE schema_version SET version = 2"))
    create = RunRecord(run_id="20261203-000000-00000002", tenant=TENANT, source="cli")
    with open_store(store_url) as store:
        create_run(store, create)
        with store.engine.connect() as conn:
            runs = {c["name"] for c in inspect(conn).get_columns("runs")}
            jobs = {c["name"] for c in inspect(conn).get_columns("jobs")}
            version = conn.execute(text("SELECT version FROM schema_version")).scalar_one()
        assert get_run(store, create.run_id).tenant == TENANT
    assert "held_plan" not in runs and "sha256" not in jobs and "sha256" in runs
    assert version == tables.SCHEMA_VERSION


def test_a_version_3_store_gets_the_paused_switch(store_url: str) -> None:
    """Upgrade step 3 → 4 adds ``tenant_state.paused_at``; a tenant can then be paused."""
    from rosterdrop.store.tenants import paused_since, set_paused

    with open_store(store_url) as store, store.write() as conn:
        conn.execute(text("ALTER TABLE tenant_state DROP COLUMN paused_at"))
        conn.execute(text("UPDATE schema_version SET version = 3"))
    with open_store(store_url) as store:
        with store.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("tenant_state")}
        assert "paused_at" in columns
        moment = datetime(2027, 6, 20, 12, tzinfo=UTC)
        assert set_paused(store, TENANT, moment) and paused_since(store, TENANT) == moment


def test_database_errors_become_store_errors(tmp_path: Path) -> None:
    """Bad URLs, unreachable servers and unusable paths raise StoreError, nothing else."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{blocker}/sub/rosterdrop.db")
    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://localhost/x")
    with pytest.raises(StoreError):
        open_store("not a url")
    with pytest.raises(StoreError):
        open_store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{corrupt}")


def test_sqlite_store_is_created_in_the_state_folder(tmp_path: Path) -> None:
    """The SQLite file and its folder appear on first use, in WAL mode."""
    path = tmp_path / "state" / "deep" / "rosterdrop.db"
    with open_store(f"sqlite:///{path}") as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    assert path.is_file()


def _copy_without_wal(path: Path, into: Path) -> int:
    """How many people the database *file* holds on its own (its WAL left behind)."""
    shutil.copyfile(path, into)
    with sqlite3.connect(into) as raw:
        return int(raw.execute("SELECT count(*) FROM people").fetchone()[0])


def test_sqlite_checkpoints_after_the_commit_not_inside_it(tmp_path: Path) -> None:
    """Commits leave pages in the WAL (no automatic checkpoint); the background
    checkpoint then copies them into the database file, and close() waits for it."""
    path = tmp_path / "state" / "rosterdrop.db"
    store = open_store(f"sqlite:///{path}")
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one() == 0
        assert store.checkpointer is not None
        sync(store, school(students=30))
        store.checkpointer.wait()
        assert _copy_without_wal(path, tmp_path / "after-wait.db") == 30 + 1
        sync(store, school(students=40))
    finally:
        store.close()
    assert _copy_without_wal(path, tmp_path / "after-close.db") == 40 + 1


def test_lane_runs_jobs_in_order_and_only_logs_failures() -> None:
    """The cache lane: jobs run one after another in submission order; a failing job is
    logged (it only costs speed) and wait() still returns."""
    from structlog.testing import capture_logs

    from rosterdrop.store.checkpoint import Lane

    lane = Lane("test-lane")
    done: list[int] = []

    def failing() -> None:
        raise OSError("disk full")

    with capture_logs() as logs:
        for n in range(5):
            lane.submit(lambda n=n: done.append(n))  # type: ignore[misc]
        lane.submit(failing)
        lane.submit(lambda: done.append(5))
        lane.wait()
    lane.close()
    assert done == [0, 1, 2, 3, 4, 5]
    assert [e["event"] for e in logs] == ["background_job_failed"]
    assert "disk full" in logs[0]["error"]


def test_a_version_4_store_gets_sis_seen(store_url: str) -> None:
    """Upgrade step 4 → 5 adds ``people.sis_seen``; people already stored keep their rows."""
    sync_store = open_store(store_url)
    with sync_store as store:
        sync(store, school())
        with store.write() as conn:
            conn.execute(text("ALTER TABLE people DROP COLUMN sis_seen"))
            conn.execute(text("UPDATE schema_version SET version = 4"))
    with open_store(store_url) as store:
        with store.engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("people")}
        assert "sis_seen" in columns
        assert people_by_id(store)["S1"]["first_name"] == "Stu1"
