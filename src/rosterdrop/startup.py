"""What ``rosterdrop serve`` checks before it starts, and which serve runs where.

``start_checks(settings, create=...)`` is the one list: ``serve`` runs it
with ``create=True`` (making the state folders) and refuses to start on any
failure (``refuse_failures``); ``rosterdrop doctor`` runs the same list with
``create=False`` and shows every row. The checks, in order:

- state and shared folders: writable (``create``: made 0700), else creatable;
- store: reachable, schema not newer than this rosterdrop's (read only);
- ``sftp.listen``, ``metrics.listen`` and ``web.listen``: free, bound the way each listener
  binds; or else served by *this* state folder's running serve (doctor: fine;
  serve: already running), by another rosterdrop, or by another program;
- the SFTP host key: a valid key if it exists (never created here);
- every OneRoster API tenant's client secret: set and readable;
- every alert's URL and signing secret, every SFTP destination's credential: set
  (a warning, not a failure: deliveries are retried and never hold up a run).

A running serve holds ``state_dir/serve.pid`` locked (``ServeLock``) and keeps
in it its pid and the addresses it actually listens on; ``running_serve``
reads it back, so a port held by this instance is told apart from one held by
another rosterdrop (a different state folder) or by something else.

Light by design: asyncssh is loaded only once a host key exists, httpx only
with an API tenant, SQLAlchemy only for a PostgreSQL store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rosterdrop.config import Settings, parse_listen
from rosterdrop.errors import (
    ConfigError,
    InputError,
    RosterdropError,
    SftpError,
    StoreError,
    UsageError,
)
from rosterdrop.paths import StatePaths, open_private, private_folder

OK, WARN, FAIL = "ok", "warn", "FAIL"
CONNECT_TIMEOUT_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 3.0
"""How long a listener that holds a port may take to say what it is."""
SSH_BANNER = b"SSH-2.0-rosterdrop"
HOST_KEY_NAME = "ssh_host_ed25519_key"
"""``rosterdrop.sftp.hostkey.HOST_KEY_NAME`` (that module loads asyncssh; a test keeps
the two equal)."""
SERVE_RECORD = "serve.pid"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class HostKeyCheck(Check):
    """The host-key row also carries the key itself (``None`` until it exists)."""

    host_key_fingerprint: str | None = None
    """``SHA256:…``, as OpenSSH prints it at the unknown-host prompt."""
    key_type: str | None = None
    """The SSH algorithm name, e.g. ``ssh-ed25519``."""


# --- which serve runs on a state folder ----------------------------------------------


@dataclass(frozen=True)
class ServeRecord:
    """What a running serve says of itself in ``state_dir/serve.pid``."""

    pid: int
    state_dir: str
    started_at: str
    sftp: str = ""
    """``HOST:PORT`` it listens on for SFTP (the real port when configured as 0)."""
    metrics: str = ""
    web: str = ""
    """``HOST:PORT`` of the console (``web.listen``), when it runs."""


class ServeLock:
    """Held by ``rosterdrop serve`` from start to stop: one serve per state folder."""

    def __init__(self, paths: StatePaths) -> None:
        self.path = paths.root / SERVE_RECORD
        self._fd: int | None = None
        self._record: ServeRecord | None = None

    def acquire(self) -> None:
        """Lock the record (UsageError naming the pid when a serve already holds it)
        and write this process into it."""
        try:
            private_folder(self.path.parent)
        except OSError:
            return  # no state folder: the start checks say why, and the start stops there
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise InputError(f"state folder {self.path.parent}: cannot write {self.path.name}: "
                             f"{exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise InputError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
            other = _read_record(self.path)
            pid = f" (pid {other.pid})" if other else ""
            raise UsageError(f"rosterdrop serve already runs on state folder "
                             f"{self.path.parent}{pid}; stop it first, or give this one "
                             f"a state_dir of its own") from exc
        self._fd = fd
        self._write(ServeRecord(os.getpid(), str(self.path.parent.absolute()),
                                datetime.now(UTC).isoformat(timespec="seconds")))

    def publish(self, *, sftp: str, metrics: str, web: str = "") -> None:
        """Add the addresses the listeners actually bound."""
        if self._record is not None:
            self._write(ServeRecord(self._record.pid, self._record.state_dir,
                                    self._record.started_at, sftp, metrics, web))

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a stopped serve leaves no address behind
        os.close(fd)  # the lock goes with the descriptor

    def _write(self, record: ServeRecord) -> None:
        assert self._fd is not None
        self._record = record
        data = (json.dumps(asdict(record)) + "\n").encode()
        with contextlib.suppress(OSError):  # only doctor reads it: never a reason to stop
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)


def running_serve(paths: StatePaths) -> ServeRecord | None:
    """The serve running on this state folder now, or None."""
    path = paths.root / SERVE_RECORD
    record = _read_record(path)
    if record is None:
        return None
    held = _flock_held(path)
    if held is None:  # no /proc/locks: the pid must at least be alive
        try:
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        return record
    return record if held else None


def _read_record(path: Path) -> ServeRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "null")
        return ServeRecord(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def _flock_held(path: Path) -> bool | None:
    """Whether some process holds a flock on ``path`` (Linux ``/proc/locks``); None
    when that cannot be told. Looked up, not tried: trying would take the lock from
    a serve starting at that moment."""
    try:
        stat = path.stat()
        locks = Path("/proc/locks").read_text()
    except OSError:
        return None
    inode = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    return any(line.split()[1:2] == ["FLOCK"] and inode in line.split()
               for line in locks.splitlines())


# --- the checks ---------------------------------------------------------------------


def start_checks(settings: Settings, *, create: bool) -> list[Check]:
    """Every check serve makes before it starts (see the module docstring)."""
    paths = StatePaths.of(settings)
    running = running_serve(paths)
    checks = [check_folder("state folder", paths.root, create=create)]
    if settings.shared_dir is not None:
        checks.append(check_folder("shared folder", paths.shared, create=create))
    checks.append(check_store(settings))
    checks.append(check_listen("sftp.listen", settings.sftp.listen, running, sftp=True,
                               starting=create))
    if settings.metrics.listen:
        checks.append(check_listen("metrics.listen", settings.metrics.listen, running,
                                   sftp=False, starting=create))
    if settings.web.listen:
        checks.append(check_listen("web.listen", settings.web.listen, running,
                                   sftp=False, starting=create))
    checks.append(check_host_key(settings))
    checks.extend(check_secrets(settings))
    checks.extend(check_outlet_secrets(settings))
    if settings.web.listen and settings.web.oidc is not None:
        checks.append(check_oidc_secret(settings))
    return checks


_ERRORS: dict[str, type[RosterdropError]] = {
    "state folder": InputError, "shared folder": InputError, "store": StoreError,
    "sftp.listen": SftpError, "metrics.listen": ConfigError, "web.listen": ConfigError,
    "host key": SftpError, "web.oidc": ConfigError,
}


def refuse_failures(checks: list[Check]) -> None:
    """Raise one error (one line) naming every failed check; nothing when none failed."""
    failed = [c for c in checks if c.status == FAIL]
    if not failed:
        return
    kind = _ERRORS.get(failed[0].name, ConfigError)
    raise kind("; ".join(f"{c.name}: {c.detail}" + (f" — {c.fix}" if c.fix else "")
                         for c in failed))


def check_folder(name: str, folder: Path, *, create: bool = False) -> Check:
    """Writable if it exists, creatable if not; made (0700) only with ``create``."""
    if create:
        with contextlib.suppress(OSError):  # the write test below says why not
            private_folder(folder)
    if folder.exists():
        if not folder.is_dir():
            return Check(name, FAIL, f"{folder} is not a folder", "point the setting at a folder")
        probe = folder / f".write-test-{os.getpid()}"
        try:
            os.close(open_private(probe))
            probe.unlink()
        except OSError as exc:
            return Check(name, FAIL, f"{folder} is not writable: {exc.strerror or exc}",
                         f"chown it to the user that runs rosterdrop "
                         f"(e.g. chown -R rosterdrop: {folder})")
        return Check(name, OK, f"{folder} writable")
    parent = existing_ancestor(folder)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Check(name, FAIL, f"{folder} does not exist and cannot be created "
                     f"({parent} is not a writable folder)",
                     f"create it: mkdir -p {folder} && chown rosterdrop: {folder}")
    return Check(name, OK, f"{folder} will be created at first start")


def check_store(settings: Settings) -> Check:
    from rosterdrop.store import SCHEMA_VERSION
    from rosterdrop.store.probe import Reach, probe_store

    probe = probe_store(settings.database_url, timeout_seconds=CONNECT_TIMEOUT_SECONDS)
    if probe.reach is Reach.INVALID:
        return Check("store", FAIL, f"invalid store.url {probe.shown!r}: {probe.reason}",
                     "use postgresql+psycopg://USER@HOST/DB, or leave it empty for SQLite")
    if probe.reach is Reach.ABSENT:
        return Check("store", OK, f"{probe.shown} is created at first start")
    if probe.reach is Reach.EMPTY:
        return Check("store", OK, f"{probe.shown}: empty, the schema is created at first "
                     f"start")
    if probe.reach is Reach.UNREACHABLE:
        if probe.shown.startswith("SQLite"):
            return Check("store", FAIL, f"{probe.shown} unreadable: {probe.reason}",
                         "restore the database from a backup (see README, Backups)")
        return Check("store", FAIL, f"{probe.shown} unreachable: {probe.reason}",
                     "check that PostgreSQL runs, the host and port, the user's password "
                     "(in the URL) and pg_hba.conf")
    version = probe.version
    if version is None or int(version) == SCHEMA_VERSION:
        return Check("store", OK, f"{probe.shown}: schema version {SCHEMA_VERSION} (current)")
    if int(version) < SCHEMA_VERSION:
        return Check("store", WARN, f"{probe.shown}: schema version {version}, upgraded to "
                     f"{SCHEMA_VERSION} at the next start", "back up the database first "
                     "(see README, Upgrades)")
    return Check("store", FAIL, f"{probe.shown}: schema version {version} is newer than "
                 f"this rosterdrop ({SCHEMA_VERSION})", "install the rosterdrop version that "
                 "wrote it (or newer)")


def check_listen(name: str, listen: str, running: ServeRecord | None, *, sftp: bool,
                 starting: bool = False) -> Check:
    """Free (bound as the listener binds: every address the SFTP host resolves to, one
    for metrics), or else who holds it: this state folder's serve (fine, unless this
    is a serve ``starting``), another rosterdrop, another program."""
    host, port = parse_listen(listen)
    if port == 0:
        return Check(name, OK, f"{listen}: a free port is chosen at start")
    refused = _bind_refusal(host, port, every_address=sftp)
    if refused is None:
        return Check(name, OK, f"{listen} is free")
    if refused.errno == errno.EACCES and port < 1024:
        # The systemd unit grants the capability to the service, not to doctor.
        return Check(name, WARN, f"{listen}: this user may not bind ports below 1024",
                     "rosterdrop serve needs CAP_NET_BIND_SERVICE: the systemd unit in "
                     "deploy/ grants it (AmbientCapabilities); elsewhere use a port "
                     "of 1024 or above")
    if refused.errno != errno.EADDRINUSE:
        return Check(name, FAIL, f"{listen}: {refused.strerror or refused}",
                     "use an address of this machine (0.0.0.0 for all)")
    held = str(getattr(running, name.split(".")[0], "")) if running else ""  # sftp, metrics, web
    if running is not None and held and _same_address(held, host, port):
        detail = (f"{listen}: served by this state folder's rosterdrop (pid {running.pid}, "
                  f"{running.state_dir})")
        if starting:
            return Check(name, FAIL, detail, "it already runs: stop it first")
        return Check(name, OK, detail)
    speaks = _speaks_ssh_rosterdrop if sftp else _speaks_http_rosterdrop
    if speaks(host, port):
        ours = (f"this state folder's serve, pid {running.pid}, listens on {held}"
                if running and held else "no serve runs on this state folder")
        return Check(name, FAIL, f"{listen} is served by another rosterdrop, not the one "
                     f"of this state folder ({ours})",
                     f"stop that rosterdrop, or give this one another port ({name}); two "
                     f"state folders never share a port")
    return Check(name, FAIL, f"{listen} is used by another program"
                 + (" (an SSH server?)" if sftp else ""),
                 f"stop it, or choose another port ({name})")


def check_host_key(settings: Settings) -> HostKeyCheck:
    """The SFTP host key's fingerprint; a missing key is not created here."""
    path = StatePaths.of(settings).host_keys / HOST_KEY_NAME
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return HostKeyCheck("host key", OK, f"no host key yet: the first rosterdrop serve "
                            f"creates {path}; doctor then shows its fingerprint")
    except OSError as exc:
        return HostKeyCheck("host key", FAIL, f"cannot read {path}: {exc.strerror or exc}",
                            f"run doctor as the user that runs rosterdrop, or chown it "
                            f"(e.g. chown rosterdrop: {path})")
    import asyncssh

    try:
        key = asyncssh.import_private_key(data)
    except asyncssh.KeyImportError as exc:
        return HostKeyCheck("host key", FAIL, f"{path} is not a valid private key: {exc}",
                            "restore it from a backup (clients pinned its fingerprint), or "
                            "move it away to get a new one at the next start and tell every "
                            "tenant the new fingerprint")
    fingerprint, key_type = key.get_fingerprint(), key.get_algorithm()
    return HostKeyCheck("host key", OK, f"{key_type} {fingerprint} ({path})",
                        host_key_fingerprint=fingerprint, key_type=key_type)


def check_secrets(settings: Settings) -> list[Check]:
    """Each OneRoster API tenant's client secret, read as the pull scheduler reads it."""
    sources = {key: t.source for key, t in settings.tenants.items() if t.source is not None}
    if not sources:
        return []
    from rosterdrop.sources.oneroster.auth import read_secret

    checks = []
    for key, source in sources.items():
        name = f"tenants.{key}.source"
        where = (f"${source.client_secret_env}" if source.client_secret_env
                 else source.client_secret_file)
        try:
            read_secret(source, key)
        except ConfigError as exc:
            fix = (f"put {source.client_secret_env}=… in the service's environment "
                   f"(/etc/rosterdrop/env)" if source.client_secret_env else
                   f"write the secret as the first line of {source.client_secret_file}, "
                   f"readable by the user that runs rosterdrop")
            checks.append(Check(name, FAIL, str(exc).removeprefix(f"{name}."),
                                f"{fix}; or leave out [{name}] for an upload-only tenant"))
            continue
        checks.append(Check(name, OK, f"client secret set ({where}); pulls "
                            f"{source.frequency} from {source.base_url}"))
    return checks


def check_outlet_secrets(settings: Settings) -> list[Check]:
    """Each alert's URL (and signing secret) variable and each SFTP destination's
    credential, read as an attempt reads them. A warning, not a failure: a delivery
    that cannot be made is retried and never holds up a run."""
    checks = []
    for key, tenant in settings.tenants.items():
        for alert in tenant.alerts:
            from rosterdrop.outlets.alerts import alert_key, alert_url

            name = f"tenants.{key}.alerts.{alert.key}"
            try:
                alert_url(alert, os.environ)
                if alert.type == "webhook":
                    alert_key(alert, os.environ)
            except ValueError as exc:
                checks.append(Check(name, WARN, f"{exc}; its alerts fail until that is fixed",
                                    "put it in the service's environment "
                                    "(/etc/rosterdrop/env), docs/outlets.md"))
                continue
            signed = f", signed (${alert.secret_env})" if alert.secret_env else ""
            checks.append(Check(name, OK, f"{alert.type} URL set (${alert.url_env}){signed}; "
                                f"on {', '.join(alert.on)}"))
        for destination in tenant.destinations:
            name = f"tenants.{key}.destinations.{destination.key}"
            problem = ""
            if destination.password_env and not os.environ.get(destination.password_env):
                problem = (f"environment variable {destination.password_env} "
                           f"(password_env) is not set or empty")
            elif destination.key_file and not os.access(destination.key_file, os.R_OK):
                problem = f"key_file {destination.key_file} is not readable"
            checks.append(Check(name, WARN, f"{problem}; its pushes fail until fixed",
                                "set the variable in the service's environment, or make the "
                                "key file readable by the user that runs rosterdrop")
                          if problem else
                          Check(name, OK, f"credential set; pushes to {destination.host}"))
    return checks


def check_oidc_secret(settings: Settings) -> Check:
    """The console's single sign-on client secret, from its environment variable."""
    oidc = settings.web.oidc
    assert oidc is not None
    if not oidc.client_secret:
        return Check("web.oidc", FAIL, f"client_secret_env: ${oidc.client_secret_env} is not "
                     f"set or empty", f"put {oidc.client_secret_env}=… in the service's "
                     f"environment (/etc/rosterdrop/env); or leave out [web.oidc]")
    return Check("web.oidc", OK, f"client secret set (${oidc.client_secret_env}); sign-in "
                 f"with {oidc.display_name} ({oidc.issuer})")


# --- helpers ------------------------------------------------------------------------


def _bind_refusal(host: str, port: int, *, every_address: bool) -> OSError | None:
    """Why a listener could not bind ``host:port`` now (None: it could). The SFTP
    server binds every address the host resolves to (all of them for ``""``), as
    asyncio does; the metrics listener one socket of the host's family."""
    if every_address:
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            return OSError(errno.EADDRNOTAVAIL, f"cannot resolve {host!r}: {exc.strerror}")
        addresses: list[tuple[socket.AddressFamily, Any]] = [(i[0], i[4]) for i in infos]
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        addresses = [(family, (host, port))]
    for family, address in addresses:
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this machine: asyncio skips it too
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and every_address:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                return exc
    return None


def _same_address(held: str, host: str, port: int) -> bool:
    held_host, held_port = parse_listen(held)
    wildcard = {"", "0.0.0.0", "::"}
    return held_port == port and (held_host == host or held_host in wildcard
                                  or host in wildcard)


def _speaks_ssh_rosterdrop(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connectable(host), port),
                                      timeout=PROBE_TIMEOUT_SECONDS) as conn:
            return conn.recv(256).startswith(SSH_BANNER)
    except OSError:
        return False


def _speaks_http_rosterdrop(host: str, port: int) -> bool:
    address = _connectable(host)
    if ":" in address:
        address = f"[{address}]"
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/healthz",
                                    timeout=PROBE_TIMEOUT_SECONDS) as reply:
            return bool(reply.headers.get("Server", "").startswith("rosterdrop"))
    except urllib.error.HTTPError as exc:  # /healthz of a wedged rosterdrop: 503
        return bool(exc.headers.get("Server", "").startswith("rosterdrop"))
    except (OSError, http.client.HTTPException):
        return False


def _connectable(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def existing_ancestor(folder: Path) -> Path | None:
    for candidate in (folder.absolute(), *folder.absolute().parents):
        if candidate.exists():
            return candidate
    return None
