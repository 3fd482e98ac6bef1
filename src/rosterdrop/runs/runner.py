"""One sync run, start to finish: the I/O shell around the pure pipeline.

    record run → (byte-identical? → unchanged) → check (read … patch)
    → snapshot → plan → guard → apply (one transaction) → artifacts
    → history → email

The same path serves a dropped upload, ``rosterdrop sync``, ``resync`` and
``approve``. Every run ends in exactly one history record and one email; a
mail failure is logged and never changes the run's status.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import insert, select, update

from rosterdrop.codes import Code
from rosterdrop.config import Settings, TenantSettings
from rosterdrop.errors import MailError, NotFound, UsageError
from rosterdrop.mail import build_report_email, send_mail
from rosterdrop.paths import StatePaths
from rosterdrop.pipeline.check import Checked, check_upload, sha256_of
from rosterdrop.pipeline.guard import check_guard
from rosterdrop.pipeline.model import Model
from rosterdrop.pipeline.plan import Plan, plan_sync
from rosterdrop.runs import artifacts
from rosterdrop.runs.document import check_document
from rosterdrop.store.directory import apply_plan, load_snapshot, purge
from rosterdrop.store.engine import Store
from rosterdrop.store.history import (
    RunRecord,
    create_run,
    get_run,
    last_applied_sha256,
    list_runs,
    new_run_id,
    update_run,
)
from rosterdrop.store.tables import MAILS

log = structlog.get_logger("rosterdrop.runner")

KEEP_UPLOADS = 10
"""Uploads kept per tenant for approve and resync (held runs' uploads are always kept)."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def local_today(now: datetime) -> date:
    """"Today" for filters: the calendar date where the server runs."""
    return now.astimezone().date()


def exit_code(status: str) -> int:
    return 1 if status in ("failed", "held") else 0


@dataclass
class _Timer:
    steps: dict[str, float]

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = round(time.perf_counter() - started, 4)


class Runner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock = utc_now,
        mailer: Callable[..., str] = send_mail,
    ) -> None:
        self.settings = settings
        self.store = store
        self.paths = StatePaths.of(settings)
        self.clock = clock
        self.mailer = mailer

    # --- public operations --------------------------------------------------------------

    def sync(
        self,
        tenant_key: str,
        upload: Path,
        *,
        source: str,
        dry_run: bool = False,
        force: bool = False,
        file_name: str | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Run the pipeline on ``upload`` for one tenant and record the run.

        With ``run_id`` (a queued job's), a run left unfinished by a crash is
        continued under the same id, so each upload has exactly one run.
        """
        tenant = self.settings.tenant(tenant_key)
        run = self._start(tenant_key, upload, source, dry_run, file_name, run_id)
        if run.status != "running":
            self.ensure_mailed(run)
            return run
        kept = self._keep_upload(tenant_key, run.run_id, upload)
        return self._run(run, tenant, kept, dry_run=dry_run, force=force, approved=False)

    def superseded(self, tenant_key: str, upload: Path, *, source: str, file_name: str,
                   run_id: str | None, newer: str) -> RunRecord:
        """Record a queued bulk upload skipped for a newer one (UPLOAD_SUPERSEDED)."""
        tenant = self.settings.tenant(tenant_key)
        run = self._start(tenant_key, upload, source, False, file_name, run_id)
        if run.status != "running":
            self.ensure_mailed(run)
            return run
        timer = _Timer({})
        checked = Checked(file_name, sha256_of(upload))
        checked.issues.add(
            Code.UPLOAD_SUPERSEDED,
            f"'{file_name}' was not processed because a newer full upload ({newer}) of this "
            f"tenant arrived before its turn; the newer upload is synced instead.",
            file=file_name,
        )
        document = self._document(run, checked, None, "unchanged", False)
        return self._finish(run, tenant, document, checked, timer, applied=False,
                            now=self.clock())

    def source_failed(self, tenant_key: str, *, source: str, file_name: str, code: Code,
                      message: str) -> RunRecord:
        """Record a pull from the tenant's SIS that produced no upload: one failed run
        carrying one ``SOURCE_*`` error, and its email, as for a rejected upload."""
        tenant = self.settings.tenant(tenant_key)
        now = self.clock()
        run = create_run(self.store, RunRecord(
            run_id=new_run_id(now), tenant=tenant_key, source=source, file_name=file_name,
            size=0, created_at=now,
        ))
        log.info("run_started", tenant=tenant_key, run_id=run.run_id, source=source,
                 file=file_name, bytes=0)
        checked = Checked(file_name, sha256_of(b""))
        checked.issues.add(code, message)
        document = self._document(run, checked, None, "failed", False)
        return self._finish(run, tenant, document, checked, _Timer({}), applied=False, now=now)

    def ensure_mailed(self, run: RunRecord) -> None:
        """Send a finished run's email if no earlier attempt got it out (crash recovery)."""
        if run.status in ("running", "discarded") or self._mail_state(run.run_id) == "sent":
            return
        folder = Path(run.artifact_dir) if run.artifact_dir else None
        written = {p.name: p for p in folder.iterdir()} if folder and folder.is_dir() else {}
        self._mail(run, self.settings.tenant(run.tenant), run.document, written)

    def approve(self, run_id: str) -> RunRecord:
        """Release a held run: plan again against the current store and apply."""
        run = self._held(run_id)
        tenant = self.settings.tenant(run.tenant)
        upload = self._kept_upload(run)
        log.info("run_approved", tenant=run.tenant, run_id=run_id)
        return self._run(run, tenant, upload, dry_run=False, force=True, approved=True)

    def discard(self, run_id: str) -> RunRecord:
        run = self._held(run_id)
        log.info("run_discarded", tenant=run.tenant, run_id=run_id)
        return update_run(self.store, run_id, status="discarded", finished_at=self.clock())

    # --- the run --------------------------------------------------------------------------

    def _start(self, tenant: str, upload: Path, source: str, dry_run: bool,
               file_name: str | None, run_id: str | None) -> RunRecord:
        now = self.clock()
        if run_id is not None:
            try:
                run = get_run(self.store, run_id)
            except NotFound:
                pass
            else:
                log.info("run_resumed", tenant=tenant, run_id=run_id, status=run.status)
                return run
        run = create_run(self.store, RunRecord(
            run_id=run_id or new_run_id(now), tenant=tenant, source=source, dry_run=dry_run,
            file_name=file_name or upload.name, size=upload.stat().st_size, created_at=now,
        ))
        log.info("run_started", tenant=tenant, run_id=run.run_id, source=source,
                 file=run.file_name, bytes=run.size)
        return run

    def _run(self, run: RunRecord, tenant: TenantSettings, upload: Path, *, dry_run: bool,
             force: bool, approved: bool) -> RunRecord:
        timer = _Timer({})
        now = self.clock()
        today = local_today(now)
        with timer.step("hash"):
            sha = sha256_of(upload)
        update_run(self.store, run.run_id, sha256=sha)
        if not (dry_run or force) and sha == last_applied_sha256(self.store, run.tenant):
            return self._finish_unchanged(run, tenant, sha, timer)
        if not dry_run and not approved:
            self._discard_held(run.tenant, run.run_id)

        with timer.step("check"):
            checked = check_upload(upload, tenant=tenant, limits=self.settings.limits,
                                   today=today, name=run.file_name, sha256=sha)
        plan: Plan | None = None
        status = "failed"
        modified: Future[Path] | None = None
        if checked.model is not None and not checked.issues.has_errors():
            with timer.step("snapshot"):  # before the writer starts: it reads faster alone
                snapshot = load_snapshot(self.store, run.tenant, today)
            modified = self._write_modified_meanwhile(run, checked.model)
            with timer.step("plan"):
                plan = plan_sync(snapshot, checked.model, tenant, today, checked.issues)
            if not plan.failed:
                decision = check_guard(plan, tenant.guard, run.run_id)
                if decision.held and not approved and not dry_run:
                    decision.record(checked.issues)
                    status = "held"
                elif dry_run:
                    status = self._completed(checked)
                else:
                    with timer.step("apply"):
                        written = apply_plan(self.store, run.tenant, plan, now)
                        purge(self.store, run.tenant, today, tenant.retention_days)
                    log.info("run_applied", tenant=run.tenant, run_id=run.run_id,
                             rows=sum(written.values()))
                    status = self._completed(checked)
        applied = status in ("completed", "completed_with_warnings") and not dry_run
        document = self._document(run, checked, plan, status, dry_run)
        return self._finish(run, tenant, document, checked, timer, applied=applied, now=now,
                            modified=modified)

    def _write_modified_meanwhile(self, run: RunRecord, model: Model) -> Future[Path]:
        """modified.zip is written on a second core while the store is planned and written
        (polars and zlib work outside the GIL)."""
        folder = self.paths.run_reports(run.tenant, run.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / artifacts.MODIFIED_ZIP
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rosterdrop-artifacts")
        def write() -> Path:
            artifacts.write_modified(model, path)
            return path

        future = pool.submit(write)
        pool.shutdown(wait=False)
        return future

    @staticmethod
    def _completed(checked: Checked) -> str:
        return "completed_with_warnings" if len(checked.issues) else "completed"

    def _document(self, run: RunRecord, checked: Checked, plan: Plan | None, status: str,
                  dry_run: bool) -> dict[str, Any]:
        document = check_document(checked)
        document.update(
            run_id=run.run_id, tenant=run.tenant, dry_run=dry_run,
            changes=plan.changes() if plan is not None else _no_changes(),
            filtered=checked.filtered, patched=checked.patched, status=status,
        )
        return document

    def _finish(self, run: RunRecord, tenant: TenantSettings, document: dict[str, Any],
                checked: Checked | None, timer: _Timer, *, applied: bool,
                now: datetime, modified: Future[Path] | None = None) -> RunRecord:
        folder = self.paths.run_reports(run.tenant, run.run_id)
        with timer.step("artifacts"):
            if checked is not None:
                written = artifacts.write_artifacts(
                    folder, document, checked.issues.frame(), checked.summary, None)
                if modified is not None:
                    path = modified.result()
                    if document["status"] == "failed":
                        path.unlink(missing_ok=True)  # nothing of it was applied
                    else:
                        written[artifacts.MODIFIED_ZIP] = path
            else:
                folder.mkdir(parents=True, exist_ok=True)
                artifacts.write_json(document, folder / artifacts.REPORT_JSON)
                written = {artifacts.REPORT_JSON: folder / artifacts.REPORT_JSON}
        finished = self.clock()
        record = update_run(
            self.store, run.run_id, status=document["status"], layout=document["layout"],
            counts=document["counts"], issue_counts=document["issue_counts"],
            document=document, timings=timer.steps, finished_at=finished,
            artifact_dir=str(folder), applied=applied, applied_at=now if applied else None,
        )
        log.info("run_finished", tenant=run.tenant, run_id=run.run_id,
                 status=document["status"], duration_ms=int(sum(timer.steps.values()) * 1000),
                 errors=len(document["errors"]), warnings=len(document["warnings"]),
                 steps=timer.steps)
        self._mail(record, tenant, document, written)
        self._prune_uploads(run.tenant)
        return record

    def _finish_unchanged(self, run: RunRecord, tenant: TenantSettings, sha: str,
                          timer: _Timer) -> RunRecord:
        previous = next((r for r in list_runs(self.store, run.tenant, limit=20,
                                              with_document=True)
                         if r.applied and r.sha256 == sha), None)
        counts = previous.document.get("counts", {}) if previous else {}
        document: dict[str, Any] = {
            "file": run.file_name, "sha256": sha,
            "layout": previous.layout if previous else None, "status": "unchanged",
            "counts": counts, "issue_counts": {}, "errors": [], "warnings": [],
            "files_ignored": [], "run_id": run.run_id, "tenant": run.tenant,
            "dry_run": False, "changes": _no_changes(), "filtered": {}, "patched": {},
        }
        log.info("run_unchanged", tenant=run.tenant, run_id=run.run_id,
                 same_as=previous.run_id if previous else None)
        return self._finish(run, tenant, document, None, timer, applied=False,
                            now=self.clock())

    # --- email ----------------------------------------------------------------------------

    def _mail(self, run: RunRecord, tenant: TenantSettings, document: dict[str, Any],
              written: dict[str, Path]) -> None:
        attachments = {name: written[name] for name in (artifacts.ISSUES_CSV,
                                                        artifacts.SUMMARY_CSV)
                       if name in written}
        message = build_report_email(
            document, tenant, self.settings.mail, attachments,
            f"reports/{run.run_id}/", now=self.clock(),
        )
        if not self.settings.mail.smtp_host and self._in_outbox(run.run_id):
            # Written before a crash stopped us from recording it: never write it twice.
            self._set_mail_state(run.run_id, "sent")
            return
        self._set_mail_state(run.run_id, "pending")
        try:
            where = self.mailer(message, self.settings)
        except MailError as exc:
            self._set_mail_state(run.run_id, "failed", str(exc))
            log.error("mail_failed", tenant=run.tenant, run_id=run.run_id, error=str(exc))
            return
        self._set_mail_state(run.run_id, "sent")
        log.debug("report_mailed", tenant=run.tenant, run_id=run.run_id, to=where)

    def retry_mails(self) -> int:
        """Send the reports whose delivery failed (or was cut short) and whose retry is due."""
        now = self.clock()
        stale = now - timedelta(minutes=10)
        is_due = (((MAILS.c.status == "failed") & (MAILS.c.next_attempt_at <= now))
                  | ((MAILS.c.status == "pending") & (MAILS.c.updated_at <= stale)))
        with self.store.engine.connect() as conn:
            due = list(conn.execute(select(MAILS.c.run_id).where(is_due)).scalars())
        for run_id in due:
            # Several processes may share the store: the one whose update matches takes it.
            with self.store.write() as conn:
                taken = conn.execute(update(MAILS).where((MAILS.c.run_id == run_id) & is_due)
                                     .values(status="pending", updated_at=now)).rowcount
            if taken:
                self.ensure_mailed(get_run(self.store, run_id))
        return len(due)

    def _in_outbox(self, run_id: str) -> bool:
        return any(self.paths.outbox.glob(f"*-{run_id}.eml"))

    def _mail_state(self, run_id: str) -> str | None:
        with self.store.engine.connect() as conn:
            return conn.execute(
                select(MAILS.c.status).where(MAILS.c.run_id == run_id)
            ).scalar_one_or_none()

    def _set_mail_state(self, run_id: str, status: str, error: str | None = None) -> None:
        now = self.clock()
        failed = int(status == "failed")
        with self.store.write() as conn:
            attempts = conn.execute(
                select(MAILS.c.attempts).where(MAILS.c.run_id == run_id)
            ).scalar_one_or_none()
            done = (attempts or 0) + failed
            retry_at = now + timedelta(seconds=min(
                self.settings.mail.retry_seconds * 2 ** max(done - 1, 0), 3600.0))
            values = {"status": status, "attempts": done, "last_error": error,
                      "updated_at": now, "next_attempt_at": retry_at if failed else None}
            if attempts is None:
                conn.execute(insert(MAILS).values(run_id=run_id, created_at=now, **values))
            else:
                conn.execute(update(MAILS).where(MAILS.c.run_id == run_id).values(**values))

    # --- held runs and kept uploads -----------------------------------------------------

    def _held(self, run_id: str) -> RunRecord:
        run = get_run(self.store, run_id)
        if run.status != "held":
            raise UsageError(f"run {run_id} is {run.status}, not held; only held runs can be "
                             f"approved or discarded")
        return run

    def _discard_held(self, tenant: str, newer: str) -> None:
        for run in list_runs(self.store, tenant, limit=100):
            if run.status == "held" and run.run_id != newer:
                update_run(self.store, run.run_id, status="discarded",
                           finished_at=self.clock())
                log.info("run_discarded", tenant=tenant, run_id=run.run_id, newer_run=newer)

    def _uploads_dir(self, tenant: str) -> Path:
        return self.paths.tenant(tenant) / "uploads"

    def _upload_path(self, run: RunRecord) -> Path:
        return self._uploads_dir(run.tenant) / f"{run.run_id}.zip"

    def _kept_upload(self, run: RunRecord) -> Path:
        path = self._upload_path(run)
        if not path.is_file():
            raise NotFound(f"the upload of run {run.run_id} is no longer kept")
        return path

    def _keep_upload(self, tenant: str, run_id: str, upload: Path) -> Path:
        folder = self._uploads_dir(tenant)
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{run_id}.zip"
        if kept.exists() and os.path.samefile(upload, kept):
            return kept  # a resumed run: kept already
        staging = folder / f".{run_id}.zip.tmp"
        staging.unlink(missing_ok=True)
        try:
            os.link(upload, staging)
        except OSError:
            shutil.copyfile(upload, staging)
        os.replace(staging, kept)
        return kept

    def _prune_uploads(self, tenant: str) -> None:
        held = {r.run_id for r in list_runs(self.store, tenant, limit=200)
                if r.status == "held"}
        kept = sorted(self._uploads_dir(tenant).glob("*.zip"), reverse=True)
        for path in kept[KEEP_UPLOADS:]:
            if path.stem not in held:
                path.unlink(missing_ok=True)


def _no_changes() -> dict[str, dict[str, int]]:
    return {"created": {}, "updated": {}, "deactivated": {}, "removed": {}, "unchanged": {}}

