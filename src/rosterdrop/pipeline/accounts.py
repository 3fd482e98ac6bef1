"""Managed account names for new people (pipeline.md "Managed account names").

``account_format`` (``"{first_name}.{last_name}"``) is rendered per person,
folded to ASCII (José → jose, Nguyễn → nguyen, ß → ss), lower-cased, reduced
to ``a-z 0-9 . _ -`` with no leading, trailing or doubled dots and at most
:data:`MAX_LOCAL` characters, then ``@account_domain`` is appended. A name
already taken (by any account of the tenant still in the store, or by an
earlier new person of the same run, in model order) gets ``.1``, ``.2``, …
before the ``@``. Names are made once, at creation, and never change.

Each role may have its own format and domain (``accounts_by_role``, a
:class:`NameRule` per role); the names of both roles are then resolved
together, so a name is unique across the tenant whatever the role.

Everything is column-wise except two small parts: the Unicode folding runs
once per *distinct non-ASCII* value (stdlib ``unicodedata``), and the suffix
search runs row by row only when numbering each name's occurrences in order
would hit a name already in use.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat

import polars as pl

from rosterdrop.codes import Code
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.messages import joined, where

MAX_LOCAL = 64
"""Longest part before the ``@``."""

LOCAL_PATTERN = re.compile(r"^(?!\.)(?!.*\.\.)(?!.*\.$)[a-z0-9._-]{1,64}$")
"""What every managed name's local part matches."""

FORMAT_FIELDS = (
    "first_name",
    "last_name",
    "middle_name",
    "first_initial",
    "person_number",
    "sis_username",
    "person_id",
)

# Letters that NFKD leaves whole (they are not "letter + accent").
_EXTRA_FOLDS = {
    "ß": "ss", "ẞ": "ss", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe",
    "ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "đ": "d", "Đ": "d", "ð": "d", "Ð": "d",
    "þ": "th", "Þ": "th", "ı": "i", "ħ": "h", "Ħ": "h", "ŋ": "n", "Ŋ": "n",
    "ŧ": "t", "Ŧ": "t", "ĸ": "k", "ƒ": "f", "ə": "e", "Ə": "e",
}
_ASCII_ONLY = r"^[\x00-\x7f]*$"


def fold_ascii(text: str) -> str:
    """``text`` with accents removed and the letters above spelled in ASCII.

    Other non-ASCII characters are kept; :func:`clean_local` drops them.
    """
    out = []
    for char in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(char):
            continue
        out.append(_EXTRA_FOLDS.get(char, char))
    return "".join(out)


def fold_series(values: pl.Series) -> pl.Series:
    """:func:`fold_ascii` over a column, calling Python once per distinct non-ASCII value."""
    values = values.cast(pl.String)
    foreign = values.filter(~values.str.contains(_ASCII_ONLY)).unique().drop_nulls()
    if foreign.len() == 0:
        return values
    return values.replace({value: fold_ascii(value) for value in foreign.to_list()})


def clean_local(expr: pl.Expr) -> pl.Expr:
    """Lower-case ASCII ``a-z 0-9 . _ -`` only, single dots, none at either end, ≤ 64."""
    return (
        expr.str.to_lowercase()
        .str.replace_all(r"[^a-z0-9._-]+", "")
        .str.replace_all(r"\.{2,}", ".")
        .str.strip_chars(".")
        .str.slice(0, MAX_LOCAL)
        .str.strip_chars_end(".")
    )


def format_fields(account_format: str) -> list[str]:
    """The person fields ``account_format`` uses, in order of first use."""
    used: list[str] = []
    for _, name, _, _ in string.Formatter().parse(account_format):
        if name is not None:
            needed = "first_name" if name == "first_initial" else name
            if needed not in used:
                used.append(needed)
    return used


def render_local(people: pl.DataFrame, account_format: str) -> pl.Series:
    """The cleaned local part per person, ``""`` where nothing usable remains.

    ``people`` has the model's person columns; blank fields render as ``""``
    (callers report them first, see :func:`assign_accounts`).
    """
    folded = {
        name: fold_series(people[name]).fill_null("")
        for name in format_fields(account_format)
    }
    frame = pl.DataFrame(folded) if folded else pl.DataFrame({"_": [0] * people.height})
    pieces: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(account_format):
        if literal:
            pieces.append(pl.lit(literal))
        if name == "first_initial":
            pieces.append(clean_local(pl.col("first_name")).str.slice(0, 1))
        elif name is not None:
            pieces.append(pl.col(name))
    if not pieces:
        return pl.Series("local", [""] * people.height, pl.String)
    return frame.select(clean_local(pl.concat_str(pieces)).alias("local"))["local"]


@dataclass(frozen=True)
class NameRule:
    """How the names of one role's new people are made."""

    account_format: str
    domain: str
    setting: str = "account_format"
    """The settings key an ``ACCOUNT_NAME_FAILED`` message tells the operator to change."""


def _suffixed(local: str, number: int) -> str:
    suffix = f".{number}"
    return local[: MAX_LOCAL - len(suffix)].rstrip(".") + suffix


def resolve_collisions(locals_: pl.Series, domain: str | pl.Series,
                       taken: pl.Series) -> pl.Series:
    """``local@domain`` per row, with ``.1``, ``.2``, … where the name is taken.

    ``domain`` is one for all rows, or one per row (people of several roles).
    A name (the whole ``local@domain``) is taken when it is in ``taken`` or
    given to an earlier row; rows are served in order. Names that clash with nothing are kept as they are;
    the clashing rows go through :func:`_serve_in_order`, unless numbering
    each name's occurrences in order gives the same answer (the common case of
    a first sync: many people share a name, none of the numbered names exists).
    """
    if isinstance(domain, str):
        domains = pl.repeat(domain.strip().lower(), locals_.len(), dtype=pl.String, eager=True)
        keys = ["local"]  # one domain: the local part alone tells the names apart
    else:
        domains = domain.str.strip_chars().str.to_lowercase()
        keys = ["local", "domain"]
    frame = pl.DataFrame({"local": locals_, "domain": domains})
    full = frame.select(account=pl.col("local") + "@" + pl.col("domain"))["account"]
    clash = full.is_duplicated() | full.is_in(taken.implode())
    if not clash.any():
        return full
    numbered = _numbered_by_occurrence(frame.filter(clash), keys)
    reserved = pl.concat([taken, full.filter(~clash)])
    if not (numbered.is_duplicated().any() or numbered.is_in(reserved.implode()).any()):
        # Row k of a name got number k; each was free, so serving in order picks the same.
        return full.scatter(clash.arg_true(), numbered)
    return _serve_in_order(frame, full, clash, reserved,
                           domains[0] if keys == ["local"] else None)


def _numbered_by_occurrence(frame: pl.DataFrame, keys: list[str]) -> pl.Series:
    """The k-th (from 0) row of each local name (at its domain, ``keys``) gets that name
    numbered k (0: as it is)."""
    number = pl.int_range(pl.len()).over(keys)
    suffix = pl.lit(".") + number.cast(pl.String)
    cut = pl.col("local").str.slice(0, pl.lit(MAX_LOCAL) - suffix.str.len_chars())
    name = pl.when(number == 0).then(pl.col("local")).otherwise(
        cut.str.strip_chars_end(".") + suffix
    )
    return frame.select((name + "@" + pl.col("domain")).alias("account"))["account"]


def _serve_in_order(frame: pl.DataFrame, full: pl.Series, clash: pl.Series,
                    reserved: pl.Series, domain: str | None) -> pl.Series:
    """Each clashing row, in order, takes the lowest free number of its name.

    ``domain``: the one domain of every row, or None (``frame``'s per row).
    """
    used = set(reserved.to_list())
    next_number: dict[str, int] = {}  # by the unnumbered name, local@domain
    result = full.to_list()
    indices = clash.arg_true()
    rows = frame[indices]
    domains = (repeat(domain, indices.len()) if domain is not None
               else iter(rows["domain"].to_list()))
    for index, local, row_domain in zip(indices.to_list(), rows["local"].to_list(), domains,
                                        strict=True):
        plain = result[index]
        number = next_number.get(plain, 0)
        while True:
            name = plain if number == 0 else f"{_suffixed(local, number)}@{row_domain}"
            if name not in used:
                break
            number += 1
        next_number[plain] = number + 1
        used.add(name)
        result[index] = name
    return pl.Series("account", result, pl.String)


def assign_accounts(
    people: pl.DataFrame,
    account_format: str,
    domain: str,
    taken: pl.Series,
    issues: IssueLog,
    *,
    by_role: Mapping[str, NameRule] | None = None,
) -> pl.Series:
    """Account names for new ``people`` (model rows, in model order).

    ``account_format`` and ``domain`` apply to every person whose ``role`` has
    no rule in ``by_role``. Each rule renders its role's people on its own;
    the collisions are then resolved once over all of them in model order, so
    no two people get the same name whatever their roles.

    A person whose format field is blank, or whose name has no usable
    character left, gets null and an ``ACCOUNT_NAME_FAILED`` error naming
    the person and the field(s).
    """
    default = NameRule(account_format, domain)
    own = {role: rule for role, rule in (by_role or {}).items() if rule != default}
    if not own:
        local, failed = _render_checked(people, default, issues)
        names = resolve_collisions(local.filter(~failed), domain, taken)
    else:
        height = people.height
        local = pl.repeat("", height, dtype=pl.String, eager=True).rename("local")
        failed = pl.repeat(False, height, eager=True)
        domains = pl.repeat(domain, height, dtype=pl.String, eager=True).rename("domain")
        has_own = people["role"].is_in(list(own)).fill_null(False)
        groups = [(default, ~has_own)]
        for rule in dict.fromkeys(own.values()):
            roles = [role for role, r in own.items() if r == rule]
            groups.append((rule, people["role"].is_in(roles).fill_null(False)))
        for rule, mask in groups:
            rows = mask.arg_true()
            if rows.len() == 0:
                continue
            part_local, part_failed = _render_checked(people.filter(mask), rule, issues)
            local = local.scatter(rows, part_local)
            failed = failed.scatter(rows, part_failed)
            if rule.domain != domain:
                domains = domains.scatter(rows, rule.domain)
        names = resolve_collisions(local.filter(~failed), domains.filter(~failed), taken)
    result = pl.Series("account", [None] * people.height, pl.String)
    return result.scatter(failed.not_().arg_true(), names)


def _render_checked(people: pl.DataFrame, rule: NameRule,
                    issues: IssueLog) -> tuple[pl.Series, pl.Series]:
    """The local part per person under ``rule``, and which people failed (reported)."""
    account_format, setting = rule.account_format, rule.setting
    fields = format_fields(account_format)
    is_blank = [
        pl.col(name).is_null() | (pl.col(name).str.strip_chars() == "") for name in fields
    ]
    missing = (
        people.select(
            pl.when(pl.any_horizontal(is_blank))
            .then(
                pl.concat_str(
                    [pl.when(b).then(pl.lit(n)) for b, n in zip(is_blank, fields, strict=True)],
                    separator=", ",
                    ignore_nulls=True,
                )
            )
            .alias("m")
        )["m"]
        if fields
        else pl.Series("m", [None] * people.height, pl.String)
    )
    local = render_local(people, account_format)
    failed = missing.is_not_null() | (local == "")
    if failed.any():
        bad = people.with_columns(missing=missing).filter(failed)
        used = joined(fields) or "no field"
        message = (
            pl.when(pl.col("missing").is_not_null())
            .then(
                pl.lit("person '")
                + pl.col("person_id")
                + pl.lit("' has no ")
                + pl.col("missing").str.replace_all(", ", " or ")
                + pl.lit(
                    f", which the managed account name format '{account_format}' needs; "
                    f"fill in the value in the SIS, or change {setting}."
                )
            )
            .otherwise(
                pl.lit("person '")
                + pl.col("person_id")
                + pl.lit(
                    f"' would get an empty managed account name: the format '{account_format}' "
                    f"keeps no letter or digit of their {used} (only a-z, 0-9, '.', '_' and "
                    f"'-' remain once accents are removed); correct the name in the SIS, "
                    f"or change {setting}."
                )
            )
        )
        issues.extend(
            bad.select(
                file=pl.col("_file"),
                line=pl.col("_line"),
                column=pl.col("missing").str.split(", ").list.first(),
                value=pl.col("person_id"),
                message=pl.concat_str([where(), message]),
            ),
            Code.ACCOUNT_NAME_FAILED,
        )
    return local, failed
