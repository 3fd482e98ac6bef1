"""Mail retries when several processes share one store: each report goes out once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import update

from rosterdrop.config import Settings, parse_settings
from rosterdrop.errors import MailError
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import open_store
from rosterdrop.store.tables import MAILS
from uploads import asm_files, make_zip


def test_two_processes_retry_a_failed_report_once(tmp_path: Path, backend_url: str) -> None:
    """A report whose delivery failed is due; two runners (as two daemons would) retry
    at the same moment: exactly one of them sends it."""
    settings: Settings = parse_settings({
        "state_dir": str(tmp_path / "state"), "store": {"url": backend_url},
        "tenants": {"t": {"report_to": ["admin@t.example"]}}})
    upload = tmp_path / "d.zip"
    upload.write_bytes(make_zip(dict(asm_files())))
    sent: list[str] = []

    def down(message: EmailMessage, _settings: Settings) -> str:
        raise MailError("SMTP down")

    def slow(message: EmailMessage, _settings: Settings) -> str:
        time.sleep(0.3)  # both runners are inside retry_mails at once
        sent.append(str(message["X-Rosterdrop-Run"]))
        return "smtp"

    (tmp_path / "state").mkdir()
    with open_store(settings.database_url) as store:
        run = Runner(settings, store, mailer=down).sync("t", upload, source="cli")
        with store.write() as conn:
            conn.execute(update(MAILS).values(next_attempt_at=datetime.now(UTC)
                                              - timedelta(minutes=1)))
        runners = [Runner(settings, store, mailer=slow) for _ in range(2)]
        barrier = threading.Barrier(2)

        def retry(runner: Runner) -> None:
            barrier.wait()
            runner.retry_mails()

        threads = [threading.Thread(target=retry, args=(r,)) for r in runners]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sent == [run.run_id]
