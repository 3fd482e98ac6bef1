"""``rosterdrop doctor``: is this machine ready to run ``rosterdrop serve``?

Each check looks without changing anything (no folder created, no schema
written, no mail sent) and says what to fix. After the config itself, doctor
runs exactly the checks ``serve`` makes before it starts
(``rosterdrop.startup.start_checks``, shared with serve, not a copy):

- config: the file loads (unknown keys and wrong types name their path, with a
  near miss; a TOML syntax error its line and column);
- state and shared folders: writable (or creatable);
- store: reachable, schema current (or created/upgraded at the next start);
- SFTP and metrics listen addresses: bindable, or served by this state
  folder's running serve (its pid), not by another rosterdrop or program;
- SFTP host key: its type and SHA256 fingerprint (what clients show at their
  first connection), read only; a missing key is left for ``serve`` to make;
- each OneRoster API tenant's client secret: set and readable;

and then what serve would only find out later:

- free space in the state and shared folders;
- each API tenant's SIS: its host resolves and answers (TLS verified), no
  request sent;
- SMTP: connect, EHLO, STARTTLS (certificate verified) and, with a username,
  AUTH; then QUIT. Without an SMTP host: the outbox folder.

``run_doctor`` prints a table and returns the exit code: 1 when any check
failed, else 0 (warnings allowed).
"""

from __future__ import annotations

import json
import shutil
import smtplib
import socket
import ssl
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

import click

from rosterdrop.config import OneRosterSource, Settings, find_config, load_settings
from rosterdrop.errors import ConfigError
from rosterdrop.paths import StatePaths
from rosterdrop.startup import (
    CONNECT_TIMEOUT_SECONDS,
    FAIL,
    HOST_KEY_NAME,
    OK,
    WARN,
    Check,
    HostKeyCheck,
    check_folder,
    check_host_key,
    check_listen,
    check_store,
    existing_ancestor,
    start_checks,
)

__all__ = [
    "FAIL", "HOST_KEY_NAME", "OK", "WARN", "Check", "HostKeyCheck", "check_config",
    "check_free_space", "check_host_key", "check_listen", "check_smtp", "check_source",
    "check_store", "render", "run_checks", "run_doctor",
]

# SQLAlchemy (the schema's tables) is loaded for a PostgreSQL store only, asyncssh
# only when there is a host key to read, httpx only with an API tenant: on the
# embedded defaults doctor starts in about the time of the config alone.

MIN_FREE_BYTES = 1024**3
"""Below this much free space in the state or shared folder, doctor fails."""


# --- the checks serve does not make ---------------------------------------------------


def check_config(explicit: str | None) -> tuple[Check, Settings | None]:
    path = find_config(explicit)
    try:
        settings = load_settings(explicit)
    except ConfigError as exc:
        notes = getattr(exc, "__notes__", None) or ["every key is listed in "
                                                    "docs/configuration.md"]
        return Check("config", FAIL, str(exc), " ".join(notes)), None
    accounts = [a for t in settings.tenants.values() for a in t.accounts]
    where = str(path) if path else "no config file: built-in defaults"
    detail = f"{where}; {len(settings.tenants)} tenant(s), {len(accounts)} SFTP account(s)"
    open_accounts = [a.username for a in accounts if not (a.password_hash or a.authorized_keys)]
    if open_accounts:
        return Check("config", WARN, detail + f"; no credentials for {', '.join(open_accounts)}",
                     "a random password is generated in the state folder at start; set "
                     "password_hash (rosterdrop hash-password) or authorized_keys"), settings
    return Check("config", OK, detail), settings


def check_free_space(folders: list[Path], min_free: int = MIN_FREE_BYTES,
                     upload_bytes: int = 0) -> Check:
    worst: tuple[int, Path] | None = None
    for folder in folders:
        existing = existing_ancestor(folder)
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


def check_source(tenant: str, source: OneRosterSource) -> Check:
    """The SIS of an API tenant answers at the address of base_url (and token_url):
    the name resolves, a TCP connection opens and, for https, TLS verifies. Nothing
    is sent, so no credentials are tried."""
    name = f"SIS {tenant}"
    answered = []
    for url in dict.fromkeys(u for u in (source.base_url, source.token_url) if u):
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        where = f"{host}:{port}"
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                if parts.scheme == "https":
                    with ssl.create_default_context().wrap_socket(conn, server_hostname=host):
                        pass
        except ssl.SSLCertVerificationError as exc:
            return Check(name, FAIL, f"{where}: certificate not trusted "
                         f"({exc.verify_message})", "install the CA that signed it "
                         "(update-ca-certificates) or correct the host name in the URL")
        except (OSError, ssl.SSLError) as exc:
            reason = (f"{host!r} does not resolve" if isinstance(exc, socket.gaierror)
                      else exc.strerror or str(exc) or type(exc).__name__)
            return Check(name, FAIL, f"{where}: {reason}",
                         f"check base_url and token_url of [tenants.{tenant}.source], DNS "
                         f"and the firewall; until the SIS answers every scheduled pull "
                         f"fails (SOURCE_UNREACHABLE, mailed)")
        answered.append(where + (" (TLS verified)" if parts.scheme == "https" else ""))
    return Check(name, OK, f"{', '.join(answered)} answers (nothing sent)")


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
    if settings is None:
        return [config]
    paths = StatePaths.of(settings)
    checks = [config, *start_checks(settings, create=False)]
    checks.append(check_free_space(sorted({paths.root, paths.shared}), min_free,
                                   settings.sftp.max_upload_bytes))
    for key, tenant in settings.tenants.items():
        if tenant.source is not None:
            checks.append(check_source(key, tenant.source))
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


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"
