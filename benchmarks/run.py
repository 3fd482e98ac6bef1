"""rosterdrop benchmarks: one command, a table, a JSON file (spec: performance.md).

    python benchmarks/run.py [--sizes S,M,L] [--json out.json] [--repeats 3] [--smoke]

For each workload size the harness

1. makes the upload with ``rosterdrop sample OUT --layout oneroster-1.1
   --students N --seed 1`` into ``benchmarks/out/`` (cached by name; made
   again when ``rosterdrop/sample.py`` changes or with ``--regenerate``);
2. runs, ``--repeats`` times and interleaved so that both see the same
   machine, the **floor** (``floor.py``: inflate + ``polars.read_csv`` of
   every CSV, in a subprocess) and every registered **measurement** (P1:
   ``rosterdrop validate ZIP --json``, in a subprocess);
3. reports medians: a measurement's ratio is its median wall time over the
   median floor, checked against its target; peak RSS comes from
   ``os.wait4`` on the measured process itself.

Every target in performance.md is a ratio against the floor of the same run
or a memory bound, so absolute seconds are information only. Measurements are
entries of ``MEASUREMENTS``: later targets (P2 sync, P3 resync, …) are added
there, each with its own untimed set-up in a fresh scratch folder.

Exit status: 0 when every target that applies passed (a measurement whose
command does not exist yet is reported as "unavailable" and does not fail the
run), 1 when a target failed or a measurement broke, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"
FLOOR_SCRIPT = HERE / "floor.py"

LAYOUT = "oneroster-1.1"
SEED = 1
SIZES: dict[str, int] = {"S": 2_000, "M": 25_000, "L": 100_000, "XL": 1_000_000}
"""Workload name -> students (performance.md "Workloads")."""

TIMEOUT_SECONDS = 3_600


# --- running one measured process ---------------------------------------------------------


@dataclass(frozen=True)
class ProcessRun:
    """One finished subprocess: wall time, CPU time and its own peak RSS."""

    argv: list[str]
    returncode: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    stdout: str
    stderr: str

    def last_stderr_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1].strip() if lines else f"exit status {self.returncode}"


def run_process(
    argv: Sequence[str], *, cwd: Path | None = None, timeout: float = TIMEOUT_SECONDS
) -> ProcessRun:
    """Run ``argv`` and reap it with ``os.wait4``, whose rusage is that process's
    own (``RUSAGE_CHILDREN`` would be a max over every child the harness ever had).
    Output goes to temporary files, so a chatty command cannot block on a pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd
        )
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcessRun(
            argv=list(argv),
            returncode=proc.returncode,
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_rss_mib=usage.ru_maxrss / 1024,  # Linux reports KiB
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )


def rosterdrop(*args: str) -> list[str]:
    """The ``rosterdrop`` command of the interpreter running the harness."""
    return [sys.executable, "-m", "rosterdrop", *args]


# --- workloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    students: int
    zip_path: Path
    counts: dict[str, int]
    generate_seconds: float | None  # None when taken from the cache


def _sample_digest() -> str:
    """Digest of the generator's source: a changed generator invalidates the cache."""
    spec = importlib.util.find_spec("rosterdrop.sample")
    if spec is None or spec.origin is None:
        raise SystemExit("benchmarks: rosterdrop is not installed in this interpreter")
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]


def prepare_workload(name: str, out_dir: Path, *, regenerate: bool) -> Workload:
    students = SIZES[name]
    zip_path = out_dir / f"{LAYOUT}-{name}-seed{SEED}.zip"
    meta_path = zip_path.with_suffix(".json")
    digest = _sample_digest()
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(meta_path.read_text())
        if (
            not regenerate
            and zip_path.exists()
            and meta.get("sample_digest") == digest
            and meta.get("students") == students
        ):
            return Workload(name, students, zip_path, meta["counts"], None)
    out_dir.mkdir(parents=True, exist_ok=True)
    _progress(f"{name}: generating {students:,} students -> {zip_path.name}")
    run = run_process(
        rosterdrop("sample", str(zip_path), "--layout", LAYOUT, "--students", str(students),
                   "--seed", str(SEED))
    )
    if run.returncode != 0:
        raise SystemExit(f"benchmarks: rosterdrop sample failed: {run.last_stderr_line()}")
    counts = _read_counts(zip_path)
    meta = {"students": students, "layout": LAYOUT, "seed": SEED, "sample_digest": digest,
            "counts": counts, "generate_seconds": run.seconds,
            "generate_peak_rss_mib": run.peak_rss_mib}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return Workload(name, students, zip_path, counts, run.seconds)


def _read_counts(zip_path: Path) -> dict[str, int]:
    """Data rows per CSV, counted from the ZIP (newlines outside quotes are rows
    here: the sample never puts a line break inside a field)."""
    import zipfile

    counts = {}
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            with zf.open(info) as stream:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
            counts[info.filename] = max(0, lines - 1)
    return counts


# --- the registry of measurements ----------------------------------------------------------


class Unavailable(Exception):
    """The measured command does not exist (yet) in this checkout."""


class Broken(Exception):
    """The measured command ran but failed or produced unreadable output."""


@dataclass(frozen=True)
class Measurement:
    """One performance.md target.

    ``prepare(workload, scratch)`` does the untimed set-up of one repetition in
    a fresh, empty ``scratch`` folder (P3 would sync the upload once there) and
    returns the command to time. ``interpret(run)`` checks the finished
    process and returns details for the JSON; it raises ``Unavailable`` or
    ``Broken``. Targets: wall time ≤ ``max_ratio`` × floor and peak RSS ≤
    ``max_rss_mib``; they bind on the ``binding`` workloads and are shown in
    parentheses, for information, on the others.
    """

    key: str
    title: str
    prepare: Callable[[Workload, Path], list[str]]
    interpret: Callable[[ProcessRun], dict[str, Any]]
    max_ratio: float | None = None
    max_rss_mib: float | None = None
    binding: frozenset[str] = frozenset({"L"})
    sizes: frozenset[str] = frozenset(SIZES)


_MISSING_MARKERS = ("No such command", "ModuleNotFoundError", "ImportError")


def _interpret_report(run: ProcessRun) -> dict[str, Any]:
    """A ``validate --json`` / ``sync --json`` document (cli.md); exit 0 or 1."""
    doc: Any = None
    if run.returncode in (0, 1):
        with contextlib.suppress(ValueError):
            doc = json.loads(run.stdout)
    if not isinstance(doc, dict):
        # No document. A command (or a module it imports) that is not there yet
        # is "unavailable"; anything else is a broken measurement.
        if any(marker in run.stderr for marker in _MISSING_MARKERS):
            raise Unavailable(run.last_stderr_line())
        raise Broken(f"exit status {run.returncode}, no JSON document: "
                     f"{run.last_stderr_line()}")
    details = {key: doc.get(key) for key in ("layout", "status", "counts", "issue_counts")}
    if doc.get("status") == "failed":
        codes = ", ".join(sorted((doc.get("issue_counts") or {}).keys()))
        details["note"] = f"the report has errors ({codes})"
    return details


MEASUREMENTS: dict[str, Measurement] = {
    m.key: m
    for m in [
        Measurement(
            key="P1",
            title="validate",
            prepare=lambda w, scratch: rosterdrop("validate", str(w.zip_path), "--json"),
            interpret=_interpret_report,
            max_ratio=3.0,
        ),
    ]
}


# --- running the benchmark ----------------------------------------------------------------------


@dataclass
class Series:
    """The repetitions of one measured command on one workload."""

    runs: list[ProcessRun] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | unavailable | broken
    reason: str | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_rss_mib(self) -> float:
        return max(r.peak_rss_mib for r in self.runs)


def _floor(zip_path: Path) -> tuple[ProcessRun, dict[str, Any]]:
    run = run_process([sys.executable, str(FLOOR_SCRIPT), str(zip_path)])
    if run.returncode != 0:
        raise SystemExit(f"benchmarks: floor failed: {run.last_stderr_line()}")
    result: dict[str, Any] = json.loads(run.stdout)
    return run, result


def bench_workload(
    workload: Workload, measurements: Sequence[Measurement], repeats: int
) -> dict[str, Any]:
    _progress(f"{workload.name}: warming up")
    _floor(workload.zip_path)  # untimed: page cache, bytecode caches
    floor_seconds: list[float] = []
    floor_rss: list[float] = []
    floor_wall: list[float] = []
    rows = 0
    series = {m.key: Series() for m in measurements}
    for rep in range(1, repeats + 1):
        run, floor = _floor(workload.zip_path)
        floor_seconds.append(floor["seconds"])
        floor_wall.append(run.seconds)
        floor_rss.append(run.peak_rss_mib)
        rows = floor["rows"]
        _progress(f"{workload.name}: run {rep}/{repeats}: floor {floor['seconds']:.3f} s")
        for m in measurements:
            s = series[m.key]
            if s.status != "ok":
                continue
            with tempfile.TemporaryDirectory(prefix=f"bench-{m.key}-") as scratch:
                argv = m.prepare(workload, Path(scratch))
                proc = run_process(argv, cwd=Path(scratch))
            try:
                s.details = m.interpret(proc)
            except Unavailable as exc:
                s.status, s.reason = "unavailable", str(exc)
            except Broken as exc:
                s.status, s.reason = "broken", str(exc)
            else:
                s.runs.append(proc)
            shown = f"{proc.seconds:.3f} s" if s.status == "ok" else f"{s.status}: {s.reason}"
            _progress(f"{workload.name}: run {rep}/{repeats}: {m.key} {m.title} {shown}")

    floor_median = statistics.median(floor_seconds)
    results: dict[str, Any] = {}
    for m in measurements:
        s = series[m.key]
        entry: dict[str, Any] = {
            "title": m.title,
            "status": s.status,
            "reason": s.reason,
            "binding": workload.name in m.binding,
            "target": {"max_ratio": m.max_ratio, "max_rss_mib": m.max_rss_mib},
        }
        if s.status == "ok":
            ratio = s.seconds / floor_median
            checks = []
            if m.max_ratio is not None:
                checks.append(ratio <= m.max_ratio)
            if m.max_rss_mib is not None:
                checks.append(s.peak_rss_mib <= m.max_rss_mib)
            entry.update(
                seconds=s.seconds,
                runs=[r.seconds for r in s.runs],
                cpu_seconds=[r.cpu_seconds for r in s.runs],
                ratio=ratio,
                peak_rss_mib=s.peak_rss_mib,
                seconds_per_million_rows=s.seconds / (rows / 1e6) if rows else None,
                passed=all(checks),
                details=s.details,
            )
        results[m.key] = entry
    return {
        "name": workload.name,
        "students": workload.students,
        "zip": str(workload.zip_path),
        "zip_bytes": workload.zip_path.stat().st_size,
        "rows": rows,
        "rows_per_file": workload.counts,
        "generate_seconds": workload.generate_seconds,
        "floor": {
            "seconds": floor_median,
            "runs": floor_seconds,
            "process_wall_seconds": floor_wall,
            "peak_rss_mib": max(floor_rss),
            "seconds_per_million_rows": floor_median / (rows / 1e6) if rows else None,
        },
        "measurements": results,
    }


# --- output -----------------------------------------------------------------------------------------


COLUMNS = ("workload", "rows", "floor s", "measure", "s", "ratio", "target", "peak RSS MiB",
           "result", "s/M rows")


def table(workloads: Sequence[dict[str, Any]]) -> str:
    body: list[tuple[str, ...]] = []
    notes: list[str] = []
    for w in workloads:
        for key, m in w["measurements"].items():
            binding = m["binding"]
            target = " ".join(
                part for part in (
                    f"≤{m['target']['max_ratio']:g}×" if m["target"]["max_ratio"] else "",
                    f"≤{m['target']['max_rss_mib']:g} MiB" if m["target"]["max_rss_mib"] else "",
                ) if part
            )
            if not binding:
                target = f"({target})"
            if m["status"] == "ok":
                result = "pass" if m["passed"] else "FAIL"
                cells = (f"{m['seconds']:.3f}", f"{m['ratio']:.2f}", target,
                         f"{m['peak_rss_mib']:.0f}", result if binding else f"({result.lower()})",
                         f"{m['seconds_per_million_rows']:.2f}")
                if note := m["details"].get("note"):
                    notes.append(f"{w['name']} {key}: {note}")
            else:
                cells = ("-", "-", target, "-", m["status"], "-")
                notes.append(f"{w['name']} {key}: {m['status']}: {m['reason']}")
            body.append((w["name"], f"{w['rows']:,}", f"{w['floor']['seconds']:.3f}",
                         f"{key} {m['title']}", *cells))
        if not w["measurements"]:
            body.append((w["name"], f"{w['rows']:,}", f"{w['floor']['seconds']:.3f}",
                         "-", "-", "-", "-", "-", "-", "-"))
    widths = [max(len(row[i]) for row in (COLUMNS, *body)) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in (COLUMNS, *body)]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines += [f"note: {note}" for note in notes]
    lines.append("floor = inflate + polars.read_csv of every CSV (median); ratio = median / floor;"
                 " (…) = target not binding for this size")
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _host() -> dict[str, Any]:
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        ).stdout.strip()

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": version("polars"),
        "rosterdrop": version("rosterdrop"),
        "commit": commit,
    }


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--sizes", default="S,M,L",
                        help=f"comma-separated workloads out of {','.join(SIZES)} (default S,M,L)")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"measurements to run (default: all of {','.join(MEASUREMENTS)})")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions; medians are reported")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                        help="where generated uploads are cached (default benchmarks/out)")
    parser.add_argument("--regenerate", action="store_true", help="ignore cached uploads")
    parser.add_argument("--smoke", action="store_true",
                        help="size S only: checks that the harness and commands run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes = "S"
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.only = [k.strip() for k in args.only.split(",") if k.strip()]
    if unknown := [s for s in args.sizes if s not in SIZES]:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    if unknown := [k for k in args.only if k not in MEASUREMENTS]:
        parser.error(f"unknown measurement(s) {', '.join(unknown)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    results = []
    for name in args.sizes:
        workload = prepare_workload(name, args.out_dir, regenerate=args.regenerate)
        chosen = [MEASUREMENTS[k] for k in args.only if name in MEASUREMENTS[k].sizes]
        results.append(bench_workload(workload, chosen, args.repeats))
    print(table(results))
    document = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": (datetime.now(UTC) - started).total_seconds(),
        "host": _host(),
        "layout": LAYOUT,
        "seed": SEED,
        "repeats": args.repeats,
        "workloads": results,
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        _progress(f"wrote {args.json}")
    failed = any(
        m["status"] == "broken" or (m["status"] == "ok" and m["binding"] and not m["passed"])
        for w in results for m in w["measurements"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
