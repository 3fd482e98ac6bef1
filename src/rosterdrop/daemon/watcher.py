"""The watcher: completed uploads in every tenant's drop folder, whoever wrote them.

watchdog events say a file appeared (created, renamed into place, closed
after writing); the file is taken once it has been quiet for
``settle_seconds`` and no SFTP session has it open. A rescan at start and
every ``rescan_seconds`` finds what events missed (the daemon was down, an
event was dropped). Uploads the SFTP server reports as completed do not come
through here: the daemon queues them at once (``Daemon._uploaded``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from rosterdrop.daemon.intake import Intake, is_upload_name
from rosterdrop.paths import private_folder

log = structlog.get_logger("rosterdrop.watcher")

TICK_SECONDS = 0.2
EVENTS = [FileCreatedEvent, FileMovedEvent, FileClosedEvent]
"""A file appearing, renamed into place, or closed after writing. Writes in
between are not asked for: each would wake three watchdog threads (one per
megabyte of an SFTP upload, contending for the GIL with the SFTP event loop),
and a candidate's size and mtime are polled every tick until it settles."""


class _Events(FileSystemEventHandler):
    def __init__(self, seen: Callable[[Path], None]) -> None:
        self._seen = seen

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        target = getattr(event, "dest_path", "") or event.src_path
        path = Path(target if isinstance(target, str) else target.decode())
        if is_upload_name(path.name):
            self._seen(path)


class Watcher:
    def __init__(
        self,
        intake: Intake,
        *,
        settle_seconds: float,
        rescan_seconds: float,
        is_busy: Callable[[Path], bool] = lambda _path: False,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.intake = intake
        self.settle = settle_seconds
        self.rescan_every = rescan_seconds
        self.is_busy = is_busy
        self.on_queued = on_queued
        self._candidates: dict[Path, tuple[str, float, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rosterdrop-watcher",
                                        daemon=True)
        self._observer = Observer()
        self._tenant_of: dict[Path, str] = {}

    def start(self) -> None:
        for tenant in self.intake.tenants:
            folder = private_folder(self.intake.paths.dropbox(tenant))
            self._tenant_of[folder.resolve()] = tenant
            self._observer.schedule(_Events(self._seen), str(folder), recursive=False,
                                    event_filter=EVENTS)
        self._observer.start()
        self.rescan()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def rescan(self) -> None:
        for tenant, path in self.intake.pending_in_dropboxes():
            self._note(tenant, path)

    def _seen(self, path: Path) -> None:
        tenant = self._tenant_of.get(path.parent.resolve())
        if tenant is not None:
            self._note(tenant, path)

    def _note(self, tenant: str, path: Path) -> None:
        with self._lock:
            self._candidates[path] = (tenant, time.monotonic(), _signature(path))

    def _loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_every
        while not self._stop.wait(TICK_SECONDS):
            try:
                self._take_settled()
                if time.monotonic() >= next_rescan:
                    next_rescan = time.monotonic() + self.rescan_every
                    self.rescan()
            except Exception:  # the watcher must outlive any one bad file or DB hiccup
                log.exception("watcher_error")

    def _take(self, tenant: str, path: Path, source: str) -> None:
        if self.intake.take(tenant, path, source) is not None:
            self.on_queued()

    def _take_settled(self) -> None:
        now = time.monotonic()
        with self._lock:
            items = list(self._candidates.items())
        for path, (tenant, since, signature) in items:
            current = _signature(path)
            if current is None:
                with self._lock:
                    self._candidates.pop(path, None)
                continue
            if current != signature or self.is_busy(path):
                self._note(tenant, path)
                continue
            if now - since >= self.settle:
                with self._lock:
                    self._candidates.pop(path, None)
                self._take(tenant, path, "watch")


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
