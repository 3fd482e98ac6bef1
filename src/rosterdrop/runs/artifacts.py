"""A run's artifacts in its reports folder (shown read-only over SFTP).

Every CSV here (issues.csv, patch-summary.csv, preview.csv, matches.csv) is
written by ``write_csv``, which first makes each cell a spreadsheet would
evaluate inert (``runs/csv_safety.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from rosterdrop.paths import private_file, private_folder
from rosterdrop.pipeline.asm_writer import write_asm_zip
from rosterdrop.pipeline.model import Model
from rosterdrop.runs.csv_safety import neutralise
from rosterdrop.runs.names import ISSUES_CSV as ISSUES_CSV
from rosterdrop.runs.names import MATCHES_CSV as MATCHES_CSV
from rosterdrop.runs.names import MODIFIED_ZIP as MODIFIED_ZIP
from rosterdrop.runs.names import PREVIEW_CSV as PREVIEW_CSV
from rosterdrop.runs.names import REPORT_JSON as REPORT_JSON
from rosterdrop.runs.names import SUMMARY_CSV as SUMMARY_CSV


def _atomic(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _publish(tmp: Path, path: Path) -> None:
    os.replace(private_file(tmp), path)


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    tmp = _atomic(path)
    neutralise(frame).write_csv(tmp)
    _publish(tmp, path)


def write_json(document: dict[str, Any], path: Path) -> None:
    tmp = _atomic(path)
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n",
                   encoding="utf-8")
    _publish(tmp, path)


def write_modified(model: Model, path: Path) -> None:
    tmp = _atomic(path)
    write_asm_zip(model, tmp)
    _publish(tmp, path)


def write_artifacts(folder: Path, document: dict[str, Any], issues: pl.DataFrame,
                    summary: pl.DataFrame, model: Model | None) -> dict[str, Path]:
    """Write every artifact of a run; return name → path of what was written."""
    private_folder(folder)
    written = {REPORT_JSON: folder / REPORT_JSON, ISSUES_CSV: folder / ISSUES_CSV,
               SUMMARY_CSV: folder / SUMMARY_CSV}
    write_csv(issues, written[ISSUES_CSV])
    write_csv(summary, written[SUMMARY_CSV])
    if model is not None:
        written[MODIFIED_ZIP] = folder / MODIFIED_ZIP
        write_modified(model, written[MODIFIED_ZIP])
    write_json(document, written[REPORT_JSON])
    return written
