"""One SFTP or SCP session's view of its tenant: ``DropboxFS`` (an asyncssh ``SFTPServer``).

asyncssh serves both protocols through this one object (``sftp_factory`` with
``allow_scp``), so every rule below holds for ``scp`` and ``scp -O`` too.

- Confinement: client paths are resolved by ``vpath.resolve`` into /dropbox
  (flat, uploads) and /reports (read-only); host paths are built only from
  those parts, symlinks are neither followed nor shown.
- In progress: an upload is written under a random name in the tenant's
  ``incoming/<instance>/`` folder, which no client and no watcher sees, and
  renamed into the drop folder when it completes. Whatever a crash leaves
  there is deleted at the next start (``DropboxServer.start``).
- Completed upload: the client's own CLOSE of a ``*.zip`` it wrote, or a
  rename of a temporary name to ``*.zip``. asyncssh also calls ``close()``
  for every file still open when a session dies; ``asyncssh_seam`` tells the
  two apart (the client is no longer sending), and such an upload is deleted
  and never reported.
- Linger: a completed upload is remembered (name → attributes) for
  ``linger_seconds`` within the session, so a client that stats or setstats
  it right after upload succeeds even when the daemon already moved it.
- Nothing blocks the event loop on the disk: ``write``, ``fsync`` and
  ``close`` return awaitables when they must wait for the disk thread.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import structlog
from asyncssh import (
    FILEXFER_TYPE_DIRECTORY,
    FILEXFER_TYPE_REGULAR,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPAttrs,
    SFTPEOFError,
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPInvalidFilename,
    SFTPName,
    SFTPNoSuchFile,
    SFTPNotADirectory,
    SFTPOpUnsupported,
    SFTPPermissionDenied,
    SFTPQuotaExceeded,
    SFTPServer,
    SSHServerChannel,
)

from rosterdrop.paths import PRIVATE_FILE, StatePaths, private_folder
from rosterdrop.sftp.asyncssh_seam import client_still_sending, closing_for_client
from rosterdrop.sftp.files import (
    Download,
    OpenUploads,
    Stored,
    Upload,
    file_identity,
    rename_noreplace,
    unlink_if_same,
)
from rosterdrop.sftp.vpath import (
    MAX_UPLOAD_NAME_BYTES,
    Area,
    VPath,
    is_temporary,
    is_uploadable,
    is_zip,
    resolve,
)
from rosterdrop.telemetry import NO_TELEMETRY, Telemetry

log = structlog.get_logger("rosterdrop.sftp")

FILE_MODE = PRIVATE_FILE
MAX_OPEN_FILES = 32
"""Open files per session: a client holding thousands of handles must not exhaust the
daemon's file descriptors (each SIS export needs one or two)."""
NOT_UPLOADABLE = (
    "only .zip files can be uploaded (temporary names ending in .filepart, "
    ".part, .partial or .tmp are accepted and renamed to .zip)"
)


@dataclass(frozen=True)
class DropboxContext:
    """What every session shares: the state folder, limits and the callback."""

    paths: StatePaths
    instance: str
    """This process's name for its in-progress folders (``StatePaths.incoming``)."""
    on_upload: Callable[[str, Path], None]
    clock: Callable[[], float]
    max_upload_bytes: int
    linger_seconds: float
    uploading: OpenUploads = field(default_factory=OpenUploads)
    telemetry: Telemetry = NO_TELEMETRY
    """Told every upload's outcome (completed, aborted, refused)."""

    def incoming(self, tenant: str) -> Path:
        return self.paths.incoming(tenant, self.instance)


@dataclass(frozen=True)
class SessionInfo:
    tenant: str
    username: str
    peer: str


class DropboxFS(SFTPServer):
    def __init__(
        self,
        chan: SSHServerChannel[bytes],
        context: DropboxContext,
        info: SessionInfo,
        *,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(chan)
        self._on_exit = on_exit
        self._ctx = context
        self._info = info
        self._dropbox = context.paths.dropbox(info.tenant)
        self._reports = context.paths.reports(info.tenant)
        self._log = log.bind(tenant=info.tenant, username=info.username, peer=info.peer)
        self._open: set[Upload] = set()
        self._downloads = 0
        self._temporaries: dict[str, Stored] = {}
        self._linger: dict[str, tuple[SFTPAttrs, float]] = {}
        self._refused: dict[str, str] = {}
        """Uploads refused in this session: name → why (for a later stat)."""

    # -- names shown in listings --------------------------------------------

    def format_user(self, uid: int | None) -> str:
        return self._info.username

    def format_group(self, gid: int | None) -> str:
        return self._info.tenant

    # -- paths --------------------------------------------------------------

    def realpath(self, path: bytes) -> bytes:
        return resolve(path, for_realpath=True).display.encode("utf-8")

    def _host(self, vpath: VPath) -> Path:
        """Host path of a /dropbox file or anything in /reports (no symlinks)."""
        if vpath.area is Area.REPORTS:
            host = self._reports.joinpath(*vpath.parts)
            expected = os.path.join(os.path.realpath(self._reports), *vpath.parts)
            if os.path.realpath(host) != expected:
                raise SFTPNoSuchFile(f"no such file: {vpath.display}")
            return host
        name = vpath.dropbox_name
        if name is None:
            raise SFTPNoSuchFile(f"no such file: {vpath.display}")
        return self._dropbox / name

    def _dropbox_file(self, path: bytes, action: str) -> tuple[str, Path]:
        """Name and host path for writing to /dropbox, or a clear refusal."""
        vpath = resolve(path)
        name = vpath.dropbox_name
        if vpath.area is Area.REPORTS:
            raise SFTPPermissionDenied(f"cannot {action} {vpath.display}: /reports is read-only")
        if name is None:
            raise SFTPPermissionDenied(
                f"cannot {action} {vpath.display}: files go directly into /dropbox "
                "(no folders)"
            )
        return name, self._dropbox / name

    # -- attributes ---------------------------------------------------------

    def _lingering(self, name: str) -> SFTPAttrs | None:
        entry = self._linger.get(name)
        if entry is None:
            return None
        if self._ctx.clock() >= entry[1]:
            del self._linger[name]
            return None
        return entry[0]

    def _in_progress(self, name: str) -> SFTPAttrs | None:
        """What a client sees of a file being uploaded (in any session)."""
        upload = self._ctx.uploading.get(self._dropbox / name)
        if upload is None or upload.fd < 0:
            return None
        attrs = _attrs(os.fstat(upload.fd), writable=True)
        attrs.size = upload.size  # with what still waits for the disk
        return attrs

    def _stat(self, vpath: VPath) -> SFTPAttrs:
        if vpath.area is Area.ROOT:
            return _attrs(os.stat(self._dropbox), writable=False)
        if vpath.area is Area.DROPBOX and vpath.is_area_root:
            return _attrs(os.stat(self._dropbox), writable=True)
        host = self._host(vpath)
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is not None and vpath.area is Area.REPORTS:
            if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
                return _attrs(st, writable=False)
        elif st is not None and stat.S_ISREG(st.st_mode):
            return _attrs(st, writable=True)
        elif st is None and vpath.dropbox_name is not None:
            attrs = self._in_progress(vpath.dropbox_name) or self._lingering(vpath.dropbox_name)
            if attrs is not None:
                return attrs
            refused = self._refused.get(vpath.dropbox_name)
            if refused:  # clients that ignore a failed CLOSE (paramiko) stat next
                raise SFTPNoSuchFile(f"no such file: {vpath.display} ({refused})")
        raise SFTPNoSuchFile(f"no such file: {vpath.display}")

    def stat(self, path: bytes) -> SFTPAttrs:
        return self._stat(resolve(path))

    def lstat(self, path: bytes) -> SFTPAttrs:
        return self._stat(resolve(path))

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        # Clients set times/permissions after an upload (WinSCP, rclone,
        # `put -p`): accepted and ignored for files in /dropbox.
        vpath = resolve(path)
        self._stat(vpath)
        if vpath.area is Area.REPORTS:
            raise SFTPPermissionDenied(
                f"cannot change attributes of {vpath.display}: /reports is read-only"
            )
        if vpath.dropbox_name is None:
            raise SFTPPermissionDenied(f"cannot change attributes of folder {vpath.display}")

    def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        self.setstat(path, attrs)

    def fstat(self, file_obj: object) -> SFTPAttrs | Awaitable[SFTPAttrs]:
        if isinstance(file_obj, Upload):
            return self._fstat_upload(file_obj)
        assert isinstance(file_obj, Download)
        return _attrs(os.fstat(file_obj.fd), writable=False)

    async def _fstat_upload(self, upload: Upload) -> SFTPAttrs:
        await self._drain(upload)
        return _attrs(os.fstat(upload.fd), writable=True)

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        if not isinstance(file_obj, Upload):
            raise SFTPPermissionDenied("/reports is read-only")

    def statvfs(self, path: bytes) -> os.statvfs_result:
        resolve(path)
        return os.statvfs(self._dropbox)

    def fstatvfs(self, file_obj: object) -> os.statvfs_result:
        return os.statvfs(self._dropbox)

    # -- listings -----------------------------------------------------------

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        vpath = resolve(path)
        for name, attrs in self._listing(vpath):
            yield SFTPName(name.encode("utf-8"), attrs=attrs)

    def _listing(self, vpath: VPath) -> list[tuple[str, SFTPAttrs]]:
        here = self._stat(vpath)
        if not stat.S_ISDIR(here.permissions or 0):
            raise SFTPNotADirectory(f"not a folder: {vpath.display}")
        entries = [(".", here), ("..", self._stat(VPath(Area.ROOT)))]
        if vpath.area is Area.REPORTS:
            entries += _scan(self._host(vpath) if vpath.parts else self._reports, dirs=True)
            return entries
        if vpath.area is Area.ROOT:
            entries += [
                ("dropbox", self._stat(VPath(Area.DROPBOX))),
                ("reports", self._stat(VPath(Area.REPORTS))),
            ]
        files = _scan(self._dropbox, dirs=False)
        present = {name for name, _ in files}
        for name in [*self._ctx.uploading.names(self._dropbox), *self._linger]:
            attrs = self._in_progress(name) or self._lingering(name)
            if attrs is not None and name not in present:
                files.append((name, attrs))
                present.add(name)
        return entries + files

    # -- reading (reports only) ---------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        if len(self._open) + self._downloads >= MAX_OPEN_FILES:
            self._log.warning("too_many_open_files", limit=MAX_OPEN_FILES)
            raise SFTPFailure(
                f"too many open files in this session (at most {MAX_OPEN_FILES}); "
                "close some before opening more")
        if pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC):
            return self._open_upload(path, pflags)
        vpath = resolve(path)
        if vpath.area is not Area.REPORTS:
            raise SFTPPermissionDenied(
                f"cannot read {vpath.display}: uploads cannot be downloaded "
                "(reports are in /reports)"
            )
        host = self._host(vpath)
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise SFTPNoSuchFile(f"no such file: {vpath.display}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SFTPPermissionDenied(f"not a file: {vpath.display}")
        self._downloads += 1
        return Download(fd)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, Download):
            raise SFTPPermissionDenied("uploads cannot be read back")
        data = os.pread(file_obj.fd, size, offset)
        if not data:
            raise SFTPEOFError
        return data

    # -- uploads ------------------------------------------------------------

    def _open_upload(self, path: bytes, pflags: int) -> Upload:
        try:
            name, host = self._dropbox_file(path, "upload")
        except SFTPPermissionDenied as exc:
            self._log.warning("upload_refused", file=path.decode("utf-8", "replace"),
                              reason="outside_dropbox", message=exc.reason)
            self._ctx.telemetry.upload_finished("refused")
            raise
        self._check_upload_name(name, "upload")
        if host in self._ctx.uploading:
            raise SFTPPermissionDenied(f"cannot upload {name}: it is already being uploaded")
        existing = _regular_file(host)
        if pflags & FXF_EXCL and (existing is not None or self._lingering(name) is not None):
            raise SFTPFileAlreadyExists(f"{name} already exists")
        if existing is None and not pflags & FXF_CREAT:
            raise SFTPNoSuchFile(f"no such file: /dropbox/{name}")
        folder = self._ctx.incoming(self._info.tenant)
        partial = folder / uuid.uuid4().hex
        try:
            private_folder(folder)
            fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            self._log.error("upload_refused", file=name, reason="write_error",
                            error=exc.strerror or str(exc))
            self._ctx.telemetry.upload_finished("refused")
            raise SFTPFailure(f"cannot upload {name}: the server could not store it "
                              f"({exc.strerror or exc})") from None
        upload = Upload(fd, partial, host, name, self._ctx.clock(),
                        exclusive=bool(pflags & FXF_EXCL))
        if existing is not None and not pflags & FXF_TRUNC:
            # Resuming or appending: carry on from what the drop folder holds.
            try:
                upload.size = _copy_into(host, fd)
            except OSError as exc:
                upload.close()
                partial.unlink(missing_ok=True)
                raise SFTPFailure(f"cannot reopen {name}: {exc.strerror or exc}") from None
        self._open.add(upload)
        self._ctx.uploading.add(upload)
        self._linger.pop(name, None)
        self._refused.pop(name, None)
        self._log.info("upload_started", file=name)
        return upload

    def _check_upload_name(self, name: str, action: str) -> None:
        if not is_uploadable(name):
            self._log.warning("upload_refused", file=name, reason="name")
            self._ctx.telemetry.upload_finished("refused")
            raise SFTPPermissionDenied(f"cannot {action} {name!r}: {NOT_UPLOADABLE}")
        if len(name.encode("utf-8")) > MAX_UPLOAD_NAME_BYTES:
            self._log.warning("upload_refused", file=name, reason="name_too_long",
                              limit=MAX_UPLOAD_NAME_BYTES)
            self._ctx.telemetry.upload_finished("refused")
            raise SFTPInvalidFilename(
                f"cannot {action} a file with a name of {len(name.encode('utf-8'))} bytes: "
                f"names may be at most {MAX_UPLOAD_NAME_BYTES} bytes")

    def write(self, file_obj: object, offset: int, data: bytes) -> int | Awaitable[int]:
        # Called for every WRITE request, so not wrapped by ``_plainly``: it answers a
        # failure it did not foresee itself, by the same rule (``_refusal``).
        try:
            if not isinstance(file_obj, Upload):
                raise SFTPPermissionDenied("/reports is read-only")
            upload = file_obj
            if upload.refused:
                raise SFTPFailure(upload.refused)
            limit = self._ctx.max_upload_bytes
            if offset + len(data) > limit:
                self._refuse(upload, f"upload refused: larger than the limit of {limit} bytes",
                             reason="too_large", limit=limit)
                raise SFTPQuotaExceeded(upload.refused or "")
            try:
                backlog = upload.write(offset, data)
            except OSError as exc:
                self._write_failed(upload, exc)
            if backlog is None:
                return len(data)  # a plain answer: asyncssh sends OK without awaiting
            return self._after(upload, backlog, len(data))
        except Exception as exc:
            answer = _refusal(self, "write", exc)
            if answer is exc:
                raise
            raise answer from None

    async def _after(self, upload: Upload, write: Future[None], count: int) -> int:
        """Answer a WRITE once the disk has caught up (bounded memory per upload)."""
        try:
            try:
                await asyncio.wrap_future(write)
                upload.flush()
            except OSError as exc:
                self._write_failed(upload, exc)
            return count
        except Exception as exc:
            answer = _refusal(self, "write", exc)
            if answer is exc:
                raise
            raise answer from None

    async def _drain(self, upload: Upload) -> None:
        """Everything the client wrote is in the file, or the upload is refused."""
        if upload.refused:
            raise SFTPFailure(upload.refused)
        try:
            while (last := upload.flush()) is not None:
                await asyncio.wrap_future(last)
        except OSError as exc:
            self._write_failed(upload, exc)

    async def fsync(self, file_obj: object) -> None:
        if isinstance(file_obj, Upload) and not file_obj.refused:
            await self._drain(file_obj)
            await asyncio.get_running_loop().run_in_executor(None, os.fsync, file_obj.fd)

    def _write_failed(self, upload: Upload, exc: OSError) -> NoReturn:
        message = f"upload failed: could not store the file ({exc.strerror or exc})"
        self._refuse(upload, message, reason="write_error", error=exc.strerror or str(exc))
        raise SFTPFailure(message)

    def _refuse(self, upload: Upload, message: str, **details: Any) -> None:
        """Stop an upload mid-way: delete what was written, refuse the rest."""
        upload.refused = message
        self._refused[upload.name] = message
        self._discard(upload)
        self._log.warning(
            "upload_refused", file=upload.name, bytes=upload.size, **details
        )
        self._ctx.telemetry.upload_finished("refused")

    def _discard(self, upload: Upload) -> None:
        if upload.fd >= 0:
            upload.close()
            self._ctx.uploading.discard(upload)
            upload.partial.unlink(missing_ok=True)

    def close(self, file_obj: object) -> Awaitable[None] | None:
        if isinstance(file_obj, Download):
            os.close(file_obj.fd)
            self._downloads -= 1
            return None
        assert isinstance(file_obj, Upload)
        upload = file_obj
        self._open.discard(upload)
        if not (closing_for_client() or client_still_sending(self.channel)):
            # asyncssh closes what a session left open when it ends: not the client's
            # own CLOSE (nor SCP's end of a file), so not a completed upload.
            if not upload.refused:
                self._discard(upload)
                self._log.warning(
                    "upload_aborted", file=upload.name, bytes=upload.size,
                    reason="session ended with the file open",
                )
                self._ctx.telemetry.upload_finished("aborted")
            return None
        if upload.refused:
            raise SFTPFailure(upload.refused)
        return self._client_closed(upload)

    async def _client_closed(self, upload: Upload) -> None:
        await self._drain(upload)
        st = os.fstat(upload.fd)
        upload.close()
        try:
            if upload.exclusive:
                rename_noreplace(upload.partial, upload.host, upload.name)
            else:
                os.replace(upload.partial, upload.host)
        except SFTPFileAlreadyExists:
            upload.partial.unlink(missing_ok=True)
            self._log.warning("upload_refused", file=upload.name, reason="exists")
            self._ctx.telemetry.upload_finished("refused")
            raise
        except OSError as exc:
            upload.partial.unlink(missing_ok=True)
            self._write_failed(upload, exc)
        finally:
            self._ctx.uploading.discard(upload)
        if is_zip(upload.name):
            self._completed(upload.name, upload.host, st, upload.started)
        else:
            self._temporaries[upload.name] = Stored(upload.started, file_identity(st))

    def _completed(self, name: str, host: Path, st: os.stat_result, started: float) -> None:
        now = self._ctx.clock()
        for other in [n for n, (_, until) in self._linger.items() if until <= now]:
            del self._linger[other]
        self._linger[name] = (_attrs(st, writable=True), now + self._ctx.linger_seconds)
        self._log.info(
            "upload_completed", file=name, bytes=st.st_size,
            duration_ms=round((now - started) * 1000),
        )
        self._ctx.telemetry.upload_finished("completed")
        try:
            self._ctx.on_upload(self._info.tenant, host)
        except Exception:
            # The file is complete on disk; the watcher's rescan will find it.
            self._log.exception("upload_callback_failed", file=name)

    # -- remove and rename --------------------------------------------------

    def remove(self, path: bytes) -> None:
        name, host = self._dropbox_file(path, "remove")
        if host in self._ctx.uploading:
            raise SFTPPermissionDenied(f"cannot remove {name}: it is being uploaded")
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            if self._linger.pop(name, None) is None:
                raise SFTPNoSuchFile(f"no such file: /dropbox/{name}") from None
            return  # already taken for processing: nothing left to remove
        if not stat.S_ISREG(st.st_mode):
            raise SFTPPermissionDenied(f"cannot remove {name}: not a file")
        os.unlink(host)
        self._linger.pop(name, None)
        self._temporaries.pop(name, None)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=False)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._rename(oldpath, newpath, replace=True)

    def _rename(self, oldpath: bytes, newpath: bytes, *, replace: bool) -> None:
        old, old_host = self._dropbox_file(oldpath, "rename")
        new, new_host = self._dropbox_file(newpath, "rename to")
        self._check_upload_name(new, "rename to")
        for host, name in ((old_host, old), (new_host, new)):
            if host in self._ctx.uploading:
                raise SFTPPermissionDenied(f"cannot rename {name}: it is being uploaded")
        try:
            st = os.lstat(old_host)
        except FileNotFoundError:
            raise SFTPNoSuchFile(f"no such file: /dropbox/{old}") from None
        if not stat.S_ISREG(st.st_mode):
            raise SFTPPermissionDenied(f"cannot rename {old}: not a file")
        if old == new:
            return
        if replace:
            os.replace(old_host, new_host)
        else:
            rename_noreplace(old_host, new_host, new)
        self._linger.pop(old, None)
        self._linger.pop(new, None)
        stored = self._temporaries.pop(old, None)
        if is_temporary(old) and is_zip(new):
            started = stored.started if stored else self._ctx.clock()
            self._completed(new, new_host, os.lstat(new_host), started)
        elif is_temporary(new) and stored is not None:
            self._temporaries[new] = stored

    # -- refused operations -------------------------------------------------

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        raise SFTPPermissionDenied("folders cannot be created: upload .zip files into /dropbox")

    def rmdir(self, path: bytes) -> None:
        raise SFTPPermissionDenied("folders cannot be removed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied("symbolic links are not allowed")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise SFTPPermissionDenied("links are not allowed")

    def readlink(self, path: bytes) -> bytes:
        raise SFTPOpUnsupported("symbolic links are not supported")

    # -- end of session -----------------------------------------------------

    def exit(self) -> None:
        # Uploads still open were already closed (and aborted) by asyncssh's
        # cleanup; what is left is temporary files never renamed to .zip.
        for upload in list(self._open):
            self._open.discard(upload)
            self._discard(upload)
            self._log.warning("upload_aborted", file=upload.name, bytes=upload.size,
                              reason="session ended with the file open")
            self._ctx.telemetry.upload_finished("aborted")
        for name, stored in self._temporaries.items():
            if unlink_if_same(self._dropbox / name, stored.identity):
                self._log.warning(
                    "upload_aborted", file=name, reason="temporary file never renamed to .zip"
                )
                self._ctx.telemetry.upload_finished("aborted")
        self._temporaries.clear()
        self._linger.clear()
        self._on_exit()
        chan = self.channel
        if chan.get_subsystem() == "sftp" and not chan.is_closing():
            # As sshd does when sftp-server exits; scp in SFTP mode (OpenSSH 9's
            # default) fails without an exit status. SCP sessions get theirs from asyncssh.
            chan.exit(0)


class RefusedSession(DropboxFS):
    """A session over its account's limit: told why on standard error (OpenSSH's
    ``sftp`` and ``scp`` print it), and every request it sends is refused with the
    same message. The client ends it (asyncssh's channel cannot be closed while
    the client may still send its EOF)."""

    def __init__(self, chan: SSHServerChannel[bytes], context: DropboxContext,
                 info: SessionInfo, message: str) -> None:
        super().__init__(chan, context, info)
        self._message = message
        chan.write_stderr(f"rosterdrop: {message}\r\n".encode())

    def _deny(self) -> NoReturn:
        raise SFTPPermissionDenied(self._message)

    def realpath(self, path: bytes) -> bytes:
        self._deny()

    def stat(self, path: bytes) -> SFTPAttrs:
        self._deny()

    def lstat(self, path: bytes) -> SFTPAttrs:
        self._deny()

    def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        self._deny()

    def remove(self, path: bytes) -> None:
        self._deny()

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._deny()

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._deny()

    def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        self._deny()

    async def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        self._deny()
        yield SFTPName(b"")  # never reached: makes this an async generator


REQUESTS = (
    "realpath", "stat", "lstat", "setstat", "lsetstat", "fstat", "fsetstat", "statvfs",
    "fstatvfs", "open", "read", "write", "fsync", "close", "remove", "rename",
    "posix_rename", "mkdir", "rmdir", "symlink", "link", "readlink", "exit",
)
"""The ``SFTPServer`` methods asyncssh calls for client requests (``scandir`` aside)."""
ANSWERED_THEMSELVES = frozenset({"write"})
"""Requests whose method applies ``_refusal`` itself (one call per request of an
upload: no wrapper, no awaitable check around each)."""

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _refusal(fs: DropboxFS, request: str, exc: Exception) -> Exception:
    """``exc`` itself when asyncssh answers it plainly (an SFTP status, or an OS
    error it sends as its code and strerror, no path); else a plain refusal (asyncssh
    would send "Uncaught exception: " and the Python message), logged with its
    traceback."""
    if isinstance(exc, SFTPError) or (isinstance(exc, OSError) and exc.strerror):
        return exc
    fs._log.exception("sftp_request_failed", request=request)
    return SFTPFailure("the server could not complete this request; it has logged why")


def _plainly(name: str, method: _Method) -> _Method:
    """``method``, answering any failure it did not foresee with ``_refusal``."""

    async def awaited(self: DropboxFS, pending: Awaitable[Any]) -> Any:
        try:
            return await pending
        except Exception as exc:
            answer = _refusal(self, name, exc)
            if answer is exc:
                raise
            raise answer from None

    @functools.wraps(method)
    def answered(self: DropboxFS, *args: Any) -> Any:
        try:
            result = method(self, *args)
        except Exception as exc:
            answer = _refusal(self, name, exc)
            if answer is exc:
                raise
            raise answer from None
        if inspect.isawaitable(result):
            return awaited(self, result)
        return result

    return cast(_Method, answered)


def _answer_plainly(cls: type[DropboxFS]) -> None:
    for name in REQUESTS:
        if name in vars(cls) and name not in ANSWERED_THEMSELVES:
            setattr(cls, name, _plainly(name, vars(cls)[name]))


_answer_plainly(DropboxFS)
_answer_plainly(RefusedSession)


def _attrs(st: os.stat_result, *, writable: bool) -> SFTPAttrs:
    mode = st.st_mode if writable else st.st_mode & ~0o222
    return SFTPAttrs(
        # the type is what SCP's sink asks for (``scp x.zip host:dropbox/``)
        type=FILEXFER_TYPE_DIRECTORY if stat.S_ISDIR(mode) else FILEXFER_TYPE_REGULAR,
        size=st.st_size,
        permissions=mode,
        atime=int(st.st_atime),
        mtime=int(st.st_mtime),
        nlink=1,
    )


def _regular_file(host: Path) -> os.stat_result | None:
    try:
        st = os.lstat(host)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise SFTPPermissionDenied(f"cannot upload to {host.name!r}: not a file")
    return st


def _copy_into(source: Path, fd: int) -> int:
    """Copy ``source`` into the empty file ``fd``; its size."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        copied = 0
        while copied < size:
            n = os.copy_file_range(src, fd, size - copied, copied, copied)
            if n == 0:
                break
            copied += n
        return copied
    finally:
        os.close(src)


def _scan(folder: Path, *, dirs: bool) -> list[tuple[str, SFTPAttrs]]:
    found: list[tuple[str, SFTPAttrs]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) or (dirs and stat.S_ISDIR(st.st_mode)):
                found.append((entry.name, _attrs(st, writable=not dirs)))
    found.sort()
    return found
