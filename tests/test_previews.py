"""Previews tell the truth (issue 16, part 1): a dry run says what the real run would
do, guard included, and nothing can apply a preview afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_run_lifecycle import Sent, codes, make_settings
from test_sync_runner import Clock, district, people, upload

from rosterdrop.config import Settings
from rosterdrop.daemon.resync import queue_last_upload
from rosterdrop.daemon.workers import WorkerPool
from rosterdrop.documents import RunStatus
from rosterdrop.errors import NotFound, UsageError
from rosterdrop.runs.runner import Runner, exit_code, utc_now
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import get_run, list_runs
from rosterdrop.store.jobs import JobQueue


@pytest.fixture
def settings(tmp_path: Path, backend_url: str) -> Settings:
    return make_settings(tmp_path, backend_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened

def test_a_dry_run_of_an_upload_the_guard_would_hold_says_held(
        settings: Settings, store: Store, tmp_path: Path) -> None:
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
        settings: Settings, store: Store, tmp_path: Path) -> None:
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
        settings: Settings, store: Store, tmp_path: Path) -> None:
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
        settings: Settings, store: Store, tmp_path: Path) -> None:
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


def test_a_held_run_and_a_dry_run_write_a_preview_an_admin_can_read(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    """preview.csv names every person to be created (with the account name they would
    get), deactivated or reactivated, and every class created or removed; it goes with
    the email. An applied run has none."""
    import csv

    sent = Sent()
    runner = Runner(settings, store, clock=Clock(), mailer=sent)
    first = runner.sync("t", upload(tmp_path, district(10)), source="cli")
    assert not (Path(first.artifact_dir or "") / "preview.csv").exists()
    files = district(4)
    files["students.csv"] = str(files["students.csv"]) + (
        "P99,1099,New,,Person,9,new.person@d.example,np,,S1\n")
    held = runner.sync("t", upload(tmp_path, files, "held.zip"), source="cli")
    assert held.status is RunStatus.HELD
    with (Path(held.artifact_dir or "") / "preview.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    by_action: dict[str, set[str]] = {}
    for row in rows:
        by_action.setdefault(f"{row['record']} {row['action']}", set()).add(row["id"])
    assert by_action["person create"] == {"P99"}
    assert by_action["person deactivate"] == {f"P{n}" for n in range(5, 11)}
    new = next(r for r in rows if r["id"] == "P99")
    assert new["account"].endswith("@t.example") and new["role"] == "student"
    names = [part.get_filename() for part in sent.messages[-1].iter_attachments()]
    assert "preview.csv" in names
    assert runner.approve(held.run_id).applied
    dry = runner.sync("t", upload(tmp_path, district(10), "back.zip"), source="cli",
                      dry_run=True)
    with (Path(dry.artifact_dir or "") / "preview.csv").open(encoding="utf-8") as handle:
        back = {r["id"] for r in csv.DictReader(handle) if r["action"] == "reactivate"}
    assert back == {f"P{n}" for n in range(5, 11)}


def test_approve_and_discard_each_send_their_own_email(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    """A held run's approval and a discard are mails of their own: a distinct Message-ID
    (the held mail's would make a mail client drop them as duplicates) and a subject
    that says what happened."""
    sent = Sent()
    runner = Runner(settings, store, clock=Clock(), mailer=sent)
    runner.sync("t", upload(tmp_path, district(10)), source="cli")
    first = runner.sync("t", upload(tmp_path, district(4), "a.zip"), source="cli")
    held_mail = sent.messages[-1]
    assert "held for approval" in str(held_mail["Subject"])
    runner.approve(first.run_id)
    approved_mail = sent.messages[-1]
    assert "sync completed" in str(approved_mail["Subject"])
    assert approved_mail["Message-ID"] != held_mail["Message-ID"]
    runner.sync("t", upload(tmp_path, district(10), "b.zip"), source="cli")
    second = runner.sync("t", upload(tmp_path, district(4), "c.zip"), source="cli")
    count = len(sent.messages)
    discarded = runner.discard(second.run_id)
    assert len(sent.messages) == count + 1
    mail = sent.messages[-1]
    assert "held sync discarded" in str(mail["Subject"])
    assert mail["Message-ID"] != sent.messages[-2]["Message-ID"]
    body = mail.get_body(("plain",))
    assert body is not None and "nothing of it was applied" in body.get_content()
    assert discarded.document is not None
    assert discarded.document.status is RunStatus.DISCARDED


def test_a_failed_pull_speaks_of_the_sis_not_of_an_upload(
        settings: Settings, store: Store) -> None:
    from rosterdrop.codes import Code

    sent = Sent()
    runner = Runner(settings, store, clock=Clock(), mailer=sent)
    run = runner.source_failed("t", source="oneroster-api", file_name="pull.zip",
                               code=Code.SOURCE_UNREACHABLE,
                               message="the SIS at https://sis.example did not answer")
    assert run.status is RunStatus.FAILED
    body = sent.messages[-1].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "could not be pulled from the SIS" in text
    assert "SHA-256" not in text and "export again" not in text.lower()


def test_a_failed_run_reports_no_patch_counts(settings: Settings, store: Store,
                                              tmp_path: Path) -> None:
    sent = Sent()
    runner = Runner(settings, store, clock=Clock(), mailer=sent)
    files = district(3)
    files["rosters.csv"] = str(files["rosters.csv"]) + "R99,K404,P1\n"  # patched away
    files["students.csv"] = str(files["students.csv"]) + "P1,dup,,,,,,,,\n"  # an error
    run = runner.sync("t", upload(tmp_path, files), source="cli")
    assert run.status is RunStatus.FAILED
    body = sent.messages[-1].get_body(("plain",))
    assert body is not None
    assert "Patched" not in body.get_content() and "Filtered" not in body.get_content()


@pytest.mark.asyncio
async def test_five_uploads_with_a_garbage_one_last(settings: Settings, store: Store,
                                                    tmp_path: Path) -> None:
    """Five bulk uploads wait in the queue, the last random bytes. The newest *valid* one
    supersedes the older ones and is applied; the garbage fails alone and supersedes
    nothing (before: the three valid ones ended superseded by it, and nothing applied)."""
    queue = JobQueue(store)
    spool = tmp_path / "spool"
    spool.mkdir()
    names = [f"u{n}.zip" for n in range(1, 6)]
    for n, name in enumerate(names, start=1):
        path = spool / name
        if n < 5:
            path.write_bytes(upload(tmp_path, district(6 + n), f"src-{name}").read_bytes())
        else:
            path.write_bytes(os.urandom(4096))
        queue.enqueue(tenant="t", path=str(path), file_name=name, source="sftp", kind="bulk",
                      now=utc_now())
    pool = WorkerPool(Runner(settings, store, mailer=Sent()), queue, count=1, clock=utc_now)
    pool.start()
    try:
        for _ in range(600):
            if not queue.pending():
                break
            await asyncio.sleep(0.1)
    finally:
        await pool.stop(5)
    assert not queue.pending()
    runs = {r.file_name: r for r in list_runs(store, "t")}
    assert sorted(runs) == names
    for name in names[:3]:
        assert runs[name].status is RunStatus.UNCHANGED
        document = get_run(store, runs[name].run_id).document
        assert document is not None and document.warnings[0].code == "UPLOAD_SUPERSEDED"
        assert "'u4.zip'" in document.warnings[0].message
    assert runs["u4.zip"].applied
    assert runs["u5.zip"].status is RunStatus.FAILED
    active = [p for p in people(store).values() if p["status"] == "active"]
    assert sum(p["role"] == "student" for p in active) == 10
