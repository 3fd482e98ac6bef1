"""``rosterdrop serve``: start-up checks, the parts wired together, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import threading
from pathlib import Path

import structlog

from rosterdrop.config import Settings, parse_listen
from rosterdrop.daemon.intake import Intake
from rosterdrop.daemon.metrics import DaemonState, Metrics, Monitoring
from rosterdrop.daemon.queue import JobQueue
from rosterdrop.daemon.watcher import Watcher
from rosterdrop.daemon.workers import WorkerPool
from rosterdrop.errors import InputError, SftpError
from rosterdrop.passwords import hash_password
from rosterdrop.paths import StatePaths
from rosterdrop.runs.runner import Runner, utc_now
from rosterdrop.sftp.server import DropboxServer
from rosterdrop.sources.oneroster.puller import daemon_scheduler
from rosterdrop.store.engine import Store, open_store

log = structlog.get_logger("rosterdrop.daemon")

DRAIN_SECONDS = 10.0


def check_state_dir(paths: StatePaths) -> None:
    for folder, what in ((paths.root, "state folder"), (paths.shared, "shared folder")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise InputError(f"{what} {folder} is not writable: "
                             f"{exc.strerror or exc}") from exc


def check_port_free(listen: str) -> None:
    host, port = parse_listen(listen)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SftpError(f"cannot listen on {listen}: {exc.strerror or exc} (is another "
                            f"rosterdrop or SSH server using the port? set sftp.listen)") from exc


def generated_passwords(settings: Settings, paths: StatePaths) -> dict[str, str]:
    """Accounts with neither a password hash nor keys get a random password, kept in
    ``state_dir/<username>-password`` (0600), so a newcomer can upload at once."""
    hashes: dict[str, str] = {}
    for tenant_key, tenant in settings.tenants.items():
        for account in tenant.accounts:
            if account.password_hash or account.authorized_keys:
                continue
            file = paths.root / f"{account.username}-password"
            if not file.is_file():
                fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_urlsafe(18) + "\n")
            hashes[account.username] = hash_password(file.read_text().strip())
            log.warning("sftp_password_generated", tenant=tenant_key,
                        username=account.username, password_file=str(file))
    return hashes


class MailRetrier:
    """Re-sends reports whose delivery failed, when their backoff is due."""

    def __init__(self, runner: Runner, interval: float) -> None:
        self.runner = runner
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rosterdrop-mail-retry",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.runner.retry_mails()
            except Exception:  # a store hiccup must not end the retries
                log.exception("mail_retry_error")


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = StatePaths.of(settings)
        check_state_dir(self.paths)
        check_port_free(settings.sftp.listen)
        self.store: Store = open_store(settings.database_url, cache_dir=settings.state_dir / "cache")
        self.metrics = Metrics()
        self.runner = Runner(settings, self.store, telemetry=self.metrics)
        self.queue = JobQueue(self.store, lease_seconds=settings.lease_seconds)
        self.intake = Intake(self.paths, self.queue, list(settings.tenants), utc_now,
                             telemetry=self.metrics)
        self.pool = WorkerPool(self.runner, self.queue, count=settings.workers, clock=utc_now)
        self.server = DropboxServer(
            settings, self.paths, self._uploaded,
            passwords=generated_passwords(settings, self.paths), telemetry=self.metrics,
        )
        self.watcher = Watcher(
            self.intake, settle_seconds=settings.sftp.settle_seconds,
            rescan_seconds=settings.sftp.rescan_seconds, is_busy=self.server.is_uploading,
            on_queued=self.pool.wake,
        )
        self.mail_retrier = MailRetrier(self.runner, min(5.0, settings.mail.retry_seconds))
        self.pulls = daemon_scheduler(settings, runner=self.runner, take=self.intake.take,
                                      on_queued=self.pool.wake, clock=utc_now)
        self.monitoring = Monitoring(settings.metrics.listen, DaemonState.of(
            self.store, self.queue, self.server, self.pool, clock=utc_now,
            stuck_seconds=settings.metrics.stuck_seconds), self.metrics)
        self._stop: asyncio.Event | None = None
        self._intake_tasks: set[asyncio.Future[None]] = set()

    def _uploaded(self, tenant: str, path: Path) -> None:
        """The SFTP server's word that an upload is complete: queue it now (the
        watcher stays for files copied in by other means)."""
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(None, self._take_upload, tenant, path)
        self._intake_tasks.add(task)
        task.add_done_callback(self._intake_tasks.discard)

    def _take_upload(self, tenant: str, path: Path) -> None:
        try:
            if self.intake.take(tenant, path, "sftp") is not None:
                self.pool.wake()
        except Exception:  # the file stays in the drop folder: the watcher's rescan takes it
            log.exception("intake_failed", tenant=tenant, file=path.name)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        self.monitoring.start(loop)
        await self.server.start()
        released = self.queue.release_orphans() if self.store.is_sqlite else 0
        recovered = self.intake.recover()
        self.watcher.start()
        self.pool.start()
        self.mail_retrier.start()
        if self.pulls is not None:
            self.pulls.start()
        log.info("daemon_started", listen=f"{self.settings.sftp.listen.rsplit(':', 1)[0]}:"
                 f"{self.server.port}", store=self.store.dialect, workers=self.settings.workers,
                 state_dir=str(self.paths.root), recovered=recovered, released=released,
                 pid=os.getpid())
        try:
            await self._stop.wait()
        finally:
            log.info("daemon_stopping")
            self.monitoring.close()
            await self.server.close()
            if self._intake_tasks:
                await asyncio.wait(set(self._intake_tasks), timeout=DRAIN_SECONDS)
            await loop.run_in_executor(None, self._stop_workers)
            self.store.close()
            log.info("daemon_stopped")

    def _stop_workers(self) -> None:
        self.mail_retrier.stop()
        if self.pulls is not None:
            self.pulls.stop(DRAIN_SECONDS)
        self.watcher.stop()
        self.pool.stop(DRAIN_SECONDS)

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


def serve(settings: Settings) -> None:
    daemon = Daemon(settings)
    asyncio.run(daemon.run())
