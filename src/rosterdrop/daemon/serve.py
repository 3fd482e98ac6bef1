"""``rosterdrop serve``: start-up checks, the parts wired together, clean shutdown.

Concurrency: asyncio owns all I/O and every background task; the CPU-heavy
pipeline runs in one bounded thread pool (`workers` threads); blocking calls
(store, SMTP) run one attempt at a time with a timeout in asyncio's default
executor; every task is tracked and reaped at shutdown, every job has a
timeout.

- The loop runs the SFTP/SCP server (asyncssh), the worker tasks and the
  lease task of each running job (``workers.py``), the intake of each upload
  the SFTP server completed, the mail retrier (every ``min(5,
  mail.retry_seconds)`` s one ``Runner.retry_mails`` in the executor; its
  ledger decides what is due) and the pull scheduler with a task per pull
  (``sources/oneroster/puller.py``), and the outlets' task with a task per delivery
  attempt (``outlets/dispatch.py``). Each is created by ``Daemon._spawn`` or
  the pool, kept in a set, and cancelled and awaited at shutdown.
- Jobs run in the pipeline pool (``rosterdrop-pipeline``, ``workers``
  threads), each with a deadline of ``job_timeout_seconds``.
- SMTP is one attempt per call (``mail/transport.py``), bounded by
  ``mail.timeout_seconds``; retries come from the mail ledger, never a sleep.
- The console (``web.listen``, ``rosterdrop.web``) is uvicorn on the loop, one
  task; its store and runner calls run in the default executor.
- Outside the loop by nature: the watcher's inotify observer (a watchdog
  thread that only hands files to intake) and the metrics HTTP listener.

Shutdown (SIGTERM, SIGINT) is bounded by ``drain_seconds`` plus a few
seconds: stop accepting, let running jobs finish until the bound, give the
rest back (``job_released``), cancel and await every task. A pipeline thread
cannot be killed; if one is still busy the process exits without it
(``serve``), and its job, given back, is claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from rosterdrop.config import Settings
from rosterdrop.daemon.intake import Intake
from rosterdrop.daemon.metrics import DaemonState, Metrics, Monitoring
from rosterdrop.daemon.watcher import Watcher
from rosterdrop.daemon.workers import WorkerPool
from rosterdrop.outlets.dispatch import Outlets
from rosterdrop.passwords import hash_password
from rosterdrop.paths import StatePaths, open_private, private_file
from rosterdrop.runs.runner import Runner, utc_now
from rosterdrop.sftp.server import DropboxServer
from rosterdrop.sources.oneroster.puller import daemon_scheduler
from rosterdrop.startup import ServeLock, check_host_key, refuse_failures, start_checks
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.jobs import JobQueue
from rosterdrop.web.listener import WebListener

log = structlog.get_logger("rosterdrop.daemon")

HOUSEKEEPING_FIRST_SECONDS = 60.0
HOUSEKEEPING_SECONDS = 24 * 3600.0

STORE_TIMEOUT_SECONDS = 60.0
"""One blocking store call of the daemon itself (longer than SQLite's busy timeout)."""
STOP_GRACE_SECONDS = 3.0
"""What the parts that are not jobs get beyond drain_seconds to stop."""


def generated_passwords(settings: Settings, paths: StatePaths) -> dict[str, str]:
    """Accounts with neither a password hash nor keys get a random password, kept in
    ``state_dir/<username>-password`` (0600), so a newcomer can upload at once."""
    hashes: dict[str, str] = {}
    for tenant_key, tenant in settings.tenants.items():
        for account in tenant.accounts:
            if account.password_hash or account.authorized_keys:
                continue
            file = paths.root / f"{account.username}-password"
            made = not file.is_file()
            if made:
                with os.fdopen(open_private(file, "xb"), "w") as handle:
                    handle.write(secrets.token_urlsafe(18) + "\n")
            hashes[account.username] = hash_password(private_file(file).read_text().strip())
            # A warning once, when the password is made; later starts only say it is in use.
            (log.warning if made else log.info)(
                "sftp_password_generated" if made else "sftp_password_file_used",
                tenant=tenant_key, username=account.username, password_file=str(file))
    return hashes


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = StatePaths.of(settings)
        # One serve per state folder; then the checks doctor shows, every one of them.
        self.lock = ServeLock(self.paths)
        self.lock.acquire()
        try:
            refuse_failures(start_checks(settings, create=True))
            self._build(settings)
        except BaseException:
            self.lock.release()
            raise

    def _build(self, settings: Settings) -> None:
        self.store: Store = open_store(settings.database_url, cache_dir=settings.state_dir / "cache")
        self.metrics = Metrics()
        self.outlets = Outlets(settings, self.store, clock=utc_now)
        self.runner = Runner(settings, self.store, telemetry=self.metrics, outlets=self.outlets)
        self.queue = JobQueue(self.store, lease_seconds=settings.lease_seconds)
        self.intake = Intake(self.paths, self.queue, list(settings.tenants), utc_now,
                             telemetry=self.metrics)
        self.pool = WorkerPool(self.runner, self.queue, count=settings.workers, clock=utc_now,
                               job_timeout_seconds=settings.job_timeout_seconds,
                               telemetry=self.metrics)
        self.server = DropboxServer(
            settings, self.paths, self._uploaded,
            passwords=generated_passwords(settings, self.paths), telemetry=self.metrics,
        )
        self.watcher = Watcher(
            self.intake, settle_seconds=settings.sftp.settle_seconds,
            rescan_seconds=settings.sftp.rescan_seconds, is_busy=self.server.is_uploading,
            on_queued=self.pool.wake,
        )
        self.pulls = daemon_scheduler(settings, runner=self.runner, take=self.intake.take,
                                      on_queued=self.pool.wake, clock=utc_now)
        self.monitoring = Monitoring(settings.metrics.listen, DaemonState.of(
            self.store, self.queue, self.server, self.pool, clock=utc_now,
            stuck_seconds=settings.metrics.stuck_seconds), self.metrics)
        self.web = self._console(settings) if settings.web.listen else None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._intake: set[asyncio.Task[None]] = set()

    def _console(self, settings: Settings) -> WebListener:
        from rosterdrop.daemon.resync import queue_last_upload
        from rosterdrop.sources.oneroster.puller import PullStates
        from rosterdrop.web.app import build_app
        from rosterdrop.web.console import Console, console_admins

        def sync_now(tenant: str) -> str:  # what `rosterdrop resync` does
            if settings.tenant(tenant).source is not None:
                PullStates.of(settings).request(tenant)
                return f"Asked for a pull of {tenant} from its SIS now."
            job, name = queue_last_upload(settings, self.store, tenant)
            return f"Queued {name} again (job {job})."

        console = Console(
            settings=settings, store=self.store, runner=self.runner,
            admins=console_admins(settings, self.paths), clock=utc_now,
            take=self.intake.take, wake=self.pool.wake, sync_now=sync_now,
            ready=self.monitoring.state.ready, scrape=self.monitoring.scrape,
            host_key_fingerprint=lambda: check_host_key(settings).host_key_fingerprint)
        return WebListener(settings.web.listen, build_app(console),
                           graceful_seconds=STOP_GRACE_SECONDS)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a background task the shutdown cancels and awaits."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _uploaded(self, tenant: str, path: Path) -> None:
        """The SFTP server's word that an upload is complete: queue it now (the
        watcher stays for files copied in by other means)."""
        task = self._spawn(self._take_upload(tenant, path), f"rosterdrop-intake-{tenant}")
        self._intake.add(task)
        task.add_done_callback(self._intake.discard)

    async def _take_upload(self, tenant: str, path: Path) -> None:
        try:
            job = await asyncio.wait_for(
                asyncio.to_thread(self.intake.take, tenant, path, "sftp"), STORE_TIMEOUT_SECONDS)
        except Exception:  # the file stays in the drop folder: the watcher's rescan takes it
            log.exception("intake_failed", tenant=tenant, file=path.name)
            return
        if job is not None:
            self.pool.wake()

    async def _retry_mails(self) -> None:
        """Every few seconds, the reports whose retry the mail ledger says is due."""
        interval = min(5.0, self.settings.mail.retry_seconds)
        while True:
            await asyncio.sleep(interval)
            try:
                # No timeout: each SMTP attempt has its own, and a second round started
                # beside a slow one would only queue behind it.
                await asyncio.to_thread(self.runner.retry_mails)
            except Exception:  # a store hiccup must not end the retries
                log.exception("mail_retry_error")

    async def _housekeeping(self) -> None:
        """Once a day (the first a minute after start): purge people past retention_days
        and files past [retention], tenant by tenant, whatever the uploads."""
        await asyncio.sleep(HOUSEKEEPING_FIRST_SECONDS)
        while True:
            for tenant in self.settings.tenants:
                try:
                    await asyncio.to_thread(self.runner.purge, tenant)
                    await asyncio.to_thread(self.runner.housekeep, tenant)
                except Exception:  # tomorrow is another day; a store hiccup ends nothing
                    log.exception("housekeeping_failed", tenant=tenant)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._serve()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.lock.release()  # also when a listener failed to start

    def _metrics_listen(self) -> str:
        server = self.monitoring.server
        if server is None:
            return ""
        return f"{self.settings.metrics.listen.rsplit(':', 1)[0]}:{server.port}"

    async def _serve(self) -> None:
        assert self._stop is not None
        loop = asyncio.get_running_loop()
        self.monitoring.start(loop)
        if self.web is not None:
            self.web.bind()
            self._tasks.add(await self.web.start())
        await self.server.start()
        released = 0
        if self.store.is_sqlite:
            released = await asyncio.wait_for(asyncio.to_thread(self.queue.release_orphans),
                                              STORE_TIMEOUT_SECONDS)
        recovered = await asyncio.to_thread(self.intake.recover)
        self.watcher.start()
        self.pool.start()
        self._spawn(self._retry_mails(), "rosterdrop-mail-retry")
        if self.outlets.configured:
            self._spawn(self.outlets.run(), "rosterdrop-outlets")
        self._spawn(self._housekeeping(), "rosterdrop-housekeeping")
        if self.pulls is not None:
            self._spawn(self.pulls.run(), "rosterdrop-pull-scheduler")
        listen = f"{self.settings.sftp.listen.rsplit(':', 1)[0]}:{self.server.port}"
        self.lock.publish(sftp=listen, metrics=self._metrics_listen(),
                          web=self.web.address if self.web is not None else "")
        log.info("daemon_started", listen=listen, store=self.store.dialect,
                 console=f"http://{self.web.address}/" if self.web is not None else "",
                 workers=self.settings.workers, state_dir=str(self.paths.root),
                 recovered=recovered, released=released, pid=os.getpid())
        try:
            await self._stop.wait()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        log.info("daemon_stopping")
        drain = self.settings.drain_seconds
        deadline = time.monotonic() + drain

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.monitoring.close()
        if self.web is not None:
            await self.web.close()
        try:
            await asyncio.wait_for(self.server.close(), drain + STOP_GRACE_SECONDS)
        except Exception:  # the rest of the stop must happen all the same
            log.exception("sftp_stop_failed")
        if self._intake:  # uploads completed just before: still queued
            await asyncio.wait(set(self._intake), timeout=left())
        if self.pulls is not None:
            self.pulls.cancel.set()  # a pull in progress gives up at its next request
        watcher = asyncio.create_task(asyncio.to_thread(self.watcher.stop))
        await self.pool.stop(left())
        tasks = {*self._tasks, watcher}
        for task in self._tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
        await asyncio.gather(*(t for t in tasks if t.done()), return_exceptions=True)
        self.queue.close()
        self.store.close()
        self.lock.release()
        log.info("daemon_stopped", threads_busy=self.pool.threads_busy())


def serve(settings: Settings) -> None:
    daemon = Daemon(settings)
    # Not asyncio.run: it waits for every default-executor thread (up to 5 minutes), and
    # a call stuck in one must not hold up the exit.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(daemon.run())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    _exit_without_busy_threads()


def _exit_without_busy_threads(wait_seconds: float = 1.0) -> None:
    """Idle executor threads end at once; a thread still inside a job or a blocking call
    would keep the interpreter from exiting (it joins them): leave it behind."""
    deadline = time.monotonic() + wait_seconds
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t.name for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not busy:
        return
    log.info("threads_left_behind", threads=busy)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
