"""The daemon's concurrency model: the PostgreSQL job locks of the queue, the asyncio
worker pool (timeouts, log context, shutdown), the mail retrier and the drain bound."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from conftest import PG_URL, fresh_pg_schema
from sqlalchemy import create_engine, select, text
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from rosterdrop.config import Settings, parse_settings
from rosterdrop.daemon.serve import STOP_GRACE_SECONDS, Daemon
from rosterdrop.daemon.workers import WorkerPool
from rosterdrop.errors import StoreError
from rosterdrop.runs.runner import Runner, utc_now
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.jobs import QUEUED, RUNNING, JobQueue
from rosterdrop.store.tables import JOBS
from rosterdrop.telemetry import Telemetry
from uploads import asm_files, make_zip

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
    """Cut every server connection of one client, as a crash (or kill -9) would, and
    wait until those backends are gone: without the timeout argument the call only
    signals them, and a claim made just after could still find the dead holder's
    advisory lock held (it failed CI once so)."""
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            ended = conn.execute(text(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                "WHERE application_name = :app"), {"app": app}).scalars().all()
            assert all(ended), f"a backend of {app} outlived 10 s after being terminated"
            return len(ended)
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


# --- the worker pool on the event loop ------------------------------------------------


class _Counting(Telemetry):
    def __init__(self) -> None:
        self.failures = 0

    def job_failed(self) -> None:
        self.failures += 1


class _StubRunner:
    """Stands in for the Runner: records each call, can block (a hung step) or raise."""

    def __init__(self, store: Store, *, block: bool = False, fail: bool = False) -> None:
        self.store = store
        self.block, self.fail = block, fail
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[dict[str, Any]] = []
        self.mail_rounds = 0
        self.mail_retried = threading.Event()

    def sync(self, tenant: str, upload: Path, **kwargs: Any) -> Any:
        self.calls.append({"tenant": tenant, "thread": threading.current_thread().name,
                           **kwargs})
        self.entered.set()
        if self.block:
            assert self.release.wait(60)
        if self.fail:
            raise RuntimeError("a bug in the pipeline")
        return SimpleNamespace(run_id=kwargs["run_id"], status="completed")

    superseded = sync

    def retry_mails(self) -> int:
        self.mail_rounds += 1
        if self.mail_rounds == 1:
            raise StoreError("the store hiccupped")
        self.mail_retried.set()
        return 0


def _settings(tmp_path: Path, **top: Any) -> Settings:
    return parse_settings({
        "state_dir": str(tmp_path / "state"), "sftp": {"listen": "127.0.0.1:0"},
        "tenants": {"t": {"report_to": ["admin@t.example"]}}, **top})


def _spooled(tmp_path: Path, queue: JobQueue, upload: bytes = b"zip") -> int:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    path = spool / f"{uuid.uuid4().hex}__d.zip"
    path.write_bytes(upload)
    return queue.enqueue(tenant="t", path=str(path), file_name="d.zip", source="watch",
                         kind="bulk", now=utc_now())


def _pool(runner: Any, queue: JobQueue, **kwargs: Any) -> WorkerPool:
    return WorkerPool(cast(Runner, runner), queue, count=1, clock=utc_now, **kwargs)


@pytest.mark.asyncio
async def test_runner_log_lines_in_the_pipeline_thread_carry_the_job(tmp_path: Path) -> None:
    """A real run through the pool: the runner's run_finished, written in a pipeline
    thread, carries the job's tenant, job_id and run_id; the job is finished."""
    settings = _settings(tmp_path)
    upload = make_zip(dict(asm_files()))
    threads: list[str] = []

    class Recording(Runner):
        def sync(self, *args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return super().sync(*args, **kwargs)

    with open_store(settings.database_url) as store, \
            capture_logs(processors=[merge_contextvars]) as logs:
        queue = JobQueue(store)
        job_id = _spooled(tmp_path, queue, upload)
        pool = _pool(Recording(settings, store), queue)
        pool.start()
        try:
            await asyncio.wait_for(_logged(logs, "job_finished"), 30)
        finally:
            await pool.stop(5)
        state = _row(store, job_id)[0]
    assert threads and threads[0].startswith("rosterdrop-pipeline")
    run_finished = [e for e in logs if e["event"] == "run_finished"]
    assert len(run_finished) == 1
    started = next(e for e in logs if e["event"] == "job_started")
    assert run_finished[0]["job_id"] == job_id == started["job_id"]
    assert run_finished[0]["tenant"] == "t"
    assert run_finished[0]["run_id"] == started["run_id"]
    assert state == "done"


async def _logged(logs: list[dict[str, Any]], event: str) -> None:
    """Until ``event`` is logged (capture_logs has nothing to await)."""
    while not any(e["event"] == event for e in logs):
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_job_gets_its_deadline_and_an_overdue_one_is_given_up(tmp_path: Path) -> None:
    """The runner is handed deadline = start + job_timeout_seconds. A pipeline call that
    outlives deadline + grace: job_overdue once, the job is given up (worker cleared, its
    lease, renewed until then, no longer renewed); when the thread returns nothing
    finishes it, and once the lease has run out the job is tried again (its upload, gone
    with the first run, makes that the job_upload_gone path) and done."""
    settings = _settings(tmp_path)
    with open_store(settings.database_url) as store, capture_logs() as logs:
        queue = JobQueue(store, lease_seconds=2)  # renewed every second while it is held
        job_id = _spooled(tmp_path, queue)
        runner = _StubRunner(store, block=True)
        pool = _pool(runner, queue, job_timeout_seconds=1.2, overdue_grace_seconds=0.3)
        claimed_at = time.monotonic()
        pool.start()
        try:
            assert await asyncio.to_thread(runner.entered.wait, 30)
            claimed = _row(store, job_id)
            while _row(store, job_id)[2] is not None:
                await asyncio.sleep(0.05)
            overdue_at = time.monotonic()
            given_up = _row(store, job_id)
            await asyncio.sleep(1.5)  # longer than the renewal period: nothing renews it
            assert _row(store, job_id) == given_up
            runner.release.set()
            await asyncio.wait_for(_logged(logs, "job_upload_gone"), 30)
        finally:
            runner.release.set()
            await pool.stop(5)
        retried = _row(store, job_id)
    first = runner.calls[0]["deadline"]
    assert claimed_at + 1.2 <= first < overdue_at - 0.3
    assert given_up[0] == RUNNING and given_up[1] > claimed[1]  # renewed before, not after
    events = [e["event"] for e in logs]
    assert events.count("job_overdue") == 1 and "job_finished" not in events
    assert events.index("job_overdue") < events.index("job_overdue_returned")
    assert [e["attempt"] for e in logs if e["event"] == "job_started"] == [1, 2]
    assert (retried[0], retried[3]) == ("done", 2)


@pytest.mark.asyncio
async def test_failed_job_is_counted_and_waits_for_its_lease(tmp_path: Path) -> None:
    """A job that raises: job_failed logged and counted, the job left for its lease."""
    settings = _settings(tmp_path)
    telemetry = _Counting()
    with open_store(settings.database_url) as store, capture_logs() as logs:
        queue = JobQueue(store)
        job_id = _spooled(tmp_path, queue)
        runner = _StubRunner(store, fail=True)
        pool = _pool(runner, queue, telemetry=telemetry)
        pool.start()
        try:
            await asyncio.wait_for(_logged(logs, "job_failed"), 30)
        finally:
            await pool.stop(5)
        state, _, worker, attempts = _row(store, job_id)
    assert telemetry.failures == 1
    assert (state, worker, attempts) == (RUNNING, None, 1)
    assert len(runner.calls) == 1  # not taken again at once


# --- the daemon: mail retrier task, bounded SIGTERM drain -----------------------------


@pytest.mark.asyncio
async def test_sigterm_stops_within_drain_seconds_with_a_job_still_busy(
        tmp_path: Path) -> None:
    """A job whose pipeline call never returns: SIGTERM stops the daemon within
    drain_seconds plus the grace, the job is queued again (job_released), every task is
    reaped, the busy thread is left behind. Meanwhile the mail retrier task went on
    after a failing round (mail_retry_error)."""
    settings = _settings(tmp_path, drain_seconds=1.0, mail={"retry_seconds": 0.05})
    with capture_logs() as logs:
        daemon = Daemon(settings)
        runner = _StubRunner(daemon.store, block=True)
        daemon.runner = daemon.pool.runner = cast(Runner, runner)
        job_id = _spooled(tmp_path, daemon.queue)
        running = asyncio.create_task(daemon.run())
        try:
            assert await asyncio.to_thread(runner.entered.wait, 30)
            assert await asyncio.to_thread(runner.mail_retried.wait, 30)
            stopping = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(running, 30)
            took = time.monotonic() - stopping
            assert not runner.release.is_set() and daemon.pool.threads_busy() == 1
        finally:
            runner.release.set()
            if not running.done():
                running.cancel()
    assert took < settings.drain_seconds + STOP_GRACE_SECONDS
    assert took >= settings.drain_seconds  # the job had its drain time
    with open_store(settings.database_url) as store:
        assert _row(store, job_id)[0] == QUEUED
    released = [e for e in logs if e["event"] == "job_released"]
    assert [e["job_id"] for e in released] == [job_id]
    assert any(e["event"] == "mail_retry_error" for e in logs)
    assert [e["event"] for e in logs if e["event"].startswith("daemon_")][-1] == "daemon_stopped"
    assert daemon._tasks == set()
