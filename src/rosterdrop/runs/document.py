"""The documents of a check and a run (docs/cli.md, "JSON documents"), built from the
pipeline's results. Their types and JSON form are ``rosterdrop.documents``."""

from __future__ import annotations

import polars as pl

from rosterdrop.codes import Severity
from rosterdrop.documents import CheckDocument, CheckStatus, IssueExample
from rosterdrop.pipeline.check import Checked

EXAMPLES_PER_CODE = 100


def issue_counts(issues: pl.DataFrame) -> dict[str, int]:
    if issues.height == 0:
        return {}
    counts = issues.group_by("code").len().sort("code")
    return dict(zip(counts["code"].to_list(), counts["len"].to_list(), strict=True))


def examples(issues: pl.DataFrame, severity: Severity,
             per_code: int = EXAMPLES_PER_CODE) -> tuple[IssueExample, ...]:
    """Issues of one severity, at most ``per_code`` of each code, in the order found."""
    chosen = issues.filter(pl.col("severity") == severity.value)
    chosen = chosen.filter(pl.int_range(pl.len()).over("code") < per_code)
    return tuple(IssueExample(**row) for row in chosen.iter_rows(named=True))


def check_document(checked: Checked) -> CheckDocument:
    """The ``validate --json`` document."""
    issues = checked.issues.frame()
    return CheckDocument(
        file=checked.file, sha256=checked.sha256, layout=checked.layout,
        status=CheckStatus(checked.status), counts=dict(checked.counts),
        issue_counts=issue_counts(issues), errors=examples(issues, Severity.ERROR),
        warnings=examples(issues, Severity.WARNING), files_ignored=tuple(checked.files_ignored),
    )
