"""Prometheus metrics and health endpoints of a running daemon.

Counters are fed by explicit calls: ``Metrics`` implements ``Telemetry``
(``rosterdrop.telemetry``), which the daemon hands to the SFTP server, intake,
the workers and the runner, and each calls it where the thing it counts
happens. The calls are explicit, not read off the log stream, so that renaming
or silencing a log event can never silently stop a counter. Gauges that
describe state (queue depth and oldest job, SFTP sessions, busy workers) are
read when Prometheus scrapes. The registry belongs to the daemon, never
prometheus_client's global default, so two daemons in one process (tests) do
not share counters.

The same three routes are served by the console's listener (``web.listen``,
``rosterdrop.web``); ``MetricsServer`` is the older small threaded HTTP listener
(``metrics.listen``, off by default), kept for a scrape port apart from the console
(not behind the TLS proxy), with three routes:

- ``/metrics`` — Prometheus text format;
- ``/healthz`` — the process is up and its event loop answers (liveness);
- ``/readyz`` — the store answers and the queue is not stuck (readiness);
  503 with one reason per line otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from rosterdrop.config import parse_listen
from rosterdrop.errors import ConfigError, RosterdropError
from rosterdrop.store.engine import Store
from rosterdrop.telemetry import LoginOutcome, MailOutcome, Telemetry, UploadOutcome

if TYPE_CHECKING:
    from rosterdrop.daemon.workers import WorkerPool
    from rosterdrop.sftp.server import DropboxServer
    from rosterdrop.store.jobs import JobQueue

log = structlog.get_logger("rosterdrop.metrics")

STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LOOP_TIMEOUT_SECONDS = 2.0


class Metrics(Telemetry):
    """The daemon's counters and histograms, fed by the ``Telemetry`` calls of its
    parts. Every method swallows its own failures: a metric never costs the
    caller's work."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.uploads = Counter("rosterdrop_uploads", "SFTP uploads by outcome "
                               "(completed, aborted, refused).", ["outcome"], registry=r)
        self.runs = Counter("rosterdrop_runs", "Finished sync runs by tenant and status.",
                            ["tenant", "status"], registry=r)
        self.run_seconds = Histogram("rosterdrop_run_duration_seconds",
                                     "Duration of a sync run (sum of its steps).",
                                     buckets=STEP_BUCKETS, registry=r)
        self.steps = Histogram("rosterdrop_step_duration_seconds",
                               "Duration of one step of a sync run (hash, check, snapshot, "
                               "plan, apply, artifacts).", ["step"], buckets=STEP_BUCKETS,
                               registry=r)
        self.jobs = Counter("rosterdrop_jobs_queued", "Uploads queued, by source "
                            "(sftp, watch, resync).", ["source"], registry=r)
        self.job_failures = Counter("rosterdrop_job_failures",
                                    "Jobs that raised (they are tried again).", registry=r)
        self.logins = Counter("rosterdrop_sftp_logins", "SFTP logins by outcome (ok, failed, "
                              "refused_banned) and method.", ["outcome", "method"], registry=r)
        self.bans = Counter("rosterdrop_sftp_bans", "Addresses banned after too many "
                            "failed logins.", registry=r)
        self.mails = Counter("rosterdrop_mails", "Report mail deliveries by outcome (sent, "
                             "failed; a failed one is retried later).", ["outcome"],
                             registry=r)

    def upload_finished(self, outcome: UploadOutcome) -> None:
        with contextlib.suppress(Exception):
            self.uploads.labels(outcome).inc()

    def login(self, outcome: LoginOutcome, method: str) -> None:
        with contextlib.suppress(Exception):
            self.logins.labels(outcome, method).inc()

    def address_banned(self) -> None:
        with contextlib.suppress(Exception):
            self.bans.inc()

    def job_queued(self, source: str) -> None:
        with contextlib.suppress(Exception):
            self.jobs.labels(source).inc()

    def job_failed(self) -> None:
        with contextlib.suppress(Exception):
            self.job_failures.inc()

    def run_finished(self, tenant: str, status: str, steps: Mapping[str, float]) -> None:
        with contextlib.suppress(Exception):
            self.runs.labels(tenant, status).inc()
            seconds = {step: float(value) for step, value in steps.items()}
            for step, value in seconds.items():
                self.steps.labels(step).observe(value)
            self.run_seconds.observe(sum(seconds.values()))

    def mail_delivered(self, outcome: MailOutcome) -> None:
        with contextlib.suppress(Exception):
            self.mails.labels(outcome).inc()


class _StateCollector(Collector):
    """Gauges read at scrape time."""

    def __init__(self, state: DaemonState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state
        try:
            depth, age = state.queue_depth()
        except RosterdropError:
            depth, age, up = 0, 0.0, 0
        else:
            up = 1
        yield GaugeMetricFamily("rosterdrop_store_up", "1 when the last queue query "
                                "succeeded.", value=up)
        yield GaugeMetricFamily("rosterdrop_queue_depth", "Jobs queued or running "
                                "(all processes sharing the store).", value=depth)
        yield GaugeMetricFamily("rosterdrop_queue_oldest_job_age_seconds", "Age of the "
                                "oldest job queued or running; 0 when empty.", value=age)
        yield GaugeMetricFamily("rosterdrop_sftp_sessions", "SFTP sessions open now in "
                                "this process.", value=state.sessions())
        yield GaugeMetricFamily("rosterdrop_workers_busy", "Workers of this process "
                                "running a job now.", value=state.busy_workers())


@dataclass
class DaemonState:
    """What the scrape and the health checks read from the running daemon."""

    store: Store
    queue_depth: Callable[[], tuple[int, float]]
    queue_stuck: Callable[[], bool]
    sessions: Callable[[], int]
    busy_workers: Callable[[], int]
    stuck_seconds: float

    @classmethod
    def of(cls, store: Store, queue: JobQueue, server: DropboxServer, pool: WorkerPool, *,
           clock: Callable[[], datetime], stuck_seconds: float) -> DaemonState:
        return cls(
            store=store,
            queue_depth=lambda: queue.depth(clock()),
            queue_stuck=lambda: queue.stuck(clock(), stuck_seconds),
            sessions=server.session_count,
            busy_workers=pool.busy,
            stuck_seconds=stuck_seconds,
        )

    def ready(self) -> list[str]:
        """Reasons the daemon is not ready; empty when it is."""
        try:
            self.store.ping()
        except Exception as exc:
            first = str(exc).strip().splitlines()
            return [f"store unreachable: {first[0][:200] if first else type(exc).__name__}"]
        try:
            if self.queue_stuck():
                return [f"queue stuck: jobs waiting over {self.stuck_seconds:g} s and no "
                        f"worker holds a lease"]
        except RosterdropError as exc:
            return [f"queue unreadable: {exc}"]
        return []


class MetricsServer:
    """The HTTP listener for /metrics, /healthz and /readyz (a thread of its own)."""

    def __init__(self, listen: str, metrics: Metrics, state: DaemonState) -> None:
        self.listen = listen
        self.metrics = metrics
        self.state = state
        metrics.registry.register(_StateCollector(state))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind and serve; ``loop`` is the daemon's event loop, pinged by /healthz."""
        self._loop = loop
        host, port = parse_listen(self.listen)
        handler = _handler_for(self)
        try:
            httpd = _Server((host, port), handler, ipv6=":" in host)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {self.listen}: "
                              f"{exc.strerror or exc}") from exc
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rosterdrop-metrics", daemon=True)
        self._thread.start()
        shown = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        log.info("metrics_listening", listen=shown)

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def alive(self) -> bool:
        """The daemon's event loop runs callbacks (the SFTP server is not wedged)."""
        loop = self._loop
        if loop is None:
            return True
        if loop.is_closed():
            return False
        done = threading.Event()
        try:
            loop.call_soon_threadsafe(done.set)
        except RuntimeError:
            return False
        return done.wait(LOOP_TIMEOUT_SECONDS)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 ipv6: bool) -> None:
        if ipv6:
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def _handler_for(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rosterdrop"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(server.metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                if server.alive():
                    self._reply(200, b"ok\n")
                else:
                    self._reply(503, b"event loop not responding\n")
            elif path == "/readyz":
                reasons = server.state.ready()
                if reasons:
                    self._reply(503, ("\n".join(reasons) + "\n").encode())
                else:
                    self._reply(200, b"ready\n")
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _reply(self, status: int, body: bytes,
                   content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every 15 s are not worth a log line

    return Handler


class Monitoring:
    """What the daemon starts and stops: the HTTP listener, if configured, serving
    ``metrics`` (the ``Telemetry`` the daemon handed its parts) and ``state``."""

    def __init__(self, listen: str, state: DaemonState, metrics: Metrics) -> None:
        self.metrics = metrics
        self.state = state
        self.server = MetricsServer(listen, self.metrics, state) if listen else None
        if self.server is None:  # the console's /metrics reads the gauges too
            metrics.registry.register(_StateCollector(state))

    def scrape(self) -> bytes:
        """/metrics in Prometheus text format (blocking: the gauges query the store)."""
        return bytes(generate_latest(self.metrics.registry))

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self.server is not None:
            self.server.start(loop)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
