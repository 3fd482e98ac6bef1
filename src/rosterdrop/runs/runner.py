"""One sync run, start to finish: the I/O shell around the pure pipeline.

    record run → (byte-identical? → unchanged) → check (read … patch)
    → snapshot → plan → guard → apply (one transaction) → artifacts
    → history → email

The same path serves a dropped upload, ``rosterdrop sync``, ``resync`` and
``approve``. Every run ends in exactly one history record and one email; a
mail failure is logged and never changes the run's status. Status moves go
through ``runs/lifecycle.py``; held runs, kept uploads and the mail ledger have
modules of their own (``held``, ``kept``, ``mailing``).

A run that cannot finish ends ``failed`` at once, with its email, never stuck
``running``: past its deadline (``RUN_TIMED_OUT``, checked between steps, up
to the apply), or when something under it fails — a full disk, the database,
a bug (``RUN_INTERRUPTED``, the server log has the traceback). A plan made
against a directory that changed meanwhile (``PlanOutdated``) is made again
once. If the store itself cannot record the failure, the exception goes up:
the job is retried and the run continued when the store is back.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import structlog
from structlog.contextvars import bound_contextvars

from rosterdrop.codes import Code
from rosterdrop.config import Settings, TenantSettings
from rosterdrop.documents import PURGE_FILE, RunDocument, RunSource, RunStatus, no_changes
from rosterdrop.errors import NotFound, StoreError, UsageError
from rosterdrop.mail import send_mail
from rosterdrop.outlets.dispatch import Outlets
from rosterdrop.paths import StatePaths, private_folder
from rosterdrop.pipeline.check import Checked, check_upload, sha256_of
from rosterdrop.pipeline.guard import check_guard
from rosterdrop.pipeline.model import Model
from rosterdrop.pipeline.plan import Plan, clear_classes, plan_sync
from rosterdrop.pipeline.preview import preview_frame
from rosterdrop.runs import artifacts, held
from rosterdrop.runs.document import check_document
from rosterdrop.runs.kept import KeptUploads, Pruned
from rosterdrop.runs.lifecycle import move
from rosterdrop.runs.mailing import Mailer, Send
from rosterdrop.store.directory import PlanOutdated, apply_plan, load_snapshot, purge
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
from rosterdrop.telemetry import NO_TELEMETRY, Telemetry

log = structlog.get_logger("rosterdrop.runner")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def local_today(now: datetime) -> date:
    """"Today" for filters: the calendar date where the server runs."""
    return now.astimezone().date()


def exit_code(status: RunStatus) -> int:
    return 1 if status in (RunStatus.FAILED, RunStatus.HELD) else 0


class _Overdue(Exception):
    """The run passed its deadline before it applied anything."""


@dataclass
class _Timer:
    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = round(time.perf_counter() - started, 4)


@dataclass
class _Progress:
    """What a run has got so far: enough to report it however it ends."""

    run: RunRecord
    tenant: TenantSettings
    deadline: float | None
    as_of: date | None = None
    """"Today" for the filters and the guard, when it is not today (a dry run's preview)."""
    timer: _Timer = field(default_factory=_Timer)
    sha256: str = ""
    checked: Checked | None = None
    plan: Plan | None = None
    modified: Future[Path] | None = None
    recorded: bool = False
    """The run's end is in the store: what fails after that is not the run's."""
    purged: int = 0

    def on_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Overdue


class Runner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock = utc_now,
        mailer: Send = send_mail,
        telemetry: Telemetry = NO_TELEMETRY,
        outlets: Outlets | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.paths = StatePaths.of(settings)
        self.clock = clock
        self.telemetry = telemetry
        self.kept = KeptUploads(self.paths)
        self.mail = Mailer(settings, store, clock=clock, send=mailer, telemetry=telemetry)
        self.outlets = outlets or Outlets(settings, store, clock=clock)

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
        deadline: float | None = None,
        as_of: date | None = None,
    ) -> RunRecord:
        """Run the pipeline on ``upload`` for one tenant and record the run.

        With ``run_id`` (a queued job's), a run left unfinished by a crash is
        continued under the same id, so each upload has exactly one run.
        ``deadline`` is a ``time.monotonic()`` value (the job's timeout). ``as_of``
        (dry runs only) is "today" for the filters and the guard: a preview of that day.
        """
        if as_of is not None and not dry_run:
            raise UsageError("--as-of previews a day: it needs --dry-run (a real sync runs "
                             "as of today)")
        tenant = self.settings.tenant(tenant_key)
        run = self._start(tenant_key, upload, source, dry_run, file_name, run_id)
        with bound_contextvars(tenant=tenant_key, run_id=run.run_id):
            if run.status is not RunStatus.RUNNING:
                self.ensure_mailed(run)
                return run
            # A dry run's upload is not kept: nothing may resync or approve a preview.
            return self._run(_Progress(run, tenant, deadline, as_of=as_of), upload,
                             dry_run=dry_run, force=force, approved=False, keep=not dry_run)

    def superseded(self, tenant_key: str, upload: Path, *, source: str, file_name: str,
                   run_id: str | None, newer: str,
                   deadline: float | None = None) -> RunRecord:
        """Record a queued bulk upload skipped for a newer one (UPLOAD_SUPERSEDED)."""
        del deadline  # nothing here is slow enough to overrun
        tenant = self.settings.tenant(tenant_key)
        run = self._start(tenant_key, upload, source, False, file_name, run_id)
        with bound_contextvars(tenant=tenant_key, run_id=run.run_id):
            if run.status is not RunStatus.RUNNING:
                self.ensure_mailed(run)
                return run
            progress = _Progress(run, tenant, None, sha256=sha256_of(upload))
            progress.checked = Checked(file_name, progress.sha256)
            progress.checked.issues.add(
                Code.UPLOAD_SUPERSEDED,
                f"'{file_name}' was not processed because a newer full upload ({newer}) of "
                f"this tenant, which reads and validates, arrived before its turn; the newer "
                f"upload is synced instead.",
                file=file_name,
            )
            return self._finish(progress, RunStatus.UNCHANGED, dry_run=False, applied=False,
                                now=self.clock())

    def validates(self, tenant_key: str, upload: Path, file_name: str) -> bool:
        """``upload`` reads and validates without errors for the tenant (records nothing):
        only such an upload may supersede a queued one."""
        if not upload.is_file():
            return False
        checked = check_upload(upload, tenant=self.settings.tenant(tenant_key),
                               limits=self.settings.limits, today=local_today(self.clock()),
                               name=file_name)
        return checked.model is not None and not checked.issues.has_errors()

    def source_failed(self, tenant_key: str, *, source: str, file_name: str, code: Code,
                      message: str) -> RunRecord:
        """Record a pull from the tenant's SIS that produced no upload: one failed run
        carrying one ``SOURCE_*`` error, and its email, as for a rejected upload."""
        tenant = self.settings.tenant(tenant_key)
        now = self.clock()
        run = create_run(self.store, RunRecord(
            run_id=new_run_id(now), tenant=tenant_key, source=RunSource(source),
            file_name=file_name, size=0, created_at=now,
        ))
        with bound_contextvars(tenant=tenant_key, run_id=run.run_id):
            log.info("run_started", source=source, file=file_name, bytes=0)
            progress = _Progress(run, tenant, None, sha256=sha256_of(b""))
            progress.checked = Checked(file_name, progress.sha256)
            progress.checked.issues.add(code, message)
            return self._finish(progress, RunStatus.FAILED, dry_run=False, applied=False,
                                now=now)

    def ensure_mailed(self, run: RunRecord) -> None:
        """Send a finished run's email if no earlier attempt got it out, and record its
        deliveries if a crash came between (crash recovery)."""
        self.mail.ensure_mailed(run)
        if run.status.finished and run.status is not RunStatus.RUNNING:
            self.outlets.record(run)

    def retry_mails(self) -> int:
        """Attempt again the report emails whose retry is due (the daemon's mailer task)."""
        return self.mail.retry_due()

    def purge(self, tenant_key: str, *, dry_run: bool = False,
              today: date | None = None) -> list[str]:
        """Purge the tenant's people deactivated longer than ``retention_days`` (the daemon
        daily, ``rosterdrop purge``, and every applied sync); their names become free."""
        tenant = self.settings.tenant(tenant_key)
        names = purge(self.store, tenant_key, today or local_today(self.clock()),
                      tenant.retention_days, dry_run=dry_run)
        if names and not dry_run:
            log.info("people_purged", tenant=tenant_key, count=len(names))
            self._record_purge(tenant_key, tenant, len(names))
        return names

    def _record_purge(self, tenant_key: str, tenant: TenantSettings, purged: int) -> None:
        """A purge outside a sync is a run of its own (source purge): one history record,
        one email, so the admins see every deletion whatever the uploads."""
        now = self.clock()
        run = create_run(self.store, RunRecord(
            run_id=new_run_id(now), tenant=tenant_key, source=RunSource.PURGE,
            file_name=PURGE_FILE, size=0, created_at=now))
        with bound_contextvars(tenant=tenant_key, run_id=run.run_id):
            progress = _Progress(run, tenant, None, sha256=sha256_of(b""))
            progress.checked = Checked(run.file_name or "", progress.sha256)
            progress.purged = purged
            self._finish(progress, RunStatus.COMPLETED, dry_run=False, applied=False, now=now)

    def housekeep(self, tenant_key: str) -> Pruned:
        """Apply ``[retention]`` to the tenant's kept uploads and report folders (after
        every run, and daily in the daemon)."""
        pruned = self.kept.prune(tenant_key,
                                 (r.run_id for r in held.held_runs(self.store, tenant_key)),
                                 self.settings.retention, self.clock())
        if pruned.uploads or pruned.reports:
            log.info("files_pruned", tenant=tenant_key, uploads=pruned.uploads,
                     reports=pruned.reports)
        return pruned

    def clear_classes(self, tenant_key: str) -> RunRecord:
        """The year-end clear: a held run that, approved, removes every class, instructor
        row and roster of the tenant (people, locations and courses stay)."""
        tenant = self.settings.tenant(tenant_key)
        now = self.clock()
        run = create_run(self.store, RunRecord(
            run_id=new_run_id(now), tenant=tenant_key, source=RunSource.CLASSES_CLEAR,
            file_name="(classes clear)", size=0, created_at=now))
        with bound_contextvars(tenant=tenant_key, run_id=run.run_id):
            log.info("run_started", source=run.source.value, file=run.file_name, bytes=0)
            progress = _Progress(run, tenant, None, sha256=sha256_of(b""))
            progress.checked = checked = Checked(run.file_name or "", progress.sha256)
            progress.plan = plan = clear_classes(
                load_snapshot(self.store, tenant_key, local_today(now)), local_today(now))
            checked.issues.add(
                Code.CHANGE_THRESHOLD,
                f"Clearing the classes of the new school year removes "
                f"{plan.classes.remove.height:,} classes and {plan.rosters.remove.height:,} "
                f"rosters; release it with `rosterdrop approve {run.run_id}` or drop it with "
                f"`rosterdrop discard {run.run_id}`.")
            return self._finish(progress, RunStatus.HELD, dry_run=False, applied=False,
                                now=now)

    def approve(self, run_id: str) -> RunRecord:
        """Release a held run: plan again against the current store and apply."""
        run = held.held_run(self.store, run_id)
        tenant = self.settings.tenant(run.tenant)
        if run.source is RunSource.CLASSES_CLEAR:
            with bound_contextvars(tenant=run.tenant, run_id=run_id):
                log.info("run_approved")
                return self._apply_clear(_Progress(run, tenant, None))
        upload = self.kept.of(run.tenant, run.run_id)
        with bound_contextvars(tenant=run.tenant, run_id=run_id):
            log.info("run_approved")
            return self._run(_Progress(run, tenant, None), upload, dry_run=False, force=True,
                             approved=True, keep=False)

    def discard(self, run_id: str) -> RunRecord:
        """Drop a held run; its admins get a confirmation (approve's is the run's own end)."""
        record = held.discard(self.store, held.held_run(self.store, run_id), self.clock())
        if record.document is not None:
            self.mail.deliver(record, record.document, {})
        self.housekeep(record.tenant)  # its upload was kept only while it waited
        return record

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
            run_id=run_id or new_run_id(now), tenant=tenant, source=RunSource(source),
            dry_run=dry_run, file_name=file_name or upload.name, size=upload.stat().st_size,
            created_at=now,
        ))
        log.info("run_started", tenant=tenant, run_id=run.run_id, source=source,
                 file=run.file_name, bytes=run.size)
        return run

    def _run(self, progress: _Progress, upload: Path, *, dry_run: bool, force: bool,
             approved: bool, keep: bool) -> RunRecord:
        # The side pool writes modified.zip while the store is planned and written; leaving
        # the block waits for it, so no writer outlives its run, however the run ends.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rosterdrop-artifacts") as side:
            try:
                if keep:
                    upload = self.kept.keep(progress.run.tenant, progress.run.run_id, upload)
                return self._pipeline(progress, upload, side, dry_run=dry_run, force=force,
                                      approved=approved)
            except _Overdue:
                log.error("run_timed_out")
                return self._interrupted(progress, Code.RUN_TIMED_OUT, (
                    f"it took longer than the server allows for one run "
                    f"(job_timeout_seconds = {self.settings.job_timeout_seconds:g})"))
            except Exception as exc:
                if progress.recorded:
                    raise
                log.error("run_interrupted", error=type(exc).__name__, exc_info=True)
                return self._interrupted(progress, Code.RUN_INTERRUPTED, _cause(exc))

    def _pipeline(self, progress: _Progress, upload: Path, side: ThreadPoolExecutor, *,
                  dry_run: bool, force: bool, approved: bool) -> RunRecord:
        run, tenant, timer = progress.run, progress.tenant, progress.timer
        now = self.clock()
        today = progress.as_of or local_today(now)
        with timer.step("hash"):
            progress.sha256 = sha256_of(upload)
        update_run(self.store, run.run_id, sha256=progress.sha256)
        if not (dry_run or force) and progress.sha256 == last_applied_sha256(self.store,
                                                                              run.tenant):
            return self._finish_unchanged(progress)
        progress.on_time()
        with timer.step("check"):
            progress.checked = checked = check_upload(
                upload, tenant=tenant, limits=self.settings.limits, today=today,
                name=run.file_name, sha256=progress.sha256)
        if checked.model is None or checked.issues.has_errors():
            return self._finish(progress, RunStatus.FAILED, dry_run=dry_run, applied=False,
                                now=now)
        if not dry_run and not approved:
            # A newer export that reads and validates replaces a held one; one that fails
            # never does.
            held.discard_older(self.store, run.tenant, run.run_id, self.clock())
        progress.on_time()
        for attempt in (1, 2):
            with timer.step("snapshot"):  # before the writer starts: it reads faster alone
                snapshot = load_snapshot(self.store, run.tenant, today)
            if progress.modified is None:
                progress.modified = self._write_modified(side, run, checked.model)
            with timer.step("plan"):
                progress.plan = plan = plan_sync(snapshot, checked.model, tenant, today,
                                                 checked.issues)
            if plan.failed:
                return self._finish(progress, RunStatus.FAILED, dry_run=dry_run,
                                    applied=False, now=now)
            decision = check_guard(plan, tenant.guard, run.run_id)
            if decision.held and not approved:
                # A dry run says what the real run would do: held, and why.
                decision.record(checked.issues)
                return self._finish(progress, RunStatus.HELD, dry_run=dry_run, applied=False,
                                    now=now)
            if dry_run:
                return self._finish(progress, self._completed(checked), dry_run=True,
                                    applied=False, now=now)
            progress.on_time()  # the last point at which nothing has been applied
            try:
                with timer.step("apply"):
                    written = apply_plan(self.store, run.tenant, plan, now)
            except PlanOutdated:
                if attempt == 2:
                    raise
                log.info("plan_outdated", attempt=attempt)
                continue
            progress.purged = len(purge(self.store, run.tenant, today, tenant.retention_days))
            log.info("run_applied", rows=sum(written.values()), purged=progress.purged)
            break
        return self._finish(progress, self._completed(checked), dry_run=False, applied=True,
                            now=now)

    def _apply_clear(self, progress: _Progress) -> RunRecord:
        """An approved classes clear, planned again against the directory as it is now."""
        now = self.clock()
        today = local_today(now)
        progress.checked = Checked(progress.run.file_name or "", sha256_of(b""))
        with progress.timer.step("plan"):
            progress.plan = plan = clear_classes(
                load_snapshot(self.store, progress.run.tenant, today), today)
        with progress.timer.step("apply"):
            written = apply_plan(self.store, progress.run.tenant, plan, now)
        log.info("run_applied", rows=sum(written.values()))
        return self._finish(progress, RunStatus.COMPLETED, dry_run=False, applied=True,
                            now=now)

    def _write_modified(self, side: ThreadPoolExecutor, run: RunRecord,
                        model: Model) -> Future[Path]:
        """modified.zip is written on a second core while the store is planned and written
        (polars and zlib work outside the GIL)."""
        folder = private_folder(self.paths.run_reports(run.tenant, run.run_id))
        path = folder / artifacts.MODIFIED_ZIP

        def write() -> Path:
            artifacts.write_modified(model, path)
            return path

        return side.submit(write)

    @staticmethod
    def _completed(checked: Checked) -> RunStatus:
        return RunStatus.COMPLETED_WITH_WARNINGS if len(checked.issues) else RunStatus.COMPLETED

    def _document(self, progress: _Progress, status: RunStatus, dry_run: bool) -> RunDocument:
        checked = progress.checked
        assert checked is not None
        plan = progress.plan
        return RunDocument.of_check(
            check_document(checked), run_id=progress.run.run_id, tenant=progress.run.tenant,
            status=status, dry_run=dry_run,
            changes=plan.changes() if plan is not None else no_changes(),
            filtered=checked.filtered, patched=checked.patched,
            matched=plan.people.matched.height if plan is not None else 0,
            purged=progress.purged,
        )

    def _interrupted(self, progress: _Progress, code: Code, cause: str) -> RunRecord:
        """End a run that cannot finish: failed, nothing applied, one coded error."""
        run = progress.run
        checked = progress.checked
        if checked is None:
            checked = progress.checked = Checked(run.file_name or "", progress.sha256
                                                 or (run.sha256 or ""))
        progress.plan = None
        checked.issues.add(code, f"'{run.file_name}' was not applied: {cause}.")
        return self._finish(progress, RunStatus.FAILED, dry_run=run.dry_run, applied=False,
                            now=self.clock())

    def _finish(self, progress: _Progress, status: RunStatus, *, dry_run: bool,
                applied: bool, now: datetime) -> RunRecord:
        document = self._document(progress, status, dry_run)
        return self._record(progress, document, applied=applied, now=now)

    def _record(self, progress: _Progress, document: RunDocument, *, applied: bool,
                now: datetime) -> RunRecord:
        run, timer = progress.run, progress.timer
        folder = self.paths.run_reports(run.tenant, run.run_id)
        written: dict[str, Path] = {}
        with timer.step("artifacts"):
            try:
                written = self._artifacts(progress, document, folder)
            except Exception as exc:
                log.error("artifacts_failed", error=_cause(exc), exc_info=True)
        finished = self.clock()
        # A StoreError here goes up: the job is tried again and the run continued.
        record = move(
            self.store, run, document.status, finished_at=finished,
            layout=document.layout, counts=dict(document.counts),
            issue_counts=dict(document.issue_counts), document=document,
            timings=timer.steps, artifact_dir=str(folder), applied=applied,
            applied_at=now if applied else None,
        )
        progress.recorded = True
        self.telemetry.run_finished(run.tenant, document.status.value, timer.steps)
        log.info("run_finished", status=document.status.value,
                 duration_ms=int(sum(timer.steps.values()) * 1000),
                 errors=len(document.errors), warnings=len(document.warnings),
                 steps=timer.steps)
        self.mail.deliver(record, document, written)
        # A StoreError here goes up too: the retried job finds the run recorded and
        # ensure_mailed records its deliveries (adding them is idempotent).
        self.outlets.record(record)
        self.housekeep(run.tenant)
        return record

    def _artifacts(self, progress: _Progress, document: RunDocument,
                   folder: Path) -> dict[str, Path]:
        checked = progress.checked
        if checked is None:
            private_folder(folder)
            artifacts.write_json(document.to_json(), folder / artifacts.REPORT_JSON)
            return {artifacts.REPORT_JSON: folder / artifacts.REPORT_JSON}
        written = artifacts.write_artifacts(folder, document.to_json(), checked.issues.frame(),
                                            checked.summary, None)
        if progress.plan is not None and (document.dry_run
                                          or document.status is RunStatus.HELD):
            written[artifacts.PREVIEW_CSV] = folder / artifacts.PREVIEW_CSV
            artifacts.write_csv(preview_frame(progress.plan), written[artifacts.PREVIEW_CSV])
        if progress.plan is not None and progress.plan.people.matched.height:
            fields = " and ".join(progress.tenant.duplicates.match_on) + " (same role)"
            matches = progress.plan.people.matched.with_columns(matched_on=pl.lit(fields))
            written[artifacts.MATCHES_CSV] = folder / artifacts.MATCHES_CSV
            artifacts.write_csv(matches, written[artifacts.MATCHES_CSV])
        if progress.modified is not None:
            modified, progress.modified = progress.modified, None
            if document.status is RunStatus.FAILED:
                try:
                    modified.result().unlink(missing_ok=True)  # nothing of it was applied
                except Exception:
                    (folder / artifacts.MODIFIED_ZIP).unlink(missing_ok=True)
            else:
                written[artifacts.MODIFIED_ZIP] = modified.result()
        return written

    def _finish_unchanged(self, progress: _Progress) -> RunRecord:
        run = progress.run
        previous = next((r for r in list_runs(self.store, run.tenant, limit=20,
                                              with_document=True)
                         if r.applied and r.sha256 == progress.sha256), None)
        before = previous.document if previous is not None else None
        document = RunDocument(
            run_id=run.run_id, tenant=run.tenant, file=run.file_name or "",
            sha256=progress.sha256, status=RunStatus.UNCHANGED,
            layout=previous.layout if previous else None,
            counts=dict(before.counts) if before is not None else {},
        )
        log.info("run_unchanged", same_as=previous.run_id if previous else None)
        return self._record(progress, document, applied=False, now=self.clock())


def _cause(exc: BaseException) -> str:
    """The reason a run could not finish, as an admin can act on it."""
    for error in (exc, exc.__cause__, exc.__context__):
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            where = f" ({error.filename})" if error.filename else ""
            return f"the server's disk is full{where}"
    if isinstance(exc, PlanOutdated):
        return ("the directory kept changing while the run planned it (another run or an "
                "admin's edit at the same time); upload again")
    if isinstance(exc, StoreError):
        return f"the database failed ({exc})"
    if isinstance(exc, OSError):
        return f"a file could not be read or written ({exc.strerror or exc})"
    return (f"an internal error ({type(exc).__name__}) stopped it; the server log has "
            f"the details (event run_interrupted)")
