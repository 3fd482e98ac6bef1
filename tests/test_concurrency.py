"""The daemon's concurrency model: the PostgreSQL job locks of the queue, the asyncio
worker pool (timeouts, log context, shutdown), the mail retrier and the drain bound."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from conftest import PG_URL, fresh_pg_schema
from sqlalchemy import create_engine, select, text

from rosterdrop.daemon.queue import QUEUED, RUNNING, JobQueue
from rosterdrop.runs.runner import utc_now
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.tables import JOBS

needs_pg = pytest.mark.skipif(
    not PG_URL, reason="PostgreSQL tests need ROSTERDROP_TEST_PG=postgresql+psycopg://…")


# --- PostgreSQL: a dead worker's job is taken back at once ------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_schema("c") as url:
        yield url


def _store(url: str, app: str) -> Store:
    return open_store(f"{url}&application_name={app}")


def _terminate(app: str) -> int:
    """Cut every server connection of one client, as a crash (or kill -9) would."""
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :app"), {"app": app}).scalar_one())
    finally:
        admin.dispose()


def _row(store: Store, job_id: int) -> tuple[str, object, str | None, int]:
    with store.engine.connect() as conn:
        row = conn.execute(select(JOBS).where(JOBS.c.id == job_id)).one()
    return row.state, row.lease_until, row.worker, row.attempts


def _enqueue(queue: JobQueue, tenant: str = "t") -> int:
    return queue.enqueue(tenant=tenant, path=f"/spool/{uuid.uuid4().hex}.zip", file_name="d.zip",
                         source="watch", kind="bulk", now=utc_now())


@needs_pg
def test_pg_job_of_a_dead_holder_is_claimed_at_once_despite_its_lease(pg_url: str) -> None:
    """A claims a job and dies (its connections cut): B claims it at once although its
    lease runs for another two minutes; while A lived, B could not."""
    app_a = f"rd-a-{uuid.uuid4().hex[:8]}"
    store_a, store_b = _store(pg_url, app_a), _store(pg_url, "rd-b")
    try:
        a, b = JobQueue(store_a, lease_seconds=120), JobQueue(store_b, lease_seconds=120)
        job_id = _enqueue(a)
        claimed = a.claim("a/0", utc_now())
        assert claimed is not None and claimed.id == job_id
        assert b.claim("b/0", utc_now()) is None  # A is alive: its tenant is busy

        assert _terminate(app_a) >= 1
        state, lease_until, worker, _ = _row(store_b, job_id)
        now = utc_now()
        assert (state, worker) == (RUNNING, "a/0")
        assert isinstance(lease_until, type(now)) and lease_until - now > timedelta(seconds=100)

        taken = b.claim("b/0", now)
        assert taken is not None and taken.id == job_id
        assert taken.attempts == 2 and taken.run_id == claimed.run_id
        assert _row(store_b, job_id)[2] == "b/0"
        assert b.holding() == {job_id}
    finally:
        for queue in (a, b):
            queue.close()
        store_a.close()
        store_b.close()


@needs_pg
def test_pg_finished_and_released_jobs_let_go_of_their_lock(pg_url: str) -> None:
    """finish and release end the lock with the job: the connection goes back, and a
    released job is claimed by the other queue at once."""
    store_a, store_b = _store(pg_url, "rd-a"), _store(pg_url, "rd-b")
    try:
        a, b = JobQueue(store_a), JobQueue(store_b)
        first, second = _enqueue(a), _enqueue(a)
        job = a.claim("a/0", utc_now())
        assert job is not None and job.id == first and a.holding() == {first}
        a.release(job)
        assert a.holding() == set() and _row(store_a, first)[0] == QUEUED
        again = b.claim("b/0", utc_now())
        assert again is not None and again.id == first
        assert b.finish(again, utc_now(), worker="b/0")
        assert b.holding() == set()
        nxt = a.claim("a/0", utc_now())
        assert nxt is not None and nxt.id == second
    finally:
        for queue in (a, b):
            queue.close()
        store_a.close()
        store_b.close()


@needs_pg
def test_pg_failed_job_waits_for_its_lease_and_own_job_is_not_taken_back(pg_url: str) -> None:
    """A job given up with expire() is not taken at once (its lease decides, as on SQLite);
    a job whose lock connection was cut while its worker lives is not taken back by its own
    queue, and check_lock takes the lock again."""
    app_a = f"rd-a-{uuid.uuid4().hex[:8]}"
    store_a, store_b = _store(pg_url, app_a), _store(pg_url, "rd-b")
    try:
        a, b = JobQueue(store_a, lease_seconds=120), JobQueue(store_b, lease_seconds=120)
        failing, cut = _enqueue(a, "f"), _enqueue(a, "c")
        job = a.claim("a/0", utc_now())
        assert job is not None and job.id == failing
        a.expire(job, "a/0")
        assert a.holding() == set()
        assert _row(store_a, failing)[:1] == (RUNNING,) and _row(store_a, failing)[2] is None

        mine = a.claim("a/1", utc_now())
        assert mine is not None and mine.id == cut
        assert b.claim("b/0", utc_now()) is None  # failing: leased; cut: locked by A
        assert _terminate(app_a) >= 1             # a database restart, A still running
        assert a.claim("a/2", utc_now()) is None  # never its own job
        assert a.check_lock(mine)                 # locked again on a new connection
        assert b.claim("b/0", utc_now()) is None
        later = utc_now() + timedelta(seconds=121)
        expired = b.claim("b/0", later)
        assert expired is not None and expired.id == failing
    finally:
        for queue in (a, b):
            queue.close()
        store_a.close()
        store_b.close()
