"""Header and value checks of one CSV file against its ``FileSpec``.

Every check is a vectorised polars expression over the whole column; the rows
it flags become issues with their physical line, and messages are built with
``pl.format`` so a million bad rows never become a million Python strings
before they are needed.
"""

from __future__ import annotations

import polars as pl

from rosterdrop.codes import Code, Severity
from rosterdrop.formats.layouts import FileSpec, Kind
from rosterdrop.formats.table import Table
from rosterdrop.issues import IssueLog

ID_PATTERN = r"^[A-Za-z0-9_.@/-]+$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
PASSWORD_POLICIES = ("4", "6", "8")
LINE = "_line"


def check_header(
    table: Table, spec: FileSpec, *, unknown_is_error: bool, issues: IssueLog
) -> dict[str, str]:
    """Compare the header with the spec; return spec column → frame column.

    Case slips are reported but still mapped, so the values behind them are
    checked too and the admin sees every problem in one round.
    """
    file = table.file
    names = [name.strip() for name in table.header]
    frame_columns = [c for c in table.frame.columns if c != LINE]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            issues.add(
                Code.HEADER_DUPLICATE_COLUMN,
                f"{file} line 1: the column '{name}' appears more than once; keep one.",
                file=file, line=1, column=name, value=name,
            )
        seen.add(name)

    mapping: dict[str, str] = {}
    exact = {name: frame_columns[i] for i, name in reversed(list(enumerate(names)))}
    by_lower: dict[str, int] = {}
    for i, name in enumerate(names):
        by_lower.setdefault(name.lower(), i)
    expected_lower = {c.lower() for c in (*spec.columns, *spec.optional_columns)}

    for column in (*spec.columns, *spec.optional_columns):
        if column in exact:
            mapping[column] = exact[column]
        elif column.lower() in by_lower:
            i = by_lower[column.lower()]
            mapping[column] = frame_columns[i]
            issues.add(
                Code.HEADER_COLUMN_CASE,
                f"{file} line 1: the column '{names[i]}' must be spelled exactly '{column}' "
                f"(column names are case sensitive); rename it in the export.",
                file=file, line=1, column=names[i], value=names[i],
            )
        elif column in spec.columns:
            issues.add(
                Code.HEADER_MISSING_COLUMN,
                f"{file} line 1: the required column '{column}' is missing from the header; "
                f"add it (it may be left blank where values are optional).",
                file=file, line=1, column=column,
            )

    for i, name in enumerate(names):
        if name in mapping or name.lower() in expected_lower:
            continue
        if spec.extra_column is not None and spec.extra_column.fullmatch(name):
            mapping.setdefault(name, frame_columns[i])
            continue
        severity = Severity.ERROR if unknown_is_error else Severity.WARNING
        consequence = "remove or rename it" if unknown_is_error else "it was ignored"
        issues.add(
            Code.HEADER_UNKNOWN_COLUMN,
            f"{file} line 1: the column '{name}' is not part of the {spec.name} layout; "
            f"{consequence}.",
            file=file, line=1, column=name, value=name, severity=severity,
        )
    return mapping


def tidy(table: Table, mapping: dict[str, str]) -> pl.DataFrame:
    """Columns renamed to the spec's names, values trimmed, blanks as null."""
    return table.frame.select(
        *[
            pl.col(actual).str.strip_chars().replace("", None).alias(column)
            for column, actual in mapping.items()
        ],
        pl.col(LINE),
    )


def check_values(
    frame: pl.DataFrame, spec: FileSpec, file: str, *, delta: bool, oneroster_12: bool,
    issues: IssueLog,
) -> pl.DataFrame:
    """Check every value; return the frame with case-normalised enums and bad unused values dropped."""
    fixes: list[pl.Expr] = []
    for column in frame.columns:
        if column == LINE:
            continue
        rule = spec.field(column)
        required = rule.required or (delta and column in ("status", "dateLastModified"))
        value = pl.col(column)
        if required:
            _report(
                frame, value.is_null(), Code.VALUE_REQUIRED, None, file, column,
                "{} line {}: " + column + " is blank but required; fill it in in the SIS and "
                "export again.", include_value=False, issues=issues,
            )
        severity = Severity.ERROR if rule.used else Severity.WARNING
        invalid: pl.Expr | None = None
        explain = ""
        if rule.kind is Kind.ID:
            invalid = ~value.str.contains(ID_PATTERN)
            explain = ("contains characters an ID may not have (use letters, digits and "
                       "- _ . @ /)")
        elif rule.kind is Kind.ID_LIST:
            invalid = ~value.str.split(",").list.eval(
                pl.element().str.strip_chars().str.contains(ID_PATTERN)
            ).list.all()
            explain = ("is not a comma-separated list of IDs (letters, digits and "
                       "- _ . @ /)")
        elif rule.kind in (Kind.ENUM, Kind.BOOL):
            allowed = rule.values if rule.kind is Kind.ENUM else ("true", "false")
            lowered = {a.lower(): a for a in allowed}
            ok = value.is_in(allowed)
            if oneroster_12 and rule.kind is Kind.ENUM:
                ok = ok | value.str.starts_with("ext:")
            caseless = value.str.to_lowercase().is_in(list(lowered)) & ~ok
            _report(
                frame, caseless, Code.VALUE_CASE, None, file, column,
                "{} line {}: " + column + " '{}' was read as its exact spelling "
                + "(allowed: " + ", ".join(allowed) + "); the SIS should export it exactly.",
                issues=issues,
            )
            fixes.append(
                pl.when(caseless)
                .then(value.str.to_lowercase().replace_strict(lowered, default=None))
                .otherwise(value)
                .alias(column)
            )
            invalid = ~ok & ~caseless
            explain = "is not one of " + ", ".join(allowed)
        elif rule.kind is Kind.DATE:
            invalid = ~value.str.contains(DATE_PATTERN) | value.str.to_date(
                "%Y-%m-%d", strict=False
            ).is_null()
            explain = "is not a date in the form YYYY-MM-DD"
        elif rule.kind is Kind.DATETIME:
            invalid = ~value.str.contains(DATETIME_PATTERN)
            explain = "is not a timestamp in the form YYYY-MM-DDTHH:MM:SS.sssZ"
        elif rule.kind is Kind.PASSWORD_POLICY:
            invalid = ~value.is_in(PASSWORD_POLICIES)
            explain = "must be 4, 6, 8 or blank"
        if invalid is None:
            continue
        invalid = invalid.fill_null(False) & value.is_not_null()
        action = ("correct it in the SIS and export again." if rule.used
                  else "the value was ignored.")
        _report(
            frame, invalid, Code.VALUE_INVALID, severity, file, column,
            "{} line {}: " + column + " '{}' " + explain + "; " + action, issues=issues,
        )
        if not rule.used:
            fixes.append(pl.when(invalid).then(None).otherwise(value).alias(column))
    if fixes:
        frame = frame.with_columns(_last_fix_per_column(fixes))
    if spec.unique and spec.unique in frame.columns:
        check_unique(frame, spec.unique, file, issues)
    return frame


def _last_fix_per_column(fixes: list[pl.Expr]) -> list[pl.Expr]:
    by_name: dict[str, pl.Expr] = {}
    for fix in fixes:
        by_name[fix.meta.output_name()] = fix
    return list(by_name.values())


def check_unique(frame: pl.DataFrame, column: str, file: str, issues: IssueLog) -> None:
    value = pl.col(column)
    repeats = frame.filter(value.is_not_null() & value.is_duplicated())
    if repeats.height == 0:
        return
    repeats = repeats.with_columns(
        pl.col(LINE).first().over(column).alias("_first"),
        pl.int_range(pl.len()).over(column).alias("_nth"),
    ).filter(pl.col("_nth") > 0)
    issues.extend(
        repeats.select(
            pl.lit(file).alias("file"),
            pl.col(LINE).alias("line"),
            pl.lit(column).alias("column"),
            value.alias("value"),
            pl.format(
                "{} line {}: " + column + " '{}' is already used on line {}; every record "
                "needs its own ID, so correct the duplicate in the SIS.",
                pl.lit(file), pl.col(LINE), value, pl.col("_first"),
            ).alias("message"),
        ),
        Code.ID_DUPLICATE,
    )


def _report(
    frame: pl.DataFrame, mask: pl.Expr, code: Code, severity: Severity | None, file: str,
    column: str, template: str, *, include_value: bool = True, issues: IssueLog,
) -> None:
    bad = frame.filter(mask.fill_null(False))
    if bad.height == 0:
        return
    args = [pl.lit(file), pl.col(LINE)]
    if include_value:
        args.append(pl.col(column))
    issues.extend(
        bad.select(
            pl.lit(file).alias("file"),
            pl.col(LINE).alias("line"),
            pl.lit(column).alias("column"),
            pl.col(column).alias("value"),
            pl.format(template, *args).alias("message"),
        ),
        code,
        severity,
    )
