"""Where things live in the state folder (nothing is written outside it).

A process's own things (host keys, snapshot cache, SQLite database,
generated passwords) live in ``root`` (``state_dir``). What several
``rosterdrop serve`` processes must see alike, when they share one
PostgreSQL store, lives in ``shared`` (``shared_dir``): the tenants' drop
and report folders, kept uploads, the spool and the outbox. With no
``shared_dir`` both are the state folder, as for one process on SQLite.

Nearly everything there holds children's names (uploads, reports, the
database, the snapshot cache, mails) or a credential (host key, generated
passwords), so it is its owner's alone: every folder rosterdrop makes is 0700
and every file 0600, whatever the umask; ``private_folder`` and
``private_file`` are the one way to get there (and tighten what an older
version left looser).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rosterdrop.config import Settings

PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def private_folder(folder: Path) -> Path:
    """``mkdir -p folder``, each folder it makes 0700; ``folder`` itself, when it is
    its owner's, is tightened to 0700. OSError as ``mkdir`` raises it."""
    missing: list[Path] = []
    current = folder
    while not current.is_dir() and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a peer made it meanwhile
            path.mkdir(mode=PRIVATE_FOLDER)
        _tighten(path, PRIVATE_FOLDER)  # mkdir's mode passes through the umask
    if not missing:
        _tighten(folder, PRIVATE_FOLDER)
    return folder


def private_file(path: Path) -> Path:
    """Make the file at ``path`` 0600 (its owner's) once written, before it is
    published (renamed into place); a hard link's other names change with it."""
    _tighten(path, PRIVATE_FILE)
    return path


def open_private(path: Path, mode: str = "wb") -> int:
    """A descriptor of ``path`` created (or truncated) 0600 for writing (``"wb"``), or
    created only when it does not exist yet (``"xb"``, FileExistsError otherwise)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
    flags |= os.O_EXCL if mode == "xb" else os.O_TRUNC
    fd = os.open(path, flags, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)  # an older file may have been looser
    except BaseException:
        os.close(fd)
        raise
    return fd


def _tighten(path: Path, mode: int) -> None:
    """Take group and other bits away (the owner's are left as ``mode`` or stricter)."""
    try:
        stat = path.stat()
    except OSError:
        return
    if stat.st_mode & 0o077 and stat.st_uid == os.geteuid():
        # Another user's folder (one root made for the service) is left as it is.
        with contextlib.suppress(OSError):
            os.chmod(path, stat.st_mode & mode & 0o7777)


@dataclass(frozen=True)
class StatePaths:
    root: Path
    shared_root: Path | None = None

    @classmethod
    def of(cls, settings: Settings) -> StatePaths:
        return cls(settings.state_dir, settings.shared_dir)

    @property
    def shared(self) -> Path:
        return self.shared_root or self.root

    @property
    def host_keys(self) -> Path:
        return self.root / "host_keys"

    @property
    def spool(self) -> Path:
        return self.shared / "spool"

    @property
    def outbox(self) -> Path:
        return self.shared / "outbox"

    @property
    def database(self) -> Path:
        return self.root / "rosterdrop.db"

    def tenant(self, tenant: str) -> Path:
        return self.shared / "tenants" / tenant

    def dropbox(self, tenant: str) -> Path:
        return self.tenant(tenant) / "dropbox"

    def incoming(self, tenant: str, instance: str) -> Path:
        """Uploads in progress, one folder per process (``instance``): a process
        that starts deletes only its own leftovers, never a live peer's."""
        return self.tenant(tenant) / "incoming" / instance

    @property
    def instance_file(self) -> Path:
        return self.root / "instance-id"

    def kept_uploads(self, tenant: str) -> Path:
        """Uploads kept for ``approve`` and ``resync``, one per run (runs/kept.py)."""
        return self.tenant(tenant) / "uploads"

    def kept_upload(self, tenant: str, run_id: str) -> Path:
        return self.kept_uploads(tenant) / f"{run_id}.zip"

    def reports(self, tenant: str) -> Path:
        return self.tenant(tenant) / "reports"

    def run_reports(self, tenant: str, run_id: str) -> Path:
        return self.reports(tenant) / run_id
