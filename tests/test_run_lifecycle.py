"""A run's life: statuses move only as the table allows, and a run that cannot finish
ends failed with a coded reason and its email — never stuck ``running``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from test_sync_runner import Clock, district, upload

from rosterdrop.config import Settings, parse_settings
from rosterdrop.documents import TRANSITIONS, RunDocument, RunSource, RunStatus
from rosterdrop.errors import ConflictError, UsageError
from rosterdrop.runs import runner as runner_module
from rosterdrop.runs.lifecycle import move
from rosterdrop.runs.runner import Runner
from rosterdrop.store.directory import list_people, set_person
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import RunRecord, create_run, get_run, list_runs
from rosterdrop.store.mails import MailState, mail_state
from uploads import small_tmpfs


class Sent:
    """The runner's send seam: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    def __call__(self, message: EmailMessage, settings: Settings) -> str:
        self.messages.append(message)
        return "memory"


def make_settings(tmp_path: Path, backend_url: str, **top: object) -> Settings:
    return parse_settings({
        "state_dir": str(tmp_path / "state"),
        "store": {"url": backend_url},
        "tenants": {"t": {"name": "Test District", "report_to": ["admin@t.example"],
                          "account_domain": "t.example",
                          "guard": {"max_deactivate_percent": 20, "min_population": 5}}},
        **top,
    })


@pytest.fixture
def settings(tmp_path: Path, backend_url: str) -> Settings:
    return make_settings(tmp_path, backend_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened


def codes(run: RunRecord) -> list[str]:
    assert run.document is not None
    return [issue.code for issue in run.document.errors]


def test_every_status_has_its_moves_and_nothing_leaves_a_final_one() -> None:
    assert set(TRANSITIONS) == set(RunStatus)
    for status in RunStatus:
        assert status.finished is (status is not RunStatus.RUNNING)
    finals = [s for s in RunStatus if s not in (RunStatus.RUNNING, RunStatus.HELD)]
    assert all(not TRANSITIONS[s] for s in finals)
    assert RunStatus.DISCARDED in TRANSITIONS[RunStatus.HELD]
    assert RunStatus.DISCARDED not in TRANSITIONS[RunStatus.RUNNING]


def test_a_move_the_table_forbids_or_someone_made_first_is_refused(store: Store) -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    run = create_run(store, RunRecord(run_id="20261203-000000-00000001", tenant="t",
                                      source=RunSource.CLI, created_at=now))
    with pytest.raises(ConflictError, match="cannot become discarded"):
        move(store, run, RunStatus.DISCARDED, finished_at=now)
    held = move(store, run, RunStatus.HELD, finished_at=now)
    assert held.status is RunStatus.HELD
    # `run` is a stale copy: it still says running, the store says held
    with pytest.raises(ConflictError, match="is held now"):
        move(store, run, RunStatus.COMPLETED, finished_at=now)
    assert move(store, held, RunStatus.DISCARDED, finished_at=now).status is RunStatus.DISCARDED
    with pytest.raises(ConflictError):
        move(store, held, RunStatus.COMPLETED, finished_at=now)  # discarded meanwhile
    assert get_run(store, run.run_id).status is RunStatus.DISCARDED


def test_a_document_reads_back_as_it_was_written(settings: Settings, store: Store,
                                                 tmp_path: Path) -> None:
    run = Runner(settings, store, clock=Clock(), mailer=Sent()).sync(
        "t", upload(tmp_path, district()), source="cli")
    assert run.document is not None
    stored = get_run(store, run.run_id).document
    assert stored == run.document
    assert RunDocument.from_json(run.document.to_json()) == run.document
    assert run.document.to_json()["status"] == "completed"
    summary = list_runs(store, "t")[0].summary().to_json()
    assert "errors" not in summary and summary["source"] == "cli"
    assert summary["counts"]["students"] == 10


def test_past_its_deadline_a_run_fails_coded_and_applies_nothing(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    sent = Sent()
    run = Runner(settings, store, clock=Clock(), mailer=sent).sync(
        "t", upload(tmp_path, district()), source="sftp", deadline=time.monotonic() - 1)
    assert run.status is RunStatus.FAILED and not run.applied
    assert codes(run) == ["RUN_TIMED_OUT"]
    assert "job_timeout_seconds" in run.document.errors[0].message  # type: ignore[union-attr]
    assert list_people(store, "t", None, True) == []
    assert len(sent.messages) == 1 and "failed" in str(sent.messages[0]["Subject"])
    assert mail_state(store, run.run_id) is MailState.SENT


def test_a_plan_outdated_by_a_concurrent_edit_is_made_again_once(
        settings: Settings, store: Store, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An admin's edit lands between snapshot and apply: the run plans again, applies."""
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    first = runner.sync("t", upload(tmp_path, district()), source="cli")
    assert first.status is RunStatus.COMPLETED
    plans = []
    real_plan = runner_module.plan_sync

    def plan_then_edit(*args: object, **kwargs: object) -> object:
        plans.append(1)
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        if len(plans) == 1:  # a real write to the directory: the tenant's revision moves on
            set_person(store, "t", "P1", {"last_name": "Edited"},
                       datetime(2026, 12, 3, tzinfo=UTC))
        return plan

    monkeypatch.setattr(runner_module, "plan_sync", plan_then_edit)
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("First2,", "Second2,")
    second = runner.sync("t", upload(tmp_path, files, "v2.zip"), source="cli")
    assert len(plans) == 2
    assert second.status in (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_WARNINGS), codes(
        second)
    assert second.applied


def test_a_directory_that_keeps_changing_fails_the_run_coded(
        settings: Settings, store: Store, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    runner.sync("t", upload(tmp_path, district()), source="cli")
    real_plan = runner_module.plan_sync
    edits = iter(range(100))

    def plan_then_edit(*args: object, **kwargs: object) -> object:
        plan = real_plan(*args, **kwargs)  # type: ignore[arg-type]
        set_person(store, "t", "P1", {"last_name": f"Edit{next(edits)}"},
                   datetime(2026, 12, 3, tzinfo=UTC))
        return plan

    monkeypatch.setattr(runner_module, "plan_sync", plan_then_edit)
    files = district()
    files["students.csv"] = str(files["students.csv"]).replace("First2,", "Second2,")
    run = runner.sync("t", upload(tmp_path, files, "v2.zip"), source="cli")
    assert run.status is RunStatus.FAILED and not run.applied
    assert codes(run) == ["RUN_INTERRUPTED"]
    assert "kept changing" in run.document.errors[0].message  # type: ignore[union-attr]
    by_id = {p["person_id"]: p for p in list_people(store, "t", None, True)}
    assert by_id["P2"]["first_name"] == "First2"  # the second upload was not applied


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real, small file system, filled to the last byte."""
    with small_tmpfs(tmp_path / "disk", "256k") as mount:
        with pytest.raises(OSError), (mount / "filler").open("wb", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 4096)
        yield mount


def test_a_full_disk_fails_the_run_coded_with_its_email_at_once(
        tmp_path: Path, backend_url: str, full_disk: Path) -> None:
    """Kept uploads, reports and the outbox live in shared_dir; when it is full the run
    ends failed (RUN_INTERRUPTED, the disk named), nothing is applied, the email goes out
    by SMTP and nothing is left running."""
    settings = make_settings(tmp_path, backend_url, shared_dir=str(full_disk))
    settings.state_dir.mkdir(parents=True)
    sent = Sent()
    with open_store(settings.database_url) as store:
        run = Runner(settings, store, clock=Clock(), mailer=sent).sync(
            "t", upload(tmp_path, district()), source="sftp")
        assert run.status is RunStatus.FAILED and not run.applied
        assert codes(run) == ["RUN_INTERRUPTED"]
        assert "disk is full" in run.document.errors[0].message  # type: ignore[union-attr]
        assert list_people(store, "t", None, True) == []
        assert [r.status for r in list_runs(store, "t")] == [RunStatus.FAILED]
        assert len(sent.messages) == 1
        assert mail_state(store, run.run_id) is MailState.SENT


def test_approving_twice_is_refused(settings: Settings, store: Store, tmp_path: Path) -> None:
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    runner.sync("t", upload(tmp_path, district(10)), source="cli")
    held = runner.sync("t", upload(tmp_path, district(4), "small.zip"), source="cli")
    assert held.status is RunStatus.HELD
    approved = runner.approve(held.run_id)
    assert approved.status in (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_WARNINGS)
    with pytest.raises(UsageError, match="not held"):
        runner.approve(held.run_id)
    with pytest.raises(UsageError, match="not held"):
        runner.discard(held.run_id)


def test_mail_retries_back_off_and_give_up_after_mail_retries(
        tmp_path: Path, backend_url: str) -> None:
    settings = make_settings(tmp_path, backend_url,
                             mail={"retries": 2, "retry_seconds": 60})
    settings.state_dir.mkdir(parents=True)
    from rosterdrop.errors import MailError

    attempts: list[datetime] = []
    clock = Clock()

    def down(message: EmailMessage, settings: Settings) -> str:
        attempts.append(clock.now)
        raise MailError("connection refused")

    with open_store(settings.database_url) as store:
        runner = Runner(settings, store, clock=clock, mailer=down)
        run = runner.sync("t", upload(tmp_path, district()), source="cli")
        assert run.status is RunStatus.COMPLETED
        assert len(attempts) == 1 and mail_state(store, run.run_id) is MailState.FAILED
        assert runner.retry_mails() == 0  # not due yet
        clock.now += timedelta(seconds=61)
        assert runner.retry_mails() == 1 and len(attempts) == 2
        clock.now += timedelta(seconds=61)
        assert runner.retry_mails() == 0  # the second wait is twice as long
        clock.now += timedelta(seconds=61)
        assert runner.retry_mails() == 1 and len(attempts) == 3
        clock.now += timedelta(hours=2)
        assert runner.retry_mails() == 0 and len(attempts) == 3  # given up: retries = 2
        assert mail_state(store, run.run_id) is MailState.FAILED
