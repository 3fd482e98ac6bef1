"""``asyncssh_seam``: the two places the SFTP server relies on asyncssh internals.

These tests speak raw SFTP over a real asyncssh client channel, so they pin the
behaviour itself; an asyncssh release that changes either internal makes them
(and ``check()`` at start) fail loudly rather than let aborted uploads through.
The client runs on the test's own event loop (pytest-asyncio); the server runs on
``running_server``'s loop in another thread, so the test may block on its waits.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest
from asyncssh.connection import SSHConnection
from asyncssh.constants import FXP_CLOSE, FXP_WRITE
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacket, SSHPacketLogger
from asyncssh.sftp import SFTPServerHandler
from test_sftp_support import PASSWORD, random_bytes, running_server

from rosterdrop.sftp import asyncssh_seam

FXP_INIT, FXP_OPEN = 1, 3
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


def test_check_wraps_the_close_handler_once_and_marks_only_inside_it() -> None:
    """The client's CLOSE is told apart from asyncssh's clean-up by a context flag that
    is set only while asyncssh's own CLOSE handler runs."""
    asyncssh_seam.check()
    wrapped = SFTPServerHandler._packet_handlers[FXP_CLOSE]
    asyncssh_seam.mark_client_closes()
    assert SFTPServerHandler._packet_handlers[FXP_CLOSE] is wrapped
    assert asyncssh_seam.closing_for_client() is False


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


def _write(handle: bytes, request_id: int, offset: int, data: bytes) -> bytes:
    return _packet(FXP_WRITE, request_id, _string(handle) + struct.pack(">Q", offset)
                   + _string(data))


def test_check_installs_gathered_answers_and_quiet_logs_once() -> None:
    """The session writer and the log level checks are asyncssh's own wrapped once."""
    asyncssh_seam.check()
    wrapped = (SFTPServerHandler.__init__, SFTPServerHandler._cleanup,
               SSHPacketLogger._log_packet, SSHLogger.log)
    asyncssh_seam.check()
    assert (SFTPServerHandler.__init__, SFTPServerHandler._cleanup,
            SSHPacketLogger._log_packet, SSHLogger.log) == wrapped
    assert all(getattr(function, "rosterdrop_seam", False) for function in wrapped)


@pytest.mark.asyncio
async def test_pipelined_writes_are_all_answered_in_order(tmp_path: Path) -> None:
    """Many WRITEs sent at once, as ``sftp`` sends them: every one answered OK, in the
    order asked (answers are gathered per event-loop turn and written together)."""
    pieces = [random_bytes(32768) for _ in range(40)]

    async def steps(raw: Raw) -> None:
        handle = await raw.open(b"dropbox/pipelined.zip")
        raw.writer.write(b"".join(_write(handle, 10 + i, i * 32768, piece)
                                  for i, piece in enumerate(pieces)))
        for i in range(len(pieces)):
            kind, request_id, rest = await raw.reply()
            assert (kind, request_id) == (FXP_STATUS, 10 + i)
            assert struct.unpack(">I", rest[:4])[0] == FX_OK
        raw.writer.write(_packet(FXP_CLOSE, 99, _string(handle)))
        assert await raw.status() == FX_OK

    with running_server(tmp_path) as srv:
        await _session(srv.port, steps)
        [upload] = srv.wait_uploads(1)
    assert upload.data == b"".join(pieces)


@pytest.mark.asyncio
async def test_answers_held_when_the_client_stops_sending_are_still_sent(
        tmp_path: Path) -> None:
    """Two WRITEs and EOF in one go: the session ends in the same turn as its last
    requests, and their answers are written before asyncssh closes the channel (the
    upload itself is aborted: the client never closed it)."""

    async def steps(raw: Raw) -> None:
        handle = await raw.open(b"dropbox/hurried.zip")
        raw.writer.write(_write(handle, 2, 0, random_bytes(7000))
                         + _write(handle, 3, 7000, random_bytes(5000)))
        raw.writer.write_eof()
        assert [(await raw.reply())[:2] for _ in range(2)] == [(FXP_STATUS, 2),
                                                               (FXP_STATUS, 3)]
        assert await asyncio.wait_for(raw.reader.read(), 10) == b""

    with running_server(tmp_path) as srv:
        await _session(srv.port, steps)
        assert srv.logs.wait("upload_aborted", file="hurried.zip")["bytes"] == 12000
    assert srv.uploads == []


@pytest.mark.asyncio
async def test_gathering_writer_keeps_the_order_and_writes_once_a_turn() -> None:
    """Small answers wait for the end of the turn and go as one write; a large one
    goes at once, after what was held; close writes what is held first."""
    written: list[bytes] = []

    class Channel:
        closing = False

        def is_closing(self) -> bool:
            return self.closing

    class Writer:
        channel = Channel()

        def write(self, data: bytes) -> None:
            written.append(data)

        def close(self) -> None:
            written.append(b"<closed>")

    gathering = asyncssh_seam.GatheringWriter(Writer())
    gathering.write(b"a")
    gathering.write(b"b")
    assert written == []
    await asyncio.sleep(0)
    assert written == [b"ab"]
    big = b"x" * asyncssh_seam.GATHER_BYTES
    gathering.write(b"c")
    gathering.write(big)
    assert written == [b"ab", b"c" + big]
    gathering.write(b"d")
    gathering.close()
    assert written == [b"ab", b"c" + big, b"d", b"<closed>"]
    await asyncio.sleep(0)  # the turn's flush finds nothing left
    Writer.channel.closing = True
    gathering.write(b"e")
    await asyncio.sleep(0)
    assert written[-1] == b"<closed>"  # as asyncssh drops answers on a closing channel


class _Logged(SSHPacketLogger):
    _handler_names = {FXP_WRITE: "FXP_WRITE"}  # noqa: RUF012 - asyncssh's class table

    def __init__(self) -> None:
        self._logger = asyncssh.logging.logger.get_child("sftp")

    @property
    def logger(self) -> SSHLogger:
        return self._logger


class _Unformattable(SSHPacket):
    def get_full_payload(self) -> bytes:
        raise AssertionError("formatted a packet log line nobody will see")


class _Untextable:
    def __str__(self) -> str:
        raise AssertionError("turned a debug message's argument into text below its level")


def test_packet_logs_are_formatted_only_at_debug_level_3(
        caplog: pytest.LogCaptureFixture) -> None:
    """Below debug level 3 asyncssh would drop the line: it is not even formatted; at
    level 3 with DEBUG enabled, asyncssh logs it as before."""
    asyncssh_seam.check()
    packets = _Logged()
    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        packets.log_received_packet(FXP_WRITE, 1, _Unformattable(b"x"))
        packets.logger.debug1("debug %s", b"on")  # DEBUG enabled: logged as before
        assert [r.getMessage() for r in caplog.records] == ["debug on"]
        caplog.clear()
        asyncssh.set_debug_level(3)
        try:
            packets.log_received_packet(FXP_WRITE, 7, b"\x06abc")
        finally:
            asyncssh.set_debug_level(1)
        [record] = caplog.records
        assert "Received FXP_WRITE (6), 4 bytes" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asyncssh"):
        packets.logger.debug1("%s", [_Untextable()])  # its arguments not even made text
    assert caplog.records == []


def test_input_goes_to_asyncssh_in_pieces_and_stops_once_closed() -> None:
    """A large read reaches asyncssh's parser ``PIECE_BYTES`` at a time, every byte in
    order; once a piece closes the connection, the rest is not parsed."""
    asyncssh_seam.check()
    assert getattr(SSHConnection.data_received, "rosterdrop_seam", False)

    class Conn:
        def __init__(self, close_after: int) -> None:
            self._inpbuf = b""
            self._transport: object | None = object()
            self.pieces: list[int] = []
            self.close_after = close_after

        def _recv_data(self) -> None:  # asyncssh's parser: takes the whole buffer
            self.pieces.append(len(self._inpbuf))
            self.parsed = getattr(self, "parsed", b"") + self._inpbuf
            self._inpbuf = b""
            if len(self.pieces) == self.close_after:
                self._transport = None

    data = random_bytes(3 * asyncssh_seam.PIECE_BYTES + 100)
    conn = Conn(close_after=0)
    SSHConnection.data_received(conn, data)  # type: ignore[arg-type]
    assert conn.pieces == [asyncssh_seam.PIECE_BYTES] * 3 + [100]
    assert conn.parsed == data
    closing = Conn(close_after=2)
    SSHConnection.data_received(closing, data)  # type: ignore[arg-type]
    assert closing.pieces == [asyncssh_seam.PIECE_BYTES] * 2
    small = Conn(close_after=0)
    SSHConnection.data_received(small, b"tiny")  # type: ignore[arg-type]
    assert small.parsed == b"tiny"
