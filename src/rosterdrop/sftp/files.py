"""Host files behind SFTP handles, and careful unlink/rename on the host.

``Upload`` gathers a client's sequential WRITE requests and writes them with
one ``pwritev`` per megabyte (no fsync), on a disk-writer thread: the event
loop only decrypts and answers, while the disk work runs on the other core.
At most ``MAX_IN_FLIGHT`` bytes per upload wait for the disk, so memory stays
bounded whatever the size; a write error surfaces on the next request.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import Counter, deque
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
    """Host paths open for writing in any session (for the watcher)."""

    def __init__(self) -> None:
        self._paths: Counter[str] = Counter()

    @staticmethod
    def key(path: Path) -> str:
        return os.path.abspath(path)

    def add(self, path: Path) -> None:
        self._paths[self.key(path)] += 1

    def discard(self, path: Path) -> None:
        key = self.key(path)
        self._paths[key] -= 1
        if self._paths[key] <= 0:
            del self._paths[key]

    def __contains__(self, path: object) -> bool:
        return isinstance(path, Path) and self._paths.get(self.key(path), 0) > 0


class Download:
    """A /reports file open for reading."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class Upload:
    """A /dropbox file open for writing; sequential writes are buffered."""

    __slots__ = (
        "_chunks", "_in_flight", "_pending", "_start", "fd", "host", "name", "refused", "size",
        "started",
    )

    def __init__(self, fd: int, host: Path, name: str, started: float) -> None:
        self.fd = fd
        self.host = host
        self.name = name
        self.started = started
        self.size = 0
        self.refused: str | None = None
        self._chunks: list[bytes] = []
        self._pending = 0
        self._start = 0
        self._in_flight: deque[tuple[Future[None], int]] = deque()

    def write(self, offset: int, data: bytes) -> None:
        if self._pending and offset != self._start + self._pending:
            self.flush()
        if not self._pending:
            self._start = offset
        self._chunks.append(data)
        self._pending += len(data)
        self.size = max(self.size, offset + len(data))
        if self._pending >= FLUSH_BYTES or len(self._chunks) >= FLUSH_CHUNKS:
            self.flush()

    def flush(self) -> None:
        """Hand what is gathered to the disk writer (raises an earlier write's error)."""
        if self._pending:
            chunks, offset, pending = self._chunks, self._start, self._pending
            self._chunks, self._pending = [], 0
            self._in_flight.append((_DISK.submit(_pwrite_all, self.fd, chunks, offset,
                                                 pending), pending))
        waiting = sum(n for _, n in self._in_flight)
        while self._in_flight and (self._in_flight[0][0].done() or waiting > MAX_IN_FLIGHT):
            future, n = self._in_flight.popleft()
            waiting -= n
            future.result()

    def drain(self) -> None:
        """Everything written to the file, or the first error raised."""
        self.flush()
        while self._in_flight:
            future, _ = self._in_flight.popleft()
            future.result()

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
