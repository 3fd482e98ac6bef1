"""Issues: problems found in an upload, kept as data, never raised.

A validator over a million rows may find a million issues, so issues are kept
column-wise: each check contributes a polars frame of ``ISSUE_SCHEMA`` rows
(its message built with vectorised string expressions), and single findings
are one-row frames. ``IssueLog.frame()`` is every issue in the order found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from rosterdrop.codes import Code, Severity, default_severity

ISSUE_SCHEMA: dict[str, Any] = {
    "code": pl.String,
    "severity": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "column": pl.String,
    "value": pl.String,
    "message": pl.String,
}
ISSUE_FIELDS = tuple(ISSUE_SCHEMA)


@dataclass(frozen=True, slots=True)
class Issue:
    """One issue, as the JSON document and the email show it."""

    code: str
    severity: str
    file: str | None
    line: int | None
    column: str | None
    value: str | None
    message: str


def empty_issues() -> pl.DataFrame:
    return pl.DataFrame(schema=ISSUE_SCHEMA)


class IssueLog:
    """Collects issues from every step of a run."""

    def __init__(self) -> None:
        self._frames: list[pl.DataFrame] = []
        self._pending: list[dict[str, Any]] = []

    def add(
        self,
        code: Code,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | None = None,
        value: str | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Record a single issue."""
        self._pending.append(
            {
                "code": code.value,
                "severity": (severity or default_severity(code)).value,
                "file": file,
                "line": line,
                "column": column,
                "value": value,
                "message": message,
            }
        )

    def extend(
        self, frame: pl.DataFrame, code: Code, severity: Severity | None = None
    ) -> None:
        """Record one issue per row of ``frame``.

        ``frame`` has a ``message`` column and any of file, line, column,
        value; missing ones are null. Code and severity are the same for all.
        """
        if frame.height == 0:
            return
        self._flush()
        sev = (severity or default_severity(code)).value
        columns = []
        for name, dtype in ISSUE_SCHEMA.items():
            if name == "code":
                columns.append(pl.lit(code.value, pl.String).alias(name))
            elif name == "severity":
                columns.append(pl.lit(sev, pl.String).alias(name))
            elif name in frame.columns:
                columns.append(pl.col(name).cast(dtype))
            else:
                columns.append(pl.lit(None, dtype).alias(name))
        self._frames.append(frame.select(columns))

    def merge(self, other: IssueLog) -> None:
        self._flush()
        other._flush()
        self._frames.extend(other._frames)

    def _flush(self) -> None:
        if self._pending:
            self._frames.append(pl.DataFrame(self._pending, schema=ISSUE_SCHEMA))
            self._pending = []

    def frame(self) -> pl.DataFrame:
        self._flush()
        if not self._frames:
            return empty_issues()
        return pl.concat(self._frames, how="vertical")

    def has_errors(self) -> bool:
        self._flush()
        return any(
            (f["severity"] == Severity.ERROR.value).any() for f in self._frames
        )

    def codes(self) -> set[str]:
        return set(self.frame()["code"].unique().to_list())

    def __iter__(self) -> Iterator[Issue]:
        for row in self.frame().iter_rows(named=True):
            yield Issue(**row)

    def __len__(self) -> int:
        self._flush()
        return sum(f.height for f in self._frames)
