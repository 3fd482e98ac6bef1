"""The machine-readable documents of cli.md, built from a check or a run."""

from __future__ import annotations

from typing import Any

import polars as pl

from rosterdrop.codes import Severity
from rosterdrop.pipeline.check import Checked

EXAMPLES_PER_CODE = 100


def issue_counts(issues: pl.DataFrame) -> dict[str, int]:
    if issues.height == 0:
        return {}
    counts = issues.group_by("code").len().sort("code")
    return dict(zip(counts["code"].to_list(), counts["len"].to_list(), strict=True))


def examples(issues: pl.DataFrame, severity: Severity,
             per_code: int = EXAMPLES_PER_CODE) -> list[dict[str, Any]]:
    """Issues of one severity, at most ``per_code`` of each code, in the order found."""
    chosen = issues.filter(pl.col("severity") == severity.value)
    chosen = chosen.filter(pl.int_range(pl.len()).over("code") < per_code)
    return chosen.to_dicts()


def check_document(checked: Checked) -> dict[str, Any]:
    """The ``validate --json`` document."""
    issues = checked.issues.frame()
    return {
        "file": checked.file,
        "sha256": checked.sha256,
        "layout": checked.layout,
        "status": checked.status,
        "counts": checked.counts,
        "issue_counts": issue_counts(issues),
        "errors": examples(issues, Severity.ERROR),
        "warnings": examples(issues, Severity.WARNING),
        "files_ignored": checked.files_ignored,
    }
