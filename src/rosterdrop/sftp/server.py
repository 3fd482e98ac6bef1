"""``DropboxServer``: the SFTP listener, authentication, bans and limits.

One ``_Connection`` (an asyncssh ``SSHServer``) per TCP connection:

- banned addresses are dropped as soon as they connect, and so is the
  connection over ``max_unauthenticated_per_address`` from one address that
  has not logged in yet;
- passwords are checked with ``verify_password`` in a worker thread (argon2
  is slow on purpose), against a dummy hash for unknown users so timing does
  not reveal which usernames exist; ``admission.PasswordChecks`` runs at most
  ``max_concurrent_password_checks`` at once, one per address, addresses in
  turn, and refuses an address before hashing once its failures reach the
  ban; a correct password seen within ``password_cache_seconds`` is not
  hashed again (``admission.RecentLogins``);
- a connection that ends before logging in leaves one ``connection_dropped``
  warning with its reason: ``banned``, ``too_many_unauthenticated``,
  ``login_timeout``, ``auth_attempts`` (too many wrong passwords or keys),
  ``closed_before_login`` (the client left, or broke the protocol) or
  ``server_stopped``;
- public keys are compared with the account's ``authorized_keys``; RSA keys
  must sign with SHA-2 (asyncssh would otherwise accept ``ssh-rsa``/SHA-1);
- a wrong password counts towards the per-connection ``auth_attempts`` and
  the address's ban; a rejected public key does not (clients offer every key
  they hold), but a connection that ends unauthenticated after rejected keys
  counts as one failed login for the ban;
- each SFTP or SCP session runs ``DropboxFS``, through asyncssh's public
  ``sftp_factory`` and ``allow_scp`` (no shell, no other command), at most
  ``sessions_per_account`` at a time per username: one more is told why on
  its standard error and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import asyncssh
import structlog

from rosterdrop.config import Settings, parse_listen
from rosterdrop.errors import SftpError
from rosterdrop.passwords import hash_password, verify_password
from rosterdrop.paths import StatePaths, open_private, private_folder
from rosterdrop.sftp import asyncssh_seam
from rosterdrop.sftp.accounts import Account, load_accounts
from rosterdrop.sftp.admission import AddressCounts, PasswordChecks, RecentLogins, Refused
from rosterdrop.sftp.bans import BanList
from rosterdrop.sftp.files import OpenUploads
from rosterdrop.sftp.filesystem import DropboxContext, DropboxFS, RefusedSession, SessionInfo
from rosterdrop.sftp.hostkey import load_or_create_host_key
from rosterdrop.telemetry import NO_TELEMETRY, Telemetry

log = structlog.get_logger("rosterdrop.sftp")

# Allow-lists, kept in asyncssh's preference order and limited to what the
# installed asyncssh offers: no SHA-1 (kex, MACs, ssh-rsa signatures), no CBC.
KEX_ALGS = (
    "mlkem768x25519-sha256", "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256", "curve25519-sha256@libssh.org", "curve448-sha512",
    "ecdh-sha2-nistp521", "ecdh-sha2-nistp384", "ecdh-sha2-nistp256",
    "diffie-hellman-group-exchange-sha256", "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
)
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
    "aes128-ctr", "aes192-ctr", "aes256-ctr",
)
MAC_ALGS = (
    "umac-128-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
    "umac-128@openssh.com", "hmac-sha2-256", "hmac-sha2-512",
)
SIGNATURE_ALGS = (
    "ssh-ed25519", "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-256", "rsa-sha2-512",
)
WEAK_SIGNATURES = frozenset({b"ssh-rsa", b"ssh-dss"})

WINDOW_BYTES = 8 * 1024 * 1024
MAX_PACKET_BYTES = 256 * 1024
KEEPALIVE_SECONDS = 30
KEEPALIVE_COUNT = 3
MAX_KEY_OFFERS = 20
CLOSE_TIMEOUT_SECONDS = 10
LOGIN_TIMEOUT_BACKSTOP_SECONDS = 5
"""``_Connection`` enforces ``login_timeout_seconds`` itself (so it can log why it
dropped the connection); asyncssh's own login timer, this much later, is a backstop."""
RECENT_LOGINS = 256


@dataclass
class _Shared:
    """State every connection of one ``DropboxServer`` uses."""

    settings: Settings
    context: DropboxContext
    accounts: dict[str, Account]
    bans: BanList
    passwords: PasswordChecks
    unauthenticated: AddressCounts
    telemetry: Telemetry = NO_TELEMETRY
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    sessions: Counter[str] = field(default_factory=Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: bool = False

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class DropboxServer:
    """The SFTP drop-box: one listener, sessions confined to their tenant."""

    def __init__(
        self,
        settings: Settings,
        paths: StatePaths,
        on_upload: Callable[[str, Path], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        passwords: Mapping[str, str] | None = None,
        linger_seconds: float = 5.0,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        """``passwords`` (username → hash) overrides configured password hashes;
        ``telemetry`` is told of logins, bans and upload outcomes."""
        self._settings = settings
        self._paths = paths
        self._clock = clock
        self._passwords = dict(passwords or {})
        self._on_upload = on_upload
        self._linger_seconds = linger_seconds
        self._telemetry = telemetry
        self._uploading = OpenUploads()
        self._shared: _Shared | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None

    async def start(self) -> None:
        """Bind ``sftp.listen`` (port 0 picks a free port); raise ``SftpError``."""
        if self._acceptor is not None:
            raise SftpError("the SFTP server is already running")
        asyncssh_seam.check()
        settings = self._settings.sftp
        host, port = parse_listen(settings.listen)
        key = load_or_create_host_key(self._paths.host_keys)
        accounts = load_accounts(self._settings, self._passwords)
        context = DropboxContext(
            paths=self._paths,
            instance=_instance_id(self._paths),
            on_upload=self._on_upload,
            clock=self._clock,
            max_upload_bytes=settings.max_upload_bytes,
            linger_seconds=self._linger_seconds,
            uploading=self._uploading,
            telemetry=self._telemetry,
        )
        self._create_folders(context)
        loop = asyncio.get_running_loop()
        dummy_hash = await loop.run_in_executor(None, _dummy_hash)
        bans = BanList(
            settings.ban.failures,
            settings.ban.window_seconds,
            settings.ban.duration_seconds,
            self._clock,
        )
        shared = _Shared(
            settings=self._settings,
            context=context,
            accounts=accounts,
            bans=bans,
            passwords=PasswordChecks(
                settings.max_concurrent_password_checks,
                verify=_verify,
                dummy_hash=dummy_hash,
                bans=bans,
                cache=RecentLogins(settings.password_cache_seconds, self._clock,
                                   size=RECENT_LOGINS),
            ),
            unauthenticated=AddressCounts(settings.max_unauthenticated_per_address),
            telemetry=self._telemetry,
        )
        for account in accounts.values():
            if not account.has_credentials:
                log.warning("sftp_account_disabled", username=account.username,
                            tenant=account.tenant, reason="no password hash or key")
        defaults = asyncssh.SSHServerConnectionOptions(server_host_keys=[key])
        try:
            self._acceptor = await asyncssh.listen(
                host or None,
                port,
                server_factory=lambda: _Connection(shared),
                sftp_factory=functools.partial(_open_session, shared),
                allow_scp=True,
                server_host_keys=[key],
                server_version="rosterdrop",
                login_timeout=settings.login_timeout_seconds + LOGIN_TIMEOUT_BACKSTOP_SECONDS,
                keepalive_interval=KEEPALIVE_SECONDS,
                keepalive_count_max=KEEPALIVE_COUNT,
                kex_algs=_allowed(KEX_ALGS, defaults.kex_algs),
                encryption_algs=_allowed(ENCRYPTION_ALGS, defaults.encryption_algs),
                mac_algs=_allowed(MAC_ALGS, defaults.mac_algs),
                signature_algs=_allowed(SIGNATURE_ALGS, defaults.signature_algs),
                compression_algs=["none"],
                window=WINDOW_BYTES,
                max_pktsize=MAX_PACKET_BYTES,
                gss_host=None,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_pty=False,
                line_editor=False,
                kbdint_auth=False,
                host_based_auth=False,
            )
        except OSError as exc:
            raise SftpError(
                f"cannot listen on {settings.listen}: {exc.strerror or exc}"
            ) from exc
        self._shared = shared
        log.info(
            "sftp_listening",
            listen=f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}",
            fingerprint=key.get_fingerprint(),
            accounts=len(accounts),
        )

    def _create_folders(self, context: DropboxContext) -> None:
        for tenant in self._settings.tenants:
            incoming = context.incoming(tenant)
            for folder in (self._paths.dropbox(tenant), self._paths.reports(tenant), incoming):
                try:
                    private_folder(folder)
                except OSError as exc:
                    raise SftpError(
                        f"cannot create {folder}: {exc.strerror or exc}"
                    ) from exc
            _remove_leftovers(tenant, incoming, self._telemetry)

    @property
    def port(self) -> int:
        if self._acceptor is None:
            raise SftpError("the SFTP server is not running")
        return int(self._acceptor.get_port())

    def session_count(self) -> int:
        """SFTP sessions open now, over all accounts."""
        shared = self._shared
        return sum(shared.sessions.values()) if shared is not None else 0

    def is_uploading(self, path: Path) -> bool:
        """True while an SFTP session has ``path`` open for writing."""
        return path in self._uploading

    async def close(self) -> None:
        """Stop listening, end every session (aborting open uploads), reap tasks."""
        acceptor, self._acceptor = self._acceptor, None
        shared, self._shared = self._shared, None
        if acceptor is None or shared is None:
            return
        acceptor.close()
        await acceptor.wait_closed()
        shared.stopping = True
        connections = list(shared.connections)
        for conn in connections:
            conn.close()
        waits = [asyncio.ensure_future(conn.wait_closed()) for conn in connections]
        pending: set[asyncio.Future[Any]] = {
            *waits, *shared.tasks, *shared.passwords.in_flight()
        }
        if pending:
            _, pending = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_SECONDS)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("sftp_stopped")


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, checked for unknown users (same cost)."""
    return hash_password(secrets.token_hex(16))


def _verify(hash: str, password: str) -> bool:
    """``verify_password``, looked up when called (tests count the checks)."""
    return verify_password(hash, password)


def _allowed(wanted: Sequence[str], offered: Sequence[bytes]) -> list[str]:
    names = {alg.decode("ascii") for alg in offered}
    return [alg for alg in wanted if alg in names]


class _Connection(asyncssh.SSHServer):
    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._sftp = shared.settings.sftp
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "unknown"
        self._log = log
        self._username = ""
        self._method = ""
        self._authenticated = False
        self._banned = False
        self._counted = False
        self._dropped = ""
        self._login_timer: asyncio.TimerHandle | None = None
        self._password_failures = 0
        self._key_rejections = 0

    # -- connection -----------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "unknown"
        self._log = log.bind(peer=self._peer)
        self._shared.connections.add(conn)
        if self._shared.bans.is_banned(self._peer):
            self._banned = True
            self._dropped = "banned"
            self._log.warning(
                "login_banned", seconds_left=round(self._shared.bans.banned_for(self._peer))
            )
            self._shared.telemetry.login("refused_banned", "none")
            conn.abort()
            return
        if not self._shared.unauthenticated.enter(self._peer):
            self._dropped = "too_many_unauthenticated"
            conn.abort()
            return
        self._counted = True
        self._login_timer = asyncio.get_running_loop().call_later(
            self._sftp.login_timeout_seconds, self._login_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._shared.connections.discard(self._conn)
        self._stop_counting()
        if self._authenticated:
            return
        if not self._banned and self._key_rejections and not self._password_failures:
            self._ban_failure()
        reason = self._dropped or (
            "server_stopped" if self._shared.stopping else "closed_before_login"
        )
        details: dict[str, object] = {}
        if self._username:
            details["username"] = self._username
        if reason == "too_many_unauthenticated":
            details["limit"] = self._shared.unauthenticated.limit
        elif reason == "login_timeout":
            details["seconds"] = self._sftp.login_timeout_seconds
        elif reason == "closed_before_login" and exc is not None:
            details["error"] = str(exc)
        self._log.warning("connection_dropped", reason=reason, **details)

    def _login_timed_out(self) -> None:
        self._login_timer = None
        if not self._authenticated and self._conn is not None:
            self._dropped = self._dropped or "login_timeout"
            self._conn.abort()

    def _stop_counting(self) -> None:
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None
        if self._counted:
            self._counted = False
            self._shared.unauthenticated.leave(self._peer)

    # -- authentication -------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        self._username = username
        self._refuse_if_banned()
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        self._refuse_if_banned()
        account = self._shared.accounts.get(username)
        stored = account.password_hash if account else ""
        try:
            ok = await self._shared.passwords.check(
                self._peer, username, password, stored,
                functools.partial(self._password_checked, username),
            )
        except Refused:
            self._refuse_banned()
        if ok:
            self._method = "password"
            return True
        self._refuse_if_banned()  # this failure (or one in parallel) started a ban
        if self._password_failures >= self._sftp.auth_attempts:
            self._dropped = "auth_attempts"
            raise asyncssh.PermissionDenied("too many authentication failures")
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self._refuse_if_banned()
        account = self._shared.accounts.get(username)
        if account is not None and bytes(key.public_data) in account.keys:
            # asyncssh verifies any signature the key type supports; refuse SHA-1.
            allowed = set(key.all_sig_algorithms) - WEAK_SIGNATURES
            key.all_sig_algorithms = allowed
            self._method = "publickey"
            return True
        self._key_rejections += 1
        self._log.warning(
            "login_failed", username=username, method="publickey",
            key=key.get_fingerprint(),
        )
        self._shared.telemetry.login("failed", "publickey")
        if self._key_rejections > MAX_KEY_OFFERS:
            self._dropped = "auth_attempts"
            raise asyncssh.PermissionDenied("too many keys offered")
        return False

    def auth_completed(self) -> None:
        assert self._conn is not None
        username = str(self._conn.get_extra_info("username"))
        self._authenticated = True
        self._stop_counting()
        self._log = self._log.bind(username=username, tenant=self._shared.accounts[username].tenant)
        self._log.info("login_ok", method=self._method)
        self._shared.telemetry.login("ok", self._method)

    def _refuse_if_banned(self) -> None:
        if self._banned or self._shared.bans.is_banned(self._peer):
            self._refuse_banned()

    def _refuse_banned(self) -> NoReturn:
        self._banned = True
        self._dropped = "banned"
        raise asyncssh.PermissionDenied("too many failed logins from your address")

    def _password_checked(self, username: str, ok: bool) -> None:
        """A hash has been checked (the client may have gone or moved on since)."""
        if ok:
            return
        self._password_failures += 1
        self._log.warning(
            "login_failed", username=username, method="password",
            attempt=self._password_failures,
        )
        self._shared.telemetry.login("failed", "password")
        self._ban_failure()

    def _ban_failure(self) -> None:
        if self._shared.bans.record_failure(self._peer):
            self._banned = True
            self._log.warning(
                "login_banned",
                failures=self._sftp.ban.failures,
                window_seconds=self._sftp.ban.window_seconds,
                duration_seconds=self._sftp.ban.duration_seconds,
            )
            self._shared.telemetry.address_banned()

    def peer(self) -> str:
        return self._peer


def _open_session(shared: _Shared, chan: asyncssh.SSHServerChannel[bytes]) -> DropboxFS:
    """asyncssh's ``sftp_factory``: one ``DropboxFS`` per SFTP or SCP session."""
    conn = chan.get_connection()
    owner = conn.get_owner()
    assert isinstance(owner, _Connection)
    username = str(conn.get_extra_info("username"))
    account = shared.accounts[username]
    limit = shared.settings.sftp.sessions_per_account
    sessions = shared.sessions
    info = SessionInfo(tenant=account.tenant, username=username, peer=owner.peer())
    session_log = log.bind(tenant=account.tenant, username=username, peer=info.peer)
    if sessions[username] >= limit:
        message = (f"too many sessions for {username}: at most {limit} at a time, and "
                   f"{sessions[username]} are open; try again when one has finished "
                   "(an administrator can raise sftp.sessions_per_account)")
        session_log.warning("session_refused", reason="sessions_per_account", limit=limit)
        return RefusedSession(chan, shared.context, info, message)
    sessions[username] += 1

    def ended() -> None:
        sessions[username] -= 1
        if sessions[username] <= 0:
            del sessions[username]
        session_log.debug("session_closed", sessions=sessions[username])

    return DropboxFS(chan, shared.context, info, on_exit=ended)


def _instance_id(paths: StatePaths) -> str:
    """A name for this state folder's process, kept across restarts."""
    file = paths.instance_file
    try:
        return file.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise SftpError(f"cannot read {file}: {exc.strerror or exc}") from exc
    instance = secrets.token_hex(6)
    try:
        private_folder(file.parent)
        with os.fdopen(open_private(file), "w") as out:
            out.write(instance + "\n")
    except OSError as exc:
        raise SftpError(f"cannot write {file}: {exc.strerror or exc}") from exc
    return instance


def _remove_leftovers(tenant: str, incoming: Path, telemetry: Telemetry) -> None:
    """Uploads this process had in progress when it last stopped never completed."""
    for entry in incoming.iterdir():
        try:
            size = entry.lstat().st_size
            entry.unlink()
        except OSError as exc:
            log.error("upload_leftover_not_removed", tenant=tenant, file=entry.name,
                      error=exc.strerror or str(exc))
            continue
        log.warning("upload_aborted", tenant=tenant, file=entry.name, bytes=size,
                    reason="the server stopped during the upload")
        telemetry.upload_finished("aborted")
