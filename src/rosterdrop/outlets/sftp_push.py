"""The push of a tenant's applied directory to an SFTP destination (Apple School Manager).

One call of :meth:`SftpPush.send` is one attempt (the ledger retries, the dispatcher
bounds it with ``timeout_seconds``):

1. the ZIP is built (``export.py``) before any connection is opened;
2. the server's host key must be the pinned one: asyncssh is given an empty
   known-hosts list, so it asks :meth:`_PinnedClient.validate_host_public_key` about
   every key, during the key exchange, before any authentication: a mismatch ends
   the connection with nothing sent, not even the username's password. A server has
   one key per type (ED25519, ECDSA, RSA) and a fingerprint does not say which type
   it is of, so after a mismatch the same attempt connects again without the type it
   was shown, until the pinned key is shown or the server has no other type;
3. the file goes under a name fixed by the run, ``rosterdrop-<tenant>-<run_id>.zip``,
   in ``remote_path``. It is written as ``.<name>.partial`` and renamed into place
   (``posix-rename@openssh.com`` when the server offers it, else a plain rename), so
   the server never sees half a ZIP under the final name. Before writing, a file of
   that name and the export's size already there is taken as delivered by an attempt
   that was cut off between the rename and the ledger (a crash, a restart): it is
   not sent again. (A server that takes files away as they arrive, as Apple's and
   rosterdrop's own do, cannot show it: there such an attempt sends the same
   directory state once more, which the server applies as a no-op.)

Every asyncssh and OS exception is translated to a :class:`DeliveryError` with its
``DELIVERY_*`` code; no message or log line carries the password.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import structlog

from rosterdrop.codes import Code
from rosterdrop.config import Settings, SftpDestination
from rosterdrop.errors import DeliveryError
from rosterdrop.outlets.dispatch import Delivery
from rosterdrop.outlets.export import exported
from rosterdrop.store.engine import Store

log = structlog.get_logger("rosterdrop.outlets")

NO_KNOWN_HOSTS: tuple[list[str], list[str], list[str]] = ([], [], [])
"""An empty trust list: asyncssh then calls ``validate_host_public_key`` for every
key (``known_hosts=None`` would skip host key checks altogether)."""


HOST_KEY_TYPES: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
}
"""Host key types (as ``SSHKey.get_algorithm()`` names them) → the signature algorithms
offered for them, in order of preference. Plain keys only (the pin is of a key, not a
certificate); RSA with SHA-1 (``ssh-rsa``) is not offered."""


def remote_name(tenant_key: str, run_id: str) -> str:
    """The file one run becomes on every destination (Apple takes any ``.zip`` name)."""
    return f"rosterdrop-{tenant_key}-{run_id}.zip"


def partial_name(name: str) -> str:
    """Where the file is written first: a dot-file with a temporary suffix, which
    rosterdrop's own server (and most watchers) ignore until it is renamed."""
    return f".{name}.partial"


def remote_join(folder: str, name: str) -> str:
    folder = folder.rstrip("/")
    return posixpath.join(folder, name) if folder else name


def normal_fingerprint(value: str) -> str:
    """``SHA256:…`` without base64 padding (``ssh-keygen -l`` prints none, some do)."""
    return value.strip().rstrip("=")


class _PinnedClient(asyncssh.SSHClient):
    """Accepts exactly the host key whose SHA256 fingerprint is pinned."""

    def __init__(self, pinned: str) -> None:
        self.pinned = normal_fingerprint(pinned)
        self.offered: dict[str, str] = {}
        """Key type → fingerprint of every other key the server showed."""

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        shown = normal_fingerprint(key.get_fingerprint("sha256"))
        if shown == self.pinned:
            return True
        self.offered[key.get_algorithm()] = shown
        return False

    def untried(self) -> list[str]:
        """The signature algorithms of the key types not shown yet."""
        return [alg for kind, algs in HOST_KEY_TYPES.items() if kind not in self.offered
                for alg in algs]

    def shown(self) -> str:
        return ", ".join(f"{fingerprint} ({kind})" for kind, fingerprint in self.offered.items())


class SftpPush:
    """The ``sftp`` sender of the dispatcher (``default_senders``)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    async def send(self, delivery: Delivery) -> str:
        destination = delivery.outlet
        if not isinstance(destination, SftpDestination):
            raise DeliveryError(f"outlet {delivery.record.outlet!r} is not an SFTP "
                                f"destination")
        name = remote_name(delivery.tenant_key, delivery.run.run_id)
        secret = _password(destination)
        async with exported(self.settings, self.store, delivery.tenant_key,
                            destination.format) as export:
            with _translated(destination, secret) as pinned:
                return await self._push(destination, secret, pinned, export.path,
                                        export.size, name)

    async def _push(self, destination: SftpDestination, secret: str | None,
                    pinned: _PinnedClient, local: Path, size: int, name: str) -> str:
        final = remote_join(destination.remote_path, name)
        partial = remote_join(destination.remote_path, partial_name(name))
        credentials: dict[str, object] = (
            {"password": secret, "client_keys": None} if secret is not None
            else {"client_keys": [destination.key_file], "password": None})
        async with await _connect(destination, pinned, credentials) as conn, \
                conn.start_sftp_client() as sftp:
            found = await _size_of(sftp, final)
            if found == size:
                log.info("delivery_already_there", remote=final, bytes=size)
                return f"{final} ({size} bytes, already there)"
            await sftp.put(str(local), partial)
            try:
                await sftp.posix_rename(partial, final)
            except asyncssh.SFTPOpUnsupported:
                if found is not None:  # a plain rename does not replace (SFTP v3)
                    await sftp.remove(final)
                await sftp.rename(partial, final)
        return f"{final} ({size} bytes)"


async def _connect(destination: SftpDestination, pinned: _PinnedClient,
                   credentials: dict[str, object]) -> asyncssh.SSHClientConnection:
    """A connection to the server showing the pinned host key, tried once per key type
    the server may have (each try ends in the key exchange, before any login)."""
    while True:
        algorithms = pinned.untried()
        try:
            return await asyncssh.connect(
                destination.host, destination.port, username=destination.username,
                known_hosts=NO_KNOWN_HOSTS, server_host_key_algs=algorithms,
                client_factory=lambda: pinned, config=None, agent_path=None,
                x509_trusted_certs=None, host_based_auth=False, gss_host=None,
                **credentials)
        except asyncssh.HostKeyNotVerifiable:
            if not pinned.untried() or pinned.untried() == algorithms:
                raise
        except (asyncssh.DisconnectError, ConnectionError):
            if not pinned.offered:
                raise
            # Asked for key types it does not have, a server fails the key exchange
            # (OpenSSH closes or resets the connection): the keys it showed are all.
            raise asyncssh.HostKeyNotVerifiable("no other host key type") from None


async def _size_of(sftp: asyncssh.SFTPClient, path: str) -> int | None:
    """The size of the file at ``path``; None when there is none, or when the server
    will not say (an upload-only server may refuse a STAT: then the file is sent)."""
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPError:
        return None
    return attrs.size


def _password(destination: SftpDestination) -> str | None:
    if not destination.password_env:
        return None
    value = os.environ.get(destination.password_env, "")
    if not value:
        raise DeliveryError(
            f"the password of {destination.username}@{destination.host} is not set: put "
            f"{destination.password_env}=… in the service's environment",
            code=Code.DELIVERY_REFUSED)
    return value


@contextlib.contextmanager
def _translated(destination: SftpDestination, secret: str | None) -> Iterator[_PinnedClient]:
    """Every foreign exception of one connection as a DeliveryError."""
    where = f"{destination.host}:{destination.port}"
    pinned = _PinnedClient(destination.host_key_fingerprint)

    def fail(message: str, code: Code) -> DeliveryError:
        if secret:
            message = message.replace(secret, "…")
        return DeliveryError(message, code=code)

    try:
        yield pinned
    except asyncssh.HostKeyNotVerifiable as exc:
        if not pinned.offered:  # a certificate or an undecodable key
            raise fail(f"{where} did not show the pinned host key ({exc.reason}); "
                       f"nothing was sent", Code.DELIVERY_HOST_KEY_MISMATCH) from None
        raise fail(f"{where} showed host key {pinned.shown()}, not the pinned "
                   f"{pinned.pinned}; nothing was sent", Code.DELIVERY_HOST_KEY_MISMATCH
                   ) from None
    except asyncssh.PermissionDenied as exc:
        raise fail(f"{where} refused the login of {destination.username!r} "
                   f"({exc.reason})", Code.DELIVERY_REFUSED) from None
    except asyncssh.SFTPPermissionDenied as exc:
        raise fail(f"{where} refused the upload into "
                   f"{destination.remote_path or 'the login folder'!r}: {exc.reason}",
                   Code.DELIVERY_REFUSED) from None
    except asyncssh.SFTPNoSuchFile as exc:
        raise fail(f"{where} has no folder {destination.remote_path!r} ({exc.reason})",
                   Code.DELIVERY_FAILED) from None
    except asyncssh.SFTPError as exc:
        raise fail(f"{where} failed the upload: {exc.reason}", Code.DELIVERY_FAILED
                   ) from None
    except asyncssh.ConnectionLost as exc:
        raise fail(f"{where} closed the connection ({exc.reason})",
                   Code.DELIVERY_UNREACHABLE) from None
    except asyncssh.DisconnectError as exc:
        raise fail(f"{where} ended the SSH session: {exc.reason}", Code.DELIVERY_FAILED
                   ) from None
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        raise fail(f"key_file {destination.key_file!r} is not a usable private key: {exc}",
                   Code.DELIVERY_REFUSED) from None
    except socket.gaierror as exc:
        raise fail(f"cannot resolve {destination.host!r}: {exc.strerror or exc}",
                   Code.DELIVERY_UNREACHABLE) from None
    except FileNotFoundError as exc:
        if destination.key_file and exc.filename == destination.key_file:
            raise fail(f"key_file {destination.key_file!r} does not exist",
                       Code.DELIVERY_REFUSED) from None
        raise fail(f"{where}: {exc.strerror or exc}", Code.DELIVERY_FAILED) from None
    except PermissionError as exc:
        raise fail(f"cannot read {exc.filename or 'a local file'}: {exc.strerror}",
                   Code.DELIVERY_FAILED) from None
    except (TimeoutError, ConnectionError, OSError) as exc:
        raise fail(f"cannot connect to {where}: {exc.strerror or exc or type(exc).__name__}",
                   Code.DELIVERY_UNREACHABLE) from None
