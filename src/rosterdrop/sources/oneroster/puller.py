"""The I/O shell of a pull: fetch, bundle, queue; and the daemon's pull scheduler.

``fetch_bundle`` reads a tenant's SIS into a OneRoster CSV bundle ZIP.
``PullService.pull`` does one whole pull under the tenant's pull lock: fetch,
then hand the ZIP to the intake (spool + job, ``source = "oneroster-api"``)
exactly like an upload; when the SIS cannot be read it records one failed run
(``SOURCE_UNREACHABLE``/``SOURCE_REFUSED``/``SOURCE_INVALID``) and its email
instead, so every pull ends in one history run and one email.
``PullScheduler`` is the scheduler ``rosterdrop serve`` runs as an asyncio
task (``PullScheduler.run``): it asks ``schedule.decide`` for every API tenant
once a second and starts due pulls, one per tenant at a time, each a task
whose blocking pull runs in asyncio's default executor. (``start``/``stop``
drive the same schedule from threads of its own, for callers without a loop.)

State lives in ``<shared folder>/pulls/``: ``<tenant>.json`` (the last slot
pulled for, when, and how it ended), ``<tenant>.lock`` (held with ``flock``
while a pull runs, so two processes never pull one tenant at once),
``<tenant>.request`` (``rosterdrop resync`` asks for a pull now) and
``<tenant>/`` (the bundle being written).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from rosterdrop.codes import Code
from rosterdrop.config import OneRosterSource, Settings
from rosterdrop.errors import InputError, SourceError, UsageError
from rosterdrop.paths import StatePaths, open_private, private_folder
from rosterdrop.sources.oneroster.auth import read_secret
from rosterdrop.sources.oneroster.bundle import BundleWriter
from rosterdrop.sources.oneroster.client import (
    BACKOFF_SECONDS,
    COLLECTIONS,
    OneRosterClient,
    PullCancelled,
)
from rosterdrop.sources.oneroster.schedule import Decision, Schedule, decide

log = structlog.get_logger("rosterdrop.api")

SOURCE = "oneroster-api"
REASON_CODES = {
    "unreachable": Code.SOURCE_UNREACHABLE,
    "refused": Code.SOURCE_REFUSED,
    "invalid": Code.SOURCE_INVALID,
}


def api_tenants(settings: Settings) -> dict[str, OneRosterSource]:
    """The tenants whose roster comes from a OneRoster API."""
    return {key: t.source for key, t in settings.tenants.items() if t.source is not None}


def api_source(settings: Settings, tenant: str) -> OneRosterSource:
    source = settings.tenant(tenant).source
    if source is None:
        raise UsageError(f"tenant {tenant!r} has no [tenants.{tenant}.source]; it receives "
                         f"uploads only")
    return source


def read_secrets(settings: Settings,
                 environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Every API tenant's client secret, read once at start (ConfigError when missing)."""
    return {key: read_secret(source, key, environ) for key, source in api_tenants(settings).items()}


def pull_file_name(now: datetime) -> str:
    return f"oneroster-api-{now.astimezone(UTC):%Y%m%d-%H%M%S}.zip"


@dataclass
class Pulled:
    """What one fetch produced."""

    tenant: str
    version: str
    path: Path
    records: dict[str, int]
    """Records per collection, as the server sent them."""
    rows: dict[str, int]
    """Rows per CSV file of the bundle (1.2: roles.csv from the users' roles)."""
    notes: list[str]
    seconds: float
    requests: int
    retries: int


def fetch_bundle(tenant: str, source: OneRosterSource, secret: str, out: Path, *,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 cancel: threading.Event | None = None,
                 backoff: float = BACKOFF_SECONDS) -> Pulled:
    """Read every rostering collection of the tenant's SIS into the bundle ZIP ``out``."""
    started = time.monotonic()
    work = out.parent / f".work-{uuid.uuid4().hex[:12]}"
    writer = BundleWriter(work, source.version)
    host = httpx.URL(source.base_url).host
    log.info("pull_started", tenant=tenant, host=host, version=source.version,
             auth=source.auth)
    try:
        with OneRosterClient(source, secret, tenant=tenant, transport=transport, sleep=sleep,
                             cancel=cancel, backoff=backoff) as client:
            records = {c: writer.add(c, client.records(c)) for c in COLLECTIONS}
            rows = writer.write_zip(out, system_name="OneRoster API", system_code=host)
            pulled = Pulled(tenant, source.version, out, records, rows,
                            client.notes + writer.notes, time.monotonic() - started,
                            client.session.requests, client.session.retries)
    finally:
        writer.remove_parts()
        shutil.rmtree(work, ignore_errors=True)
    log.info("pull_fetched", tenant=tenant, records=sum(records.values()),
             requests=pulled.requests, retries=pulled.retries, bytes=out.stat().st_size,
             duration_ms=int(pulled.seconds * 1000))
    return pulled


# --- state folder --------------------------------------------------------------------------


class PullBusy(UsageError):
    """Another pull of this tenant is running (in this process or another)."""


@dataclass
class PullState:
    last_slot: datetime | None = None
    """The latest scheduled slot a pull has covered."""
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_outcome: str | None = None
    last_job: int | None = None
    last_run: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v
                for k, v in asdict(self).items()}

    @classmethod
    def of_json(cls, data: dict[str, Any]) -> PullState:
        state = cls()
        for name in ("last_slot", "last_started", "last_finished"):
            value = data.get(name)
            if isinstance(value, str):
                with contextlib.suppress(ValueError):
                    setattr(state, name, datetime.fromisoformat(value))
        for name in ("last_outcome", "last_run"):
            if isinstance(data.get(name), str):
                setattr(state, name, data[name])
        if isinstance(data.get("last_job"), int):
            state.last_job = data["last_job"]
        return state


class PullStates:
    """The ``pulls/`` folder: per tenant a state file, a lock and a request marker."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def of(cls, settings: Settings) -> PullStates:
        return cls(StatePaths.of(settings).shared / "pulls")

    def _file(self, tenant: str, suffix: str) -> Path:
        return self.root / f"{tenant}{suffix}"

    def work_dir(self, tenant: str) -> Path:
        return private_folder(self.root / tenant)

    def read(self, tenant: str) -> PullState:
        try:
            data = json.loads(self._file(tenant, ".json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return PullState()
        except (OSError, ValueError) as exc:
            log.warning("pull_state_unreadable", tenant=tenant, error=str(exc))
            return PullState()
        return PullState.of_json(data) if isinstance(data, dict) else PullState()

    def write(self, tenant: str, state: PullState) -> None:
        target = self._file(tenant, ".json")
        partial = self._file(tenant, f".json.{os.getpid()}.tmp")
        try:
            private_folder(self.root)
            with os.fdopen(open_private(partial), "w", encoding="utf-8") as out:
                out.write(json.dumps(state.as_json(), indent=1))
            os.replace(partial, target)
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc

    def request(self, tenant: str) -> None:
        """Ask the daemon to pull this tenant now (``rosterdrop resync``)."""
        try:
            private_folder(self.root)
            with os.fdopen(open_private(self._file(tenant, ".request")), "w") as out:
                out.write(datetime.now(UTC).isoformat() + "\n")
        except OSError as exc:
            raise InputError(f"cannot write {self.root}: {exc.strerror or exc}") from exc

    def requested(self, tenant: str) -> bool:
        return self._file(tenant, ".request").exists()

    def take_request(self, tenant: str) -> bool:
        try:
            self._file(tenant, ".request").unlink()
        except FileNotFoundError:
            return False
        return True

    @contextlib.contextmanager
    def lock(self, tenant: str) -> Iterator[None]:
        """Hold the tenant's pull lock, or raise PullBusy at once."""
        private_folder(self.root)
        fd = os.open(self._file(tenant, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PullBusy(f"a pull of tenant {tenant!r} is running already") from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


# --- one pull ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """How one pull ended: ``queued`` (job_id), ``failed`` (run_id) or ``skipped``."""

    status: str
    pulled: Pulled | None = None
    job_id: int | None = None
    run_id: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class PullService:
    """One pull of one tenant, start to finish, under its lock.

    ``runner`` records failed pulls; ``take(tenant, zip, source)`` queues a
    bundle (the daemon's ``Intake.take``) and returns the job id.
    """

    def __init__(self, settings: Settings, states: PullStates, *, runner: Any,
                 take: Callable[[str, Path, str], int | None], secrets: Mapping[str, str],
                 clock: Callable[[], datetime],
                 on_queued: Callable[[], None] | None = None,
                 transport: httpx.BaseTransport | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.settings = settings
        self.states = states
        self.runner = runner
        self.take = take
        self.secrets = secrets
        self.clock = clock
        self.on_queued = on_queued
        self.transport = transport
        self.cancel = cancel

    def pull(self, tenant: str, *, decision: Decision | None = None,
             label: str = SOURCE) -> Outcome:
        """Pull now (``decision``: the scheduler's, whose slot this pull covers)."""
        source = api_source(self.settings, tenant)
        with self.states.lock(tenant):
            state = self.states.read(tenant)
            slot = decision.slot if decision is not None else None
            requested = decision.requested if decision is not None else False
            if requested:
                self.states.take_request(tenant)
                label = "resync"
            elif slot is not None and state.last_slot is not None and state.last_slot >= slot:
                return Outcome("skipped")  # another process covered this slot meanwhile
            state.last_started = self.clock()
            self.states.write(tenant, state)
            try:
                outcome = self._pull(tenant, source, label)
            except PullCancelled:
                if requested:
                    self.states.request(tenant)  # still wanted at the next start
                raise  # the slot stays due: it is pulled at the next start
            except BaseException:
                self._finish(tenant, state, slot, Outcome("crashed"))
                raise
            self._finish(tenant, state, slot, outcome)
            return outcome

    def _finish(self, tenant: str, state: PullState, slot: datetime | None,
                outcome: Outcome) -> None:
        if slot is not None and (state.last_slot is None or slot > state.last_slot):
            state.last_slot = slot
        state.last_finished = self.clock()
        state.last_outcome = outcome.status
        state.last_job, state.last_run = outcome.job_id, outcome.run_id
        self.states.write(tenant, state)

    def _pull(self, tenant: str, source: OneRosterSource, label: str) -> Outcome:
        name = pull_file_name(self.clock())
        work = self.states.work_dir(tenant)
        for leftover in work.iterdir():  # of a pull killed midway (we hold the lock)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        out = work / name
        try:
            pulled = fetch_bundle(tenant, source, self.secrets[tenant], out,
                                  transport=self.transport, cancel=self.cancel)
        except SourceError as exc:
            out.unlink(missing_ok=True)
            log.error("pull_failed", tenant=tenant, reason=exc.reason, error=str(exc))
            run = self.runner.source_failed(
                tenant, source=label, file_name=name, code=REASON_CODES[exc.reason],
                message=f"The pull from the SIS failed: {exc}.")
            return Outcome("failed", run_id=run.run_id, error=str(exc))
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        job_id = self.take(tenant, out, label)
        log.info("pull_queued", tenant=tenant, job_id=job_id, file=name, source=label)
        if self.on_queued is not None:
            self.on_queued()
        return Outcome("queued", pulled=pulled, job_id=job_id, notes=pulled.notes)


# --- the daemon's scheduler ----------------------------------------------------------------


class PullScheduler:
    """Starts each API tenant's pulls at its slots; one pull per tenant at a time.

    ``pull(tenant, decision)`` runs apart per tenant (a thread, or under ``run`` a
    task awaiting it in the default executor), so a slow SIS never delays another
    tenant. ``tick`` is one look at every tenant (``start``'s thread calls it every
    ``poll_seconds``; tests call it directly with an injected clock).
    """

    def __init__(self, schedules: Mapping[str, Schedule], states: PullStates,
                 pull: Callable[[str, Decision], object], *, clock: Callable[[], datetime],
                 poll_seconds: float = 1.0, cancel: threading.Event | None = None) -> None:
        self.schedules = dict(schedules)
        self.states = states
        self._pull = pull
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.cancel = cancel or threading.Event()
        self._running: dict[str, threading.Thread | asyncio.Task[None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _announce(self) -> None:
        for tenant, schedule in self.schedules.items():
            state = self.states.read(tenant)
            log.info("pull_scheduled", tenant=tenant, schedule=schedule.describe(),
                     last_slot=state.last_slot.isoformat() if state.last_slot else None,
                     next_slot=schedule.next_after(self.clock()).isoformat())

    # --- as an asyncio task (the daemon) ---------------------------------------------------

    async def run(self) -> None:
        """Schedule until cancelled; cancelling also cancels the pulls' tasks (a pull in
        progress gives up at its next request, as ``cancel`` is set)."""
        await asyncio.to_thread(self._announce)
        try:
            while not self.cancel.is_set():
                try:
                    for tenant, decision in await asyncio.to_thread(self._due):
                        task = asyncio.get_running_loop().create_task(
                            asyncio.to_thread(self._run, tenant, decision),
                            name=f"rosterdrop-pull-{tenant}")
                        with self._lock:
                            self._running[tenant] = task
                except Exception:  # a state folder hiccup must not end the schedule
                    log.exception("pull_scheduler_error")
                await asyncio.sleep(self.poll_seconds)
        finally:
            self.cancel.set()
            tasks = [t for t in self._tasks() if not t.done()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _tasks(self) -> list[asyncio.Task[None]]:
        with self._lock:
            return [t for t in self._running.values() if isinstance(t, asyncio.Task)]

    # --- with threads of its own -----------------------------------------------------------

    def start(self) -> None:
        self._announce()
        self._thread = threading.Thread(target=self._loop, name="rosterdrop-pull-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop scheduling; a pull in progress gives up at its next request."""
        self.cancel.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        for thread in self.threads():
            thread.join(max(0.0, deadline - time.monotonic()))

    def threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._running.values() if isinstance(t, threading.Thread)]

    def running(self) -> set[str]:
        with self._lock:
            return set(self._running)

    def _loop(self) -> None:
        while not self.cancel.is_set():
            try:
                self.tick()
            except Exception:  # a state folder hiccup must not end the schedule
                log.exception("pull_scheduler_error")
            self.cancel.wait(self.poll_seconds)

    def tick(self) -> list[str]:
        """Start every due pull on a thread of its own; returns the tenants started."""
        started = []
        for tenant, decision in self._due():
            thread = threading.Thread(target=self._run, args=(tenant, decision),
                                      name=f"rosterdrop-pull-{tenant}", daemon=True)
            with self._lock:
                self._running[tenant] = thread
            thread.start()
            started.append(tenant)
        return started

    def _due(self) -> list[tuple[str, Decision]]:
        """The pulls to start now (reads the state folder: blocking)."""
        now = self.clock()
        due = []
        for tenant, schedule in self.schedules.items():
            with self._lock:
                running = tenant in self._running
            decision = decide(schedule, now, self.states.read(tenant).last_slot,
                              running=running, requested=self.states.requested(tenant))
            if decision is not None and not self.cancel.is_set():
                due.append((tenant, decision))
        return due

    def _run(self, tenant: str, decision: Decision) -> None:
        try:
            self._pull(tenant, decision)
        except PullBusy:
            log.debug("pull_busy", tenant=tenant)
        except PullCancelled:
            log.info("pull_cancelled", tenant=tenant)
        except Exception:
            log.exception("pull_error", tenant=tenant)
        finally:
            with self._lock:
                self._running.pop(tenant, None)


def daemon_scheduler(settings: Settings, *, runner: Any,
                     take: Callable[[str, Path, str], int | None],
                     on_queued: Callable[[], None],
                     clock: Callable[[], datetime]) -> PullScheduler | None:
    """The scheduler ``rosterdrop serve`` runs, or None without API tenants.

    Reads every secret now, so a missing one stops the daemon at start (ConfigError).
    """
    sources = api_tenants(settings)
    if not sources:
        return None
    secrets = read_secrets(settings)
    states = PullStates.of(settings)
    cancel = threading.Event()
    service = PullService(settings, states, runner=runner, take=take, secrets=secrets,
                          clock=clock, on_queued=on_queued, cancel=cancel)
    schedules = {key: Schedule.of(source) for key, source in sources.items()}
    return PullScheduler(schedules, states, lambda tenant, decision: service.pull(
        tenant, decision=decision), clock=clock, cancel=cancel)
