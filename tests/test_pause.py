"""Year-end rollover (issue 16, part 8): a paused tenant's uploads are accepted, kept and
queued but not applied; resumed, the newest valid one runs and the older ones are
superseded by it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_cli_sync import run
from test_run_lifecycle import Sent, make_settings
from test_sync_runner import district, people, upload

from rosterdrop.config import Settings
from rosterdrop.daemon.workers import WorkerPool
from rosterdrop.documents import RunStatus
from rosterdrop.runs.runner import Runner, utc_now
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import list_runs
from rosterdrop.store.jobs import JobQueue
from rosterdrop.store.tenants import paused_since, set_paused
from uploads import asm_files, make_zip


@pytest.fixture
def settings(tmp_path: Path, backend_url: str) -> Settings:
    return make_settings(tmp_path, backend_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened


def _queue(tmp_path: Path, queue: JobQueue, names: list[str], sizes: list[int]) -> None:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    for name, size in zip(names, sizes, strict=True):
        path = spool / name
        path.write_bytes(upload(tmp_path, district(size), f"src-{name}").read_bytes())
        queue.enqueue(tenant="t", path=str(path), file_name=name, source="sftp",
                      kind="bulk", now=utc_now())


async def _drain(queue: JobQueue) -> None:
    for _ in range(600):
        if not queue.pending():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the queue did not drain")


@pytest.mark.asyncio
async def test_paused_uploads_wait_and_the_newest_runs_on_resume(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    queue = JobQueue(store)
    assert set_paused(store, "t", datetime(2027, 6, 20, tzinfo=UTC))
    assert not set_paused(store, "t", datetime(2027, 6, 21, tzinfo=UTC))  # already paused
    assert paused_since(store, "t") == datetime(2027, 6, 20, tzinfo=UTC)
    _queue(tmp_path, queue, ["june.zip", "july.zip", "august.zip"], [10, 11, 12])
    assert queue.claim("w", utc_now()) is None  # nothing of a paused tenant is claimed
    assert not queue.stuck(utc_now(), 0)  # waiting on purpose is not a stuck queue
    assert [j.file_name for j in queue.pending()] == ["june.zip", "july.zip", "august.zip"]
    assert set_paused(store, "t", None)
    pool = WorkerPool(Runner(settings, store, mailer=Sent()), queue, count=1, clock=utc_now)
    pool.start()
    try:
        await _drain(queue)
    finally:
        await pool.stop(5)
    runs = {r.file_name: r.status for r in list_runs(store, "t")}
    assert runs == {"june.zip": RunStatus.UNCHANGED, "july.zip": RunStatus.UNCHANGED,
                    "august.zip": RunStatus.COMPLETED}
    assert sum(p["role"] == "student" for p in people(store).values()) == 12


def test_pause_and_resume_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    paused = run(tmp_path, "tenant", "pause", "t")
    assert paused.returncode == 0 and "paused" in paused.stdout
    refused = run(tmp_path, "sync", "u.zip", "--tenant", "t")
    assert refused.returncode == 2 and "is paused" in refused.stderr
    assert run(tmp_path, "sync", "u.zip", "--tenant", "t", "--dry-run").returncode == 0
    resumed = run(tmp_path, "tenant", "resume", "t")
    assert resumed.returncode == 0 and "resumed" in resumed.stdout
    assert run(tmp_path, "sync", "u.zip", "--tenant", "t").returncode == 0
    unknown = run(tmp_path, "tenant", "pause", "nobody")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
