"""Previews tell the truth (issue 16, part 1): a dry run says what the real run would
do, guard included, and nothing can apply a preview afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_run_lifecycle import Sent, codes, settings, store  # noqa: F401 - fixtures
from test_sync_runner import Clock, district, people, upload

from rosterdrop.config import Settings
from rosterdrop.daemon.queue import JobQueue
from rosterdrop.daemon.resync import queue_last_upload
from rosterdrop.documents import RunStatus
from rosterdrop.errors import NotFound, UsageError
from rosterdrop.runs.runner import Runner, exit_code
from rosterdrop.store.engine import Store


def test_a_dry_run_of_an_upload_the_guard_would_hold_says_held(
        settings: Settings, store: Store, tmp_path: Path) -> None:  # noqa: F811
    """The same upload, dry run then real run: both say held, for the same reason."""
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    runner.sync("t", upload(tmp_path, district(10)), source="cli")
    drops_six = upload(tmp_path, district(4), "small.zip")
    dry = runner.sync("t", drops_six, source="cli", dry_run=True)
    assert dry.status is RunStatus.HELD and dry.dry_run and exit_code(dry.status) == 1
    assert codes(dry) == ["CHANGE_THRESHOLD"]
    assert dry.document is not None and dry.document.to_json()["dry_run"] is True
    active = [p for p in people(store).values() if p["status"] == "active"]
    assert sum(p["role"] == "student" for p in active) == 10
    with pytest.raises(UsageError, match="is a dry run"):
        runner.approve(dry.run_id)
    real = runner.sync("t", drops_six, source="cli")
    assert real.status is RunStatus.HELD and not real.dry_run
    assert codes(real) == codes(dry)
    # the dry run's "held" was never waiting for anyone: the real one is the only held run
    assert runner.discard(real.run_id).status is RunStatus.DISCARDED


def test_resync_after_a_dry_run_queues_the_last_applied_upload(
        settings: Settings, store: Store, tmp_path: Path) -> None:  # noqa: F811
    """A dry run of an upload that drops three students, then resync: the applied upload
    goes back into the queue, not the preview (8 active people stay 8)."""
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    applied = upload(tmp_path, district(8), "applied.zip")
    assert runner.sync("t", applied, source="cli").applied
    preview = runner.sync("t", upload(tmp_path, district(5), "preview.zip"), source="cli",
                          dry_run=True)
    assert preview.dry_run and not preview.applied
    job_id, name = queue_last_upload(settings, store, "t")
    assert name == "applied.zip"
    job = next(j for j in JobQueue(store).pending() if j.id == job_id)
    assert Path(job.path).read_bytes() == applied.read_bytes()


def test_resync_never_picks_a_held_or_failed_upload(
        settings: Settings, store: Store, tmp_path: Path) -> None:  # noqa: F811
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    with pytest.raises(NotFound, match="no applied upload"):
        queue_last_upload(settings, store, "t")
    first = upload(tmp_path, district(10), "first.zip")
    runner.sync("t", first, source="cli")
    held = runner.sync("t", upload(tmp_path, district(4), "held.zip"), source="cli")
    assert held.status is RunStatus.HELD
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    assert runner.sync("t", broken, source="cli").status is RunStatus.FAILED
    _, name = queue_last_upload(settings, store, "t")
    assert name == "first.zip"


def test_a_failing_upload_never_discards_a_held_run(
        settings: Settings, store: Store, tmp_path: Path) -> None:  # noqa: F811
    runner = Runner(settings, store, clock=Clock(), mailer=Sent())
    runner.sync("t", upload(tmp_path, district(10)), source="cli")
    held = runner.sync("t", upload(tmp_path, district(4), "held.zip"), source="cli")
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(bytes(range(256)) * 64)
    assert runner.sync("t", garbage, source="sftp").status is RunStatus.FAILED
    assert runner.approve(held.run_id).applied  # still held, still approvable
    assert runner.sync("t", upload(tmp_path, district(10), "back.zip"), source="cli").applied
    newer = runner.sync("t", upload(tmp_path, district(3), "newer.zip"), source="cli")
    assert newer.status is RunStatus.HELD
    held_again = runner.sync("t", upload(tmp_path, district(2), "newest.zip"), source="cli")
    assert held_again.status is RunStatus.HELD
    with pytest.raises(UsageError, match="discarded, not held"):
        runner.approve(newer.run_id)  # a valid newer export replaced it
