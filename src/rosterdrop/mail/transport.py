"""Delivering a report email: one SMTP attempt, or a file in the outbox.

With ``mail.smtp_host`` set the message goes over SMTP (STARTTLS or implicit
TLS, AUTH when a username is configured), in exactly one attempt bounded by
``mail.timeout_seconds`` per socket operation: no sleeping, no retry loop, so
a mail server that is down never holds a worker. Retries are the mail
ledger's job (``runs/mailing.py``): a failed report is attempted again after
``mail.retry_seconds`` × 2ⁿ, ``mail.retries`` times. ``mail_failed`` says
whether the failure looked ``transient`` (connection problems, 4xx) or not
(5xx, TLS certificate failures, missing server features). Without an SMTP
host the message is written atomically to ``state_dir/outbox/``.

Logs carry counts and error classes only: never addresses, never the server's
reply text (it often quotes the address), never the password.
"""

from __future__ import annotations

import contextlib
import os
import re
import smtplib
import ssl
import tempfile
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

import structlog

from rosterdrop.config import MailSettings, Settings
from rosterdrop.errors import MailError
from rosterdrop.mail.report import RUN_HEADER
from rosterdrop.paths import StatePaths, private_folder

log = structlog.get_logger("rosterdrop.mail")

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def send_mail(message: EmailMessage, settings: Settings) -> str:
    """Deliver ``message`` in one attempt; return where it went.

    SMTP: ``"smtp.example.org:587, 2 recipient(s)"``. Outbox: the path of the
    ``.eml`` file written. Raises ``MailError`` when the attempt fails.
    """
    if not settings.mail.smtp_host:
        return str(write_outbox(message, StatePaths.of(settings).outbox))
    return _send_smtp(message, settings.mail, settings.smtp_password)


def _recipients(message: EmailMessage) -> list[str]:
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    return [address for _, address in getaddresses(fields) if address]


def _send_smtp(message: EmailMessage, mail: MailSettings, password: str) -> str:
    recipients = len(_recipients(message))
    context = {
        "host": mail.smtp_host,
        "port": mail.smtp_port,
        "recipients": recipients,
        "run_id": message.get(RUN_HEADER),
    }
    if not recipients:
        log.error("mail_failed", error="NoRecipients", transient=False, **context)
        raise MailError("the report email has no recipients: set report_to for the tenant")
    try:
        refused = _deliver(message, mail, password)
    except (smtplib.SMTPException, OSError) as exc:
        log.warning("mail_failed", error=type(exc).__name__, smtp_code=_smtp_code(exc),
                    transient=_is_transient(exc), **context)
        raise MailError(_failure(exc, mail)) from exc
    log.info("mail_sent", transport="smtp", refused=len(refused), **context)
    delivered = recipients - len(refused)
    where = f"{mail.smtp_host}:{mail.smtp_port}, {delivered} recipient(s)"
    return where + (f", {len(refused)} refused" if refused else "")


def _deliver(message: EmailMessage, mail: MailSettings, password: str) -> dict[str, object]:
    """One attempt: connect, secure, log in, send. Returns the refused recipients."""
    tls = ssl.create_default_context()
    smtp: smtplib.SMTP
    if mail.tls:
        smtp = smtplib.SMTP_SSL(
            mail.smtp_host, mail.smtp_port, timeout=mail.timeout_seconds, context=tls
        )
    else:
        smtp = smtplib.SMTP(mail.smtp_host, mail.smtp_port, timeout=mail.timeout_seconds)
    try:
        if not mail.tls and mail.starttls:
            smtp.starttls(context=tls)
        if mail.username:
            smtp.login(mail.username, password)
        refused: dict[str, object] = dict(smtp.send_message(message))
    finally:
        _hang_up(smtp)
    return refused


def _hang_up(smtp: smtplib.SMTP) -> None:
    # Not ``with smtp:``: its QUIT raises on a non-221 reply, which would turn
    # a delivered message into a failure (and a duplicate on retry), or hide
    # the error that really ended the attempt.
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    smtp.close()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    # refused, reset, timed out, name resolution: the server may come back
    return isinstance(exc, OSError)


def _smtp_code(exc: BaseException) -> int | None:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in exc.recipients.values()})
        return codes[0] if codes else None
    return exc.smtp_code if isinstance(exc, smtplib.SMTPResponseException) else None


def _failure(exc: BaseException, mail: MailSettings) -> str:
    code = _smtp_code(exc)
    reason = f"SMTP {code}" if code else (
        exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__)
    return f"could not send the report email via {mail.smtp_host}:{mail.smtp_port}: {reason}"


def write_outbox(message: EmailMessage, outbox: Path) -> Path:
    """Write ``message`` as ``<timestamp>-<run id or message id>.eml``, atomically.

    Written under a dot-name first and renamed into place, so a reader of the
    outbox never sees half a message.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    ident = message.get(RUN_HEADER) or str(message.get("Message-ID", "")).strip("<>") or "mail"
    path = outbox / f"{stamp}-{_UNSAFE_NAME.sub('_', ident)[:100]}.eml"
    context = {"run_id": message.get(RUN_HEADER), "recipients": len(_recipients(message))}
    try:
        private_folder(outbox)
        fd, temp = tempfile.mkstemp(dir=outbox, prefix=".", suffix=".eml.tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(outbox)
    except OSError as exc:
        log.error("mail_failed", transport="outbox", error=type(exc).__name__, **context)
        raise MailError(
            f"could not write the report email to {outbox}: {exc.strerror or exc}"
        ) from exc
    log.info("mail_sent", transport="outbox", path=str(path), **context)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); harmless where directories can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
