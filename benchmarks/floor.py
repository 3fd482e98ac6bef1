"""The performance.md baseline ("floor") for one upload ZIP.

    python benchmarks/floor.py UPLOAD.zip

Inflates every ``.csv`` entry of the ZIP and parses it with
``polars.read_csv(..., infer_schema=False)`` (every column a string), nothing
else. ``measure`` returns ``seconds`` (that work only: the clock starts after
the imports), ``rows`` (data rows over all files), ``files`` and
``rows_per_file``.

``inproc.py`` calls ``measure`` in the same process as the measurements it is
compared with (performance.md: "in the same process and run"); as a script it
prints the same as one JSON object.
"""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from typing import Any

import polars as pl


def measure(path: str) -> dict[str, Any]:
    started = time.perf_counter()
    rows_per_file: dict[str, int] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".csv"):
                continue
            frame = pl.read_csv(io.BytesIO(zf.read(info)), infer_schema=False)
            rows_per_file[info.filename] = frame.height
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": sum(rows_per_file.values()),
        "files": len(rows_per_file),
        "rows_per_file": rows_per_file,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python benchmarks/floor.py UPLOAD.zip", file=sys.stderr)
        return 2
    print(json.dumps(measure(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
