"""Workers: claim a job, run the pipeline on it, finish it.

Each worker is a thread (polars does the heavy lifting outside the GIL, so
the SFTP event loop stays responsive). A job's lease is renewed while it
runs; if the process dies, another worker (here after restart, or in
another process on PostgreSQL) claims it once the lease expires, and the
runner continues the same run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from rosterdrop.daemon.queue import Job, JobQueue
from rosterdrop.runs.runner import Runner
from rosterdrop.store.history import new_run_id

log = structlog.get_logger("rosterdrop.worker")

POLL_SECONDS = 1.0
MAX_ATTEMPTS = 5


class WorkerPool:
    def __init__(self, runner: Runner, queue: JobQueue, *, count: int,
                 clock: Callable[[], datetime], name: str | None = None) -> None:
        self.runner = runner
        self.queue = queue
        self.count = count
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        for n in range(self.count):
            thread = threading.Thread(target=self._loop, args=(f"{self.name}/{n}",),
                                      name=f"rosterdrop-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        self._wake.set()

    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def stop(self, drain_seconds: float) -> None:
        """Stop claiming; let running jobs finish for up to ``drain_seconds``, then
        give back the ones still running (they are claimed again on the next start)."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + drain_seconds
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = list(self._running.values())
        for job in unfinished:
            self.queue.release(job)
            log.warning("job_released", tenant=job.tenant, job_id=job.id, run_id=job.run_id)

    def _loop(self, worker: str) -> None:
        while not self._stopping.is_set():
            try:
                job = self.queue.claim(worker, self.clock())
            except Exception:
                log.exception("claim_failed", worker=worker)
                job = None
            if job is None:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()
                continue
            with self._lock:
                self._running[worker] = job
            try:
                self._work(job, worker)
            finally:
                with self._lock:
                    self._running.pop(worker, None)

    def _work(self, job: Job, worker: str) -> None:
        stop_beat = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, worker, stop_beat),
                                daemon=True)
        beat.start()
        try:
            self._process(job)
        except Exception:
            log.exception("job_failed", tenant=job.tenant, job_id=job.id, attempt=job.attempts)
            if job.attempts >= MAX_ATTEMPTS:
                log.error("job_abandoned", tenant=job.tenant, job_id=job.id, path=job.path)
                self.queue.finish(job, self.clock())
            return  # otherwise the lease expires and the job is tried again
        finally:
            stop_beat.set()
        self.queue.finish(job, self.clock())

    def _heartbeat(self, job: Job, worker: str, stop: threading.Event) -> None:
        interval = max(1.0, self.queue.lease.total_seconds() / 3)
        while not stop.wait(interval):
            try:
                if not self.queue.heartbeat(job, worker, self.clock()):
                    log.warning("lease_lost", job_id=job.id, tenant=job.tenant)
                    return
            except Exception:
                log.exception("heartbeat_failed", job_id=job.id)

    def _process(self, job: Job) -> None:
        run_id = job.run_id
        if run_id is None:
            run_id = new_run_id(self.clock())
            self.queue.set_run(job, run_id)
        log.info("job_started", tenant=job.tenant, job_id=job.id, run_id=run_id,
                 attempt=job.attempts, file=job.file_name)
        path = Path(job.path)
        if not path.is_file():
            # Processed before a crash and cleaned up; make sure its email went out.
            log.warning("job_upload_gone", tenant=job.tenant, job_id=job.id, run_id=run_id)
            self._mail_if_recorded(run_id)
            return
        if self.queue.newer_bulk(job):
            run = self.runner.superseded(job.tenant, path, source=job.source,
                                         file_name=job.file_name, run_id=run_id,
                                         newer="a newer upload in the queue")
        else:
            run = self.runner.sync(job.tenant, path, source=job.source,
                                   file_name=job.file_name, run_id=run_id,
                                   force=job.source == "resync")
        path.unlink(missing_ok=True)
        log.info("job_finished", tenant=job.tenant, job_id=job.id, run_id=run.run_id,
                 status=run.status)

    def _mail_if_recorded(self, run_id: str) -> None:
        from rosterdrop.errors import NotFound
        from rosterdrop.store.history import get_run

        try:
            run = get_run(self.runner.store, run_id)
        except NotFound:
            return
        self.runner.ensure_mailed(run)
