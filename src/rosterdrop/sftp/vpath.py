"""The tree an SFTP client sees, as pure functions (no file system access).

::

    /                 the login folder (as on Apple School Manager's own
                      server): the two folders below, plus the drop-box
                      files (uploads to ``/x.zip`` land in /dropbox)
    /dropbox          the tenant's drop folder, flat: files only
    /reports          the tenant's reports, read-only, any depth

A client path is resolved lexically into a ``VPath``; anything that tries to
leave the tree (``..``, a NUL byte, a name that is not UTF-8) is refused here,
before a host path is ever built.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from asyncssh import SFTPInvalidFilename, SFTPPermissionDenied

HOME = "/"
"""The login folder: relative paths start here (``put x.zip dropbox/x.zip``)."""
DROPBOX = "dropbox"
REPORTS = "reports"
MAX_NAME_BYTES = 255
MAX_UPLOAD_NAME_BYTES = 200
"""Uploads keep their name through the spool (a 34-byte prefix) and the file
system's 255-byte limit: longer names are refused when the file is opened."""
TEMPORARY_SUFFIXES = (".filepart", ".part", ".partial", ".tmp")


class Area(enum.Enum):
    ROOT = "root"
    DROPBOX = "dropbox"
    REPORTS = "reports"


@dataclass(frozen=True)
class VPath:
    """A resolved client path: an area and the names below it."""

    area: Area
    parts: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """The canonical client-side spelling (``/dropbox/x.zip``)."""
        if self.area is Area.ROOT:
            return "/"
        return "/" + "/".join((self.area.value, *self.parts))

    @property
    def is_area_root(self) -> bool:
        return not self.parts

    @property
    def dropbox_name(self) -> str | None:
        """The file name when this is a file directly in /dropbox."""
        if self.area is Area.DROPBOX and len(self.parts) == 1:
            return self.parts[0]
        return None


def resolve(path: bytes, *, for_realpath: bool = False) -> VPath:
    """Resolve a client path (relative paths start in the login folder ``/``).

    ``..`` is refused, except in REALPATH requests, where clients use it to
    navigate (``cd ..``) and it may go up to ``/`` but never above it.
    """
    text = _decode(path)
    if not text.startswith("/"):
        text = HOME + text
    names: list[str] = []
    for name in text.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not for_realpath:
                raise SFTPPermissionDenied("'..' is not allowed in paths")
            if not names:
                raise SFTPPermissionDenied("'..' cannot leave your folder")
            names.pop()
            continue
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise SFTPInvalidFilename(f"file name longer than {MAX_NAME_BYTES} bytes")
        names.append(name)
    if not names:
        return VPath(Area.ROOT)
    head, rest = names[0], tuple(names[1:])
    if head == DROPBOX:
        return VPath(Area.DROPBOX, rest)
    if head == REPORTS:
        return VPath(Area.REPORTS, rest)
    # A name directly under "/" is an upload to /dropbox (clients that ignore
    # the start folder); "/etc/passwd" becomes a path that does not exist.
    return VPath(Area.DROPBOX, tuple(names))


def _decode(path: bytes) -> str:
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        raise SFTPInvalidFilename("file names must be UTF-8") from None
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in text):
        raise SFTPInvalidFilename("file names must not contain control characters")
    return text


def is_zip(name: str) -> bool:
    """A name that completes an upload when written or renamed to."""
    return not name.startswith(".") and len(name) > 4 and name.lower().endswith(".zip")


def is_temporary(name: str) -> bool:
    """WinSCP/rclone/other temporary names and dot-files: stored, never queued."""
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


def is_uploadable(name: str) -> bool:
    return is_zip(name) or is_temporary(name)
