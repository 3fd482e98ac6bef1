"""Report emails: build a finished run's email, deliver it once, retry it later.

Each delivery is one attempt (the transport never sleeps or loops); a failed
attempt is recorded in the mail ledger (``store/mails.py``) with its next
attempt due after ``mail.retry_seconds`` × 2ⁿ (at most an hour), and given up
after ``mail.retries`` further attempts. The daemon's mailer task calls
``retry_due`` every few seconds; ``rosterdrop sync`` makes the first attempt
itself. A mail failure never changes a run's status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import structlog

from rosterdrop.config import Settings, TenantSettings
from rosterdrop.documents import RunDocument, RunStatus
from rosterdrop.errors import MailError, NotFound
from rosterdrop.mail import build_report_email, send_mail
from rosterdrop.outlets.dispatch import destinations_for
from rosterdrop.paths import StatePaths
from rosterdrop.runs import artifacts
from rosterdrop.store.engine import Store
from rosterdrop.store.history import RunRecord, get_run
from rosterdrop.store.mails import (
    MailState,
    due_runs,
    failed_attempts,
    mail_state,
    set_mail_state,
    take_due,
)
from rosterdrop.telemetry import NO_TELEMETRY, Telemetry

log = structlog.get_logger("rosterdrop.runner")

MAX_BACKOFF = timedelta(hours=1)

Clock = Callable[[], datetime]
Send = Callable[[EmailMessage, Settings], str]


class Mailer:
    def __init__(self, settings: Settings, store: Store, *, clock: Clock,
                 send: Send = send_mail, telemetry: Telemetry = NO_TELEMETRY) -> None:
        self.settings = settings
        self.store = store
        self.paths = StatePaths.of(settings)
        self.clock = clock
        self.send = send
        self.telemetry = telemetry

    def deliver(self, run: RunRecord, document: RunDocument,
                written: Mapping[str, Path]) -> None:
        """One attempt at the run's report email; a failure is recorded for a retry."""
        tenant = self.settings.tenant(run.tenant)
        message = self._message(run, tenant, document, written)
        if not self.settings.mail.smtp_host and self._in_outbox(run.run_id):
            # Written before a crash stopped us from recording it: never write it twice.
            set_mail_state(self.store, run.run_id, MailState.SENT, self.clock())
            return
        set_mail_state(self.store, run.run_id, MailState.PENDING, self.clock())
        try:
            where = self.send(message, self.settings)
        except MailError as exc:
            self._failed(run, str(exc))
            return
        set_mail_state(self.store, run.run_id, MailState.SENT, self.clock())
        self.telemetry.mail_delivered("sent")
        log.debug("report_mailed", tenant=run.tenant, run_id=run.run_id, to=where)

    def ensure_mailed(self, run: RunRecord) -> None:
        """Send a finished run's email if no earlier attempt got it out (crash recovery)."""
        if (run.status in (RunStatus.RUNNING, RunStatus.DISCARDED) or run.document is None
                or mail_state(self.store, run.run_id) is MailState.SENT):
            return
        folder = Path(run.artifact_dir) if run.artifact_dir else None
        written = {p.name: p for p in folder.iterdir()} if folder and folder.is_dir() else {}
        self.deliver(run, run.document, written)

    def retry_due(self) -> int:
        """Attempt again every report whose retry is due; returns how many were due."""
        due = due_runs(self.store, self.clock())
        for run_id in due:
            # Several processes may share the store: the one whose update matches takes it.
            if take_due(self.store, run_id, self.clock()):
                try:
                    run = get_run(self.store, run_id)
                except NotFound:
                    continue
                self.ensure_mailed(run)
        return len(due)

    def _failed(self, run: RunRecord, error: str) -> None:
        now = self.clock()
        mail = self.settings.mail
        attempts = failed_attempts(self.store, run.run_id) + 1
        retry_at = None
        if attempts <= mail.retries:
            wait = timedelta(seconds=mail.retry_seconds * 2 ** (attempts - 1))
            retry_at = now + min(wait, MAX_BACKOFF)
        set_mail_state(self.store, run.run_id, MailState.FAILED, now, error=error,
                       retry_at=retry_at)
        self.telemetry.mail_delivered("failed")
        log.error("mail_failed", tenant=run.tenant, run_id=run.run_id, error=error,
                  attempt=attempts, retry_at=retry_at.isoformat() if retry_at else None)
        if retry_at is None:
            log.error("mail_abandoned", tenant=run.tenant, run_id=run.run_id,
                      attempts=attempts, reason=f"no delivery after {attempts} attempts "
                      f"(mail.retries = {mail.retries}); the report stays in reports/")

    def _message(self, run: RunRecord, tenant: TenantSettings, document: RunDocument,
                 written: Mapping[str, Path]) -> EmailMessage:
        attachments = {name: written[name] for name in (artifacts.ISSUES_CSV,
                                                        artifacts.SUMMARY_CSV,
                                                        artifacts.PREVIEW_CSV)
                       if name in written}
        forwarded = [d.key for d in destinations_for(tenant, run)]
        return build_report_email(document, tenant, self.settings.mail, attachments,
                                  f"reports/{run.run_id}/", web=self.settings.web,
                                  now=self.clock(), forwarded_to=forwarded)

    def _in_outbox(self, run_id: str) -> bool:
        return any(self.paths.outbox.glob(f"*-{run_id}.eml"))
