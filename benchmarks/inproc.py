"""The in-process measurements (P1–P4, and P2/P3 on PostgreSQL): one worker process.

    python benchmarks/inproc.py JOB.json RESULT.json

performance.md defines the floor as the cost of reading the upload "in the
same process and run", so the floor and the measured calls run here, in one
process, with interpreter start-up and imports outside every clock:

- floor: ``floor.measure(zip)`` (inflate + ``polars.read_csv`` of every CSV);
- P1: ``check_upload(zip, tenant=TenantSettings(), limits=LimitSettings(),
  today=…)``;
- P2: ``Runner.sync`` of the upload into an empty SQLite store (fresh state folder);
- P3: ``Runner.sync`` of the 1 %-changed variant into the store P2 just filled,
  counting the rows written (``Store.written`` hook; SQLite's own
  ``total_changes()`` as a cross-check);
- P4: ``Runner.sync`` of the byte-identical upload (the store first synced back
  to the upload, untimed);
- P2pg/P3pg: P2 and P3 into a fresh PostgreSQL schema.

One warm-up of every measured call comes first (untimed), then ``repeats``
rounds; within a round a floor is taken before every measured call, so the
floor sees the same machine as what it is compared with. The job and the
result are JSON files (the runner's logs would otherwise mix with stdout).
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import floor as floor_module
import structlog
from sqlalchemy import create_engine, event, text

from rosterdrop.config import LimitSettings, Settings, TenantSettings, parse_settings
from rosterdrop.pipeline.check import check_upload
from rosterdrop.runs.document import check_document
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import Store, open_store

TENANT = "bench"
SYNC_KEYS = ("P2", "P3", "P4")
PG_KEYS = ("P2pg", "P3pg")


# --- logs: the runner logs through structlog; keep what we need, print nothing ----------------


class _Events:
    """A structlog processor that keeps ``run_applied`` events and drops everything."""

    def __init__(self) -> None:
        self.applied_rows: list[int] = []

    def __call__(self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if event_dict.get("event") == "run_applied":
            self.applied_rows.append(int(event_dict.get("rows", 0)))
        raise structlog.DropEvent


EVENTS = _Events()
structlog.configure(processors=[EVENTS], cache_logger_on_first_use=False)


# --- a store that counts what it writes --------------------------------------------------------


class CountingStore(Store):
    """The real store; ``written`` (the hook every bulk statement calls) sums rows per table."""

    def __init__(self, opened: Store) -> None:
        super().__init__(opened.engine, opened.cache_dir)
        self.rows: dict[str, int] = {}
        self._sqlite: dict[int, Any] = {}
        if self.is_sqlite:  # the pool's connections so far, and any it opens later
            event.listen(self.engine.pool, "checkout", self._remember)
            with self.engine.connect():
                pass  # check out the connection open_store used, so it is counted too

    def _remember(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        self._sqlite.setdefault(id(dbapi_connection), dbapi_connection)

    def written(self, table: str, rows: int) -> None:
        self.rows[table] = self.rows.get(table, 0) + rows

    def db_changes(self) -> int | None:
        """SQLite's count of rows changed, over every connection of the pool."""
        if not self.is_sqlite:
            return None
        return sum(int(conn.total_changes) for conn in self._sqlite.values())


def _settings(state_dir: Path, url: str = "") -> Settings:
    return parse_settings({
        "state_dir": str(state_dir),
        "store": {"url": url},
        "tenants": {TENANT: {"name": "Benchmark District", "report_to": ["it@bench.example"]}},
    })


def _runner(state_dir: Path, url: str = "") -> tuple[Runner, CountingStore]:
    settings = _settings(state_dir, url)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Opened as the CLI and the daemon open it: with the snapshot cache on either backend.
    store = CountingStore(open_store(settings.database_url, cache_dir=state_dir / "cache"))
    return Runner(settings, store), store


@contextmanager
def _pg_schema(admin_url: str) -> Iterator[str]:
    """A fresh schema, dropped afterwards; yields the store URL that uses it."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        joiner = "&" if "?" in admin_url else "?"
        yield f"{admin_url}{joiner}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


# --- one timed call ------------------------------------------------------------------------------


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


class Worker:
    def __init__(self, job: dict[str, Any]) -> None:
        self.zip = Path(job["zip"])
        self.variant = Path(job["variant"]) if job.get("variant") else None
        self.keys: list[str] = job["measure"]
        self.repeats: int = job["repeats"]
        self.pg_url: str = job.get("pg_url") or ""
        self.scratch = Path(job["scratch"])
        self.today = date.today()
        self.floors: list[float] = []
        self.rows = 0
        self.runs: dict[str, list[dict[str, Any]]] = {key: [] for key in self.keys}
        self.errors: dict[str, str] = {}
        self.timed = False
        self.round = 0

    def floor(self) -> None:
        result = floor_module.measure(str(self.zip))  # clocked inside, around the work only
        if self.timed:
            self.floors.append(result["seconds"])
        self.rows = result["rows"]

    def measure(self, key: str, call: Callable[[], dict[str, Any]]) -> None:
        """A floor, then the measured call; kept when timed and ``key`` is measured."""
        if key not in self.keys:
            call()
            return
        self.floor()
        result = call()
        if self.timed:
            self.runs[key].append(result)
        label = f"round {self.round}" if self.timed else "warm-up"
        _progress(f"{label}: {key} {result['seconds']:.3f} s {result['status']}")

    # measured calls

    def check(self) -> dict[str, Any]:
        seconds, checked = _timed(lambda: check_upload(
            self.zip, tenant=TenantSettings(), limits=LimitSettings(), today=self.today))
        document = check_document(checked).to_json()
        return {"seconds": seconds, "status": document["status"], "layout": document["layout"],
                "counts": document["counts"], "issue_counts": document["issue_counts"]}

    @staticmethod
    def sync(runner: Runner, store: CountingStore, upload: Path) -> dict[str, Any]:
        store.rows = {}
        applied_before = len(EVENTS.applied_rows)
        changes_before = store.db_changes()
        seconds, run = _timed(lambda: runner.sync(TENANT, upload, source="cli"))
        changes_after = store.db_changes()
        steps = dict(run.timings or {})
        applied = EVENTS.applied_rows[applied_before:]
        document = run.document.to_json()
        return {
            "seconds": seconds,
            "status": run.status,
            "timings": steps,
            "outside_steps": seconds - sum(steps.values()),
            "rows_written": sum(store.rows.values()),
            "rows_by_table": dict(store.rows),
            "run_applied_rows": applied[0] if applied else None,
            "db_changes": None if changes_before is None or changes_after is None
            else changes_after - changes_before,
            "changes": {kind: {k: v for k, v in counts.items() if v}
                        for kind, counts in (document.get("changes") or {}).items()
                        if kind != "unchanged"},
            "issue_counts": document.get("issue_counts"),
        }

    # chains of syncs on one store

    def sqlite_chain(self) -> None:
        """P2 into a fresh store; P3 on the store P2 filled; back to the upload; P4."""
        if not any(k in self.keys for k in SYNC_KEYS):
            return
        folder = self.scratch / f"sqlite-{self.round}"
        runner, store = _runner(folder / "state")
        try:
            self.measure("P2", lambda: self.sync(runner, store, self.zip))
            if self.variant is not None and ("P3" in self.keys or "P4" in self.keys):
                variant = self.variant
                self.measure("P3", lambda: self.sync(runner, store, variant))
                self.sync(runner, store, self.zip)  # back to the upload: P4 is byte-identical
            if "P4" in self.keys:
                self.measure("P4", lambda: self.sync(runner, store, self.zip))
        finally:
            store.close()
            shutil.rmtree(folder, ignore_errors=True)

    def pg_chain(self) -> None:
        wanted = [k for k in PG_KEYS if k in self.keys]
        if not wanted or self.errors:
            return
        folder = self.scratch / f"pg-{self.round}"
        try:
            with _pg_schema(self.pg_url) as url:
                runner, store = _runner(folder / "state", url)
                try:
                    self.measure("P2pg", lambda: self.sync(runner, store, self.zip))
                    if "P3pg" in wanted and self.variant is not None:
                        variant = self.variant
                        self.measure("P3pg", lambda: self.sync(runner, store, variant))
                finally:
                    store.close()
        except Exception as exc:  # no PostgreSQL here: report it, keep the SQLite results
            for key in wanted:
                self.errors[key] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # the schedule

    def run(self) -> dict[str, Any]:
        """One untimed round (warm-up: imports, page cache, first-use caches), then
        ``repeats`` timed rounds, a floor before every measured call."""
        for round_ in range(self.repeats + 1):
            self.round, self.timed = round_, round_ > 0
            self.floor()
            if "P1" in self.keys:
                self.measure("P1", self.check)
            self.sqlite_chain()
            self.pg_chain()
        return {"floor": self.floors, "rows": self.rows, "runs": self.runs, "errors": self.errors}


def _progress(message: str) -> None:
    print(f"[bench]   {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python benchmarks/inproc.py JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    result = Worker(job).run()
    Path(argv[1]).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
