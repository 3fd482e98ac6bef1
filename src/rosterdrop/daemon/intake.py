"""Taking uploads in: from a tenant's drop folder into the spool, one job each.

The move into the spool and the job row are two steps; a crash between them
leaves a spool file without a job, which ``recover`` finds at start, so no
upload is ever lost or queued twice.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from rosterdrop.config import LimitSettings
from rosterdrop.paths import StatePaths, private_file, private_folder
from rosterdrop.pipeline.check import file_modes
from rosterdrop.sftp.vpath import is_temporary, is_zip
from rosterdrop.store.jobs import JobQueue
from rosterdrop.telemetry import NO_TELEMETRY, Telemetry

log = structlog.get_logger("rosterdrop.intake")

SEPARATOR = "__"
SHARED_SPOOL_GRACE_SECONDS = 30.0
MAX_FILE_NAME_BYTES = 255
SPOOL_PREFIX_BYTES = 32 + len(SEPARATOR)


def spool_name(name: str) -> str:
    """A unique spool file name that keeps as much of ``name`` as the file system
    allows (uploads over SFTP are at most 200 bytes; a file copied in by other means
    may be longer and keeps its start and its ``.zip``)."""
    room = MAX_FILE_NAME_BYTES - SPOOL_PREFIX_BYTES
    encoded = name.encode("utf-8")
    if len(encoded) > room:
        suffix = b".zip"
        encoded = encoded[:room - len(suffix)].decode("utf-8", "ignore").encode() + suffix
    return f"{uuid.uuid4().hex}{SEPARATOR}{encoded.decode('utf-8')}"


def is_upload_name(name: str) -> bool:
    """A completed upload: ``*.zip``, not a dot-file or a temporary name (the SFTP
    server's own rules, ``sftp.vpath``)."""
    return is_zip(name) and not is_temporary(name)


def upload_kind(path: Path, limits: LimitSettings | None = None) -> str:
    """``delta`` when a OneRoster manifest declares any file delta, else ``bulk`` (the
    manifest read as a sync reads it: ``pipeline.check.file_modes``).

    Only bulk uploads supersede each other; a damaged ZIP counts as bulk and
    the pipeline reports what is wrong with it.
    """
    try:
        modes = file_modes(path, limits or LimitSettings())
    except Exception:  # an upload that cannot even be looked at is the sync's to report
        return "bulk"
    return "delta" if "delta" in modes.values() else "bulk"


class Intake:
    def __init__(self, paths: StatePaths, queue: JobQueue, tenants: list[str],
                 clock: Callable[[], datetime], *,
                 telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.paths = paths
        self.queue = queue
        self.tenants = tenants
        self.clock = clock
        self.telemetry = telemetry
        self._failed: set[tuple[str, str, int | None]] = set()

    def spool_dir(self, tenant: str) -> Path:
        return self.paths.spool / tenant

    def take(self, tenant: str, path: Path, source: str) -> int | None:
        """Move a completed upload into the spool and queue it; None if it vanished."""
        folder = private_folder(self.spool_dir(tenant))
        spooled = folder / spool_name(path.name)
        try:
            os.replace(private_file(path), spooled)  # also a file copied in by hand
        except FileNotFoundError:
            return None  # taken already (the SFTP callback and the watcher both saw it)
        except OSError as exc:
            key = (tenant, path.name, exc.errno)
            if key not in self._failed:  # once, not on every rescan
                self._failed.add(key)
                log.error("intake_failed", tenant=tenant, file=path.name, source=source,
                          error=exc.strerror or str(exc))
            return None
        return self._enqueue(tenant, spooled, source)

    def _enqueue(self, tenant: str, spooled: Path, source: str) -> int:
        name = spooled.name.split(SEPARATOR, 1)[-1]
        job_id = self.queue.enqueue(
            tenant=tenant, path=str(spooled), file_name=name, source=source,
            kind=upload_kind(spooled), now=self.clock(),
        )
        log.info("job_queued", tenant=tenant, job_id=job_id, file=name, source=source,
                 bytes=spooled.stat().st_size)
        self.telemetry.job_queued(source)
        return job_id

    def recover(self) -> int:
        """Queue spool files that have no job (a crash between move and insert).

        In a spool shared by several processes, a file moved in the last moments may
        be another live process's, between its move and its insert: only files moved
        in more than ``SHARED_SPOOL_GRACE_SECONDS`` ago are taken.
        """
        known = self.queue.known_paths()
        grace = SHARED_SPOOL_GRACE_SECONDS if self.paths.shared_root is not None else 0.0
        moved_before = time.time() - grace
        recovered = 0
        for tenant in self.tenants:
            folder = self.spool_dir(tenant)
            if not folder.is_dir():
                continue
            for spooled in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime):
                if grace and spooled.stat().st_ctime > moved_before:
                    continue  # the rename set ctime: maybe a live peer's, not yet queued
                if spooled.is_file() and str(spooled) not in known:
                    self._enqueue(tenant, spooled, "watch")
                    recovered += 1
        return recovered

    def pending_in_dropboxes(self) -> list[tuple[str, Path]]:
        """Completed uploads waiting in drop folders (for the rescan)."""
        found = []
        for tenant in self.tenants:
            folder = self.paths.dropbox(tenant)
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and not entry.is_symlink() and is_upload_name(entry.name):
                    found.append((tenant, entry))
        return found
