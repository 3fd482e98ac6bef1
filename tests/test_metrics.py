"""Metrics and health: /metrics, /healthz and /readyz of a running daemon; the
counters fed by the parts' explicit ``Telemetry`` calls."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import paramiko
import pytest
import structlog
from daemon_harness import Daemon, free_port, wait_until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from test_sftp_support import make_key, paramiko_sftp, paramiko_transport, password_hash

from rosterdrop.config import parse_settings
from rosterdrop.daemon.intake import Intake
from rosterdrop.daemon.metrics import DaemonState, Metrics, MetricsServer, Monitoring
from rosterdrop.errors import ConfigError
from rosterdrop.paths import StatePaths
from rosterdrop.runs.runner import utc_now
from rosterdrop.sftp.server import DropboxServer
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.jobs import JobQueue
from rosterdrop.telemetry import Telemetry
from rosterdrop.tools.sample import write_sample

DOCS = Path(__file__).resolve().parents[1] / "docs" / "daemon.md"

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


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of ``metrics``' own registry (no HTTP)."""
    return value(generate_latest(metrics.registry).decode(), name, **labels)


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


def test_metrics_listen_is_off_by_default_and_checked() -> None:
    """metrics.listen defaults to empty (no listener); a malformed address is refused."""
    assert parse_settings({}).metrics.listen == ""
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        parse_settings({"metrics": {"listen": "9108"}})


# -- the Telemetry methods of Metrics, one by one ------------------------------------


def changes(call: Callable[[Metrics], None]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples ``call`` moved on a fresh ``Metrics`` (``*_created`` timestamps aside)."""
    metrics = Metrics()
    before = samples(generate_latest(metrics.registry).decode())
    call(metrics)
    after = samples(generate_latest(metrics.registry).decode())
    return {key: v - before.get(key, 0.0) for key, v in after.items()
            if not key[0].endswith("_created") and v != before.get(key, 0.0)}


def one(name: str, **labels: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(name, frozenset(labels.items())): 1.0}


@pytest.mark.parametrize(("call", "moved"), [
    (lambda m: m.upload_finished("completed"), one("rosterdrop_uploads_total",
                                                   outcome="completed")),
    (lambda m: m.upload_finished("aborted"), one("rosterdrop_uploads_total", outcome="aborted")),
    (lambda m: m.upload_finished("refused"), one("rosterdrop_uploads_total", outcome="refused")),
    (lambda m: m.login("ok", "publickey"), one("rosterdrop_sftp_logins_total", outcome="ok",
                                               method="publickey")),
    (lambda m: m.login("failed", "password"), one("rosterdrop_sftp_logins_total",
                                                  outcome="failed", method="password")),
    (lambda m: m.login("refused_banned", "none"), one("rosterdrop_sftp_logins_total",
                                                      outcome="refused_banned", method="none")),
    (lambda m: m.address_banned(), one("rosterdrop_sftp_bans_total")),
    (lambda m: m.job_queued("oneroster-api"), one("rosterdrop_jobs_queued_total",
                                                  source="oneroster-api")),
    (lambda m: m.job_failed(), one("rosterdrop_job_failures_total")),
    (lambda m: m.mail_delivered("sent"), one("rosterdrop_mails_total", outcome="sent")),
    (lambda m: m.mail_delivered("failed"), one("rosterdrop_mails_total", outcome="failed")),
], ids=["upload-completed", "upload-aborted", "upload-refused", "login-ok", "login-failed",
        "login-refused-banned", "ban", "job-queued", "job-failed", "mail-sent", "mail-failed"])
def test_each_counter_method_moves_its_own_counter_by_one(
        call: Callable[[Metrics], None],
        moved: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> None:
    """Each call moves exactly its counter, with its labels, by one; nothing else."""
    assert changes(call) == moved


def test_run_finished_counts_the_run_and_times_its_steps() -> None:
    """A finished run: its tenant/status counter, one observation per step, and the
    run's duration as the sum of its steps."""
    metrics = Metrics()
    metrics.run_finished("alpha", "completed", {"hash": 0.5, "check": 2.0})
    metrics.run_finished("alpha", "failed", {"hash": 0.25})
    text = generate_latest(metrics.registry).decode()
    assert value(text, "rosterdrop_runs_total", tenant="alpha", status="completed") == 1
    assert value(text, "rosterdrop_runs_total", tenant="alpha", status="failed") == 1
    assert value(text, "rosterdrop_step_duration_seconds_count", step="hash") == 2
    assert value(text, "rosterdrop_step_duration_seconds_sum", step="hash") == 0.75
    assert value(text, "rosterdrop_step_duration_seconds_sum", step="check") == 2.0
    assert value(text, "rosterdrop_step_duration_seconds_bucket", step="check", le="1.0") == 0
    assert value(text, "rosterdrop_step_duration_seconds_bucket", step="check", le="2.5") == 1
    assert value(text, "rosterdrop_run_duration_seconds_count") == 2
    assert value(text, "rosterdrop_run_duration_seconds_sum") == 2.75


class Broken:
    """A metric whose every use raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"broken metric: {name}")


def telemetry_methods() -> list[str]:
    return sorted(name for name, attr in vars(Telemetry).items()
                  if callable(attr) and not name.startswith("_"))


def test_metrics_implements_every_telemetry_method() -> None:
    """A method added to ``Telemetry`` and not counted by ``Metrics`` would count nothing
    in the daemon, silently."""
    assert len(telemetry_methods()) == 7
    for name in telemetry_methods():
        assert name in vars(Metrics), f"Metrics does not count Telemetry.{name}"


def test_a_failing_metric_never_raises_into_the_caller() -> None:
    """Every method swallows its metric's failure: the upload, login or run goes on."""
    metrics = Metrics()
    for attr in ("uploads", "runs", "run_seconds", "steps", "jobs", "job_failures", "logins",
                 "bans", "mails"):
        setattr(metrics, attr, Broken())
    metrics.upload_finished("completed")
    metrics.login("ok", "password")
    metrics.address_banned()
    metrics.job_queued("sftp")
    metrics.job_failed()
    metrics.run_finished("t", "completed", {"hash": 1.0})
    metrics.run_finished("t", "completed", {"hash": "not seconds"})  # type: ignore[dict-item]
    metrics.mail_delivered("sent")
    with pytest.raises(RuntimeError):  # the metrics really were broken
        metrics.uploads.labels("completed")


# -- counters move with logging silenced ---------------------------------------------


@contextlib.contextmanager
def logging_dropped() -> Iterator[list[str]]:
    """structlog configured to drop every event before anything sees it; yields the names
    of the events dropped (to show the log lines did happen)."""
    saved = structlog.get_config()
    dropped: list[str] = []

    def drop(_logger: object, _method: str, event: dict[str, Any]) -> Any:
        dropped.append(str(event.get("event")))
        raise structlog.DropEvent

    structlog.configure(processors=[drop])
    try:
        yield dropped
    finally:
        structlog.configure(**saved)


@contextlib.contextmanager
def sftp_server(tmp_path: Path, metrics: Metrics) -> Iterator[tuple[DropboxServer, list[Path]]]:
    """A real ``DropboxServer`` told to count into ``metrics``, on its own loop thread
    (the paramiko clients here block). Tenant ``alpha``, password login, banned after 3
    failures."""
    settings = parse_settings({
        "state_dir": str(tmp_path / "state"),
        "sftp": {"listen": "127.0.0.1:0", "ban": {"failures": 3}},
        "tenants": {"alpha": {"accounts": [
            {"username": "alpha", "password_hash": password_hash(PASSWORD)}]}},
    })
    uploaded: list[Path] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="metrics-sftp", daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(15)

    server = DropboxServer(settings, StatePaths(tmp_path / "state"),
                           lambda _tenant, path: uploaded.append(path), telemetry=metrics)
    try:
        run(server.start())
        yield server, uploaded
    finally:
        run(server.close())
        run(loop.shutdown_default_executor())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        loop.close()


def test_sftp_counters_move_with_every_log_event_dropped(tmp_path: Path) -> None:
    """Real uploads and logins through a real client count, though structlog drops every
    event: a counter depends on no log event, its name or the logging set-up."""
    metrics = Metrics()
    upload = tmp_path / "roster.zip"
    write_sample(upload, layout="oneroster-1.1", students=20, seed=1)
    paths = StatePaths(tmp_path / "state")
    paths.instance_file.parent.mkdir(parents=True)
    paths.instance_file.write_text("before\n")
    leftover = paths.incoming("alpha", "before")
    leftover.mkdir(parents=True)
    (leftover / "cut-off").write_bytes(b"PK")  # an upload the last stop interrupted

    with logging_dropped() as dropped, sftp_server(tmp_path, metrics) as (server, uploaded):
        assert counted(metrics, "rosterdrop_uploads_total", outcome="aborted") == 1
        with paramiko_sftp(server.port, "alpha", password=PASSWORD) as sftp:
            sftp.put(str(upload), "/dropbox/roster.zip")
            assert len(uploaded) == 1
            with pytest.raises(PermissionError):
                sftp.put(str(upload), "/dropbox/students.csv")
            remote = sftp.open("/dropbox/dropped.zip", "wb")
            remote.write(b"PK" * 1000)
            sftp.stat("/dropbox/dropped.zip")  # the write has been handled
            sftp.close()  # the channel goes with the file still open
            wait_until(lambda: counted(metrics, "rosterdrop_uploads_total",
                                       outcome="aborted") == 2)
        assert counted(metrics, "rosterdrop_uploads_total", outcome="completed") == 1
        assert counted(metrics, "rosterdrop_uploads_total", outcome="refused") == 1
        assert counted(metrics, "rosterdrop_sftp_logins_total", outcome="ok",
                       method="password") == 1

        stranger, _ = make_key(tmp_path, "stranger")
        with pytest.raises(paramiko.AuthenticationException), \
                paramiko_sftp(server.port, "alpha", key=stranger):
            pass
        for _ in range(2):
            with pytest.raises(paramiko.AuthenticationException), \
                    paramiko_sftp(server.port, "alpha", password="wrong"):
                pass
        # the rejected key counts for the ban when its connection has gone: 3 failures
        wait_until(lambda: counted(metrics, "rosterdrop_sftp_bans_total") == 1)
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            paramiko_transport(server.port).close()
        wait_until(lambda: counted(metrics, "rosterdrop_sftp_logins_total",
                                   outcome="refused_banned", method="none") == 1)
        assert counted(metrics, "rosterdrop_sftp_logins_total", outcome="failed",
                       method="publickey") == 1
        assert counted(metrics, "rosterdrop_sftp_logins_total", outcome="failed",
                       method="password") == 2
    assert {"upload_completed", "upload_refused", "upload_aborted", "login_ok",
            "login_failed", "login_banned"} <= set(dropped)  # logged, and dropped


def test_intake_counts_jobs_by_source_with_every_log_event_dropped(tmp_path: Path) -> None:
    """A taken upload and a recovered spool file count as queued, by source, with no
    log event reaching anyone."""
    metrics = Metrics()
    store = open_store(f"sqlite:///{tmp_path}/rd.db")
    paths = StatePaths(tmp_path / "state")
    intake = Intake(paths, JobQueue(store), ["alpha"], utc_now, telemetry=metrics)
    try:
        with logging_dropped() as dropped:
            paths.dropbox("alpha").mkdir(parents=True)
            upload = paths.dropbox("alpha") / "d.zip"
            write_sample(upload, layout="oneroster-1.1", students=5, seed=2)
            assert intake.take("alpha", upload, "sftp") is not None
            assert intake.take("alpha", upload, "sftp") is None  # gone: nothing queued
            orphan = intake.spool_dir("alpha") / "0123__orphan.zip"  # moved, never queued
            orphan.write_bytes(upload.name.encode())
            assert intake.recover() == 1
    finally:
        store.close()
    assert counted(metrics, "rosterdrop_jobs_queued_total", source="sftp") == 1
    assert counted(metrics, "rosterdrop_jobs_queued_total", source="watch") == 1
    assert dropped.count("job_queued") == 2


def test_monitoring_serves_the_metrics_it_is_handed(tmp_path: Path) -> None:
    """The daemon makes one ``Metrics`` for its parts and its listener: what they count
    is what /metrics shows; and nothing is put into structlog's chain."""
    store = open_store(f"sqlite:///{tmp_path}/rd.db")
    metrics = Metrics()
    processors = list(structlog.get_config()["processors"])
    monitoring = Monitoring("127.0.0.1:0", idle_daemon(store, JobQueue(store)), metrics)
    monitoring.start()
    try:
        assert structlog.get_config()["processors"] == processors
        metrics.job_queued("watch")
        assert monitoring.server is not None
        assert value(get(monitoring.server.port, "/metrics")[1], "rosterdrop_jobs_queued_total",
                     source="watch") == 1
    finally:
        monitoring.close()
        store.close()


def test_every_counter_and_histogram_is_documented() -> None:
    """docs/daemon.md's metrics table names each counter and histogram with its type and
    labels (names and labels are a contract with dashboards and alerts)."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        found = re.match(r"\| `(rosterdrop_\w+)` \| (\w+) \|([^|]*)\|", line)
        if found:
            rows[found[1]] = (found[2], set(re.findall(r"`(\w+)`", found[3])))
    metrics = Metrics()  # every labelled metric gets a sample to read its labels from
    metrics.upload_finished("completed")
    metrics.login("ok", "password")
    metrics.address_banned()
    metrics.job_queued("sftp")
    metrics.job_failed()
    metrics.run_finished("t", "completed", {"hash": 1.0})
    metrics.mail_delivered("sent")
    families = list(metrics.registry.collect())
    assert len(families) == 9
    for family in families:
        shown = f"{family.name}_total" if family.type == "counter" else family.name
        assert shown in rows, f"{shown} is not in {DOCS.name}"
        kind, labels = rows[shown]
        assert kind == family.type
        label_names = {n for s in family.samples for n in s.labels if n != "le"}
        assert label_names <= labels, (shown, label_names, labels)
