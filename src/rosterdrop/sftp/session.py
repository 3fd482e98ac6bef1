"""asyncssh plumbing for one SFTP channel: the only place that touches its internals.

asyncssh's ``SFTPServerHandler`` calls ``SFTPServer.close(file)`` in two
cases: for a client's CLOSE request (dispatched through the class's
``_packet_handlers`` table), and in ``_cleanup`` for every file still open
when the session ends. Only the first completes an upload, so
``_DropboxHandler`` routes CLOSE through ``DropboxFS.client_close()``.

asyncssh builds its own handler for the ``sftp_factory`` route, so
``SftpSession`` starts ours: it is what ``SSHServer.session_requested``
returns, accepts only the ``sftp`` subsystem (no shell, exec or scp) and
mirrors the SFTP branch of ``SSHServerStreamSession.session_started``.

For throughput, ``_DropboxHandler`` also batches its responses: asyncssh
sends every SFTP response as its own SSH packet (preceded by an SSH_MSG_IGNORE
packet), so with 32 KiB writes the replies cost as much as the data. Replies
to all the requests already received are gathered and written once the
handler waits for more input (one event-loop turn later), in order.

WRITE requests are parsed here too, leniently (see ``_process_write``), and
packets are only formatted for the log when asyncssh would log them.

And WRITE requests skip asyncssh's stream layer when they can: asyncssh
hands channel data to an ``SSHReader`` and wakes the handler's task, which
reads each request with two ``readexactly`` calls (a lock, slices, joins)
before dispatching it. ``SftpSession.data_received`` splits the data into
requests itself; a WRITE that arrives while the handler is idle (waiting for
input, nothing buffered, every earlier request answered) is handled at once:
parsed and written here when it is well formed and names an open file
(``write_now``), otherwise through the handler's own ``_process_packet``,
which completes without suspending because ``_process_write`` never awaits
(so malformed requests get asyncssh's own answers). Everything else, and a
WRITE behind a request still in progress, goes through asyncssh's stream as
before, so requests are still handled one at a time, in order.

Written against asyncssh 2.24 (``check_asyncssh`` refuses to start if these
internals are gone); ``tests/test_sftp_abort.py`` pins the behaviour.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import Callable
from typing import Any, cast

import asyncssh
from asyncssh import SFTPError, SFTPInvalidHandle, SFTPNoConnection
from asyncssh.channel import SSHChannel
from asyncssh.constants import FX_FAILURE, FX_OK, FXP_CLOSE, FXP_STATUS, FXP_WRITE
from asyncssh.logging import SSHLogger
from asyncssh.packet import Byte, SSHPacket, String, UInt32
from asyncssh.session import DataType
from asyncssh.sftp import MAX_SFTP_PACKET_LEN, SFTPServerHandler
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

from rosterdrop.errors import SftpError
from rosterdrop.sftp.filesystem import DropboxFS

SFTP_VERSION = 3
_TWO_UINT32 = struct.Struct(">II")
_UINT64_UINT32 = struct.Struct(">QI")
_OK = UInt32(FX_OK) + String("") + String("")
"""The body of the STATUS answer to a write that succeeded (what asyncssh sends)."""
PIECE_BYTES = 64 * 1024
"""The most input handed to asyncssh's packet parser at a time (see ``read_in_pieces``)."""


def check_asyncssh() -> None:
    """Fail at start, not mid-session, if asyncssh's internals moved."""
    needed = [
        (SFTPServerHandler, "_process_close"),
        (SFTPServerHandler, "_packet_handlers"),
        (SFTPServerHandler, "_cleanup"),
        (SSHServerStreamSession, "_init_sftp_server"),
        (SSHServerStreamSession, "_block_read"),  # sets _read_waiters, reads _recv_buf
        (SFTPServerHandler, "_process_packet"),
        (SFTPServerHandler, "recv_packets"),
        (SSHLogger, "_debug_level"),
    ]
    missing = [f"{cls.__name__}.{name}" for cls, name in needed if not hasattr(cls, name)]
    if missing or FXP_CLOSE not in SFTPServerHandler._packet_handlers:
        raise SftpError(
            f"asyncssh {asyncssh.__version__} is not supported by rosterdrop's SFTP server "
            f"(missing {', '.join(missing) or 'the CLOSE handler'}); install asyncssh 2.24"
        )


def read_in_pieces(conn: asyncssh.SSHServerConnection) -> None:
    """Hand ``conn`` its input in pieces of at most ``PIECE_BYTES``.

    asyncssh keeps unparsed input in a ``bytes`` object and slices the rest
    off it twice per packet: with the 256 KiB reads asyncio makes, every
    32 KiB packet copied up to 224 KiB (about 10 % of the event loop's time
    in an upload). Fed in pieces, that buffer stays small. Left out if the
    connection's internals are not as expected (the data then goes in whole).
    """
    if not (hasattr(conn, "_transport") and hasattr(conn, "_inpbuf")):
        return
    whole = conn.data_received

    def data_received(data: bytes, datatype: DataType = None) -> None:
        if len(data) <= PIECE_BYTES:
            whole(data, datatype)
            return
        view = memoryview(data)
        for start in range(0, len(data), PIECE_BYTES):
            if conn._transport is None:  # closed by an earlier piece
                return
            whole(cast(bytes, view[start:start + PIECE_BYTES]), datatype)

    setattr(conn, "data_received", data_received)  # noqa: B010 - the transport looks it up


def _copy(buffer: bytearray, start: int, stop: int) -> bytes:
    with memoryview(buffer) as view:  # one copy (a bytearray slice would make two)
        return bytes(view[start:stop])


def log_packets_only_when_asked(handler: object) -> None:
    """asyncssh formats a log line for every SSH packet a connection or channel sends
    or receives before its logger drops it below debug level 3 (see ``_DropboxHandler``)."""
    for name in ("log_received_packet", "log_sent_packet"):
        log = getattr(handler, name)

        def maybe(*args: Any, _log: Callable[..., None] = log) -> None:
            if SSHLogger._debug_level >= 3:
                _log(*args)

        setattr(handler, name, maybe)


async def _process_client_close(handler: SFTPServerHandler, packet: SSHPacket) -> None:
    server = cast(DropboxFS, handler._server)
    with server.client_close():
        await SFTPServerHandler._process_close(handler, packet)


async def _process_write(handler: SFTPServerHandler, packet: SSHPacket) -> None:
    # Like OpenSSH's sftp-server, ignore bytes after the data: pkg/sftp (so
    # rclone 1.60) pads some WRITE requests to its buffer size, which
    # asyncssh's own handler rejects as a bad message.
    handle = packet.get_string()
    offset = packet.get_uint64()
    data = packet.get_string()
    file_obj = handler._file_handles.get(handle)
    if not file_obj:
        raise SFTPInvalidHandle("Invalid file handle")
    cast(DropboxFS, handler._server).write(file_obj, offset, data)


class _DropboxHandler(SFTPServerHandler):
    def __init__(
        self,
        server: DropboxFS,
        reader: SSHReader[bytes],
        writer: SSHWriter[bytes],
        sftp_version: int,
    ) -> None:
        super().__init__(server, reader, writer, sftp_version)
        self._replies: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self.started = False
        """The INIT exchange is over: requests may be dispatched directly."""

    async def recv_packets(self) -> None:
        self.started = True
        await super().recv_packets()

    def write_now(self, buffer: bytearray, start: int, stop: int) -> bool:
        """Handle the WRITE request in ``buffer[start:stop]`` (after its type byte) if it
        is well formed and names an open file; False leaves it to ``process_now``, whose
        answers to malformed requests and unknown handles are asyncssh's own."""
        if stop - start < 20 or SSHLogger._debug_level >= 3:  # id, handle, offset, length
            return False
        pktid, handle_length = _TWO_UINT32.unpack_from(buffer, start)
        at = start + 8 + handle_length
        if at + 12 > stop:
            return False
        file_obj = self._file_handles.get(_copy(buffer, start + 8, at))
        offset, data_length = _UINT64_UINT32.unpack_from(buffer, at)
        at += 12
        if file_obj is None or at + data_length > stop:
            return False
        data = _copy(buffer, at, at + data_length)
        try:
            cast(DropboxFS, self._server).write(file_obj, offset, data)
        except SFTPError as exc:
            reply = exc.encode(self._version)
        except Exception as exc:  # as asyncssh answers an uncaught exception
            self.logger.debug1("Sending failure: %s", exc, exc_info=sys.exc_info)
            reply = UInt32(FX_FAILURE) + String(f"Uncaught exception: {exc}") + String("")
        else:
            reply = _OK
        self.send_packet(FXP_STATUS, pktid, UInt32(pktid), reply)
        return True

    def process_now(self, payload: bytes) -> None:
        """Handle one request (type, id, body) as ``recv_packets`` would, synchronously."""
        packet = SSHPacket(payload)
        pkttype = packet.get_byte()
        pktid = packet.get_uint32()
        self.log_received_packet(pkttype, pktid, packet)
        step = self._process_packet(pkttype, pktid, packet)
        try:
            step.send(None)
        except StopIteration:
            return
        step.close()
        raise RuntimeError(f"SFTP request type {pkttype} waited; it cannot be handled at once")

    def send_packet(self, pkttype: int, pktid: int | None, *args: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise SFTPNoConnection("Connection not open")
        if writer.channel.is_closing():
            return
        payload = Byte(pkttype) + b"".join(args)
        if not self._replies:
            self._loop.call_soon(self._flush_replies)
        self._replies.append(UInt32(len(payload)) + payload)
        self.log_sent_packet(pkttype, pktid, payload)

    # asyncssh formats a log line for every packet (copying its payload) before its
    # logger checks the level: packets are only logged at debug level 3. At 32 KiB
    # writes that was ~5 % of the event loop's time.
    def log_received_packet(
        self, pkttype: int, pktid: int | None, packet: bytes | SSHPacket, note: str = ""
    ) -> None:
        if SSHLogger._debug_level >= 3:
            super().log_received_packet(pkttype, pktid, packet, note)

    def log_sent_packet(
        self, pkttype: int, pktid: int | None, packet: bytes | SSHPacket, note: str = ""
    ) -> None:
        if SSHLogger._debug_level >= 3:
            super().log_sent_packet(pkttype, pktid, packet, note)

    def _flush_replies(self) -> None:
        replies, self._replies = self._replies, []
        writer = self._writer
        if replies and writer is not None and not writer.channel.is_closing():
            writer.write(b"".join(replies))

    async def _cleanup(self, exc: Exception | None) -> None:
        self._flush_replies()
        await super()._cleanup(exc)

    _packet_handlers = {  # noqa: RUF012 - asyncssh looks its dispatch table up on the class
        **SFTPServerHandler._packet_handlers,
        FXP_CLOSE: _process_client_close,
        FXP_WRITE: _process_write,
    }


class SftpSession(SSHServerStreamSession[bytes]):
    """A session channel that runs ``DropboxFS`` for the sftp subsystem only."""

    def __init__(
        self,
        make_fs: Callable[[SSHChannel[bytes]], DropboxFS],
        on_task: Callable[[asyncio.Task[None]], None],
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(None, make_fs, SFTP_VERSION, False)
        self._on_task = on_task
        self._on_close: Callable[[], None] | None = on_close
        self._handler: _DropboxHandler | None = None
        self._unparsed = bytearray()

    def session_started(self) -> None:
        chan = self._chan
        assert chan is not None and self._conn is not None
        if chan.get_subsystem() != "sftp":  # shell/exec are refused before this
            chan.close()
            return
        log_packets_only_when_asked(chan)
        stdin = SSHReader[bytes](self, chan)
        stdout = SSHWriter[bytes](self, chan)
        fs = cast(DropboxFS, self._init_sftp_server())
        handler = _DropboxHandler(fs, stdin, stdout, SFTP_VERSION)
        self._handler = handler
        self._on_task(self._conn.create_task(handler.run(), stdin.logger))

    def data_received(self, data: bytes, datatype: DataType) -> None:
        handler = self._handler
        if handler is None or datatype is not None:
            super().data_received(data, datatype)
            return
        unparsed = self._unparsed
        unparsed += data
        size = len(unparsed)
        start = 0
        while size - start >= 4:
            length = int.from_bytes(unparsed[start:start + 4], "big")
            if length > MAX_SFTP_PACKET_LEN:  # asyncssh's reader reports it and ends
                self._handler = None
                super().data_received(_copy(unparsed, start, size), datatype)
                start = size
                break
            stop = start + 4 + length
            if stop > size:
                break
            if length >= 5 and unparsed[start + 4] == FXP_WRITE and self._idle(handler):
                if not handler.write_now(unparsed, start + 5, stop):
                    handler.process_now(_copy(unparsed, start + 4, stop))
            else:
                super().data_received(_copy(unparsed, start, stop), datatype)
            start = stop
        del unparsed[:start]

    def _idle(self, handler: _DropboxHandler) -> bool:
        """The handler waits for input and has nothing buffered: every request it was
        given has been answered."""
        waiter = self._read_waiters[None]
        return (handler.started and waiter is not None and not waiter.done()
                and not self._recv_buf[None])

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
