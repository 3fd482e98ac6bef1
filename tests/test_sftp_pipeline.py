"""Pipelined requests on one SFTP channel, as raw packets: WRITE requests that
skip asyncssh's stream layer (``SftpSession.data_received``) are still handled
one at a time, in order, with the same answers as the others."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import asyncssh
import pytest
from test_sftp_support import PASSWORD, random_bytes, running_server

from rosterdrop.sftp import session

FXP_INIT, FXP_OPEN, FXP_CLOSE, FXP_WRITE, FXP_FSTAT = 1, 3, 4, 6, 8
FXP_STATUS, FXP_HANDLE, FXP_ATTRS = 101, 102, 105
FX_OK, FX_FAILURE, FX_BAD_MESSAGE = 0, 4, 5
OPEN_FOR_UPLOAD = 0x02 | 0x08 | 0x10  # WRITE | CREAT | TRUNC


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _packet(kind: int, body: bytes, request_id: int | None = None) -> bytes:
    payload = bytes([kind]) + (b"" if request_id is None else struct.pack(">I", request_id))
    payload += body
    return struct.pack(">I", len(payload)) + payload


def _write(request_id: int, handle: bytes, offset: int, data: bytes) -> bytes:
    return _packet(FXP_WRITE, _string(handle) + struct.pack(">Q", offset) + _string(data),
                   request_id)


class _Channel:
    def __init__(self, reader: asyncssh.SSHReader[bytes],
                 writer: asyncssh.SSHWriter[bytes]) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> tuple[int, int, bytes]:
        """(type, request id, rest) of the next response."""
        (length,) = struct.unpack(">I", await self.reader.readexactly(4))
        payload = await self.reader.readexactly(length)
        kind, request_id = payload[0], struct.unpack(">I", payload[1:5])[0]
        return kind, request_id, payload[5:]


def _status(rest: bytes) -> int:
    return int(struct.unpack(">I", rest[:4])[0])


async def _session(port: int, steps: object) -> None:
    async with asyncssh.connect("127.0.0.1", port, username="acme", password=PASSWORD,
                                known_hosts=None, client_keys=None) as conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        channel = _Channel(reader, writer)
        writer.write(_packet(FXP_INIT, struct.pack(">I", 3)))
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(length)  # VERSION
        await steps(channel)  # type: ignore[operator]


@pytest.fixture
def dispatched_at_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which requests took the direct path (to be sure a test exercised it): "write"
    for a WRITE handled by ``write_now``, else the request type ``process_now`` got."""
    seen: list[str] = []
    write_now = session._DropboxHandler.write_now
    process_now = session._DropboxHandler.process_now

    def counting_write(self: session._DropboxHandler, buffer: bytearray, start: int,
                       stop: int) -> bool:
        done = write_now(self, buffer, start, stop)
        if done:
            seen.append("write")
        return done

    def counting_process(self: session._DropboxHandler, payload: bytes) -> None:
        seen.append(f"type {payload[0]}")
        process_now(self, payload)

    monkeypatch.setattr(session._DropboxHandler, "write_now", counting_write)
    monkeypatch.setattr(session._DropboxHandler, "process_now", counting_process)
    return seen


def test_pipelined_writes_between_other_requests_keep_their_order(
        tmp_path: Path, dispatched_at_once: list[str]) -> None:
    """One burst: writes, an FSTAT, a malformed write, a write to an unknown handle,
    more writes, then CLOSE. Every request gets its answer, in order; the FSTAT sees
    the writes before it; the upload holds exactly the good writes."""
    chunk = 32 * 1024
    data = random_bytes(6 * chunk)
    answers: list[tuple[int, int, bytes]] = []

    async def steps(channel: _Channel) -> None:
        channel.writer.write(_packet(FXP_OPEN, _string(b"burst.zip")
                                     + struct.pack(">II", OPEN_FOR_UPLOAD, 0), 1))
        kind, _, rest = await channel.reply()
        assert kind == FXP_HANDLE
        (length,) = struct.unpack(">I", rest[:4])
        handle = rest[4:4 + length]
        burst = [_write(10 + i, handle, i * chunk, data[i * chunk:(i + 1) * chunk])
                 for i in range(3)]
        burst.append(_packet(FXP_FSTAT, _string(handle), 13))
        burst.append(_packet(FXP_WRITE, _string(handle) + b"\x00\x01", 14))  # cut short
        burst.append(_write(15, b"no such handle", 0, b"x"))
        burst += [_write(16 + i, handle, (3 + i) * chunk, data[(3 + i) * chunk:(4 + i) * chunk])
                  for i in range(3)]
        burst.append(_packet(FXP_CLOSE, _string(handle), 19))
        channel.writer.write(b"".join(burst))
        for _ in range(10):
            answers.append(await channel.reply())

    with running_server(tmp_path) as srv:
        asyncio.run(_session(srv.port, steps))
        [upload] = srv.wait_uploads(1)
    assert [request_id for _, request_id, _ in answers] == list(range(10, 20))
    kinds = {request_id: kind for kind, request_id, _ in answers}
    assert kinds[13] == FXP_ATTRS
    assert all(kinds[i] == FXP_STATUS for i in (10, 11, 12, 14, 15, 16, 17, 18, 19))
    statuses = {request_id: _status(rest) for kind, request_id, rest in answers
                if kind == FXP_STATUS}
    assert statuses[14] == FX_BAD_MESSAGE
    assert statuses[15] == FX_FAILURE  # asyncssh's answer to an unknown handle
    assert all(statuses[i] == FX_OK for i in (10, 11, 12, 16, 17, 18, 19))
    attrs = next(rest for kind, _, rest in answers if kind == FXP_ATTRS)
    flags = struct.unpack(">I", attrs[:4])[0]
    assert flags & 1 and struct.unpack(">Q", attrs[4:12])[0] == 3 * chunk
    assert upload.data == data
    assert "write" in dispatched_at_once  # the direct path was taken


def test_requests_split_across_reads_are_reassembled(
        tmp_path: Path, dispatched_at_once: list[str]) -> None:
    """WRITE requests that arrive a few bytes at a time, and several in one piece."""
    data = random_bytes(5000)

    async def steps(channel: _Channel) -> None:
        channel.writer.write(_packet(FXP_OPEN, _string(b"pieces.zip")
                                     + struct.pack(">II", OPEN_FOR_UPLOAD, 0), 1))
        kind, _, rest = await channel.reply()
        handle = rest[4:4 + struct.unpack(">I", rest[:4])[0]]
        stream = b"".join(_write(10 + i, handle, i * 1000, data[i * 1000:(i + 1) * 1000])
                          for i in range(5))
        for start in range(0, len(stream), 7):
            channel.writer.write(stream[start:start + 7])
            await channel.writer.drain()
        for i in range(5):
            kind, request_id, rest = await channel.reply()
            assert (kind, request_id, _status(rest)) == (FXP_STATUS, 10 + i, FX_OK)
        channel.writer.write(_packet(FXP_CLOSE, _string(handle), 20))
        kind, request_id, rest = await channel.reply()
        assert (kind, request_id, _status(rest)) == (FXP_STATUS, 20, FX_OK)

    with running_server(tmp_path) as srv:
        asyncio.run(_session(srv.port, steps))
        [upload] = srv.wait_uploads(1)
    assert upload.data == data
    assert dispatched_at_once.count("write") >= 1


def test_an_oversized_request_ends_the_session_not_the_server(tmp_path: Path) -> None:
    """A request length beyond asyncssh's limit goes to asyncssh's reader, which ends
    the session; the next session works."""
    ended: list[bytes] = []

    async def oversized(channel: _Channel) -> None:
        channel.writer.write(struct.pack(">I", 1 << 30) + b"\x06" + b"\x00" * 64)
        ended.append(await asyncio.wait_for(channel.reader.read(), 10))

    async def works(channel: _Channel) -> None:
        channel.writer.write(_packet(FXP_OPEN, _string(b"after.zip")
                                     + struct.pack(">II", OPEN_FOR_UPLOAD, 0), 1))
        kind, _, _ = await channel.reply()
        ended.append(bytes([kind]))

    with running_server(tmp_path) as srv:
        asyncio.run(_session(srv.port, oversized))
        asyncio.run(_session(srv.port, works))
    assert ended == [b"", bytes([FXP_HANDLE])]


class _Connection:
    """Stands in for asyncssh's connection: records what its parser is handed."""

    def __init__(self, close_after: int | None = None) -> None:
        self._transport: object | None = object()
        self._inpbuf = b""
        self.pieces: list[bytes] = []
        self._close_after = close_after

    def data_received(self, data: bytes, datatype: object = None) -> None:
        self.pieces.append(bytes(data))
        if self._close_after is not None and len(self.pieces) >= self._close_after:
            self._transport = None  # what asyncssh's _force_close does


def test_input_reaches_the_parser_in_pieces_in_order() -> None:
    data = random_bytes(5 * session.PIECE_BYTES + 123)
    conn = _Connection()
    session.read_in_pieces(conn)  # type: ignore[arg-type]
    conn.data_received(b"small")
    conn.data_received(data)
    assert conn.pieces[0] == b"small"
    assert [len(p) for p in conn.pieces[1:]] == [session.PIECE_BYTES] * 5 + [123]
    assert b"".join(conn.pieces[1:]) == data


def test_no_piece_reaches_a_connection_an_earlier_piece_closed() -> None:
    conn = _Connection(close_after=2)
    session.read_in_pieces(conn)  # type: ignore[arg-type]
    conn.data_received(random_bytes(4 * session.PIECE_BYTES))
    assert len(conn.pieces) == 2
