"""Workers: claim a job, run the pipeline on it, finish it, on the daemon's event loop.

``workers`` worker tasks run on the daemon's asyncio loop. Each store call of
the queue (claim, heartbeat, finish, release) is one attempt in asyncio's
default executor, awaited with a timeout. The job itself (``Runner.sync`` or
``Runner.superseded``: polars, the run's store writes, its email) runs in one
bounded pool of ``workers`` pipeline threads (``rosterdrop-pipeline``), so
the event loop that serves SFTP never waits for a sync. A job's lease is
renewed by an asyncio task of its own while it runs; if the process dies,
another worker (here after restart, or in another process on PostgreSQL,
where the queue's advisory lock makes that at once) claims it and the runner
continues the same run.

Every job has a deadline, ``job_timeout_seconds`` from its start, handed to
the runner (``deadline=``), which ends a run that passes it as failed. A
thread cannot be killed: if the pipeline has not returned
``OVERDUE_GRACE_SECONDS`` after the deadline the worker logs ``job_overdue``
once, stops renewing the lease and gives the job up (``JobQueue.expire``), so
it is tried again once the lease runs out; the worker itself waits for its
thread, since that thread is still one of the pool's.

Log lines written while a job runs carry ``tenant``, ``job_id`` and
``run_id``, also those the runner writes in the pipeline thread (the context
is copied into it).

``stop(drain_seconds)``: no new claims; running jobs get ``drain_seconds`` to
finish; the ones still running are given back (``job_released``), every task
is cancelled and awaited, and the pipeline pool is shut down without waiting
for a thread that is still busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog
from structlog.contextvars import bound_contextvars

from rosterdrop.runs.runner import Runner
from rosterdrop.store.history import new_run_id
from rosterdrop.store.jobs import Job, JobQueue
from rosterdrop.telemetry import NO_TELEMETRY, Telemetry

log = structlog.get_logger("rosterdrop.worker")

POLL_SECONDS = 1.0
MAX_ATTEMPTS = 5
OVERDUE_GRACE_SECONDS = 30.0
"""After its deadline the runner ends a run between steps; a step that never returns
(a hung disk or database) is given up this much later."""
STORE_TIMEOUT_SECONDS = 60.0
"""One queue call; longer than SQLite's busy timeout, so a held lock is not a failure."""
STOP_STORE_TIMEOUT_SECONDS = 3.0
"""One queue call while stopping, where the whole stop has a bound."""
LOCK_CHECK_SECONDS = 2.0
"""PostgreSQL: how often a running job's lock connection is checked (a database restart
cuts it; until it is locked again another process could take the job over)."""

T = TypeVar("T")


@dataclass
class _Outcome:
    run_id: str
    status: str | None
    """None: the upload was gone (processed before a crash)."""


class _Handoff:
    """A claim awaited with a timeout: the job goes to the waiting worker, or, once that
    worker has given up, back to the queue (by the claiming thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given_up = False
        self._delivered = False

    def deliver(self) -> bool:
        with self._lock:
            self._delivered = not self._given_up
            return self._delivered

    def give_up(self) -> bool:
        with self._lock:
            self._given_up = not self._delivered
            return self._given_up


class WorkerPool:
    def __init__(self, runner: Runner, queue: JobQueue, *, count: int,
                 clock: Callable[[], datetime], name: str | None = None,
                 job_timeout_seconds: float = 1800.0,
                 overdue_grace_seconds: float = OVERDUE_GRACE_SECONDS,
                 telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.runner = runner
        self.queue = queue
        self.count = count
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.job_timeout = job_timeout_seconds
        self.overdue_grace = overdue_grace_seconds
        self.telemetry = telemetry
        self._pipeline = ThreadPoolExecutor(max_workers=count,
                                            thread_name_prefix="rosterdrop-pipeline")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._workers: set[asyncio.Task[None]] = set()
        self._beats: set[asyncio.Task[None]] = set()
        self._running: dict[str, Job] = {}
        self._validates: dict[int, bool] = {}
        """Job id → its upload reads and validates: checked once, however many older
        uploads ask (the file in the spool does not change)."""
        """worker → the job whose pipeline it runs (read by metrics from another thread)."""
        self._busy_threads: set[int] = set()
        self._late_claims: list[asyncio.Future[Job | None]] = []

    # --- lifecycle (on the loop) --------------------------------------------------------

    def start(self) -> None:
        """Start the worker tasks on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for n in range(self.count):
            worker = f"{self.name}/{n}"
            task = self._loop.create_task(self._run_worker(worker), name=f"rosterdrop-worker-{n}")
            self._workers.add(task)

    def wake(self) -> None:
        """A job was queued: look now. Safe from any thread."""
        loop, event = self._loop, self._wake
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
            loop.call_soon_threadsafe(event.set)

    def busy(self) -> int:
        return len(self._running)

    def threads_busy(self) -> int:
        """Pipeline threads still inside a job (after stop: ones it could not wait for)."""
        return len(self._busy_threads)

    async def stop(self, drain_seconds: float) -> None:
        """Stop claiming; let running jobs finish for up to ``drain_seconds``, then give
        back the ones still running (claimed again at the next start, or at once by
        another process); cancel and await every task; shut the pipeline pool down
        without waiting for its threads."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._workers:
            await asyncio.wait(set(self._workers), timeout=drain_seconds)
        unfinished = list(self._running.values())
        tasks = self._workers | self._beats
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._late_claims:
            await asyncio.wait(self._late_claims, timeout=STOP_STORE_TIMEOUT_SECONDS)
        unfinished += [job for claim in self._late_claims if claim.done()
                       and not claim.cancelled() and claim.exception() is None
                       and (job := claim.result()) is not None]
        await asyncio.gather(*(self._give_back(job) for job in unfinished))
        self._pipeline.shutdown(wait=False, cancel_futures=True)

    async def _give_back(self, job: Job) -> None:
        try:
            await self._store(self.queue.release, job, timeout=STOP_STORE_TIMEOUT_SECONDS)
        except Exception:  # its lease (on PostgreSQL its lock, at exit) frees it anyway
            log.exception("release_failed", tenant=job.tenant, job_id=job.id)
            return
        log.warning("job_released", tenant=job.tenant, job_id=job.id, run_id=job.run_id)

    # --- the worker task ----------------------------------------------------------------

    async def _run_worker(self, worker: str) -> None:
        while not self._stopping:
            try:
                job = await self._claim(worker)
            except Exception:
                log.exception("claim_failed", worker=worker)
                job = None
            if job is not None and self._stopping:
                await self._give_back(job)
                return
            if job is None:
                await self._idle()
                continue
            self._running[worker] = job
            try:
                await self._work(job, worker)
            finally:
                self._running.pop(worker, None)

    async def _idle(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
        if not self._stopping:
            self._wake.clear()

    async def _claim(self, worker: str) -> Job | None:
        handoff = _Handoff()

        def claim() -> Job | None:
            job = self.queue.claim(worker, self.clock())
            if job is not None and not handoff.deliver():
                self.queue.release(job)  # its worker stopped waiting: nobody runs it
                return None
            return job

        future = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, claim))
        try:
            return await asyncio.wait_for(asyncio.shield(future), STORE_TIMEOUT_SECONDS)
        except TimeoutError:
            if handoff.give_up():
                raise
            return await future  # delivered a moment ago: it is ours
        except asyncio.CancelledError:
            if not handoff.give_up():
                self._late_claims.append(future)  # stop() gives it back
            raise

    async def _store(self, fn: Callable[..., T], *args: Any,
                     timeout: float = STORE_TIMEOUT_SECONDS) -> T:
        """One blocking queue call in the default executor, awaited with a timeout."""
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)

    async def _work(self, job: Job, worker: str) -> None:
        deadline = time.monotonic() + self.job_timeout
        with bound_contextvars(tenant=job.tenant, job_id=job.id):
            run_id = job.run_id
            if run_id is None:
                run_id = new_run_id(self.clock())
                await self._store(self.queue.set_run, job, run_id)
            with bound_contextvars(run_id=run_id):
                lease = asyncio.get_running_loop().create_task(
                    self._heartbeat(job, worker), name=f"rosterdrop-lease-{job.id}")
                self._beats.add(lease)
                lease.add_done_callback(self._beats.discard)
                try:
                    await self._run_job(job, worker, run_id, deadline, lease)
                finally:
                    lease.cancel()

    async def _run_job(self, job: Job, worker: str, run_id: str, deadline: float,
                       lease: asyncio.Task[None]) -> None:
        log.info("job_started", tenant=job.tenant, job_id=job.id, run_id=run_id,
                 attempt=job.attempts, file=job.file_name)
        run = functools.partial(self._pipeline_job, job, run_id, deadline)
        future = asyncio.get_running_loop().run_in_executor(
            self._pipeline, functools.partial(contextvars.copy_context().run, run))
        overdue = False
        try:
            try:
                outcome = await asyncio.wait_for(
                    asyncio.shield(future),
                    max(0.0, deadline + self.overdue_grace - time.monotonic()))
            except TimeoutError:
                overdue = True
                lease.cancel()
                log.error("job_overdue", tenant=job.tenant, job_id=job.id, run_id=run_id,
                          timeout_seconds=self.job_timeout, grace_seconds=self.overdue_grace)
                await self._store(self.queue.expire, job, worker)
                outcome = await future  # the thread is still one of the pool's
        except Exception:
            log.exception("job_failed", tenant=job.tenant, job_id=job.id, attempt=job.attempts)
            self.telemetry.job_failed()
            if overdue:
                return
            if job.attempts >= MAX_ATTEMPTS:
                log.error("job_abandoned", tenant=job.tenant, job_id=job.id, path=job.path)
                await self._finish(job, worker)
            else:  # tried again once its lease runs out
                await self._store(self.queue.expire, job, worker)
            return
        if overdue:
            log.warning("job_overdue_returned", tenant=job.tenant, job_id=job.id,
                        run_id=outcome.run_id, status=outcome.status)
            return
        if await self._finish(job, worker) and outcome.status is not None:
            log.info("job_finished", tenant=job.tenant, job_id=job.id, run_id=outcome.run_id,
                     status=outcome.status)

    async def _finish(self, job: Job, worker: str) -> bool:
        # No longer running: a stop from here on must not give the job back.
        self._running.pop(worker, None)
        self._validates.pop(job.id, None)  # its own verdict is no longer asked for
        return await self._store(self.queue.finish, job, self.clock(), worker)

    async def _heartbeat(self, job: Job, worker: str) -> None:
        renew_every = max(1.0, self.queue.lease.total_seconds() / 3)
        sqlite = self.queue.store.is_sqlite
        tick = renew_every if sqlite else min(renew_every, LOCK_CHECK_SECONDS)
        renew_at = time.monotonic() + renew_every
        while True:
            await asyncio.sleep(tick)
            try:
                held = sqlite or await self._store(self.queue.check_lock, job)
                if held and time.monotonic() >= renew_at:
                    renew_at += renew_every
                    held = await self._store(self.queue.heartbeat, job, worker, self.clock())
                if not held:
                    log.warning("lease_lost", job_id=job.id, tenant=job.tenant)
                    return
            except Exception:
                log.exception("heartbeat_failed", job_id=job.id)

    # --- in a pipeline thread -------------------------------------------------------------

    def _pipeline_job(self, job: Job, run_id: str, deadline: float) -> _Outcome:
        me = threading.get_ident()
        self._busy_threads.add(me)
        try:
            return self._process(job, run_id, deadline)
        finally:
            self._busy_threads.discard(me)

    def _process(self, job: Job, run_id: str, deadline: float) -> _Outcome:
        path = Path(job.path)
        if not path.is_file():
            # Processed before a crash and cleaned up; make sure its email went out.
            log.warning("job_upload_gone", tenant=job.tenant, job_id=job.id, run_id=run_id)
            self._mail_if_recorded(run_id)
            return _Outcome(run_id, None)
        # Only a newer upload that reads and validates supersedes this one: a broken
        # export must never cost the tenant a good one.
        newer = next((n for n in self.queue.newer_bulk(job) if self._valid(n)), None)
        if newer is not None:
            run = self.runner.superseded(job.tenant, path, source=job.source,
                                         file_name=job.file_name, run_id=run_id,
                                         newer=f"'{newer.file_name}'", deadline=deadline)
        else:
            run = self.runner.sync(job.tenant, path, source=job.source,
                                   file_name=job.file_name, run_id=run_id,
                                   force=job.source == "resync", deadline=deadline)
        path.unlink(missing_ok=True)
        return _Outcome(run.run_id, str(run.status))

    def _valid(self, job: Job) -> bool:
        if job.id not in self._validates:
            self._validates[job.id] = self.runner.validates(job.tenant, Path(job.path),
                                                            job.file_name)
        return self._validates[job.id]

    def _mail_if_recorded(self, run_id: str) -> None:
        from rosterdrop.errors import NotFound
        from rosterdrop.store.history import get_run

        try:
            run = get_run(self.runner.store, run_id)
        except NotFound:
            return
        self.runner.ensure_mailed(run)
