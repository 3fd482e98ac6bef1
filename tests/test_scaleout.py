"""Scale-out: two `rosterdrop serve` processes, one PostgreSQL store, one shared folder."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_URL, fresh_pg_schema
from daemon_harness import Daemon, wait_until
from test_sftp_support import paramiko_sftp, password_hash

from rosterdrop.store.engine import open_store
from rosterdrop.store.history import list_runs
from rosterdrop.tools.sample import write_sample

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="scale-out tests need ROSTERDROP_TEST_PG=postgresql+psycopg://…")

PASSWORD = "district password"
TENANTS = [f"t{n}" for n in range(5)]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema both processes share."""
    with fresh_pg_schema() as url:
        yield url


def pair(tmp_path: Path, url: str, *, lease_seconds: float = 120,
         tenants: list[str] = TENANTS) -> tuple[Daemon, Daemon]:
    """Two daemons: own state folders (host keys), one shared folder, one store."""
    shared = tmp_path / "shared"
    accounts = {t: {"username": t, "password_hash": password_hash(PASSWORD)} for t in tenants}
    daemons = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        daemon = Daemon(root, accounts, extra=f'[store]\nurl = "{url}"\n')
        # top-level keys go before the first table
        daemon.config.write_text(f'shared_dir = "{shared}"\nlease_seconds = {lease_seconds}\n'
                                 + daemon.config.read_text())
        daemons.append(daemon)
    return daemons[0], daemons[1]


def events(daemons: tuple[Daemon, ...], name: str) -> list[dict[str, Any]]:
    return [e for d in daemons for e in d.named(name)]


def stop_all(*daemons: Daemon) -> None:
    for daemon in daemons:
        if daemon.process is not None:
            daemon.stop(signal.SIGKILL)


def test_fifty_uploads_over_two_processes_each_processed_once(tmp_path: Path,
                                                              pg_url: str) -> None:
    """50 uploads spread over both processes' SFTP ports: 50 jobs, 50 runs, 50 mails,
    each upload handled by exactly one process, and both processes did work."""
    zips = []
    for seed in range(3):
        zips.append(tmp_path / f"s{seed}.zip")
        write_sample(zips[-1], layout="oneroster-1.1", students=120, seed=seed + 1)
    a, b = pair(tmp_path, pg_url)
    a.start()
    b.start()
    try:
        assert a.state != b.state and (tmp_path / "shared" / "tenants").is_dir()
        names = set()
        n = 0
        for daemon in (a, b):
            for tenant in TENANTS:
                with paramiko_sftp(daemon.port, tenant, password=PASSWORD) as sftp:
                    for _ in range(5):
                        name = f"u{n:02}.zip"
                        sftp.put(str(zips[n % len(zips)]), f"/dropbox/{name}")
                        names.add((tenant, name))
                        n += 1
        assert n == 50
        wait_until(lambda: len(events((a, b), "job_finished")) >= 50, timeout=90)

        queued = events((a, b), "job_queued")
        assert Counter((e["tenant"], e["file"]) for e in queued) == Counter(names)
        finished = events((a, b), "job_finished")
        assert sorted(e["job_id"] for e in finished) == sorted(e["job_id"] for e in queued)
        runs = events((a, b), "run_finished")
        assert len(runs) == 50 == len({r["run_id"] for r in runs})
        assert a.named("job_finished") and b.named("job_finished")
        wait_until(lambda: len(list((tmp_path / "shared" / "outbox").glob("*.eml"))) == 50)
        with open_store(pg_url) as store:
            history = list_runs(store, None, 100)
        assert Counter((r.tenant, r.file_name) for r in history) == Counter(names)
        assert not list((tmp_path / "shared" / "spool").rglob("*.zip"))
    finally:
        stop_all(a, b)


def test_sigkill_mid_run_the_other_process_takes_over_at_once(
        tmp_path: Path, pg_url: str) -> None:
    """The process running a sync is killed: PostgreSQL drops its advisory lock with its
    connection, so the other process claims the job long before the lease would run out,
    continues the same run and finishes it; one run, one mail."""
    upload = tmp_path / "m.zip"
    write_sample(upload, layout="oneroster-1.1", students=20000, seed=7)
    lease = 120.0
    a, b = pair(tmp_path, pg_url, lease_seconds=lease, tenants=["t0"])
    a.start()
    b.start()
    try:
        with paramiko_sftp(a.port, "t0", password=PASSWORD) as sftp:
            sftp.put(str(upload), "/dropbox/m.zip")
        wait_until(lambda: bool(events((a, b), "run_started")))
        owner, other = (a, b) if a.named("run_started") else (b, a)
        started = owner.named("run_started")[0]
        owner.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        assert owner.named("run_finished") == []

        other.wait_event("job_started", timeout=60)
        assert time.monotonic() - killed_at < lease / 2  # the lock, not the lease
        finished = other.wait_event("run_finished", timeout=60)
        assert [e["run_id"] for e in finished] == [started["run_id"]]
        assert finished[0]["status"] == "completed_with_warnings"
        assert other.named("job_started")[0]["attempt"] == 2
        assert other.named("run_resumed")[0]["run_id"] == started["run_id"]
        wait_until(lambda: len(list((tmp_path / "shared" / "outbox").glob("*.eml"))) == 1)
        with open_store(pg_url) as store:
            history = list_runs(store, None, 10)
        assert [(r.run_id, r.status) for r in history] == [
            (started["run_id"], "completed_with_warnings")]
    finally:
        stop_all(a, b)
