"""Metrics and health: /metrics, /healthz and /readyz of a running daemon."""

from __future__ import annotations

import signal
import socket
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import paramiko
import pytest
from daemon_harness import Daemon, free_port, wait_until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from test_sftp_support import paramiko_sftp, password_hash

from rosterdrop.config import parse_settings
from rosterdrop.daemon.metrics import DaemonState, Metrics, MetricsServer
from rosterdrop.daemon.queue import JobQueue
from rosterdrop.errors import ConfigError
from rosterdrop.runs.runner import utc_now
from rosterdrop.store.engine import Store, open_store
from rosterdrop.tools.sample import write_sample

PASSWORD = "district password"


def get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path → (status, body)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (name, labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def test_scrape_a_running_daemon(tmp_path: Path) -> None:
    """A real upload, a failed login and a ban show up in /metrics; health and readiness
    answer 200; SFTP sessions are counted while open."""
    upload = tmp_path / "d.zip"
    write_sample(upload, layout="oneroster-1.1", students=200, seed=4)
    http = free_port()
    daemon = Daemon(tmp_path, {"alpha": {"username": "alpha",
                                         "password_hash": password_hash(PASSWORD)}},
                    extra=f'[metrics]\nlisten = "127.0.0.1:{http}"\n'
                          "[sftp.ban]\nfailures = 2\n").start()
    try:
        assert daemon.named("metrics_listening")[0]["listen"] == f"127.0.0.1:{http}"
        assert get(http, "/healthz") == (200, "ok\n")
        assert get(http, "/readyz") == (200, "ready\n")
        assert get(http, "/nothing")[0] == 404
        with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
            sftp.put(str(upload), "/dropbox/d.zip")
            assert value(get(http, "/metrics")[1], "rosterdrop_sftp_sessions") == 1
        daemon.wait_event("mail_sent")
        for _ in range(2):  # the 2nd failure starts the ban (ban.failures = 2)
            with pytest.raises(paramiko.AuthenticationException), \
                    paramiko_sftp(daemon.port, "alpha", password="wrong"):
                pass
        daemon.wait_event("login_banned")

        status, text = get(http, "/metrics")
        assert status == 200
        assert value(text, "rosterdrop_uploads_total", outcome="completed") == 1
        assert value(text, "rosterdrop_runs_total", tenant="alpha",
                     status="completed_with_warnings") == 1
        assert value(text, "rosterdrop_step_duration_seconds_count", step="check") == 1
        assert value(text, "rosterdrop_run_duration_seconds_count") == 1
        assert value(text, "rosterdrop_jobs_queued_total", source="sftp") == 1
        assert value(text, "rosterdrop_mails_total", outcome="sent") == 1
        assert value(text, "rosterdrop_sftp_logins_total", outcome="ok", method="password") == 1
        assert value(text, "rosterdrop_sftp_logins_total", outcome="failed",
                     method="password") == 2
        assert value(text, "rosterdrop_sftp_bans_total") == 1
        assert value(text, "rosterdrop_queue_depth") == 0
        assert value(text, "rosterdrop_store_up") == 1
        wait_until(lambda: value(get(http, "/metrics")[1], "rosterdrop_sftp_sessions") == 0)
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        if daemon.process is not None:
            daemon.stop(signal.SIGKILL)


def idle_daemon(store: Store, queue: JobQueue) -> DaemonState:
    """The state of a daemon whose workers are gone: no sessions, nothing busy."""
    return DaemonState(store=store, queue_depth=lambda: queue.depth(utc_now()),
                       queue_stuck=lambda: queue.stuck(utc_now(), 60), sessions=lambda: 0,
                       busy_workers=lambda: 0, stuck_seconds=60)


def test_readyz_fails_for_a_stuck_queue_and_an_unreachable_store(tmp_path: Path) -> None:
    """/readyz: 503 naming the reason when jobs wait with nobody working, or the store
    does not answer; /healthz stays 200 (the process itself is fine)."""
    store = open_store(f"sqlite:///{tmp_path}/rd.db")
    queue = JobQueue(store)
    queue.enqueue(tenant="a", path="/x.zip", file_name="x.zip", source="watch", kind="bulk",
                  now=utc_now() - timedelta(hours=2))
    server = MetricsServer("127.0.0.1:0", Metrics(), idle_daemon(store, queue))
    server.start()
    try:
        status, body = get(server.port, "/readyz")
        assert status == 503 and body.startswith("queue stuck")
        assert get(server.port, "/healthz")[0] == 200
        text = get(server.port, "/metrics")[1]
        assert value(text, "rosterdrop_queue_depth") == 1
        assert value(text, "rosterdrop_queue_oldest_job_age_seconds") >= 7200
        job = queue.claim("w", utc_now())
        assert job is not None
        assert get(server.port, "/readyz")[0] == 200  # a live lease: work is in progress
    finally:
        server.close()
        store.close()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gone = Store(create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{closed}/none"))
    server = MetricsServer("127.0.0.1:0", Metrics(), idle_daemon(gone, JobQueue(gone)))
    server.start()
    try:
        status, body = get(server.port, "/readyz")
        assert status == 503 and body.startswith("store unreachable")
        assert value(get(server.port, "/metrics")[1], "rosterdrop_store_up") == 0
    finally:
        server.close()
        gone.close()


def test_counters_follow_log_events() -> None:
    """The processor counts one failed delivery per runner event (not per SMTP attempt),
    tells a ban from a banned address coming back, and passes every event on."""
    metrics = Metrics()
    events = [
        {"event": "mail_failed", "logger": "rosterdrop.mail", "attempt": 1},
        {"event": "mail_failed", "logger": "rosterdrop.mail", "attempt": 2},
        {"event": "mail_failed", "logger": "rosterdrop.runner", "run_id": "r"},
        {"event": "login_banned", "failures": 10},
        {"event": "login_banned", "seconds_left": 42},
        {"event": "upload_refused", "reason": "name"},
        {"event": "run_finished", "tenant": "t", "status": "failed", "steps": {"hash": 0.5}},
        {"event": "something_else"},
    ]
    for event in events:
        assert metrics.observe(None, "info", dict(event)) == event
    text = generate_latest(metrics.registry).decode()
    assert value(text, "rosterdrop_mails_total", outcome="failed") == 1
    assert value(text, "rosterdrop_sftp_bans_total") == 1
    assert value(text, "rosterdrop_sftp_logins_total", outcome="refused_banned",
                 method="none") == 1
    assert value(text, "rosterdrop_uploads_total", outcome="refused") == 1
    assert value(text, "rosterdrop_step_duration_seconds_sum", step="hash") == 0.5
    assert value(text, "rosterdrop_runs_total", tenant="t", status="failed") == 1


def test_metrics_listen_is_off_by_default_and_checked() -> None:
    """metrics.listen defaults to empty (no listener); a malformed address is refused."""
    assert parse_settings({}).metrics.listen == ""
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        parse_settings({"metrics": {"listen": "9108"}})
