"""Deliveries to a tenant's outlets: which runs go where, one attempt at a time.

After a run is recorded, :meth:`Outlets.record` adds one ``pending`` row per outlet
that wants it to the delivery ledger (``store/deliveries.py``): every SFTP
destination for a run whose plan was applied (not a dry run), every alert whose
``on`` names the run's status. Nothing is sent there and then: the run is done
and its status final whatever an outlet does.

The daemon runs :meth:`Outlets.run` as one task: woken when a run adds rows (and
every few seconds), it claims the due rows and attempts each in a task of its own,
at most :data:`PARALLEL` at once, each bounded by its outlet's ``timeout_seconds``.
A failed attempt is recorded with its ``DELIVERY_*`` code and retried
``retry_seconds`` × 2ⁿ later (at most an hour), ``retries`` times; a claim is a
lease, so an attempt cut short by a crash or a restart falls due again.
``rosterdrop sync`` and ``rosterdrop redeliver`` make the attempts of their run
themselves (:meth:`Outlets.deliver_run`).

The senders are the outlets' own modules (``sftp_push``, ``alerts``), each an async
callable taking a :class:`Delivery` and returning what it delivered (the remote
file, the HTTP status) or raising :class:`~rosterdrop.errors.DeliveryError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from rosterdrop.codes import Code
from rosterdrop.config import AlertSettings, Settings, SftpDestination, TenantSettings
from rosterdrop.errors import DeliveryError, NotFound
from rosterdrop.store import deliveries as ledger
from rosterdrop.store.deliveries import DeliveryRecord
from rosterdrop.store.engine import Store
from rosterdrop.store.history import RunRecord, get_run

log = structlog.get_logger("rosterdrop.outlets")

PARALLEL = 4
"""Attempts under way at once in one process (each is mostly waiting on the network)."""
POLL_SECONDS = 5.0
LEASE_MARGIN = timedelta(seconds=30)
"""A claimed row falls due again this long after its attempt's timeout (a crash)."""
MAX_BACKOFF = timedelta(hours=1)

Outlet = SftpDestination | AlertSettings
Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a sender needs for one attempt."""

    record: DeliveryRecord
    run: RunRecord
    tenant_key: str
    tenant: TenantSettings
    outlet: Outlet
    settings: Settings


Sender = Callable[[Delivery], Awaitable[str]]


def outlets_of(tenant: TenantSettings) -> dict[str, Outlet]:
    """The tenant's outlets by their ledger key."""
    found: dict[str, Outlet] = {d.key: d for d in tenant.destinations}
    found.update((a.key, a) for a in tenant.alerts)
    return found


def destinations_for(tenant: TenantSettings, run: RunRecord) -> list[SftpDestination]:
    """Every destination takes a run whose plan was applied (not a dry run)."""
    if run.dry_run or not run.applied or not run.status.succeeded:
        return []
    return list(tenant.destinations)


def wanted_by(tenant: TenantSettings, run: RunRecord) -> list[tuple[str, str]]:
    """``(key, kind)`` of every outlet that takes this finished run."""
    if run.dry_run or not run.status.finished:
        return []
    wanted: list[tuple[str, str]] = [(d.key, d.type) for d in destinations_for(tenant, run)]
    wanted += [(a.key, a.type) for a in tenant.alerts if run.status.value in a.on]
    return wanted


def default_senders(settings: Settings, store: Store) -> dict[str, Sender]:
    """The sender of each outlet kind (imported here: a command without outlets never
    loads SSH or HTTP clients for them)."""
    from rosterdrop.outlets.alerts import AlertPoster
    from rosterdrop.outlets.sftp_push import SftpPush

    push = SftpPush(settings, store)
    post = AlertPoster(settings)
    return {"sftp": push.send, "slack": post.send, "teams": post.send, "webhook": post.send}


class Outlets:
    def __init__(self, settings: Settings, store: Store, *, clock: Clock,
                 senders: Mapping[str, Sender] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._senders = senders
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._claimed: set[int] = set()
        self._slots: asyncio.Semaphore | None = None

    @property
    def configured(self) -> bool:
        return any(t.destinations or t.alerts for t in self.settings.tenants.values())

    def senders(self) -> Mapping[str, Sender]:
        if self._senders is None:
            self._senders = default_senders(self.settings, self.store)
        return self._senders

    # --- recording (any thread) ----------------------------------------------------------

    def record(self, run: RunRecord) -> int:
        """Add the run's deliveries to the ledger and wake the daemon's task; returns how
        many were added. Called once the run is recorded."""
        tenant = self.settings.tenants.get(run.tenant)
        if tenant is None:
            return 0
        added = ledger.add_pending(self.store, run.run_id, run.tenant,
                                   wanted_by(tenant, run), self.clock())
        if added:
            log.info("deliveries_queued", tenant=run.tenant, run_id=run.run_id, count=added)
            self.wake()
        return added

    def redeliver(self, run_id: str) -> list[DeliveryRecord]:
        """Every delivery of the run pending again, due now (``rosterdrop redeliver``);
        outlets configured since the run are added. NotFound for an unknown run; a run
        no outlet takes is a UsageError."""
        from rosterdrop.errors import UsageError

        run = get_run(self.store, run_id)
        tenant = self.settings.tenant(run.tenant)
        wanted = wanted_by(tenant, run)
        if not wanted and not ledger.of_run(self.store, run_id):
            raise UsageError(f"run {run_id} has nothing to deliver: no destination takes a "
                             f"{run.status.value} run and no alert is set for it")
        known = outlets_of(tenant)
        ledger.reopen(self.store, run_id, self.clock(), outlets=wanted, tenant=run.tenant)
        records = [r for r in ledger.of_run(self.store, run_id) if r.outlet in known]
        self.wake()
        return records

    def wake(self) -> None:
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    # --- delivering (the event loop) ------------------------------------------------------

    async def run(self) -> None:
        """The daemon's task: attempt due deliveries until cancelled."""
        self._bind()
        assert self._wake is not None
        for tenant_key, tenant in self.settings.tenants.items():
            await asyncio.to_thread(ledger.give_up_removed, self.store, tenant_key,
                                    list(outlets_of(tenant)), self.clock())
        try:
            while True:
                try:
                    await self.deliver_due()
                except Exception:  # a store hiccup must not end the deliveries
                    log.exception("delivery_round_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
                self._wake.clear()
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    def _bind(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(PARALLEL)

    async def deliver_due(self) -> int:
        """Start an attempt for every due row not already under way here; returns how many
        were started."""
        if self._slots is None:
            self._bind()
        due = await asyncio.to_thread(ledger.due, self.store, self.clock())
        started = 0
        for record in due:
            if record.id in self._claimed:
                continue
            self._claimed.add(record.id)
            task = asyncio.get_running_loop().create_task(
                self._attempt(record), name=f"rosterdrop-delivery-{record.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(self._release(record.id))
            started += 1
        return started

    def _release(self, record_id: int) -> Callable[[asyncio.Task[None]], None]:
        def release(_: asyncio.Task[None]) -> None:
            self._claimed.discard(record_id)
        return release

    async def deliver_run(self, run_id: str) -> list[DeliveryRecord]:
        """Attempt the run's due deliveries now and wait for them (CLI): one attempt each."""
        self._bind()
        due = [r for r in await asyncio.to_thread(ledger.due, self.store, self.clock(),
                                                  limit=1000)
               if r.run_id == run_id]
        await asyncio.gather(*(self._attempt(r) for r in due))
        return await asyncio.to_thread(ledger.of_run, self.store, run_id)

    async def idle(self) -> None:
        """Wait for the attempts under way (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*set(self._running), return_exceptions=True)

    async def _attempt(self, record: DeliveryRecord) -> None:
        assert self._slots is not None
        async with self._slots:
            await self._attempt_one(record)

    async def _attempt_one(self, record: DeliveryRecord) -> None:
        tenant = self.settings.tenants.get(record.tenant)
        outlet = outlets_of(tenant).get(record.outlet) if tenant is not None else None
        now = self.clock()
        if tenant is None or outlet is None:
            await asyncio.to_thread(ledger.failed, self.store, record.id, now,
                                    f"{Code.DELIVERY_FAILED}: the outlet is no longer in the "
                                    f"configuration", None)
            return
        lease = now + timedelta(seconds=outlet.timeout_seconds) + LEASE_MARGIN
        if not await asyncio.to_thread(ledger.claim, self.store, record, now, lease):
            return  # another process took it
        bound = log.bind(tenant=record.tenant, run_id=record.run_id, outlet=record.outlet,
                         kind=record.kind, attempt=record.attempts + 1)
        try:
            run = await asyncio.to_thread(get_run, self.store, record.run_id)
        except NotFound:
            return  # the run was purged meanwhile; its rows went with it
        sender = self.senders().get(record.kind)
        error: str
        try:
            if sender is None:
                raise DeliveryError(f"no sender for outlets of type {record.kind!r}")
            detail = await asyncio.wait_for(
                sender(Delivery(record, run, record.tenant, tenant, outlet, self.settings)),
                outlet.timeout_seconds)
        except DeliveryError as exc:
            error = f"{exc.code}: {exc}"
        except TimeoutError:
            error = (f"{Code.DELIVERY_UNREACHABLE}: no answer within "
                     f"{outlet.timeout_seconds:g} s (timeout_seconds)")
        except asyncio.CancelledError:
            raise  # shutdown: the lease runs out and the row falls due again
        except Exception as exc:  # a bug must not end the task or hide the delivery
            bound.exception("delivery_crashed")
            error = f"{Code.DELIVERY_FAILED}: internal error ({type(exc).__name__})"
        else:
            await asyncio.to_thread(ledger.delivered, self.store, record.id, self.clock(),
                                    detail)
            bound.info("delivered", detail=detail)
            return
        attempts = record.attempts + 1
        retry_at = None
        if attempts <= outlet.retries:
            wait = timedelta(seconds=outlet.retry_seconds * 2 ** (attempts - 1))
            retry_at = self.clock() + min(wait, MAX_BACKOFF)
        await asyncio.to_thread(ledger.failed, self.store, record.id, self.clock(), error,
                                retry_at)
        bound.warning("delivery_failed", error=error,
                      retry_at=retry_at.isoformat() if retry_at else None)
        if retry_at is None:
            bound.error("delivery_abandoned", attempts=attempts,
                        reason=f"not delivered after {attempts} attempt(s) (retries = "
                        f"{outlet.retries}); `rosterdrop redeliver {record.run_id}` "
                        f"tries again")
