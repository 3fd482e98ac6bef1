"""Work after a commit, off the writer's path: SQLite WAL checkpoints, snapshot caches.

SQLite's automatic checkpoint runs inside the COMMIT of whichever write makes
the WAL cross 1000 pages, so that writer pays for copying every page back into
the database file and for two fsyncs; for a sync that touches thousands of
scattered b-tree pages that is most of its commit (benchmarks/README.md,
"Measurements behind the code"). With ``wal_autocheckpoint=0`` the commit
only appends to the WAL; this thread copies it back while the run goes on
(artifacts, the report email), so the WAL still never outgrows one write.

A PASSIVE checkpoint never waits for readers or writers; whatever it cannot
copy yet is copied by the next one. Killing the process in between loses
nothing: the WAL is the database until it has been copied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

log = structlog.get_logger(__name__)


class Lane:
    """Work done after a commit on one background thread, in order; ``wait()`` for it.

    The snapshot cache of a sync's result is written here while the run goes on
    to its report: whatever reads the cache waits for the lane first.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._last: Future[None] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
            self._last = self._pool.submit(self._guarded, job)

    def wait(self) -> None:
        """Block until everything submitted so far has run."""
        with self._lock:
            last = self._last
        if last is not None:
            last.result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self._last = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _guarded(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # background work only ever costs speed when it fails
            log.warning("background_job_failed", lane=self._name,
                        error=f"{type(exc).__name__}: {str(exc)[:300]}")


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` after writes, on its own lane, coalesced."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lane = Lane("rosterdrop-checkpoint")
        self._lock = threading.Lock()
        self._pending = False

    def request(self) -> None:
        """Ask for a checkpoint soon; requests made before it starts share it."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        self._lane.submit(self._checkpoint)

    def wait(self) -> None:
        """Block until every requested checkpoint has run."""
        self._lane.wait()

    def close(self) -> None:
        """Finish the requested checkpoints and stop the thread."""
        self._lane.close()

    def _checkpoint(self) -> None:
        with self._lock:
            self._pending = False
        try:
            with self._engine.connect() as conn:
                busy, wal_pages, copied = conn.exec_driver_sql(
                    "PRAGMA wal_checkpoint(PASSIVE)"
                ).one()
        except SQLAlchemyError as exc:  # the next write asks again; nothing is lost
            log.warning("wal_checkpoint_failed", error=str(exc).splitlines()[0][:300])
            return
        if busy or copied < wal_pages:
            log.debug("wal_checkpoint_partial", wal_pages=wal_pages, copied=copied)
