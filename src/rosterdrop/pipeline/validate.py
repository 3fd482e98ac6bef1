"""Header and value checks of one CSV file against its ``FileSpec``.

Every check is a vectorised polars expression over the whole column; the rows
it flags become issues with their physical line, and messages are built with
``pl.format`` so a million bad rows never become a million Python strings
before they are needed.
"""

from __future__ import annotations

import re
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


@dataclass(frozen=True)
class Header:
    """What the header row of one file gives the value checks."""

    mapping: dict[str, str]
    """Spec column → frame column: exact names, case slips and near misses."""
    missing: tuple[str, ...]
    """Base columns of the layout that the header lacks (not even as a near miss)."""
    near: dict[str, str]
    """Spec column → the misspelt header name its values were read from."""


def check_header(
    table: Table, spec: FileSpec, *, unknown_is_error: bool, issues: IssueLog,
    strict: bool = False,
) -> Header:
    """Compare the header with the spec, one issue per problem.

    Case slips and near misses (``grade`` for ``grades``) are reported but still
    mapped, so the values behind them are checked too and the admin sees every
    problem in one round; the error they raise keeps the upload from being applied.
    ``strict``: a missing column the sync does not read is an error, not a warning.
    """
    file = table.file
    names = [name.strip() for name in table.header]
    frame_columns = [c for c in table.frame.columns if c != LINE]
    blank = [i for i, name in enumerate(names) if not name]
    _check_blank(table, names, blank, frame_columns, spec, unknown_is_error, issues)
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            issues.add(
                Code.HEADER_DUPLICATE_COLUMN,
                f"{file} line 1: the column '{name}' appears more than once; keep one.",
                file=file, line=1, column=name, value=name,
            )
        seen.add(name)

    mapping: dict[str, str] = {}
    exact = {name: frame_columns[i] for i, name in reversed(list(enumerate(names))) if name}
    by_lower: dict[str, int] = {}
    for i, name in enumerate(names):
        if name:
            by_lower.setdefault(name.lower(), i)
    absent: list[str] = []
    taken: set[int] = set()
    for column in (*spec.columns, *spec.optional_columns):
        if column in exact:
            mapping[column] = exact[column]
        elif column.lower() in by_lower:
            i = by_lower[column.lower()]
            mapping[column] = frame_columns[i]
            taken.add(i)
            issues.add(
                Code.HEADER_COLUMN_CASE,
                f"{file} line 1: the column '{names[i]}' must be spelled exactly '{column}' "
                f"(column names are case sensitive); rename it in the export.",
                file=file, line=1, column=names[i], value=names[i],
            )
        else:
            absent.append(column)
    expected_lower = {c.lower() for c in (*spec.columns, *spec.optional_columns)}
    unknown = [
        i for i, name in enumerate(names)
        if name and i not in taken and name not in mapping and name.lower() not in expected_lower
        and not (spec.extra_column is not None and spec.extra_column.fullmatch(name))
    ]
    for i, name in enumerate(names):
        if (name and spec.extra_column is not None and spec.extra_column.fullmatch(name)
                and name not in mapping):
            mapping[name] = frame_columns[i]

    near = _near_misses([names[i] for i in unknown], absent)
    near_by_index = {unknown[k]: column for k, column in near.items()}
    for i, column in near_by_index.items():
        mapping[column] = frame_columns[i]
        _near_issue(file, names[i], column, spec, unknown_is_error, strict, issues)
    for column in absent:
        if column in mapping or column not in spec.columns:
            continue
        if spec.read_by_sync(column) or unknown_is_error:
            issues.add(
                Code.HEADER_MISSING_COLUMN,
                f"{file} line 1: the required column '{column}' is missing from the header; "
                f"add it (it may be left blank where values are optional).",
                file=file, line=1, column=column,
            )
        elif strict:
            issues.add(
                Code.HEADER_MISSING_UNUSED,
                f"{file} line 1: the column '{column}' is missing from the header; the sync "
                f"does not read it, but strict_headers is on for this tenant, so add it (it "
                f"may be empty).",
                file=file, line=1, column=column, severity=Severity.ERROR,
            )
        else:
            issues.add(
                Code.HEADER_MISSING_UNUSED,
                f"{file} line 1: the column '{column}' is missing from the header; the sync "
                f"does not read it, so nothing is lost, but add it (it may be empty) so the "
                f"export matches the layout.",
                file=file, line=1, column=column, severity=Severity.WARNING,
            )

    for i in unknown:
        if i in near_by_index:
            continue
        name = names[i]
        severity = Severity.ERROR if unknown_is_error else Severity.WARNING
        consequence = "remove or rename it" if unknown_is_error else "it was ignored"
        issues.add(
            Code.HEADER_UNKNOWN_COLUMN,
            f"{file} line 1: the column '{name}' is not part of the {spec.name} layout; "
            f"{consequence}.",
            file=file, line=1, column=name, value=name, severity=severity,
        )
    missing = tuple(c for c in spec.columns if c not in mapping)
    return Header(mapping, missing, {c: names[i] for i, c in near_by_index.items()})


def _check_blank(table: Table, names: list[str], blank: list[int], frame_columns: list[str],
                 spec: FileSpec, unknown_is_error: bool, issues: IssueLog) -> None:
    """Columns without a name: ignored; a warning for them all when they hold nothing
    (a spreadsheet's used range), an unknown column each when they hold values."""
    if not blank:
        return
    file = table.file
    columns = [frame_columns[i] for i in blank]
    holds = table.frame.select(
        [pl.col(c).is_not_null().any().alias(str(k)) for k, c in enumerate(columns)]
    ).row(0)
    empty = [i for i, full in zip(blank, holds, strict=True) if not full]
    if empty:
        trailing = empty == list(range(len(names) - len(empty), len(names)))
        positions = _positions([i + 1 for i in empty])
        where = ("ends in" if trailing else "has")
        count = "a column" if len(empty) == 1 else f"{len(empty)} columns"
        issues.add(
            Code.HEADER_BLANK_COLUMNS,
            f"{file} line 1: the header {where} {count} with no name and no values "
            f"({positions}; a spreadsheet's empty cells); ignored. Delete the empty columns "
            f"in the spreadsheet before exporting to be rid of this warning.",
            file=file, line=1, value=positions,
        )
    for i, full in zip(blank, holds, strict=True):
        if not full:
            continue
        column = frame_columns[i]
        first = table.frame.filter(pl.col(column).is_not_null()).select(
            pl.col(LINE), pl.col(column)).row(0)
        shown = _clip(str(first[1]))
        consequence = ("name it as the layout does or remove it" if unknown_is_error
                       else "it was ignored; name it as the layout does or remove it")
        issues.add(
            Code.HEADER_UNKNOWN_COLUMN,
            f"{file} line 1: column {i + 1} has no name in the header but holds values "
            f"(line {first[0]}: '{shown}'), so it is not part of the {spec.name} layout; "
            f"{consequence}.",
            file=file, line=1, value=shown,
            severity=Severity.ERROR if unknown_is_error else Severity.WARNING,
        )


def _positions(numbers: list[int]) -> str:
    """``column 5``, ``columns 19-21``, ``columns 4, 9 and 12``."""
    if len(numbers) == 1:
        return f"column {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"columns {numbers[0]}-{numbers[-1]}"
    return "columns " + ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def _near_issue(file: str, name: str, column: str, spec: FileSpec, unknown_is_error: bool,
                strict: bool, issues: IssueLog) -> None:
    used = spec.read_by_sync(column) or unknown_is_error
    if used:
        message = (
            f"{file} line 1: the column '{name}' is not part of the {spec.name} layout and "
            f"'{column}' is missing; did you mean '{column}'? Rename the column in the export "
            f"(names must match exactly). Its values were checked as {column}, but nothing "
            f"is applied until the name is right."
        )
    else:
        rule = ("strict_headers is on for this tenant, so the name must be right" if strict
                else "nothing is lost, but rename it so the export matches the layout")
        message = (
            f"{file} line 1: the column '{name}' is not part of the {spec.name} layout and "
            f"'{column}' is missing; did you mean '{column}'? Its values were checked as "
            f"{column}; the sync does not read that column, so {rule}."
        )
    issues.add(
        Code.HEADER_NEAR_MISS, message, file=file, line=1, column=name, value=column,
        severity=Severity.ERROR if used or strict else Severity.WARNING,
    )


_SEPARATORS = re.compile(r"[\s_.\-]")
_ID_SUFFIXES = ("sourcedids", "sourcedid", "ids", "id")


def _normal(name: str) -> str:
    return _SEPARATORS.sub("", name.lower())


def _stem(normal: str) -> str:
    """``agentsourcedids``, ``agents``, ``agentid`` → ``agent``."""
    for suffix in _ID_SUFFIXES:
        if normal.endswith(suffix) and len(normal) > len(suffix):
            normal = normal.removesuffix(suffix)
            break
    return normal[:-1] if normal.endswith("s") and len(normal) > 3 else normal


def _distance(a: str, b: str, most: int) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from ``a`` to ``b``;
    anything above ``most`` is returned as ``most + 1``."""
    if abs(len(a) - len(b)) > most:
        return most + 1
    before: list[int] | None = None
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (ca != cb))
            if (before is not None and i > 1 and j > 1 and ca == b[j - 2]
                    and a[i - 2] == cb):
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > most:
            return most + 1
        before, row = row, current
    return min(row[-1], most + 1)


def near_score(name: str, column: str) -> int | None:
    """How close header name ``name`` is to layout column ``column`` (0 closest);
    None when it is no near miss. Case alone is HEADER_COLUMN_CASE, not this."""
    a, b = _normal(name), _normal(column)
    if not a or not b:
        return None
    if a == b:
        return 0  # separators differ: "Person ID" for person_id
    if _stem(a) == _stem(b) and len(_stem(b)) >= 3:
        return 1  # grade/grades, userId/userIds, agents/agentSourcedIds
    most = 0 if len(b) < 4 else 1 if len(b) < 8 else 2
    found = _distance(a, b, most)
    return 1 + found if found <= most else None


def _near_misses(unknown: list[str], absent: list[str]) -> dict[int, str]:
    """Unknown header name (by index) → the absent column it stands for; only pairs
    that are each other's single best match, so a guess is never a coin toss."""
    scores = {
        (k, column): score
        for k, name in enumerate(unknown) for column in absent
        if (score := near_score(name, column)) is not None
    }
    found: dict[int, str] = {}
    for (k, column), score in sorted(scores.items(), key=lambda item: item[1]):
        if k in found or column in found.values():
            continue
        rivals = [s for (k2, c2), s in scores.items()
                  if (k2 == k) != (c2 == column) and (k2 == k or c2 == column)
                  and k2 not in found and c2 not in found.values()]
        if score in rivals:
            continue  # two equally good readings: say nothing rather than guess
        found[k] = column
    return found


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


SHOWN = 60
"""Characters of a value an issue shows; a longer value is cut, so a 10 MB cell never
reaches a message, the JSON document or issues.csv."""


def _clip(value: str) -> str:
    return value if len(value) <= SHOWN else value[:SHOWN] + "…"


def shown(value: pl.Expr) -> pl.Expr:
    """``value`` as an issue shows it: at most ``SHOWN`` characters, then ``…``."""
    return (pl.when(value.str.len_chars() > SHOWN)
            .then(value.str.slice(0, SHOWN) + pl.lit("…")).otherwise(value))


def thousands(number: pl.Expr) -> pl.Expr:
    """A non-negative integer as text with thousands separators (``10,000,000``)."""
    text = number.cast(pl.String)
    out = text
    for digits in (3, 6, 9, 12):  # each wraps the last, so the longest is tried first
        width = pl.lit(digits)
        head = text.str.slice(0, text.str.len_chars() - width)
        groups = [text.str.slice(text.str.len_chars() - pl.lit(k), 3)
                  for k in range(digits, 0, -3)]
        out = pl.when(text.str.len_chars() > width).then(
            pl.concat_str([head, *[pl.lit(",") + g for g in groups]])).otherwise(out)
    return out


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
    args: tuple[pl.Expr, ...] = ()
    """Further values for the template, after the file, line and value."""


def check_values(
    frame: pl.DataFrame, spec: FileSpec, file: str, *, delta: bool, oneroster_12: bool,
    issues: IssueLog,
) -> pl.DataFrame:
    """Check every value; return the frame with enums case-normalised and bad unused values
    dropped. All masks are evaluated in one parallel pass; only rules that fire cost more."""
    rules: list[_Rule] = []
    fixes: dict[str, tuple[pl.Expr | None, pl.Expr | None, dict[str, str], pl.Expr]] = {}
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
        limit = rule.max_length()
        # The byte length bounds the character length from above and costs nothing
        # (string offsets), so characters are counted only in a column that may be over.
        too_long = value.str.len_chars() > limit
        rules.append(_Rule(
            Code.VALUE_TOO_LONG, Severity.ERROR if rule.used else Severity.WARNING, column,
            too_long,
            "{} line {}: " + column + " is {} characters long, more than the "
            + f"{limit:,}" + " rosterdrop accepts ('{}'); "
            + ("correct it in the SIS and export again." if rule.used
               else "the value was dropped."),
            include_value=False, gate=value.str.len_bytes() > limit,
            args=(thousands(value.str.len_chars()), shown(value)),
        ))
        invalid, explain, caseless, lowered = _invalid(rule, value, oneroster_12)
        gate = None
        if caseless is not None and invalid is not None:
            gate = _suspect(rule, value, oneroster_12)
            rules.append(_Rule(
                Code.VALUE_CASE, None, column, caseless,
                "{} line {}: " + column + " '{}' was read as '{}' (allowed: "
                + ", ".join(lowered.values()) + "); the SIS should export it exactly.",
                gate=gate,
                args=(value.str.to_lowercase().replace_strict(lowered, default=None),),
            ))
        if invalid is None:
            fixes[column] = (None, None, {}, too_long)
            continue
        invalid = invalid.fill_null(False) & value.is_not_null()
        action = ("correct it in the SIS and export again." if rule.used
                  else "the value was ignored.")
        rules.append(_Rule(
            Code.VALUE_INVALID, Severity.ERROR if rule.used else Severity.WARNING, column,
            invalid, "{} line {}: " + column + " '{}' " + explain + "; " + action, gate=gate,
        ))
        fixes[column] = (caseless, None if rule.used else invalid, lowered, too_long)

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
    fired_columns = {r.column for r, hit in zip(rules, fired, strict=True)
                     if hit and r.code is not Code.VALUE_REQUIRED}
    long_columns = {r.column for r, hit in zip(rules, fired, strict=True)
                    if hit and r.code is Code.VALUE_TOO_LONG}
    repairs = []
    for column, (caseless, drop, lowered, too_long) in fixes.items():
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
        if column in long_columns:
            # Dropped even where the sync reads it (the run fails then): the later
            # checks would only echo it, and the model never holds a 10 MB name.
            fixed = pl.when(too_long).then(None).otherwise(fixed)
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
    value = shown(pl.col(rule.column))
    args = [pl.lit(file), pl.col(LINE)]
    if rule.include_value:
        args.append(value)
    args.extend(rule.args)
    issues.extend(
        bad.select(
            pl.lit(file).alias("file"),
            pl.col(LINE).alias("line"),
            pl.lit(rule.column).alias("column"),
            value.alias("value"),
            pl.format(rule.template, *args).alias("message"),
        ),
        rule.code,
        rule.severity,
    )
