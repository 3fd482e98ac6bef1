"""The benchmark harness still runs (benchmarks/run.py --smoke, P1 only).

Nothing here is judged on time: the harness runs size S once and writes its
JSON, and the test checks the document's shape. Timing targets are for
``python benchmarks/run.py`` on a quiet machine, never for the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.mark.skipif(not RUN.exists(), reason="benchmarks/ is not part of this checkout")
def test_benchmark_smoke_run_writes_json(tmp_path: Path) -> None:
    """``run.py --smoke --only P1`` exits 0 or 1 (a timing miss is not an error here),
    prints the table and writes a JSON document with the floor and P1 measured."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--only", "P1", "--out-dir", str(tmp_path / "out"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=100, check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert "P1 validate" in result.stdout
    document = json.loads(out.read_text())
    [workload] = document["workloads"]
    assert workload["name"] == "S" and workload["rows"] > 0
    assert workload["floor"]["seconds"] > 0
    p1 = workload["measurements"]["P1"]
    assert p1["status"] == "ok", p1
    assert p1["ratio"] > 0 and p1["cli_seconds"] > 0 and p1["peak_rss_mib"] > 0
    assert p1["details"]["status"] in ("ok", "warnings")
