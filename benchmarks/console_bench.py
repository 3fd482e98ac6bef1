"""P11: the admin console at scale, over real uvicorn on loopback (benchmarks/README.md).

The store: one real ``Runner.sync`` of the S upload (a real run document and real
artifacts), copied by one bulk ``INSERT`` into ``runs`` to make the history (spread
over the tenants, an hour apart, some failed and some held), plus the newest run:
a failed one whose ``issues.csv`` has a million issues, written by the runner's own
``write_csv``. The console app is the daemon's (``build_app``), served by uvicorn in a
thread of this process; an ``httpx.Client`` signs in and times each page, with
``GET /healthz`` of the same server as the baseline, every round in an order that
turns by one. A SQLAlchemy listener counts the statements each page sends.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """The app served as the daemon serves it (``WebListener``: uvicorn on its own bound
    socket) on 127.0.0.1, a free port, in an event loop of its own thread."""
    import asyncio

    from rosterdrop.web.listener import WebListener

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    listener = WebListener("127.0.0.1:0", app)
    asyncio.run_coroutine_threadsafe(listener.start(), loop).result(15)
    try:
        yield f"http://127.0.0.1:{listener.port}"
    finally:
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _issues(count: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """``count`` issues in the runner's ``ISSUE_SCHEMA``, the codes a bad export has."""
    from rosterdrop.pipeline.issues import ISSUE_SCHEMA

    codes = [("UNKNOWN_LOCATION", "error", "students.csv", "schoolSourcedId"),
             ("MISSING_REQUIRED", "error", "students.csv", "email"),
             ("DUPLICATE_ID", "error", "users.csv", "sourcedId"),
             ("INVALID_GRADE", "warning", "students.csv", "grades")]
    pick = pl.col("n") % len(codes)

    def of(field: int) -> pl.Expr:
        return pl.lit(pl.Series([c[field] for c in codes])).gather(pick)

    frame = pl.DataFrame({"n": pl.int_range(0, count, eager=True)}).select(
        code=of(0), severity=of(1), file=of(2), line=pl.col("n") + 2, column=of(3),
        value=pl.format("NOWHERE{}", pl.col("n")),
        message=pl.lit("no location with this id in locations.csv"),
    ).cast(ISSUE_SCHEMA)
    counts = frame.group_by("code").len().sort("code")
    return frame, dict(zip(counts["code"].to_list(), counts["len"].to_list(), strict=True))


def build(folder: Path, upload: Path, *, runs: int, issues: int, tenants: int,
          ) -> tuple[Any, Any, str]:
    """(settings, store, the big run's id) in ``folder``."""
    from sqlalchemy import insert, select

    from rosterdrop.config import parse_settings
    from rosterdrop.passwords import hash_password
    from rosterdrop.runs.artifacts import ISSUES_CSV, REPORT_JSON, write_csv, write_json
    from rosterdrop.runs.runner import Runner
    from rosterdrop.store.engine import open_store
    from rosterdrop.store.tables import RUNS

    names = [f"t{n:02d}" for n in range(tenants)]
    settings = parse_settings({
        "state_dir": str(folder / "state"),
        "web": {"listen": "127.0.0.1:0"},
        "tenants": {name: {"name": f"District {name}", "report_to": ["it@bench.example"]}
                    for name in names},
        "admins": [{"username": "bench", "password_hash": hash_password(PASSWORD),
                    "role": "administrator", "tenants": []}],
    })
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.database_url)
    runner = Runner(settings, store, mailer=lambda message, _settings: "memory")
    real = runner.sync(names[0], upload, source="sftp")
    with store.engine.connect() as conn:
        template = dict(conn.execute(select(RUNS).where(RUNS.c.run_id == real.run_id))
                        .mappings().one())
    newest = datetime.now(UTC)
    rows = []
    for n in range(runs - 2):  # the real run and the big one make up the rest
        moment = newest - timedelta(hours=n + 1)
        status = "failed" if n % 50 == 7 else "held" if n % 500 == 11 else "completed"
        rows.append({**template, "run_id": f"{moment:%Y%m%d-%H%M%S}-{n:08x}",
                     "tenant": names[n % tenants], "status": status, "created_at": moment,
                     "finished_at": moment + timedelta(seconds=20), "artifact_dir": None,
                     "applied": status == "completed",
                     "applied_at": moment if status == "completed" else None})
    frame, counts = _issues(issues)
    big = f"{newest:%Y%m%d-%H%M%S}-ffffffff"
    reports = folder / "state" / "big-run"
    shutil.copytree(Path(str(template["artifact_dir"])), reports)
    write_csv(frame, reports / ISSUES_CSV)
    document = dict(template["document"])
    document.update(run_id=big, status="failed", issue_counts=counts)
    write_json(document, reports / REPORT_JSON)
    rows.append({**template, "run_id": big, "status": "failed", "applied": False,
                 "applied_at": None, "issue_counts": counts, "document": document,
                 "created_at": newest, "finished_at": newest, "artifact_dir": str(reports)})
    with store.write() as conn:
        conn.execute(insert(RUNS), rows)
    return settings, store, big


PASSWORD = "bench password"


def p11_console(folder: Path, upload: Path, *, runs: int = 10_000, issues: int = 1_000_000,
                tenants: int = 20, rounds: int = 9) -> dict[str, Any]:
    import httpx
    from sqlalchemy import event

    from rosterdrop.paths import StatePaths
    from rosterdrop.runs.runner import utc_now
    from rosterdrop.web.app import build_app
    from rosterdrop.web.console import Console, console_admins

    started = time.perf_counter()
    settings, store, big = build(folder, upload, runs=runs, issues=issues, tenants=tenants)
    build_seconds = time.perf_counter() - started
    console = Console(settings=settings, store=store, runner=None,  # type: ignore[arg-type]
                      admins=console_admins(settings, StatePaths.of(settings)), clock=utc_now,
                      take=lambda *_: None)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with _serving(build_app(console)) as base, httpx.Client(base_url=base, timeout=120) as client:
            login = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert token, login.text[:500]
            signed = client.post("/login", data={"username": "bench", "password": PASSWORD,
                                                 "csrf_token": token.group(1)})
            if signed.status_code != 303:
                raise RuntimeError(f"sign-in answered {signed.status_code}")
            first = client.get("/runs")
            cursor = re.search(r'id="next-page" href="([^"]+)"', first.text)
            assert cursor, "the history has no next page"
            paths = {"healthz": "/healthz", "dashboard": "/", "history": "/runs",
                     "history page 2": cursor.group(1).replace("&amp;", "&"),
                     "history of one tenant, failed": "/runs?tenant=t03&status=failed",
                     "run page": f"/runs/{big}",
                     "run page, one code": f"/runs/{big}?code=DUPLICATE_ID",
                     "run page, last page": f"/runs/{big}?page=20000",
                     "run page, search": f"/runs/{big}?q=nowhere999999"}
            times: dict[str, list[float]] = {name: [] for name in paths}
            counted: dict[str, int] = {}
            sizes: dict[str, int] = {}
            for name, path in paths.items():  # warm-up, statements, sizes
                statements.clear()
                answer = client.get(path)
                if answer.status_code != 200:
                    raise RuntimeError(f"GET {path} answered {answer.status_code}")
                counted[name], sizes[name] = len(statements), len(answer.content)
            order = list(paths)
            for rnd in range(rounds):
                turn = order[rnd % len(order):] + order[:rnd % len(order)]
                for name in turn:
                    clock = time.perf_counter()
                    answer = client.get(paths[name])
                    times[name].append(time.perf_counter() - clock)
                    assert answer.status_code == 200
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
        store.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"runs": runs, "issues": issues, "tenants": tenants, "rounds": rounds,
            "build_seconds": build_seconds, "paths": paths, "seconds": times,
            "median": medians,
            "ratio": {name: medians[name] / medians["healthz"] for name in medians},
            "statements": counted, "bytes": sizes}
