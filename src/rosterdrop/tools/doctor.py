"""``rosterdrop doctor``: is this machine ready to run ``rosterdrop serve``?

Each check looks without changing anything (no folder created, no schema
written, no mail sent) and says what to fix:

- config: the file loads (unknown keys and wrong types name their path);
- state and shared folders: writable (or creatable), enough free space;
- store: reachable, schema current (or created/upgraded at the next start);
- SFTP and metrics listen addresses: bindable, or already served by a
  running rosterdrop;
- SFTP host key: its type and SHA256 fingerprint (what clients show at their
  first connection), read only; a missing key is left for ``serve`` to make;
- SMTP: connect, EHLO, STARTTLS (certificate verified) and, with a username,
  AUTH; then QUIT. Without an SMTP host: the outbox folder.

``run_doctor`` prints a table and returns the exit code: 1 when any check
failed, else 0 (warnings allowed).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import shutil
import smtplib
import socket
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from rosterdrop.config import Settings, find_config, load_settings, parse_listen
from rosterdrop.errors import ConfigError
from rosterdrop.paths import StatePaths
from rosterdrop.store import SCHEMA_VERSION

# SQLAlchemy (the schema's tables) is loaded for a PostgreSQL store only, asyncssh
# only when there is a host key to read: on the embedded defaults doctor starts in
# about the time of the config alone.

HOST_KEY_NAME = "ssh_host_ed25519_key"
"""``rosterdrop.sftp.hostkey.HOST_KEY_NAME`` (that module loads asyncssh; a test keeps
the two equal)."""
_SQLITE_FILE = "sqlite:///"

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_FREE_BYTES = 1024**3
"""Below this much free space in the state or shared folder, doctor fails."""
CONNECT_TIMEOUT_SECONDS = 10.0
SSH_BANNER = b"SSH-2.0-rosterdrop"


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


# --- the checks -----------------------------------------------------------------------


def check_config(explicit: str | None) -> tuple[Check, Settings | None]:
    path = find_config(explicit)
    try:
        settings = load_settings(explicit)
    except ConfigError as exc:
        return Check("config", FAIL, str(exc), "correct the key named above; every key is "
                     "listed in docs/configuration.md"), None
    accounts = [a for t in settings.tenants.values() for a in t.accounts]
    where = str(path) if path else "no config file: built-in defaults"
    detail = f"{where}; {len(settings.tenants)} tenant(s), {len(accounts)} SFTP account(s)"
    open_accounts = [a.username for a in accounts if not (a.password_hash or a.authorized_keys)]
    if open_accounts:
        return Check("config", WARN, detail + f"; no credentials for {', '.join(open_accounts)}",
                     "a random password is generated in the state folder at start; set "
                     "password_hash (rosterdrop hash-password) or authorized_keys"), settings
    return Check("config", OK, detail), settings


def check_folder(name: str, folder: Path) -> Check:
    """Writable if it exists, creatable if not; nothing is created."""
    if folder.exists():
        if not folder.is_dir():
            return Check(name, FAIL, f"{folder} is not a folder", "point the setting at a folder")
        probe = folder / f".doctor-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return Check(name, FAIL, f"{folder} is not writable: {exc.strerror or exc}",
                         f"chown it to the user that runs rosterdrop "
                         f"(e.g. chown -R rosterdrop: {folder})")
        return Check(name, OK, f"{folder} writable")
    parent = _existing_ancestor(folder)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return Check(name, FAIL, f"{folder} does not exist and cannot be created "
                     f"({parent} is not a writable folder)",
                     f"create it: mkdir -p {folder} && chown rosterdrop: {folder}")
    return Check(name, OK, f"{folder} will be created at first start")


def check_free_space(folders: list[Path], min_free: int = MIN_FREE_BYTES,
                     upload_bytes: int = 0) -> Check:
    worst: tuple[int, Path] | None = None
    for folder in folders:
        existing = _existing_ancestor(folder)
        if existing is None:
            continue
        free = shutil.disk_usage(existing).free
        if worst is None or free < worst[0]:
            worst = (free, folder)
    if worst is None:
        return Check("free space", WARN, "could not measure", "")
    free, folder = worst
    detail = f"{_gib(free)} free for {folder}"
    if free < min_free:
        return Check("free space", FAIL, detail, f"free at least {_gib(min_free)}: uploads, "
                     f"kept uploads, reports and the database live there")
    if upload_bytes and free < 2 * upload_bytes:
        return Check("free space", WARN, detail, f"a largest upload (sftp.max_upload_bytes = "
                     f"{_gib(upload_bytes)}) and its spool copy may not fit")
    return Check("free space", OK, detail)


def check_store(settings: Settings) -> Check:
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
    return _schema_check(probe.shown, probe.version)


def _schema_check(shown: str, version: int | None) -> Check:
    if version is None or int(version) == SCHEMA_VERSION:
        return Check("store", OK, f"{shown}: schema version {SCHEMA_VERSION} (current)")
    if int(version) < SCHEMA_VERSION:
        return Check("store", WARN, f"{shown}: schema version {version}, upgraded to "
                     f"{SCHEMA_VERSION} at the next start", "back up the database first "
                     "(see README, Upgrades)")
    return Check("store", FAIL, f"{shown}: schema version {version} is newer than this "
                 f"rosterdrop ({SCHEMA_VERSION})", "install the rosterdrop version that wrote "
                 "it (or newer)")


def check_listen(name: str, listen: str, ours: Callable[[str, int], bool]) -> Check:
    """Bindable, or in use by a running rosterdrop (``ours``)."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                if ours(host or "127.0.0.1", port):
                    return Check(name, OK, f"{listen}: a running rosterdrop serves it")
                return Check(name, FAIL, f"{listen} is used by another program",
                             f"stop it, or choose another port ({name})")
            if exc.errno == errno.EACCES and port < 1024:
                # The systemd unit grants the capability to the service, not to doctor.
                return Check(name, WARN, f"{listen}: this user may not bind ports below 1024",
                             "rosterdrop serve needs CAP_NET_BIND_SERVICE: the systemd unit in "
                             "deploy/ grants it (AmbientCapabilities); elsewhere use a port "
                             "of 1024 or above")
            return Check(name, FAIL, f"{listen}: {exc.strerror or exc}",
                         "use an address of this machine (0.0.0.0 for all)")
    return Check(name, OK, f"{listen} is free")


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


def sftp_is_ours(host: str, port: int) -> bool:
    try:
        with socket.create_connection((_connectable(host), port), timeout=3) as conn:
            return conn.recv(256).startswith(SSH_BANNER)
    except OSError:
        return False


def metrics_is_ours(host: str, port: int) -> bool:
    address = _connectable(host)
    if ":" in address:
        address = f"[{address}]"
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/healthz", timeout=3) as reply:
            return bool(reply.headers.get("Server", "").startswith("rosterdrop"))
    except (OSError, http.client.HTTPException):
        return False


def check_smtp(settings: Settings) -> Check:
    mail = settings.mail
    if not mail.smtp_host:
        outbox = StatePaths.of(settings).outbox
        folder = check_folder("smtp", outbox)
        if folder.status != OK:
            return folder
        return Check("smtp", OK, f"no smtp_host: report mails are written to {outbox}",
                     "")
    where = f"{mail.smtp_host}:{mail.smtp_port}"
    timeout = min(mail.timeout_seconds, CONNECT_TIMEOUT_SECONDS)
    steps = ["connect"]
    try:
        tls = ssl.create_default_context()
        smtp = (smtplib.SMTP_SSL(mail.smtp_host, mail.smtp_port, timeout=timeout, context=tls)
                if mail.tls else smtplib.SMTP(mail.smtp_host, mail.smtp_port, timeout=timeout))
        try:
            smtp.ehlo()
            steps.append("EHLO")
            if mail.tls:
                steps[0] = "connect (TLS)"
            elif mail.starttls:
                if not smtp.has_extn("starttls"):
                    return Check("smtp", FAIL, f"{where} does not offer STARTTLS",
                                 "use the server's submission port (587) or implicit TLS "
                                 "(smtp_port = 465, tls = true); starttls = false only on a "
                                 "trusted network")
                smtp.starttls(context=tls)
                smtp.ehlo()
                steps.append("STARTTLS")
            if mail.username:
                if not settings.smtp_password:
                    return Check("smtp", FAIL, f"{where}: mail.username is set but "
                                 "ROSTERDROP_SMTP_PASSWORD is empty",
                                 "put the password in the service's environment "
                                 "(/etc/rosterdrop/env)")
                smtp.login(mail.username, settings.smtp_password)
                steps.append("AUTH")
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
    except ssl.SSLCertVerificationError as exc:
        return Check("smtp", FAIL, f"{where}: certificate not trusted ({exc.verify_message})",
                     "install the CA that signed it (update-ca-certificates) or fix the "
                     "server's certificate and host name")
    except smtplib.SMTPAuthenticationError as exc:
        return Check("smtp", FAIL, f"{where}: login refused (SMTP {exc.smtp_code})",
                     "check mail.username and ROSTERDROP_SMTP_PASSWORD")
    except smtplib.SMTPNotSupportedError:
        return Check("smtp", FAIL, f"{where} does not offer AUTH after "
                     f"{' + '.join(steps)}", "leave mail.username empty if the server "
                     "relays without login, or enable STARTTLS")
    except (smtplib.SMTPException, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
            str(exc) or type(exc).__name__)
        return Check("smtp", FAIL, f"{where}: {reason} (after {' + '.join(steps)})",
                     "check mail.smtp_host, smtp_port and tls/starttls, and that a firewall "
                     "lets this machine reach the server")
    return Check("smtp", OK, f"{where}: {' + '.join(steps)} ok (no mail sent)")


# --- running them ---------------------------------------------------------------------


def run_checks(explicit: str | None, *, min_free: int = MIN_FREE_BYTES) -> list[Check]:
    config, settings = check_config(explicit)
    checks = [config]
    if settings is None:
        return checks
    paths = StatePaths.of(settings)
    checks.append(check_folder("state folder", paths.root))
    if settings.shared_dir is not None:
        checks.append(check_folder("shared folder", paths.shared))
    checks.append(check_free_space(sorted({paths.root, paths.shared}), min_free,
                                   settings.sftp.max_upload_bytes))
    checks.append(check_store(settings))
    checks.append(check_listen("sftp.listen", settings.sftp.listen, sftp_is_ours))
    checks.append(check_host_key(settings))
    if settings.metrics.listen:
        checks.append(check_listen("metrics.listen", settings.metrics.listen, metrics_is_ours))
    checks.append(check_smtp(settings))
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks) + 2
    lines = [f"{'check':<{width}}{'status':<8}detail", f"{'-' * (width - 2):<{width}}"
             f"{'------':<8}{'-' * 6}"]
    for check in checks:
        lines.append(f"{check.name:<{width}}{check.status:<8}{check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"{'':<{width + 8}}fix: {check.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    lines.append("")
    lines.append(f"{failed} check(s) failed" if failed else
                 "all checks passed" + (f" ({warned} warning(s))" if warned else ""))
    return "\n".join(lines)


def run_doctor(explicit: str | None, *, as_json: bool = False,
               min_free: int = MIN_FREE_BYTES) -> int:
    checks = run_checks(explicit, min_free=min_free)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        click.echo(render(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


def _existing_ancestor(folder: Path) -> Path | None:
    for candidate in (folder.absolute(), *folder.absolute().parents):
        if candidate.exists():
            return candidate
    return None


def _connectable(host: str) -> str:
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"
