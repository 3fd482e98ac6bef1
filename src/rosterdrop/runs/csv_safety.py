"""Cells a spreadsheet would evaluate, made inert before a CSV is written.

Admins open rosterdrop's CSV reports (issues.csv, patch-summary.csv,
preview.csv, matches.csv) in Excel, LibreOffice or Google Sheets, and their
cells hold values from an upload, which anyone who can edit the SIS controls.
A spreadsheet runs a cell as a formula (or a DDE command) when it starts with
``= + - @``, and some also with ``|`` or ``%`` or a tab, CR or LF; also after
leading blanks, and in the fullwidth forms (``＝`` U+FF1D ...) that CJK input
methods type and Excel folds to ASCII (so every character NFKC folds to one of
them counts: small ``﹦``, superscript ``⁺`` ...). Such a cell gets a leading
``'`` (OWASP's advice): every spreadsheet shows it as the text it is,
and a reader who strips one leading ``'`` has the exact value back.

Only text is touched. A number column (``line``) is written as numbers, which
cannot start a formula. Text that looks like a negative number (``-5``) is
prefixed as well: these columns hold ids and values from the upload, and
``'-0005`` keeps what the upload said where ``-0005`` would turn into -5.
"""

from __future__ import annotations

import re

import polars as pl

# Spelled out, not \s: Python's and polars' (Rust's) \s differ at the edges, and the
# scalar and the column-wise check must agree. Blanks: what str.isspace() calls
# whitespace, and the zero-width characters. Starters: = + - @ | %, what NFKC folds to
# them, and tab, CR, LF (also when they come among the leading blanks).
_BLANKS = (r" \t\n\x0b\x0c\r\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f"
           r"\u205f\u3000\u200b\u2060\ufeff")
_STARTERS = (r"=+\-@|%\uff1d\uff0b\uff0d\uff20\uff5c\uff05\ufe66\ufe62\ufe63\ufe6b\ufe6a"
             r"\u207a\u207c\u208a\u208c\ufb29\t\r\n")
FORMULA_START = f"^[{_BLANKS}]*[{_STARTERS}]"
"""A cell matching this would be evaluated; the same pattern for polars and ``re``."""
_FORMULA = re.compile(FORMULA_START)
PREFIX = "'"

_UNTOUCHED = (pl.Boolean, pl.Date, pl.Datetime, pl.Time, pl.Duration, pl.Null)


def neutralise_text(value: str) -> str:
    """``value``, with a leading ``'`` when a spreadsheet would evaluate it."""
    return PREFIX + value if _FORMULA.match(value) else value


def neutralise(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` as it may be written to CSV: every text cell (and column name) a
    spreadsheet would evaluate gets a leading ``'``; nulls stay null.

    Text-like columns (categorical, enum) and anything else that is not a number,
    a boolean or a date are written as their text, so they are checked too.
    """
    columns = []
    for name, dtype in frame.schema.items():
        safe_name = neutralise_text(name)
        if dtype.is_integer() or isinstance(dtype, _UNTOUCHED):
            columns.append(pl.col(name).alias(safe_name))
            continue
        text = pl.col(name).cast(pl.String)
        columns.append(
            pl.when(text.str.contains(FORMULA_START))
            .then(pl.lit(PREFIX) + text)
            .otherwise(text)
            .alias(safe_name)
        )
    return frame.select(columns)
