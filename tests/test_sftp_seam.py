"""``asyncssh_seam``: the two places the SFTP server relies on asyncssh internals.

These tests speak raw SFTP over a real asyncssh client channel, so they pin the
behaviour itself; an asyncssh release that changes either internal makes them
(and ``check()`` at start) fail loudly rather than let aborted uploads through.
The client runs on the test's own event loop (pytest-asyncio); the server runs on
``running_server``'s loop in another thread, so the test may block on its waits.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest
from asyncssh.constants import FXP_WRITE
from asyncssh.sftp import SFTPServerHandler
from test_sftp_support import PASSWORD, random_bytes, running_server

from rosterdrop.sftp import asyncssh_seam

FXP_INIT, FXP_OPEN, FXP_CLOSE = 1, 3, 4
FXP_STATUS, FXP_HANDLE = 101, 102
FX_OK = 0
OPEN_FOR_UPLOAD = 0x02 | 0x08 | 0x10  # WRITE | CREAT | TRUNC


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _packet(kind: int, request_id: int | None, body: bytes) -> bytes:
    payload = bytes([kind]) + (b"" if request_id is None else struct.pack(">I", request_id))
    return struct.pack(">I", len(payload) + len(body)) + payload + body


class Raw:
    """One SFTP channel spoken packet by packet."""

    def __init__(self, reader: asyncssh.SSHReader[bytes],
                 writer: asyncssh.SSHWriter[bytes]) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> tuple[int, int, bytes]:
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        payload = await self.reader.readexactly(length)
        return payload[0], struct.unpack(">I", payload[1:5])[0], payload[5:]

    async def open(self, name: bytes) -> bytes:
        self.writer.write(_packet(FXP_OPEN, 1, _string(name) + struct.pack(">II",
                                                                           OPEN_FOR_UPLOAD, 0)))
        kind, _, rest = await self.reply()
        assert kind == FXP_HANDLE
        return rest[4:4 + struct.unpack(">I", rest[:4])[0]]

    async def status(self) -> int:
        kind, _, rest = await self.reply()
        assert kind == FXP_STATUS
        return int(struct.unpack(">I", rest[:4])[0])


async def _session(port: int, steps: Callable[[Raw], Awaitable[None]]) -> None:
    async with asyncssh.connect("127.0.0.1", port, username="acme", password=PASSWORD,
                                known_hosts=None, client_keys=None, config=None) as conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        writer.write(_packet(FXP_INIT, None, struct.pack(">I", 3)))
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(length)  # VERSION
        await steps(Raw(reader, writer))


def test_check_passes_and_installs_the_write_wrapper_once() -> None:
    """On the installed asyncssh both seams are found; installing twice wraps once."""
    asyncssh_seam.check()
    handler = SFTPServerHandler._packet_handlers[FXP_WRITE]
    asyncssh_seam.accept_padded_writes()
    assert SFTPServerHandler._packet_handlers[FXP_WRITE] is handler
    assert getattr(handler, "rosterdrop_unpadded", False)


@pytest.mark.asyncio
async def test_a_padded_write_is_accepted(tmp_path: Path) -> None:
    """A WRITE with bytes after its data (pkg/sftp, rclone 1.60) writes the data only."""
    data = random_bytes(4000)

    async def steps(raw: Raw) -> None:
        handle = await raw.open(b"dropbox/padded.zip")
        body = _string(handle) + struct.pack(">Q", 0) + _string(data) + b"\x00" * 512
        raw.writer.write(_packet(FXP_WRITE, 2, body))
        assert await raw.status() == FX_OK
        raw.writer.write(_packet(FXP_CLOSE, 3, _string(handle)))
        assert await raw.status() == FX_OK

    with running_server(tmp_path) as srv:
        await _session(srv.port, steps)
        [upload] = srv.wait_uploads(1)
    assert upload.data == data


@pytest.mark.asyncio
async def test_eof_with_a_file_open_aborts_the_upload(tmp_path: Path) -> None:
    """A client that stops sending (channel EOF) with a file open, as ``sftp`` killed
    without its ``ssh`` does: asyncssh closes the file, the upload is aborted."""

    async def steps(raw: Raw) -> None:
        handle = await raw.open(b"dropbox/eof.zip")
        raw.writer.write(_packet(FXP_WRITE, 2, _string(handle) + struct.pack(">Q", 0)
                                 + _string(random_bytes(9000))))
        assert await raw.status() == FX_OK
        raw.writer.write_eof()
        assert await asyncio.wait_for(raw.reader.read(), 10) == b""

    with running_server(tmp_path) as srv:
        await _session(srv.port, steps)
        aborted = srv.logs.wait("upload_aborted", file="eof.zip")
        assert aborted["bytes"] == 9000
        assert srv.in_progress() == []
        assert not (srv.dropbox() / "eof.zip").exists()
    assert srv.uploads == []


@pytest.mark.asyncio
async def test_close_then_eof_completes_the_upload(tmp_path: Path) -> None:
    """The client's own CLOSE, answered, then EOF: one completed upload."""
    data = random_bytes(5000)

    async def steps(raw: Raw) -> None:
        handle = await raw.open(b"dropbox/closed.zip")
        raw.writer.write(_packet(FXP_WRITE, 2, _string(handle) + struct.pack(">Q", 0)
                                 + _string(data)))
        assert await raw.status() == FX_OK
        raw.writer.write(_packet(FXP_CLOSE, 3, _string(handle)))
        assert await raw.status() == FX_OK
        raw.writer.write_eof()
        await asyncio.wait_for(raw.reader.read(), 10)

    with running_server(tmp_path) as srv:
        await _session(srv.port, steps)
        [upload] = srv.wait_uploads(1)
        assert srv.logs.named("upload_aborted") == []
    assert upload.data == data
