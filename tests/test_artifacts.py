"""Run artifacts: spreadsheet-safe CSVs, a report.json, a modified.zip that re-validates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl

from rosterdrop.pipeline.issues import ISSUE_SCHEMA
from rosterdrop.runs import artifacts
from uploads import asm_files, check


def test_formula_cells_are_neutralised(tmp_path: Path) -> None:
    """Cells starting with = + - @, tab or CR are prefixed with a quote; others are kept."""
    values = ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b", None]
    frame = pl.DataFrame({"value": values, "line": list(range(len(values)))})
    path = tmp_path / "x.csv"
    artifacts.write_csv(frame, path)
    with path.open(newline="") as handle:
        read = [row["value"] for row in csv.DictReader(handle)]
    assert read == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "plain",
                    "a=b", ""]


def test_write_artifacts(tmp_path: Path) -> None:
    """Every artifact is written; modified.zip validates clean; no temporary files remain."""
    files = asm_files()
    files["students.csv"] = files["students.csv"].replace("José", "=cmd|' /C calc'!A0")
    files["rosters.csv"] += "R9,K1,P404\n"
    checked = check(files)
    assert checked.model is not None
    document = {"status": "completed_with_warnings", "run_id": "r1"}
    written = artifacts.write_artifacts(tmp_path, document, checked.issues.frame(),
                                        checked.summary, checked.model)
    assert set(written) == {"report.json", "issues.csv", "patch-summary.csv", "modified.zip"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)
    assert json.loads((tmp_path / "report.json").read_text()) == document
    issues = pl.read_csv(tmp_path / "issues.csv", infer_schema=False)
    assert issues.columns == list(ISSUE_SCHEMA)
    assert issues["code"].to_list() == ["PATCHED_REFERENCE"]
    summary = pl.read_csv(tmp_path / "patch-summary.csv", infer_schema=False)
    assert summary["record_id"].to_list() == ["R9"]
    again = check((tmp_path / "modified.zip").read_bytes())
    assert again.status == "ok", again.issues.frame().to_dicts()
    students = again.model.people if again.model is not None else None
    assert students is not None and "=cmd|' /C calc'!A0" in students["first_name"].to_list()
