"""The durable job queue, kept in the store.

A job is one upload in the spool. Workers claim jobs with a lease; a job
whose worker died is claimed again once its lease has expired. One tenant's
jobs run one at a time, in arrival order; different tenants run in
parallel. On PostgreSQL the claim is ``FOR UPDATE SKIP LOCKED`` (several
processes on several machines); on SQLite the write transaction itself is
the single-writer lock (``BEGIN IMMEDIATE``).

On PostgreSQL a claimed job is also held by a session-level advisory lock,
``pg_try_advisory_lock(<store key>, <job id>)``, on a connection kept open for
the job's life (``JobQueue`` owns it; ``finish``/``release``/``expire`` let it
go). When a process dies its connections die and PostgreSQL drops the lock, so
the claim treats a running job whose lease has not expired yet as claimable
when its lock can be taken: a peer, or the restarted process, takes it back at
once instead of after ``lease_seconds``. The lease stays the fallback (a job
whose lease ran out is claimable whatever its lock). Two exceptions keep a live
job from running twice: a job this queue holds itself is never taken back by
this queue (its lock connection may have been cut by a database restart while
the job runs; ``check_lock`` takes the lock again on a new connection), and a
job that failed or overran its timeout (``expire``: worker cleared, lease
kept) waits for its lease, as on SQLite, so a job that fails at once does not
use up its attempts in seconds. The lock key is derived from the store's id, so stores sharing one
database (schemas) never see each other's locks.

On SQLite only one process serves a state folder, so ``release_orphans`` at
start gives back every job left running by the previous process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, text, update

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import JOBS, TENANT_STATE

QUEUED, RUNNING, DONE = "queued", "running", "done"

_TRY_LOCK = text("SELECT pg_try_advisory_lock(CAST(:key AS integer), CAST(:job AS integer))")
_UNLOCK = text("SELECT pg_advisory_unlock(CAST(:key AS integer), CAST(:job AS integer))")
_INT4 = 2**31


@dataclass(frozen=True)
class Job:
    id: int
    tenant: str
    path: str
    file_name: str
    source: str
    kind: str
    state: str
    attempts: int
    run_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> Job:
        return cls(
            id=int(row.id), tenant=row.tenant, path=row.path, file_name=row.file_name,
            source=row.source, kind=row.kind, state=row.state, attempts=int(row.attempts),
            run_id=row.run_id, created_at=row.created_at,
        )


class JobQueue:
    def __init__(self, store: Store, *, lease_seconds: float = 120) -> None:
        self.store = store
        self.lease = timedelta(seconds=lease_seconds)
        self._held: dict[int, Connection] = {}
        """PostgreSQL: job id → the connection holding its advisory lock."""
        self._held_lock = threading.Lock()
        self._key: int | None = None

    def enqueue(self, *, tenant: str, path: str, file_name: str, source: str, kind: str,
                now: datetime) -> int:
        with translate("queueing an upload"), self.store.write() as conn:
            result = conn.execute(
                insert(JOBS).values(
                    tenant=tenant, path=path, file_name=file_name, source=source, kind=kind,
                    state=QUEUED, attempts=0, created_at=now,
                ).returning(JOBS.c.id)
            )
            return int(result.scalar_one())

    def known_paths(self) -> set[str]:
        with translate("listing queued uploads"), self.store.engine.connect() as conn:
            return {row[0] for row in conn.execute(select(JOBS.c.path))}

    def claim(self, worker: str, now: datetime) -> Job | None:
        """The oldest job whose tenant is not busy; None when there is nothing to do."""
        if self.store.is_sqlite:
            with translate("claiming a job"), self.store.write() as conn:
                return self._claim(conn, worker, now, [], lambda _: True)
        held = self._lock_connection()
        job: Job | None = None
        try:
            with translate("claiming a job"):
                orphans = self._orphans(held, now)

                def lockable(job_id: int) -> bool:
                    # False: given back (release) a moment ago by a worker that has not
                    # let go of its lock yet; it is claimable at the next look.
                    return job_id in orphans or self._try_lock(held, job_id)

                with self.store.write() as conn:
                    job = self._claim(conn, worker, now, orphans, lockable)
                for orphan in orphans:
                    if job is None or orphan != job.id:
                        self._unlock(held, orphan)
        except BaseException:
            _discard(held)
            raise
        if job is None:
            _close(held)
            return None
        with self._held_lock:
            self._held[job.id] = held
        return job

    def _claim(self, conn: Connection, worker: str, now: datetime, orphans: list[int],
               lockable: Callable[[int], bool]) -> Job | None:
        jobs = JOBS
        live = and_(jobs.c.state == RUNNING, jobs.c.lease_until > now)
        if orphans:
            live = and_(live, jobs.c.id.not_in(orphans))
        busy = select(jobs.c.tenant).where(live)
        claimable = or_(jobs.c.state == QUEUED,
                        and_(jobs.c.state == RUNNING, jobs.c.lease_until <= now))
        if orphans:
            # Still running: the holder may have finished it since its lock was looked at.
            claimable = or_(claimable, and_(jobs.c.state == RUNNING, jobs.c.id.in_(orphans)))
        # The head of each tenant's line: nothing older of that tenant is waiting.
        older = jobs.alias("older")
        head = ~select(older.c.id).where(
            (older.c.tenant == jobs.c.tenant) & (older.c.id < jobs.c.id)
            & (older.c.state != DONE)
        ).exists()
        paused = select(TENANT_STATE.c.tenant).where(TENANT_STATE.c.paused_at.isnot(None))
        query = (
            select(jobs)
            .where(claimable & head & jobs.c.tenant.not_in(busy) & jobs.c.tenant.not_in(paused))
            .order_by(jobs.c.id)
            .limit(1)
        )
        if not self.store.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=jobs)
        row = conn.execute(query).first()
        if row is None or not lockable(int(row.id)):
            return None
        conn.execute(
            update(jobs).where(jobs.c.id == row.id).values(
                state=RUNNING, lease_until=now + self.lease, attempts=jobs.c.attempts + 1,
                worker=worker,
            )
        )
        return Job.of(conn.execute(select(jobs).where(jobs.c.id == row.id)).first())

    # --- PostgreSQL advisory locks ----------------------------------------------------------

    @property
    def lock_key(self) -> int:
        """The first half of every job lock of this store (from its id: one per store)."""
        if self._key is None:
            self._key = int(self.store.store_id[:8], 16) % _INT4
        return self._key

    def _lock_connection(self) -> Connection:
        # AUTOCOMMIT: held for a whole job, it must never sit idle in a transaction.
        with translate("opening a job lock connection"):
            return self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _try_lock(self, conn: Connection, job_id: int) -> bool:
        return bool(conn.execute(_TRY_LOCK, {"key": self.lock_key,
                                             "job": job_id % _INT4}).scalar_one())

    def _unlock(self, conn: Connection, job_id: int) -> None:
        conn.execute(_UNLOCK, {"key": self.lock_key, "job": job_id % _INT4})

    def _orphans(self, held: Connection, now: datetime) -> list[int]:
        """Running jobs with a live lease whose holder is gone: their lock could be taken
        (on ``held``, which keeps it for now)."""
        with self._held_lock:
            ours = set(self._held)
        live = select(JOBS.c.id).where(
            (JOBS.c.state == RUNNING) & (JOBS.c.lease_until > now)
            & JOBS.c.worker.is_not(None)).order_by(JOBS.c.id)
        return [job_id for job_id in held.execute(live).scalars()
                if job_id not in ours and self._try_lock(held, job_id)]

    def check_lock(self, job: Job) -> bool:
        """PostgreSQL: the job's lock is still held, taken again on a new connection if a
        database restart cut the old one; False when another process has taken it.
        SQLite: always True."""
        if self.store.is_sqlite:
            return True
        with self._held_lock:
            held = self._held.get(job.id)
        if held is None:
            return False
        try:
            held.execute(text("SELECT 1")).scalar_one()
            return True
        except Exception:  # the connection is gone, and the lock with it
            _discard(held)
        fresh = self._lock_connection()
        try:
            with translate("taking a job lock again"):
                taken = self._try_lock(fresh, job.id)
        except BaseException:
            _discard(fresh)
            raise
        if not taken:
            _close(fresh)
            with self._held_lock:
                self._held.pop(job.id, None)
            return False
        with self._held_lock:
            self._held[job.id] = fresh
        return True

    def _let_go(self, job: Job) -> None:
        """Drop the job's advisory lock (after its row no longer says it is ours)."""
        with self._held_lock:
            held = self._held.pop(job.id, None)
        if held is None:
            return
        try:
            self._unlock(held, job.id)
        except Exception:  # a dead connection holds no lock: nothing to give back
            _discard(held)
            return
        _close(held)

    def close(self) -> None:
        """Close every job lock connection still open (their jobs' leases decide)."""
        with self._held_lock:
            held, self._held = list(self._held.values()), {}
        for conn in held:
            _discard(conn)

    def holding(self) -> set[int]:
        """Jobs whose advisory lock this queue holds (PostgreSQL)."""
        with self._held_lock:
            return set(self._held)

    def release_orphans(self) -> int:
        """On SQLite only one process serves a state folder, so at start every job still
        marked running was left by a process that died: give them back at once."""
        with translate("releasing jobs of a previous run"), self.store.write() as conn:
            result = conn.execute(update(JOBS).where(JOBS.c.state == RUNNING).values(
                state=QUEUED, lease_until=None, worker=None))
            return int(result.rowcount or 0)

    def heartbeat(self, job: Job, worker: str, now: datetime) -> bool:
        """Extend the lease; False when another worker has taken the job over."""
        with translate("extending a job lease"), self.store.write() as conn:
            result = conn.execute(
                update(JOBS)
                .where((JOBS.c.id == job.id) & (JOBS.c.worker == worker)
                       & (JOBS.c.state == RUNNING))
                .values(lease_until=now + self.lease)
            )
            return bool(result.rowcount)

    def set_run(self, job: Job, run_id: str) -> None:
        with translate("recording a job's run"), self.store.write() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job.id).values(run_id=run_id))

    def finish(self, job: Job, now: datetime, worker: str | None = None) -> bool:
        """Mark the job done; with ``worker``, only while that worker still holds it
        (False when another took it over: it is theirs to finish)."""
        where = JOBS.c.id == job.id
        if worker is not None:
            where = where & (JOBS.c.worker == worker) & (JOBS.c.state == RUNNING)
        try:
            with translate("finishing a job"), self.store.write() as conn:
                result = conn.execute(update(JOBS).where(where).values(
                    state=DONE, lease_until=None, finished_at=now))
        finally:
            self._let_go(job)
        return bool(result.rowcount)

    def release(self, job: Job) -> None:
        """Give a running job back (shutdown): it is claimed again at once."""
        try:
            with translate("releasing a job"), self.store.write() as conn:
                conn.execute(update(JOBS).where(JOBS.c.id == job.id).values(
                    state=QUEUED, lease_until=None, worker=None))
        finally:
            self._let_go(job)

    def expire(self, job: Job, worker: str) -> None:
        """Stop holding the job (it raised, or overran its timeout): it is claimed again
        once its lease runs out, by anyone. The worker is cleared so that, on PostgreSQL,
        letting go of its lock does not make it claimable at once."""
        try:
            with translate("giving up a job"), self.store.write() as conn:
                conn.execute(update(JOBS).where(
                    (JOBS.c.id == job.id) & (JOBS.c.worker == worker)
                    & (JOBS.c.state == RUNNING)).values(worker=None))
        finally:
            self._let_go(job)

    def newer_bulk(self, job: Job) -> list[Job]:
        """The tenant's bulk uploads waiting behind this bulk job, newest first: the
        candidates to supersede it."""
        if job.kind != "bulk":
            return []
        query = select(JOBS).where(
            (JOBS.c.tenant == job.tenant) & (JOBS.c.id > job.id) & (JOBS.c.kind == "bulk")
            & (JOBS.c.state != DONE)
        ).order_by(JOBS.c.id.desc())
        with translate("checking for newer uploads"), self.store.engine.connect() as conn:
            return [Job.of(row) for row in conn.execute(query)]

    def depth(self, now: datetime) -> tuple[int, float]:
        """(jobs waiting or running, age in seconds of the oldest)."""
        query = select(func.count(), func.min(JOBS.c.created_at)).where(JOBS.c.state != DONE)
        with translate("measuring the queue"), self.store.engine.connect() as conn:
            count, oldest = conn.execute(query).one()
        if not count or oldest is None:
            return 0, 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        return int(count), max(0.0, (now - oldest).total_seconds())

    def pending(self) -> list[Job]:
        with translate("listing jobs"), self.store.engine.connect() as conn:
            rows = conn.execute(select(JOBS).where(JOBS.c.state != DONE).order_by(JOBS.c.id))
            return [Job.of(row) for row in rows]

    def stuck(self, now: datetime, after_seconds: float) -> bool:
        """Work has waited ``after_seconds`` and no worker anywhere holds a live lease:
        nothing is making progress (workers dead, claims failing)."""
        paused = select(TENANT_STATE.c.tenant).where(TENANT_STATE.c.paused_at.isnot(None))
        oldest_waiting = select(func.min(JOBS.c.created_at)).where(
            ((JOBS.c.state == QUEUED)
             | ((JOBS.c.state == RUNNING) & (JOBS.c.lease_until <= now)))
            & JOBS.c.tenant.not_in(paused))  # a paused tenant's uploads wait on purpose
        live = select(func.count()).select_from(JOBS).where(
            (JOBS.c.state == RUNNING) & (JOBS.c.lease_until > now))
        with translate("checking the queue"), self.store.engine.connect() as conn:
            oldest = conn.execute(oldest_waiting).scalar_one()
            working = int(conn.execute(live).scalar_one())
        if oldest is None or working:
            return False
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        return bool((now - oldest).total_seconds() >= after_seconds)


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:
        _discard(conn)


def _discard(conn: Connection) -> None:
    """Close the connection for good, so no session lock can survive in the pool."""
    with contextlib.suppress(Exception):
        conn.invalidate()
    with contextlib.suppress(Exception):
        conn.close()
