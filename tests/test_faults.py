"""Fault injection against a running daemon: the mail server, the database and the disk
fail in the middle of work, and every upload still ends in exactly one run and one email."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from conftest import PG_URL, pg_schema_url
from daemon_harness import Daemon, free_port, wait_until
from sqlalchemy import create_engine, text
from test_mail import Recorder, _LoopbackController
from test_sftp_support import paramiko_sftp, password_hash

from rosterdrop.tools.sample import write_sample
from uploads import small_tmpfs

PASSWORD = "district password"
ALPHA = {"alpha": {"username": "alpha", "password_hash": password_hash(PASSWORD)}}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fault-samples")
    made = {}
    for name, students, seed in (("small", 300, 1), ("other", 300, 2), ("big", 40000, 3)):
        made[name] = folder / f"{name}.zip"
        write_sample(made[name], layout="oneroster-1.1", students=students, seed=seed)
    return made


def upload(daemon: Daemon, path: Path, name: str) -> None:
    with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
        sftp.put(str(path), f"/dropbox/{name}")


@pytest.fixture
def stop_after() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.process is not None:
            daemon.stop(signal.SIGKILL)


def test_smtp_down_then_back(tmp_path: Path, samples: dict[str, Path],
                             stop_after: list[Daemon]) -> None:
    """With the mail server down the run still completes; once it is back, the report
    is delivered exactly once."""
    port = free_port()
    daemon = Daemon(tmp_path, ALPHA, extra=(
        f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\nstarttls = false\n'
        "retries = 10\nretry_seconds = 0.5\ntimeout_seconds = 2\n"))
    stop_after.append(daemon.start())
    upload(daemon, samples["small"], "d.zip")
    finished = daemon.wait_event("run_finished")
    assert finished[0]["status"] == "completed_with_warnings"
    daemon.wait_event("mail_failed", count=2)
    recorder = Recorder()
    controller = _LoopbackController(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        wait_until(lambda: len(recorder.envelopes) == 1)
        time.sleep(2)  # further retry rounds must not send it again
        assert len(recorder.envelopes) == 1
        assert recorder.message()["X-Rosterdrop-Run"] == finished[0]["run_id"]
    finally:
        controller.stop()


def test_sqlite_locked_during_a_run(tmp_path: Path, samples: dict[str, Path],
                                    stop_after: list[Daemon]) -> None:
    """Another process holding the SQLite write lock for seconds only delays the run."""
    daemon = Daemon(tmp_path, ALPHA)
    stop_after.append(daemon.start())
    db = sqlite3.connect(daemon.state / "rosterdrop.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    try:
        upload(daemon, samples["small"], "d.zip")
        time.sleep(3)
        assert daemon.named("run_finished") == []
    finally:
        db.execute("ROLLBACK")
        db.close()
    finished = daemon.wait_event("run_finished", timeout=60)
    assert len(finished) == 1 and finished[0]["status"] == "completed_with_warnings"
    wait_until(lambda: len(daemon.outbox()) == 1)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    if not PG_URL:
        pytest.skip("PostgreSQL fault tests need ROSTERDROP_TEST_PG=postgresql+psycopg://…")
    schema = f"f_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def test_postgresql_connections_cut_mid_run(tmp_path: Path, samples: dict[str, Path],
                                            stop_after: list[Daemon], pg_schema: str) -> None:
    """Every server connection of the daemon is terminated mid-run (what a PostgreSQL
    restart does to its clients): the job is retried and ends in exactly one run."""
    app = f"rosterdrop-{pg_schema}"
    url = pg_schema_url(pg_schema) + f"&application_name={app}"
    daemon = Daemon(tmp_path, ALPHA, top="lease_seconds = 2", extra=f'[store]\nurl = "{url}"\n')
    stop_after.append(daemon.start())
    upload(daemon, samples["big"], "big.zip")
    daemon.wait_event("run_started")
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :app"), {"app": app}).scalar_one()
    admin.dispose()
    assert killed >= 1
    finished = daemon.wait_event("run_finished", timeout=120)
    assert len({e["run_id"] for e in finished}) == 1
    assert finished[0]["status"] == "completed_with_warnings"
    time.sleep(1)
    assert len(daemon.named("run_finished")) == 1
    wait_until(lambda: len(daemon.outbox()) == 1)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", "12m") as mount:
        yield mount


def test_disk_full_refuses_upload_cleanly(small_disk: Path, samples: dict[str, Path],
                                          stop_after: list[Daemon]) -> None:
    """An upload that fills the disk is refused, leaves nothing behind, and the daemon
    keeps serving the next (small) upload."""
    daemon = Daemon(small_disk, ALPHA)
    stop_after.append(daemon.start())
    huge = small_disk.parent / "huge.zip"
    huge.write_bytes(os.urandom(16 * 1024 * 1024))
    with pytest.raises((OSError, paramiko.SSHException)):
        upload(daemon, huge, "huge.zip")
    wait_until(lambda: not (daemon.dropbox("alpha") / "huge.zip").exists())
    assert daemon.named("job_queued") == []
    upload(daemon, samples["small"], "ok.zip")
    finished = daemon.wait_event("run_finished", timeout=60)
    assert finished[0]["status"] == "completed_with_warnings"


KILLS = int(os.environ.get("ROSTERDROP_KILLS", "20"))
SIGKILL_START_SECONDS = 90.0
"""A restart on a loaded 2-core machine: interpreter, polars and the store (~2 s idle)."""
SIGKILL_SETTLE_SECONDS = 180.0
"""After the last restart: every queued upload run, applied and mailed (~5 s idle)."""


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows from the daemon's SQLite store (WAL: a reader does not block its writer)."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(sql).fetchall()


# Each kill and restart takes ~3 s idle; allow 15 s (a loaded 2-core machine), plus
# the settling, plus a minute for the samples (a 40 000-student ZIP) if this test
# is the first of the module to need them.
@pytest.mark.timeout(60 + KILLS * 15 + SIGKILL_SETTLE_SECONDS)
def test_sigkill_at_random_moments(tmp_path: Path, samples: dict[str, Path],
                                   stop_after: list[Daemon]) -> None:
    """SIGKILL at many moments across upload, queue, apply and email: after restarts,
    every completed upload ends in exactly one finished run and exactly one email."""
    import random

    rnd = random.Random(20261123)
    began = time.monotonic()
    daemon = Daemon(tmp_path, ALPHA)
    stop_after.append(daemon.start(timeout=SIGKILL_START_SECONDS))
    uploaded: list[str] = []
    restarts: list[float] = []
    for n in range(KILLS):
        name = f"u{n}.zip"
        sample = samples["small" if n % 2 else "other"]

        def send(sample: Path = sample, name: str = name) -> None:
            try:
                upload(daemon, sample, name)
                uploaded.append(name)
            except (OSError, EOFError, paramiko.SSHException):
                pass  # killed mid-upload: the client would retry; nothing may be queued

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(rnd.uniform(0.0, 0.6))
        daemon.stop(signal.SIGKILL)
        sender.join(timeout=60)
        assert not sender.is_alive(), f"the upload of {name} outlived the daemon's kill"
        restarted = time.monotonic()
        daemon.start(timeout=SIGKILL_START_SECONDS)
        restarts.append(time.monotonic() - restarted)
    attempted = {f"u{n}.zip" for n in range(KILLS)}
    db = daemon.state / "rosterdrop.db"
    spool = daemon.state / "spool" / "alpha"

    def runs_in_store() -> dict[str, tuple[str, str]]:
        """run id → (upload, status): the store is the record of every run. A log
        line can be lost to a kill: ``run_started`` (between creating the run and
        logging it; the retry logs ``run_resumed``) and ``run_finished`` (between
        recording the end and logging it; the retry resumes the finished run and
        sends its email)."""
        rows = _query(db, "SELECT run_id, file_name, status FROM runs WHERE tenant = 'alpha'")
        return {run_id: (file, status) for run_id, file, status in rows}

    def mailed() -> list[str]:
        return [p.name.split("-", 1)[1].removesuffix(".eml") for p in daemon.outbox()]

    def unsettled() -> list[str]:
        """What is still to happen, or [] once every upload is run and mailed."""
        waiting = []
        if jobs := _query(db, "SELECT id FROM jobs WHERE state != 'done'"):
            waiting.append(f"jobs not done: {jobs}")
        if zips := [p.name for p in daemon.dropbox("alpha").iterdir() if p.suffix == ".zip"]:
            waiting.append(f"not taken from the dropbox: {zips}")
        if spool.exists() and (spooled := [p.name for p in spool.iterdir()]):
            waiting.append(f"in the spool: {spooled}")
        runs = runs_in_store()
        if running := sorted(r for r, (_, status) in runs.items() if status == "running"):
            waiting.append(f"runs not finished: {running}")
        if missing := sorted(set(uploaded) - {file for file, _ in runs.values()}):
            waiting.append(f"uploads with no run: {missing}")
        if unmailed := sorted(set(runs) - set(mailed())):
            waiting.append(f"runs with no email: {unmailed}")
        return waiting

    last_restart = time.monotonic()
    deadline = last_restart + SIGKILL_SETTLE_SECONDS
    while waiting := unsettled():
        assert daemon.process is not None and daemon.process.poll() is None, \
            "the daemon exited:\n" + "\n".join(daemon.lines()[-30:])
        assert time.monotonic() < deadline, \
            f"not settled {SIGKILL_SETTLE_SECONDS:.0f} s after the last restart: {waiting}"
        time.sleep(0.2)
    settled = time.monotonic() - last_restart
    time.sleep(1.5)  # anything processed twice would finish now
    assert unsettled() == []

    runs = runs_in_store()
    finished_lines = [e["run_id"] for e in daemon.named("run_finished")]
    assert len(finished_lines) == len(set(finished_lines)), "a run finished twice"
    assert set(finished_lines) <= set(runs), "a run_finished line for no run in the store"
    # Each run came from one job, on that job's upload: job_started (logged for every
    # job before its run exists, and on each retry with the same run id) names both.
    file_of: dict[str, str] = {}
    for event in daemon.named("job_started"):
        known = file_of.setdefault(event["run_id"], event["file"])
        assert known == event["file"], f"run {event['run_id']} ran on two uploads"
    assert {run_id: file for run_id, (file, _) in runs.items()} == \
        {run_id: file_of.get(run_id) for run_id in runs}, "a run no job started, or renamed"
    queued = {e["job_id"]: e["file"] for e in daemon.named("job_queued")}
    for event in daemon.named("job_started"):  # a job runs on the upload it queued
        assert queued.get(event["job_id"], event["file"]) == event["file"], event
    job_runs = [run_id for (run_id,) in _query(db, "SELECT run_id FROM jobs")]
    assert sorted(job_runs, key=str) == sorted(runs), "a job without its one run, or a run twice"
    files = [file for file, _ in runs.values()]
    assert len(files) == len(set(files)), f"an upload was processed twice: {sorted(files)}"
    # Every upload the client saw complete has its run. A kill after the server took
    # the whole file but before the client heard the reply to its CLOSE leaves the
    # client with an error and the server with a complete upload: that one is
    # processed too (once), which is right; nothing else may appear.
    assert set(uploaded) <= set(files) <= attempted, (uploaded, files)
    statuses = {status for _, status in runs.values()}
    assert statuses <= {"completed_with_warnings", "unchanged"}, "a partial upload was processed"
    mails = mailed()
    assert len(mails) == len(runs), f"not one email per run: {sorted(mails)}"
    assert set(mails) == set(runs)
    leftovers = [p for p in daemon.dropbox("alpha").iterdir() if p.suffix == ".zip"]
    assert leftovers == []
    assert not spool.exists() or list(spool.iterdir()) == []
    lost_lines = len(runs) - len(finished_lines)
    print(f"\nsigkill: {KILLS} kills, {len(uploaded)} uploads completed by the client, "
          f"{len(runs)} runs ({lost_lines} without a run_finished line), {len(mails)} emails, "
          f"0 lost; restarts "
          f"{min(restarts):.1f}-{max(restarts):.1f} s, settled {settled:.1f} s after the last, "
          f"{time.monotonic() - began:.0f} s in all")
