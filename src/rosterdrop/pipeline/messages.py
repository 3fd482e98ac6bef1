"""Vectorised fragments for issue messages built over whole frames."""

from __future__ import annotations

import polars as pl


def where(file: str = "_file", line: str = "_line") -> pl.Expr:
    """``"users.csv line 12: "`` from the provenance columns; ``""`` when unknown."""
    return (
        pl.when(pl.col(file).is_not_null())
        .then(
            pl.concat_str(
                [
                    pl.col(file),
                    pl.when(pl.col(line).is_not_null())
                    .then(pl.lit(" line ") + pl.col(line).cast(pl.String))
                    .otherwise(pl.lit("")),
                    pl.lit(": "),
                ]
            )
        )
        .otherwise(pl.lit(""))
    )


def person_issues(frame: pl.DataFrame, *parts: pl.Expr) -> pl.DataFrame:
    """Issue rows about people: where they stand, their person_id, and the message
    ``parts`` after the ``"users.csv line 12: "`` prefix."""
    return frame.select(
        file=pl.col("_file"),
        line=pl.col("_line"),
        column=pl.lit(None, pl.String),
        value=pl.col("person_id"),
        message=pl.concat_str([where(), *parts]),
    )


def quoted(expr: pl.Expr) -> pl.Expr:
    """``'value'``, or ``(blank)`` for null."""
    return (
        pl.when(expr.is_null())
        .then(pl.lit("(blank)"))
        .otherwise(pl.lit("'") + expr.cast(pl.String) + pl.lit("'"))
    )


def joined(names: list[str] | tuple[str, ...]) -> str:
    """``"a, b and c"``."""
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
