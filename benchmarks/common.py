"""What the benchmark scripts share: running a measured process, workloads, progress lines."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "out"

LAYOUT = "oneroster-1.1"
SEED = 1
SIZES: dict[str, int] = {"S": 2_000, "M": 25_000, "L": 100_000, "XL": 1_000_000}
"""Workload name -> students (performance.md "Workloads")."""

TIMEOUT_SECONDS = 3_600


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


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
    argv: Sequence[str], *, cwd: Path | None = None, timeout: float = TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
) -> ProcessRun:
    """Run ``argv`` and reap it with ``os.wait4``, whose rusage is that process's
    own (``RUSAGE_CHILDREN`` would be a max over every child the harness ever had).
    Output goes to temporary files, so a chatty command cannot block on a pipe."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
            env=None if env is None else dict(env),
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


def _source_digest(*modules: str) -> str:
    """Digest of the generators' source: a changed generator invalidates the cache."""
    digest = hashlib.sha256()
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise SystemExit(f"benchmarks: {module} is not importable from this interpreter")
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:16]


def _cached_meta(meta_path: Path, target: Path, regenerate: bool,
                 **expect: object) -> dict[str, Any] | None:
    if regenerate or not target.exists():
        return None
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(meta_path.read_text())
        if all(meta.get(key) == value for key, value in expect.items()):
            return dict(meta)
    return None


def prepare_workload(name: str, out_dir: Path, *, regenerate: bool, seed: int = SEED) -> Workload:
    """``rosterdrop sample`` of one size and seed, cached in ``out_dir``."""
    students = SIZES[name]
    zip_path = out_dir / f"{LAYOUT}-{name}-seed{seed}.zip"
    meta_path = zip_path.with_suffix(".json")
    digest = _source_digest("rosterdrop.tools.sample")
    meta = _cached_meta(meta_path, zip_path, regenerate, sample_digest=digest, students=students)
    if meta is not None:
        return Workload(name, students, zip_path, meta["counts"], None)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress(f"{name}: generating {students:,} students (seed {seed}) -> {zip_path.name}")
    run = run_process(
        rosterdrop("sample", str(zip_path), "--layout", LAYOUT, "--students", str(students),
                   "--seed", str(seed))
    )
    if run.returncode != 0:
        raise SystemExit(f"benchmarks: rosterdrop sample failed: {run.last_stderr_line()}")
    counts = read_counts(zip_path)
    meta = {"students": students, "layout": LAYOUT, "seed": seed, "sample_digest": digest,
            "counts": counts, "generate_seconds": run.seconds,
            "generate_peak_rss_mib": run.peak_rss_mib}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return Workload(name, students, zip_path, counts, run.seconds)


def prepare_variant(workload: Workload, *, regenerate: bool) -> tuple[Path, dict[str, int]]:
    """The 1 %-changed upload of P3 (``variant.py``), cached next to the workload."""
    out = workload.zip_path.with_name(workload.zip_path.stem + "-changed1pct.zip")
    meta_path = out.with_suffix(".json")
    source = hashlib.sha256(workload.zip_path.read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256((HERE / "variant.py").read_bytes()).hexdigest()[:16]
    meta = _cached_meta(meta_path, out, regenerate, source=source, variant_digest=digest)
    if meta is not None:
        return out, meta["expected"]
    progress(f"{workload.name}: writing the 1 %-changed variant -> {out.name}")
    run = run_process([sys.executable, str(HERE / "variant.py"), str(workload.zip_path), str(out)])
    if run.returncode != 0:
        raise SystemExit(f"benchmarks: variant.py failed: {run.last_stderr_line()}")
    expected = json.loads(run.stdout)
    meta_path.write_text(json.dumps({"source": source, "variant_digest": digest,
                                     "expected": expected}, indent=2) + "\n")
    return out, expected


def read_counts(zip_path: Path) -> dict[str, int]:
    """Data rows per CSV, counted from the ZIP (newlines outside quotes are rows
    here: the sample never puts a line break inside a field)."""
    counts = {}
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            with zf.open(info) as stream:
                lines = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
            counts[info.filename] = max(0, lines - 1)
    return counts
