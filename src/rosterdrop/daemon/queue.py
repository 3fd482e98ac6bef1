"""The durable job queue, kept in the store.

A job is one upload in the spool. Workers claim jobs with a lease; a job
whose worker died is claimed again once its lease has expired. One tenant's
jobs run one at a time, in arrival order; different tenants run in
parallel. On PostgreSQL the claim is ``FOR UPDATE SKIP LOCKED`` (several
processes on several machines); on SQLite the write transaction itself is
the single-writer lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import JOBS

QUEUED, RUNNING, DONE = "queued", "running", "done"


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
        jobs = JOBS
        live = and_(jobs.c.state == RUNNING, jobs.c.lease_until > now)
        busy = select(jobs.c.tenant).where(live)
        claimable = or_(jobs.c.state == QUEUED,
                        and_(jobs.c.state == RUNNING, jobs.c.lease_until <= now))
        # The head of each tenant's line: nothing older of that tenant is waiting.
        older = jobs.alias("older")
        head = ~select(older.c.id).where(
            (older.c.tenant == jobs.c.tenant) & (older.c.id < jobs.c.id)
            & (older.c.state != DONE)
        ).exists()
        query = (
            select(jobs)
            .where(claimable & head & jobs.c.tenant.not_in(busy))
            .order_by(jobs.c.id)
            .limit(1)
        )
        if not self.store.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=jobs)
        with translate("claiming a job"), self.store.write() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            conn.execute(
                update(jobs).where(jobs.c.id == row.id).values(
                    state=RUNNING, lease_until=now + self.lease, attempts=jobs.c.attempts + 1,
                    worker=worker,
                )
            )
            claimed = conn.execute(select(jobs).where(jobs.c.id == row.id)).first()
        return Job.of(claimed)

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

    def finish(self, job: Job, now: datetime) -> None:
        with translate("finishing a job"), self.store.write() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job.id).values(
                state=DONE, lease_until=None, finished_at=now))

    def release(self, job: Job) -> None:
        """Give a running job back (shutdown): it is claimed again at once."""
        with translate("releasing a job"), self.store.write() as conn:
            conn.execute(update(JOBS).where(JOBS.c.id == job.id).values(
                state=QUEUED, lease_until=None, worker=None))

    def newer_bulk(self, job: Job) -> bool:
        """A newer bulk upload of the same tenant is waiting: this bulk job is superseded."""
        if job.kind != "bulk":
            return False
        query = select(func.count()).select_from(JOBS).where(
            (JOBS.c.tenant == job.tenant) & (JOBS.c.id > job.id) & (JOBS.c.kind == "bulk")
            & (JOBS.c.state != DONE)
        )
        with translate("checking for newer uploads"), self.store.engine.connect() as conn:
            return bool(conn.execute(query).scalar_one())

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
        oldest_waiting = select(func.min(JOBS.c.created_at)).where(
            (JOBS.c.state == QUEUED)
            | ((JOBS.c.state == RUNNING) & (JOBS.c.lease_until <= now)))
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
