"""Header and value checks of one CSV file against its ``FileSpec``.

Every check is a vectorised polars expression over the whole column; the rows
it flags become issues with their physical line, and messages are built with
``pl.format`` so a million bad rows never become a million Python strings
before they are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from rosterdrop.codes import Code, Severity
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.layouts import Field, FileSpec, Kind
from rosterdrop.pipeline.read import Table

ID_PATTERN = r"^[A-Za-z0-9_.@/-]+$"
NOT_ID_CHAR = r"[^A-Za-z0-9_.@/-]"
"""Searching for one bad character is faster than matching ``ID_PATTERN`` whole."""
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
    """Columns renamed to the spec's names, values trimmed, blanks as null.

    Trimming is the costliest step on a big file, so only columns that have a
    value with surrounding white space are trimmed (one cheap scan decides).
    """
    frame = table.frame
    def scan(actual: str) -> pl.Expr:
        value = pl.col(actual)
        padded = (value.str.starts_with(" ") | value.str.ends_with(" ")
                  | value.str.starts_with("\t") | value.str.ends_with("\t"))
        empty = (value == "").any() if table.quoted_empty else pl.lit(False)
        return pl.when(padded.any()).then(2).when(empty).then(1).otherwise(0)

    needs: dict[str, int] = {}
    if mapping and table.padded:
        needs = frame.select(
            [scan(actual).alias(column) for column, actual in mapping.items()]
        ).row(0, named=True)
    elif mapping and table.quoted_empty:
        needs = frame.select(
            [pl.when((pl.col(actual) == "").any()).then(1).otherwise(0).alias(column)
             for column, actual in mapping.items()]
        ).row(0, named=True)
    columns = []
    for column, actual in mapping.items():
        value = pl.col(actual)
        if needs.get(column) == 2:
            value = value.str.strip_chars()
            value = pl.when(value.str.len_bytes() == 0).then(None).otherwise(value)
        elif needs.get(column) == 1:
            value = pl.when(value == "").then(None).otherwise(value)
        columns.append(value.alias(column))
    return frame.select(*columns, pl.col(LINE))


@dataclass
class _Rule:
    code: Code
    severity: Severity | None
    column: str
    mask: pl.Expr
    template: str
    include_value: bool = True
    gate: pl.Expr | None = None
    """A cheaper mask that holds wherever ``mask`` may: ``mask`` is evaluated only
    when the gate fires (an enum's case-insensitive match costs a lower-casing)."""


def check_values(
    frame: pl.DataFrame, spec: FileSpec, file: str, *, delta: bool, oneroster_12: bool,
    issues: IssueLog,
) -> pl.DataFrame:
    """Check every value; return the frame with enums case-normalised and bad unused values
    dropped. All masks are evaluated in one parallel pass; only rules that fire cost more."""
    rules: list[_Rule] = []
    fixes: dict[str, tuple[pl.Expr | None, pl.Expr | None, dict[str, str]]] = {}
    for column in frame.columns:
        if column == LINE:
            continue
        rule = spec.field(column)
        required = rule.required or (delta and column in ("status", "dateLastModified"))
        value = pl.col(column)
        if required:
            rules.append(_Rule(
                Code.VALUE_REQUIRED, None, column, value.is_null(),
                "{} line {}: " + column + " is blank but required; fill it in in the SIS and "
                "export again.", include_value=False,
            ))
        invalid, explain, caseless, lowered = _invalid(rule, value, oneroster_12)
        gate = None
        if caseless is not None and invalid is not None:
            gate = _suspect(rule, value, oneroster_12)
            rules.append(_Rule(
                Code.VALUE_CASE, None, column, caseless,
                "{} line {}: " + column + " '{}' was read as its exact spelling (allowed: "
                + ", ".join(lowered.values()) + "); the SIS should export it exactly.",
                gate=gate,
            ))
        if invalid is None:
            continue
        invalid = invalid.fill_null(False) & value.is_not_null()
        action = ("correct it in the SIS and export again." if rule.used
                  else "the value was ignored.")
        rules.append(_Rule(
            Code.VALUE_INVALID, Severity.ERROR if rule.used else Severity.WARNING, column,
            invalid, "{} line {}: " + column + " '{}' " + explain + "; " + action, gate=gate,
        ))
        fixes[column] = (caseless, None if rule.used else invalid, lowered)

    fired = list(frame.select(
        [(r.gate if r.gate is not None else r.mask).fill_null(False).any().alias(str(i))
         for i, r in enumerate(rules)]
    ).row(0)) if rules else []
    gated = [i for i, r in enumerate(rules) if r.gate is not None and fired[i]]
    if gated:
        again = frame.select(
            [rules[i].mask.fill_null(False).any().alias(str(i)) for i in gated]).row(0)
        for i, hit in zip(gated, again, strict=True):
            fired[i] = hit
    for rule_, hit in zip(rules, fired, strict=True):
        if hit:
            _report(frame, rule_, file, issues)
    fired_columns = {r.column for r, hit in zip(rules, fired, strict=True) if hit}
    repairs = []
    for column, (caseless, drop, lowered) in fixes.items():
        if column not in fired_columns:
            continue
        value = pl.col(column)
        fixed = value
        if drop is not None:
            fixed = pl.when(drop).then(None).otherwise(fixed)
        if caseless is not None:
            fixed = pl.when(caseless).then(
                value.str.to_lowercase().replace_strict(lowered, default=None)
            ).otherwise(fixed)
        repairs.append(fixed.alias(column))
    if repairs:
        frame = frame.with_columns(repairs)
    if spec.unique and spec.unique in frame.columns:
        check_unique(frame, spec.unique, file, issues)
    return frame


def _suspect(rule: Field, value: pl.Expr, oneroster_12: bool) -> pl.Expr:
    """An enum or boolean value that is not exactly an allowed one."""
    allowed = rule.values if rule.kind is Kind.ENUM else ("true", "false")
    ok = value.is_in(allowed)
    if oneroster_12 and rule.kind is Kind.ENUM:
        ok = ok | value.str.starts_with("ext:")
    return ~ok & value.is_not_null()


def _invalid(
    rule: Field, value: pl.Expr, oneroster_12: bool
) -> tuple[pl.Expr | None, str, pl.Expr | None, dict[str, str]]:
    """(invalid mask, explanation, case-only mask, lower → canonical) for one field."""
    if rule.kind is Kind.ID:
        return (value.str.contains(NOT_ID_CHAR) | (value.str.len_bytes() == 0),
                "contains characters an ID may not have (use letters, digits and - _ . @ /)",
                None, {})
    if rule.kind is Kind.ID_LIST:
        bad = ~value.str.split(",").list.eval(
            pl.element().str.strip_chars().str.contains(ID_PATTERN)).list.all()
        return bad, "is not a comma-separated list of IDs (letters, digits and - _ . @ /)", None, {}
    if rule.kind in (Kind.ENUM, Kind.BOOL):
        allowed = rule.values if rule.kind is Kind.ENUM else ("true", "false")
        lowered = {a.lower(): a for a in allowed}
        ok = value.is_in(allowed)
        if oneroster_12 and rule.kind is Kind.ENUM:
            ok = ok | value.str.starts_with("ext:")
        caseless = value.str.to_lowercase().is_in(list(lowered)) & ~ok
        return ~ok & ~caseless, "is not one of " + ", ".join(allowed), caseless, lowered
    if rule.kind is Kind.DATE:
        bad = ~value.str.contains(DATE_PATTERN) | value.str.to_date(
            "%Y-%m-%d", strict=False).is_null()
        return bad, "is not a date in the form YYYY-MM-DD", None, {}
    if rule.kind is Kind.DATETIME:
        return (~value.str.contains(DATETIME_PATTERN),
                "is not a timestamp in the form YYYY-MM-DDTHH:MM:SS.sssZ", None, {})
    if rule.kind is Kind.PASSWORD_POLICY:
        return ~value.is_in(PASSWORD_POLICIES), "must be 4, 6, 8 or blank", None, {}
    return None, "", None, {}


def check_unique(frame: pl.DataFrame, column: str, file: str, issues: IssueLog) -> None:
    value = pl.col(column)
    # Distinct 64-bit hashes prove distinct values (4x cheaper than n_unique on strings);
    # equal hashes may be a collision, so only then are the values themselves compared.
    distinct, present = frame.select(
        value.drop_nulls().hash().n_unique().alias("d"), value.count().alias("n")).row(0)
    if distinct == present:
        return
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


def _report(frame: pl.DataFrame, rule: _Rule, file: str, issues: IssueLog) -> None:
    bad = frame.filter(rule.mask.fill_null(False))
    args = [pl.lit(file), pl.col(LINE)]
    if rule.include_value:
        args.append(pl.col(rule.column))
    issues.extend(
        bad.select(
            pl.lit(file).alias("file"),
            pl.col(LINE).alias("line"),
            pl.lit(rule.column).alias("column"),
            pl.col(rule.column).alias("value"),
            pl.format(rule.template, *args).alias("message"),
        ),
        rule.code,
        rule.severity,
    )
