"""The two places rosterdrop reaches past asyncssh's public API, and why.

1. **Which close is the client's.** An upload is complete only when the
client closes the file itself. asyncssh calls ``SFTPServer.close()`` both for
a client's CLOSE request and, when a session ends, for every file the client
left open; the server is not told which. The difference is whether the client is still talking: a client that
closes a file is, by definition, still sending requests, whereas asyncssh's
clean-up runs after the channel has stopped receiving (the client sent EOF,
closed the channel, or the connection dropped).

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
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Any

from asyncssh import SSHServerChannel
from asyncssh.channel import SSHChannel
from asyncssh.constants import FXP_WRITE
from asyncssh.packet import SSHPacket
from asyncssh.sftp import SFTPServerHandler

from rosterdrop.errors import SftpError

_RECEIVE_STATE = "_recv_state"
_RECEIVING = "open"
_KNOWN_STATES = frozenset({"closed", "open", "eof_pending", "eof", "close_pending"})


_WriteHandler = Callable[[SFTPServerHandler, SSHPacket], Awaitable[object]]
_UINT32 = struct.Struct(">I")


def check() -> None:
    """Refuse to start if either seam is gone from the installed asyncssh; install
    the WRITE wrapper (once)."""
    names = set(SSHChannel.__init__.__code__.co_names)
    eof_names = set(SSHChannel._process_eof.__code__.co_names)
    handlers = getattr(SFTPServerHandler, "_packet_handlers", None)
    missing = []
    if _RECEIVE_STATE not in names or _RECEIVE_STATE not in eof_names:
        missing.append("the channel's record of the client's end of input")
    if not isinstance(handlers, dict) or not callable(handlers.get(FXP_WRITE)):
        missing.append("the SFTP server's table of request handlers")
    if missing:
        import asyncssh

        raise SftpError(
            f"asyncssh {asyncssh.__version__} changed {' and '.join(missing)}; rosterdrop's "
            "SFTP server needs them (see rosterdrop/sftp/asyncssh_seam.py)"
        )
    accept_padded_writes()


def accept_padded_writes() -> None:
    """Let asyncssh's WRITE handler ignore bytes after the data, as OpenSSH does."""
    handlers: dict[int | bytes, Any] = SFTPServerHandler._packet_handlers
    current: _WriteHandler = handlers[FXP_WRITE]
    if getattr(current, "rosterdrop_unpadded", False):
        return

    async def unpadded(handler: SFTPServerHandler, packet: SSHPacket) -> object:
        return await current(handler, _without_padding(packet))

    unpadded.rosterdrop_unpadded = True  # type: ignore[attr-defined]
    handlers[FXP_WRITE] = unpadded


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


def client_still_sending(chan: SSHServerChannel[Any]) -> bool:
    """True while the client can still send requests on ``chan``."""
    if chan.is_closing():
        return False
    state = getattr(chan, _RECEIVE_STATE, None)
    if state not in _KNOWN_STATES:
        raise SftpError(f"unexpected asyncssh channel receive state {state!r}")
    return bool(state == _RECEIVING)
