"""The places rosterdrop reaches past asyncssh's public API, and why.

1. **Which close is the client's.** An upload is complete only when the
client closes the file itself. asyncssh calls ``SFTPServer.close()`` both for
a client's CLOSE request and, when a session ends, for every file the client
left open; the server is not told which. So the CLOSE request's handler is
wrapped (``mark_client_closes``): while it runs, ``closing_for_client()`` is
true, even for a pipelining client whose EOF arrived in the same read as its
CLOSE. SCP has no CLOSE request: asyncssh's SCP sink closes a file it
received in full while the channel still receives, whereas its clean-up runs
after the channel has stopped receiving (the client sent EOF, closed the
channel, or the connection dropped).

A dropped connection or a closed channel is public (``is_closing()``); an EOF
from a client whose ``ssh`` outlived it (OpenSSH ``sftp`` and ``scp`` killed
without their ``ssh`` child, lftp) is visible only in the channel's receive
state. ``check()`` runs at start, so an asyncssh release that renames it stops
the server instead of treating every aborted upload as complete;
``tests/test_sftp_seam.py`` breaks loudly on such a release.

2. **Padded WRITE requests.** pkg/sftp, and so rclone 1.60 (Debian 12's),
   pads some WRITE requests past their data. OpenSSH's ``sftp-server``
   ignores the extra bytes; asyncssh answers "Unexpected data at end of
   packet" and the upload fails. ``accept_padded_writes`` wraps asyncssh's
   own WRITE handler so it sees the request without the padding; everything
   else about the request (its checks, its answer) stays asyncssh's.

3. **One SSH packet for a turn's answers.** asyncssh writes every SFTP answer
   to the channel at once, so each becomes an SSH packet of its own (and
   asyncssh sends an SSH_MSG_IGNORE packet before each): with 32 KiB WRITE
   requests a 28-byte STATUS answer costs two encryptions and two ``send``
   calls in the server, two decryptions in the client, as much as the data.
   ``gather_answers`` gives each SFTP server session a writer that holds
   answers under ``GATHER_BYTES`` until the end of the event-loop turn (every
   request that arrived together has been answered by then) and writes them
   as one; a larger answer (READ data, listings) is written at once, after
   any held ones, so the order never changes. The session's clean-up writes
   what is held before anything else (asyncssh's ``exit()`` closes the
   channel).

4. **Log lines nobody will see.** asyncssh formats a description of every SSH
   and SFTP packet it sends or receives (a hex dump's worth of work) before
   its logger drops it unless ``asyncssh.set_debug_level(3)``, and turns every
   debug message's arguments into text before the level check: about 6 % of
   the event loop's time in a 32 KiB upload. ``log_only_when_enabled`` makes
   both checks first; what is logged, when it is, stays asyncssh's.

5. **Input in pieces.** asyncssh keeps a connection's unparsed input in one
   ``bytes`` object and slices what is left off it twice for every SSH packet
   parsed: with the 256 KiB reads asyncio makes, a 32 KiB WRITE copies up to
   224 KiB (the data about seven times over; a tenth of the event loop's
   time). ``read_in_pieces`` hands asyncssh its input ``PIECE_BYTES`` at a
   time, as a slower network would, so that buffer stays small.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

from asyncssh import SSHServerChannel
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import FXP_CLOSE, FXP_WRITE
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacket, SSHPacketLogger
from asyncssh.sftp import SFTPHandler, SFTPServerHandler

from rosterdrop.errors import SftpError

_RECEIVE_STATE = "_recv_state"
_RECEIVING = "open"
_KNOWN_STATES = frozenset({"closed", "open", "eof_pending", "eof", "close_pending"})
_WRITER = "_writer"
_INSTALLED = "rosterdrop_seam"
"""Marks the functions this module put in asyncssh's place (installed once)."""
GATHER_BYTES = 1024
"""SFTP answers shorter than this wait for the end of the event-loop turn."""
PIECE_BYTES = 64 * 1024
"""The most input handed to asyncssh's packet parser at a time."""

_WriteHandler = Callable[[SFTPServerHandler, SSHPacket], Awaitable[object]]
_UINT32 = struct.Struct(">I")


def check() -> None:
    """Refuse to start if a seam is gone from the installed asyncssh; install the
    wrappers (once)."""
    names = set(SSHChannel.__init__.__code__.co_names)
    eof_names = set(SSHChannel._process_eof.__code__.co_names)
    handlers = getattr(SFTPServerHandler, "_packet_handlers", None)
    missing = []
    if _RECEIVE_STATE not in names or _RECEIVE_STATE not in eof_names:
        missing.append("the channel's record of the client's end of input")
    if not isinstance(handlers, dict) or not callable(handlers.get(FXP_WRITE)) or not (
            callable(handlers.get(FXP_CLOSE))):
        missing.append("the SFTP server's table of request handlers")
    if not all(_WRITER in _code_names(SFTPHandler, name)
               for name in ("__init__", "send_packet", "_cleanup")) or not callable(
            getattr(SFTPServerHandler, "_cleanup", None)):
        missing.append("the SFTP session's writer")
    if not callable(getattr(SSHPacketLogger, "_log_packet", None)) or not isinstance(
            getattr(SSHLogger, "_debug_level", None), int):
        missing.append("the packet log and its debug level")
    if "_inpbuf" not in _code_names(SSHConnection, "data_received") or "_transport" not in (
            _code_names(SSHConnection, "__init__")):
        missing.append("the connection's input buffer")
    if missing:
        import asyncssh

        raise SftpError(
            f"asyncssh {asyncssh.__version__} changed {' and '.join(missing)}; rosterdrop's "
            "SFTP server needs them (see rosterdrop/sftp/asyncssh_seam.py)"
        )
    accept_padded_writes()
    mark_client_closes()
    gather_answers()
    log_only_when_enabled()
    read_in_pieces()


def _code_names(cls: type, name: str) -> set[str]:
    """The names asyncssh's own ``cls.name`` uses (under a wrapper of ours, if any)."""
    function = getattr(cls, name, None)
    code = getattr(getattr(function, "__wrapped__", function), "__code__", None)
    return set(code.co_names) if code is not None else set()


def _installed(function: Any) -> bool:
    return bool(getattr(function, _INSTALLED, False))


def accept_padded_writes() -> None:
    """Let asyncssh's WRITE handler ignore bytes after the data, as OpenSSH does."""
    handlers: dict[int | bytes, Any] = SFTPServerHandler._packet_handlers
    current: _WriteHandler = handlers[FXP_WRITE]
    if getattr(current, "rosterdrop_unpadded", False):
        return

    def unpadded(handler: SFTPServerHandler, packet: SSHPacket) -> Awaitable[object]:
        # asyncssh awaits what its handler returns: hand it asyncssh's own coroutine
        # (no coroutine of ours around it for every request).
        return current(handler, _without_padding(packet))

    unpadded.rosterdrop_unpadded = True  # type: ignore[attr-defined]
    handlers[FXP_WRITE] = unpadded


_CLIENT_CLOSE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rosterdrop_client_close", default=False)


def mark_client_closes() -> None:
    """Tell the file system's ``close`` when it answers the client's own CLOSE request,
    so a client that sends CLOSE and at once ends its input (EOF in the same read) still
    completes its upload; asyncssh calls the same ``close`` for what a session left open."""
    handlers: dict[int | bytes, Any] = SFTPServerHandler._packet_handlers
    current: _WriteHandler = handlers[FXP_CLOSE]
    if _installed(current):
        return

    async def by_client(handler: SFTPServerHandler, packet: SSHPacket) -> object:
        token = _CLIENT_CLOSE.set(True)
        try:
            return await current(handler, packet)
        finally:
            _CLIENT_CLOSE.reset(token)

    setattr(by_client, _INSTALLED, True)
    handlers[FXP_CLOSE] = by_client


def closing_for_client() -> bool:
    """True inside the handling of a client's CLOSE request."""
    return _CLIENT_CLOSE.get()


def _without_padding(packet: SSHPacket) -> SSHPacket:
    """The WRITE request (handle, offset, data) without what follows its data: the
    packet itself when nothing follows (no copy), or when it is too short to tell
    (asyncssh then answers it as malformed)."""
    whole = packet.get_full_payload()
    start = len(packet.get_consumed_payload())  # type byte and request id
    try:
        (handle_length,) = _UINT32.unpack_from(whole, start)
        at = start + 4 + handle_length + 8
        (data_length,) = _UINT32.unpack_from(whole, at)
    except struct.error:
        return packet
    end = at + 4 + data_length
    if end >= len(whole):
        return packet
    return SSHPacket(whole[start:end])


class GatheringWriter:
    """An SFTP session's channel writer that holds small answers for the rest of the
    event-loop turn and writes them as one (see the module's point 3)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self.channel = writer.channel
        self._held: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if len(data) < GATHER_BYTES:
            if not self._held:
                self._loop.call_soon(self.flush)
            self._held.append(data)
            return
        if self._held:
            held, self._held = self._held, []
            held.append(data)
            data = b"".join(held)
        self._writer.write(data)

    def flush(self) -> None:
        """Write what is held (dropped, as asyncssh drops answers, once the channel is
        closing)."""
        if self._held:
            held, self._held = self._held, []
            if not self.channel.is_closing():
                self._writer.write(b"".join(held))

    def close(self) -> None:
        self.flush()
        self._writer.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


def gather_answers() -> None:
    """Give every SFTP server session a ``GatheringWriter``; write what it holds first
    when the session ends."""
    init = SFTPServerHandler.__init__
    if _installed(init):
        return
    cleanup = SFTPServerHandler._cleanup

    def __init__(handler: SFTPServerHandler, *args: Any, **kwargs: Any) -> None:
        init(handler, *args, **kwargs)
        writer = getattr(handler, _WRITER)
        if writer is not None:
            setattr(handler, _WRITER, GatheringWriter(writer))

    async def _cleanup(handler: SFTPServerHandler, exc: Exception | None) -> None:
        writer = getattr(handler, _WRITER, None)
        if isinstance(writer, GatheringWriter):
            writer.flush()
        await cleanup(handler, exc)

    for function in (__init__, _cleanup):
        setattr(function, _INSTALLED, True)
    SFTPServerHandler.__init__ = __init__  # type: ignore[method-assign,assignment]
    SFTPServerHandler._cleanup = _cleanup  # type: ignore[method-assign,assignment]


def log_only_when_enabled() -> None:
    """asyncssh's packet and debug logging, with the level checks done first."""
    log_packet = SSHPacketLogger._log_packet
    if _installed(log_packet):
        return
    log = SSHLogger.log

    def _log_packet(self: SSHPacketLogger, *args: Any) -> None:
        # SSHLogger.packet() logs only at debug level 3, and only if DEBUG is enabled.
        logger = self.logger
        if logger._debug_level >= 3 and logger.isEnabledFor(logging.DEBUG):
            log_packet(self, *args)

    def log_if_enabled(self: SSHLogger, level: int, msg: object, *args: Any,
                       **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            log(self, level, msg, *args, **kwargs)

    for function in (_log_packet, log_if_enabled):
        setattr(function, _INSTALLED, True)
    SSHPacketLogger._log_packet = _log_packet  # type: ignore[method-assign,assignment]
    SSHLogger.log = log_if_enabled  # type: ignore[method-assign]


def read_in_pieces() -> None:
    """Hand every SSH connection its input at most ``PIECE_BYTES`` at a time."""
    whole = SSHConnection.data_received
    if _installed(whole):
        return

    def data_received(conn: SSHConnection, data: bytes, datatype: Any = None) -> None:
        if len(data) <= PIECE_BYTES:
            whole(conn, data, datatype)
            return
        with memoryview(data) as view:
            for start in range(0, len(data), PIECE_BYTES):
                if conn._transport is None:  # closed by an earlier piece
                    return
                # asyncssh appends it to its bytes buffer at once (no copy of ours)
                whole(conn, cast(bytes, view[start:start + PIECE_BYTES]), datatype)

    setattr(data_received, _INSTALLED, True)
    data_received.__wrapped__ = whole  # type: ignore[attr-defined]
    SSHConnection.data_received = data_received  # type: ignore[method-assign,assignment]


def client_still_sending(chan: SSHServerChannel[Any]) -> bool:
    """True while the client can still send requests on ``chan``."""
    if chan.is_closing():
        return False
    state = getattr(chan, _RECEIVE_STATE, None)
    if state not in _KNOWN_STATES:
        raise SftpError(f"unexpected asyncssh channel receive state {state!r}")
    return bool(state == _RECEIVING)
