"""Host files behind SFTP handles, and careful unlink/rename on the host.

``Upload`` gathers a client's sequential WRITE requests and writes them with
one ``pwritev`` per megabyte (no fsync), on a disk-writer thread: the event
loop only decrypts and answers, while the disk work runs on the other core.
When more than ``MAX_IN_FLIGHT`` bytes of one upload wait for the disk, the
WRITE answer waits (asyncssh awaits what ``SFTPServer.write`` returns), so
memory stays bounded whatever the size; a write error surfaces on the next
request. Nothing here blocks the event loop on the disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from asyncssh import SFTPFileAlreadyExists

FLUSH_BYTES = 1024 * 1024
"""Sequential writes are gathered up to this size and written with one syscall."""
FLUSH_CHUNKS = 256
"""… or this many requests (``pwritev`` takes at most IOV_MAX buffers)."""
MAX_IN_FLIGHT = 8 * 1024 * 1024
"""Bytes of one upload handed to the disk writer and not yet written."""

_DISK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rosterdrop-disk")
"""One thread for every upload: writes of one file stay in order, disks like it serial."""


def _pwrite_all(fd: int, chunks: list[bytes], offset: int, pending: int) -> None:
    written = os.pwritev(fd, chunks, offset)
    if written < pending:  # short write: finish the rest one by one
        rest = b"".join(chunks)[written:]
        offset += written
        while rest:
            n = os.pwrite(fd, rest, offset)
            rest, offset = rest[n:], offset + n


class OpenUploads:
    """Uploads open for writing in any session, by their final host path.

    The data is written under an in-progress name (``Upload.partial``); the
    SFTP view and the watcher ask here for what is being uploaded under a name.
    """

    def __init__(self) -> None:
        self._uploads: dict[str, Upload] = {}

    @staticmethod
    def key(path: Path) -> str:
        return os.path.abspath(path)

    def add(self, upload: Upload) -> None:
        self._uploads[self.key(upload.host)] = upload

    def discard(self, upload: Upload) -> None:
        key = self.key(upload.host)
        if self._uploads.get(key) is upload:
            del self._uploads[key]

    def get(self, path: Path) -> Upload | None:
        return self._uploads.get(self.key(path))

    def __contains__(self, path: object) -> bool:
        return isinstance(path, Path) and self.key(path) in self._uploads

    def names(self, folder: Path) -> list[str]:
        """Names being uploaded into ``folder``."""
        prefix = self.key(folder) + os.sep
        return [key[len(prefix):] for key in self._uploads if key.startswith(prefix)]


class Download:
    """A /reports file open for reading."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """For asyncssh's ``ranges@asyncssh.com`` (sparse-file) answers."""
        return os.lseek(self.fd, offset, whence)


class Upload:
    """A /dropbox file open for writing: written to ``partial``, renamed to ``host``
    when the client closes it. Sequential writes are gathered and written by the
    disk thread; ``write`` hands back a future to await when too much is pending."""

    __slots__ = (
        "_chunks", "_in_flight", "_pending", "_start", "exclusive", "fd", "host", "name",
        "partial", "refused", "size", "started",
    )

    def __init__(self, fd: int, partial: Path, host: Path, name: str, started: float,
                 *, exclusive: bool) -> None:
        self.fd = fd
        self.partial = partial
        self.host = host
        self.name = name
        self.started = started
        self.exclusive = exclusive
        self.size = 0
        self.refused: str | None = None
        self._chunks: list[bytes] = []
        self._pending = 0
        self._start = 0
        self._in_flight: deque[tuple[Future[None], int]] = deque()

    def write(self, offset: int, data: bytes) -> Future[None] | None:
        """Gather ``data``; a future when the caller should wait for the disk."""
        if self._pending and offset != self._start + self._pending:
            self._submit()
        if not self._pending:
            self._start = offset
        self._chunks.append(data)
        self._pending += len(data)
        self.size = max(self.size, offset + len(data))
        if self._pending >= FLUSH_BYTES or len(self._chunks) >= FLUSH_CHUNKS:
            self._submit()
        return self._backlog()

    def _submit(self) -> None:
        if self._pending:
            chunks, offset, pending = self._chunks, self._start, self._pending
            self._chunks, self._pending = [], 0
            self._in_flight.append((_DISK.submit(_pwrite_all, self.fd, chunks, offset,
                                                 pending), pending))

    def _backlog(self) -> Future[None] | None:
        """Reap finished writes (raising the first error); the oldest pending write
        when more than ``MAX_IN_FLIGHT`` bytes wait for the disk."""
        while self._in_flight and self._in_flight[0][0].done():
            self._in_flight.popleft()[0].result()
        if sum(n for _, n in self._in_flight) > MAX_IN_FLIGHT:
            return self._in_flight[0][0]
        return None

    def flush(self) -> Future[None] | None:
        """Hand everything gathered to the disk thread; the last write's future."""
        self._submit()
        self._backlog()
        return self._in_flight[-1][0] if self._in_flight else None

    def close(self) -> None:
        # The fd may not be closed (and its number reused) under a pending write.
        for future, _ in self._in_flight:
            with contextlib.suppress(OSError):
                future.result()
        self._in_flight.clear()
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


@dataclass
class Stored:
    """A file this session wrote and closed (temporary or completed)."""

    started: float
    identity: tuple[int, int]
    """(st_dev, st_ino), to recognise the same file later."""


def file_identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def unlink_if_same(host: Path, identity: tuple[int, int]) -> bool:
    """Delete ``host`` if it is still the file we wrote (not a newer one)."""
    try:
        if file_identity(os.lstat(host)) != identity:
            return False
        os.unlink(host)
    except FileNotFoundError:
        return False
    return True


def rename_noreplace(old: Path, new: Path, new_name: str) -> None:
    """SFTP v3 rename: fails when the target exists (atomically, via a link)."""
    try:
        os.link(old, new, follow_symlinks=False)
    except FileExistsError:
        raise SFTPFileAlreadyExists(f"{new_name} already exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # File systems without hard links: check, then rename.
        if os.path.lexists(new):
            raise SFTPFileAlreadyExists(f"{new_name} already exists") from None
        os.rename(old, new)
        return
    os.unlink(old)
