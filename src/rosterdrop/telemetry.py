"""What the parts of rosterdrop report as it happens, for whoever counts it.

Every part that does something worth counting (the SFTP server, intake, the
workers, the runner, the mail ledger) is handed a ``Telemetry`` and calls it
explicitly; the daemon's Prometheus metrics (``daemon/metrics.py``) implement
it. The base class counts nothing, so the CLI and tests need no registry.
A log line and a counter are separate calls on purpose: renaming a log event
can never silently stop a counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

UploadOutcome = Literal["completed", "aborted", "refused"]
LoginOutcome = Literal["ok", "failed", "refused_banned"]
MailOutcome = Literal["sent", "failed"]


class Telemetry:
    """Counts nothing; subclasses override what they count. Never raises into the caller's
    work: an implementation must swallow its own failures."""

    def upload_finished(self, outcome: UploadOutcome) -> None:
        """An SFTP/SCP upload ended: completed (handed to intake), aborted, refused."""

    def login(self, outcome: LoginOutcome, method: str) -> None:
        """An SSH authentication attempt was decided (``method``: password, publickey, none)."""

    def address_banned(self) -> None:
        """An address was banned after too many failed logins."""

    def job_queued(self, source: str) -> None:
        """An upload became a job (``source``: sftp, watch, resync, oneroster-api)."""

    def job_failed(self) -> None:
        """A job raised; it is tried again."""

    def run_finished(self, tenant: str, status: str, steps: Mapping[str, float]) -> None:
        """A run reached its final status; ``steps`` are seconds per pipeline step."""

    def mail_delivered(self, outcome: MailOutcome) -> None:
        """One delivery attempt of a report email ended (a failed one is retried later)."""


NO_TELEMETRY = Telemetry()
