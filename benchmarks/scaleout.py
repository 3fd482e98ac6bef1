"""Throughput of one vs two `rosterdrop serve` processes on one PostgreSQL store.

    python benchmarks/scaleout.py [--students 25000] [--tenants 6] [--pg URL]

Each configuration gets a fresh PostgreSQL schema and a fresh shared folder;
the M upload (``rosterdrop sample --students 25000``) is dropped into every
tenant's drop folder at once, and the clock runs from the drop to the last
``run_finished`` in the processes' logs. All processes run on this machine,
so two processes share its cores: the number says what the queue and the
store add or cost, not what a second machine would give.

Prints a table and writes benchmarks/out/scaleout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from rosterdrop.tools.sample import write_sample

OUT = Path(__file__).parent / "out"
PG = os.environ.get("ROSTERDROP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_config(upload: Path, *, processes: int, workers: int, tenants: int,
               pg: str, pin: bool = False) -> dict[str, Any]:
    """``pin``: process *p* runs on core *p* only, as if each had a machine of one core."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{pg}{'&' if '?' in pg else '?'}options=-csearch_path%3D{schema}"
    root = Path(tempfile.mkdtemp(prefix="rd-scaleout-"))
    shared = root / "shared"
    names = [f"d{n}" for n in range(tenants)]
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for p in range(processes):
            state = root / f"p{p}"
            config = root / f"p{p}.toml"
            lines = [f'state_dir = "{state}"', f'shared_dir = "{shared}"', f"workers = {workers}",
                     "[store]", f'url = "{url}"', "[sftp]",
                     f'listen = "127.0.0.1:{free_port()}"', "settle_seconds = 0.2",
                     "rescan_seconds = 1"]
            for name in names:
                lines += [f"[tenants.{name}]", f'report_to = ["it@{name}.example"]',
                          f"[tenants.{name}.guard]", "max_deactivate_percent = 0",
                          f"[[tenants.{name}.accounts]]", f'username = "{name}"']
            config.write_text("\n".join(lines) + "\n")
            log = root / f"p{p}.log"
            with log.open("wb") as out:
                command = [sys.executable, "-m", "rosterdrop", "-c", str(config), "serve"]
                if pin:
                    command = ["taskset", "-c", str(p % (os.cpu_count() or 1)), *command]
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            procs.append((proc, log))
        for proc, log in procs:
            wait_for(log, "daemon_started", 1, 60, proc)
        for name in names:
            folder = shared / "tenants" / name / "dropbox"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(upload, folder / ".m.zip")
        dropped = time.time()
        for name in names:
            folder = shared / "tenants" / name / "dropbox"
            (folder / ".m.zip").rename(folder / "m.zip")
        finished = wait_for_all(procs, "run_finished", tenants, 1800)
        last = max(_epoch(e["ts"]) for e in finished)
        seconds = last - dropped
        per_process = [len(events(log, "run_finished")) for _, log in procs]
        statuses = sorted({e["status"] for e in finished})
        return {"processes": processes, "workers_per_process": workers, "uploads": tenants,
                "one_core_each": pin,
                "seconds": round(seconds, 1), "uploads_per_minute": round(tenants / seconds * 60, 2),
                "runs_per_process": per_process, "statuses": statuses}
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=60)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
        shutil.rmtree(root, ignore_errors=True)


def events(log: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text("utf-8", "replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def wait_for(log: Path, name: str, count: int, timeout: float,
             proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rosterdrop serve exited: {log.read_text()[-2000:]}")
        found = events(log, name)
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise SystemExit(f"no {count}× {name} in {log} after {timeout}s")


def wait_for_all(procs: list[tuple[subprocess.Popen[bytes], Path]], name: str, count: int,
                 timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for _, log in procs for e in events(log, name)]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise SystemExit(f"no {count}× {name} after {timeout}s")


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=25000)
    parser.add_argument("--tenants", type=int, default=6)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--pin", action="store_true",
                        help="one core per process (emulates one machine per process)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    upload = OUT / f"scaleout-{args.students}.zip"
    if not upload.exists():
        write_sample(upload, layout="oneroster-1.1", students=args.students, seed=1)
    results = []
    for processes, workers in ((1, 2), (2, 2)) if args.pin else ((1, 2), (2, 2), (2, 1)):
        result = run_config(upload, processes=processes, workers=workers,
                            tenants=args.tenants, pg=args.pg, pin=args.pin)
        results.append(result)
        pinned = " (one core each)" if args.pin else ""
        print(f"{processes} process(es) × {workers} worker(s){pinned}: {args.tenants} uploads of "
              f"{args.students:,} students in {result['seconds']:6.1f} s "
              f"({result['uploads_per_minute']:.2f}/min; runs per process "
              f"{result['runs_per_process']}; {', '.join(result['statuses'])})", flush=True)
    base = results[0]["seconds"]
    for result in results:
        result["speedup_vs_one_process"] = round(base / result["seconds"], 2)
    out = OUT / ("scaleout-pinned.json" if args.pin else "scaleout.json")
    out.write_text(json.dumps({"cores": os.cpu_count(), "results": results}, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
