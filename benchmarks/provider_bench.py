"""P12: the OneRoster provider serving enrollments page by page (benchmarks/README.md).

The store: one tenant with ``enrollments`` student enrollments (rosters) over 10,000
classes at 20 schools, bulk-inserted straight into the directory tables (the sync is
not what is measured). The server is a child process (``python provider_bench.py
serve …``) running the daemon's app (``build_app``) on uvicorn like ``WebListener``;
this process takes a token and follows ``Link: rel="next"`` through every page of
``/enrollments`` at ``limit=1000`` with one ``httpx.Client``, timing the walk. The
baseline, in the same run, is the bare store read of the same rows (median of three): the same
keyset SELECTs (rosters joined to their class) in pages of 1,000, no JSON, no HTTP.
The child's peak RSS comes from ``os.wait4`` when it exits. Also timed: the first
page at the last offset with nothing remembered (an ``OFFSET`` into the index), which
is what a client that jumps pays.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SECRET = "bench-secret"
TENANT = "bench"
CLASSES = 10_000
SCHOOLS = 20


def _settings(folder: Path, url: str) -> dict[str, Any]:
    from rosterdrop.passwords import hash_password

    return {"state_dir": str(folder / "state"), "store": {"url": url},
            "web": {"listen": "127.0.0.1:0"},
            "tenants": {TENANT: {"account_domain": "b.example", "api_clients": [
                {"client_id": "bench", "secret_hash": hash_password(SECRET)}]}}}


def populate(url: str, enrollments: int) -> None:
    from sqlalchemy import insert

    from rosterdrop.store.engine import open_store
    from rosterdrop.store.tables import CLASSES as CLASS_TABLE
    from rosterdrop.store.tables import LOCATIONS, ROSTERS

    with open_store(url) as store, store.write() as conn:
        conn.execute(insert(LOCATIONS), [{"tenant": TENANT, "location_id": f"sch-{n:04d}",
                                          "location_name": f"School {n}"}
                                         for n in range(SCHOOLS)])
        conn.execute(insert(CLASS_TABLE), [
            {"tenant": TENANT, "class_id": f"cls-{n:06d}", "class_number": f"C{n}",
             "course_id": f"crs-{n % 500:04d}", "location_id": f"sch-{n % SCHOOLS:04d}",
             "class_display_name": f"Class {n}", "term_ids": '["term-1"]'}
            for n in range(CLASSES)])
        chunk = 100_000
        for start in range(0, enrollments, chunk):
            conn.execute(insert(ROSTERS), [
                {"tenant": TENANT, "roster_id": f"enr-{n:08d}",
                 "class_id": f"cls-{n % CLASSES:06d}", "student_id": f"stu-{n // 8:07d}"}
                for n in range(start, min(enrollments, start + chunk))])


def bare_read(url: str, page: int) -> tuple[int, float]:
    """The baseline: every roster row with its class's school, keyset pages of ``page``."""
    from sqlalchemy import and_, select

    from rosterdrop.store.engine import open_store
    from rosterdrop.store.tables import CLASSES as K
    from rosterdrop.store.tables import ROSTERS as R

    rows = 0
    started = time.perf_counter()
    with open_store(url) as store, store.read() as conn:
        last = ""
        joined = R.outerjoin(K, and_(K.c.tenant == R.c.tenant, K.c.class_id == R.c.class_id))
        while True:
            got = conn.execute(
                select(R.c.roster_id, R.c.class_id, R.c.student_id, K.c.location_id)
                .select_from(joined).where(R.c.tenant == TENANT, R.c.roster_id > last)
                .order_by(R.c.roster_id).limit(page)).all()
            if not got:
                break
            rows += len(got)
            last = got[-1][0]
    return rows, time.perf_counter() - started


def serve(config: str, port_file: str) -> None:
    """The child: the daemon's app on uvicorn until SIGTERM."""
    import asyncio
    from datetime import UTC, datetime

    from rosterdrop.foreign_warnings import quiet_foreign_warnings

    quiet_foreign_warnings()  # before asyncssh is imported (the console's ban list)

    from rosterdrop.config import LogSettings, parse_settings
    from rosterdrop.logs import configure_logging
    from rosterdrop.runs.runner import Runner
    from rosterdrop.store.engine import open_store
    from rosterdrop.web.app import build_app
    from rosterdrop.web.console import Console
    from rosterdrop.web.listener import WebListener

    settings = parse_settings(json.loads(Path(config).read_text()))
    configure_logging(LogSettings(level="warning"))
    store = open_store(settings.database_url)
    runner = Runner(settings, store)
    console = Console(settings, store, runner, [], lambda: datetime.now(UTC),
                      lambda *args: None)

    async def main() -> None:
        listener = WebListener("127.0.0.1:0", build_app(console))
        await listener.start()
        Path(port_file).write_text(str(listener.port))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await listener.close()

    asyncio.run(main())
    store.close()


def walk(base: str, page: int, version: str = "1.1") -> dict[str, Any]:
    import httpx

    path = {"1.1": "ims/oneroster/v1p1", "1.2": "ims/oneroster/rostering/v1p2"}[version]
    with httpx.Client(base_url=base, timeout=120) as http:
        answer = http.post(f"/t/{TENANT}/oauth/token", auth=("bench", SECRET),
                           data={"grant_type": "client_credentials"})
        answer.raise_for_status()
        http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        url: str | None = f"/t/{TENANT}/{path}/enrollments?limit={page}"
        records = pages = 0
        worst = 0.0
        started = time.perf_counter()
        total = 0
        while url:
            one = time.perf_counter()
            response = http.get(url)
            response.raise_for_status()
            worst = max(worst, time.perf_counter() - one)
            records += len(response.json()["enrollments"])
            total = int(response.headers["X-Total-Count"])
            pages += 1
            url = response.links.get("next", {}).get("url")
        seconds = time.perf_counter() - started
        jump_offset = (total - 1) // page * page
        # A new filter string: nothing remembered, so this page is an OFFSET into the index.
        one = time.perf_counter()
        http.get(f"/t/{TENANT}/{path}/enrollments", params={
            "limit": page, "offset": jump_offset, "filter": "role='student'"}).raise_for_status()
        jump = time.perf_counter() - one
    return {"records": records, "pages": pages, "seconds": seconds, "worst_page": worst,
            "jump_seconds": jump, "jump_offset": jump_offset}


def p12_provider(folder: Path, *, enrollments: int, page: int = 1000,
                 url: str = "") -> dict[str, Any]:
    """Populate, read bare, serve in a child, walk every page; numbers for run.py."""
    url = url or f"sqlite:///{folder}/state/rosterdrop.db"
    (folder / "state").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    populate(url, enrollments)
    populated = time.perf_counter() - started
    # The baseline is short (about 1.5 s at 1,000,000): one reading of it moved the
    # ratio by half, so it is the median of three.
    readings = [bare_read(url, page) for _ in range(3)]
    bare_rows = readings[0][0]
    bare_seconds = statistics.median(seconds for _, seconds in readings)
    config = folder / "settings.json"
    config.write_text(json.dumps(_settings(folder, url)))
    port_file = folder / "port"
    child = subprocess.Popen([sys.executable, __file__, "serve", str(config), str(port_file)],
                             stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the provider did not start")
            time.sleep(0.05)
        walked = walk(f"http://127.0.0.1:{port_file.read_text()}", page)
    finally:
        child.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    if walked["records"] != bare_rows:
        raise RuntimeError(f"served {walked['records']:,} of {bare_rows:,} enrollments")
    return {**walked, "bare_seconds": bare_seconds, "bare_rows": bare_rows,
            "records_per_second": walked["records"] / walked["seconds"],
            "bare_rows_per_second": bare_rows / bare_seconds,
            "ratio": walked["seconds"] / bare_seconds,
            "server_peak_rss_mib": usage.ru_maxrss / 1024, "populate_seconds": populated,
            "enrollments": enrollments, "page": page}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        import tempfile

        count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
        with tempfile.TemporaryDirectory(prefix="bench-P12-") as where:
            print(json.dumps(p12_provider(Path(where), enrollments=count), indent=2))
