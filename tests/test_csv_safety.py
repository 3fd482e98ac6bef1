"""The CSVs a run writes hold no cell a spreadsheet would evaluate (issue 17, part 6b).

The oracle here is written independently of ``runs/csv_safety.py``: a cell is
evaluated when a tab, CR or LF comes before its first non-blank character, or
when that character folds (NFKC) to one of ``= + - @ | %``.
"""

from __future__ import annotations

import csv
import unicodedata
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_run_lifecycle import Sent, make_settings
from test_sync_runner import Clock, district, upload

from rosterdrop.runs import artifacts
from rosterdrop.runs.csv_safety import neutralise, neutralise_text
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import open_store

STARTERS = "=+-@|%"
ZERO_WIDTH = "\u200b\u2060\ufeff"


def evaluated(cell: str) -> bool:
    """A spreadsheet would run ``cell`` as a formula or command."""
    rest = cell
    while rest and (rest[0].isspace() or rest[0] in ZERO_WIDTH):
        rest = rest[1:]
    lead = cell[: len(cell) - len(rest)]
    if any(c in "\t\r\n" for c in lead):
        return True
    return bool(rest) and unicodedata.normalize("NFKC", rest[0]) in STARTERS


def read_back(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


NAMED = {
    "=1+1": "'=1+1",
    "\uff1d1+1": "'\uff1d1+1",  # fullwidth equals
    "\uff0bSUM(A1)": "'\uff0bSUM(A1)",
    "\uff0d1": "'\uff0d1",
    "\uff20SUM(A1)": "'\uff20SUM(A1)",
    "\uff5ccmd": "'\uff5ccmd",
    "\uff05x": "'\uff05x",
    "|cmd /c calc": "'|cmd /c calc",
    "%0A": "'%0A",
    "\n=1+1": "'\n=1+1",
    "\r=1+1": "'\r=1+1",
    "\tx": "'\tx",
    " =1+1": "' =1+1",
    "\u3000\uff1d1": "'\u3000\uff1d1",  # ideographic space, then fullwidth equals
    "\ufeff@x": "'\ufeff@x",
    "-5": "'-5",
    "+1": "'+1",
    "@SUM(A1)": "'@SUM(A1)",
    "a=b": "a=b",
    "O'Neil": "O'Neil",
    " plain": " plain",
    "": "",
}


def test_the_named_examples_are_prefixed_and_nothing_else(tmp_path: Path) -> None:
    """Each example from the issue, written and read back with csv: dangerous cells
    carry one leading quote; harmless ones (``a=b``, ``O'Neil``) come back as they were."""
    values = list(NAMED)
    path = tmp_path / "issues.csv"
    artifacts.write_csv(pl.DataFrame({"value": values, "line": range(len(values))}), path)
    rows = read_back(path)
    assert rows[0] == ["value", "line"]
    assert [row[0] for row in rows[1:]] == list(NAMED.values())
    assert [row[1] for row in rows[1:]] == [str(n) for n in range(len(values))]
    assert [neutralise_text(v) for v in values] == list(NAMED.values())


def test_numbers_stay_numbers_and_text_columns_of_every_kind_are_checked() -> None:
    """A negative number in a number column is a number (it cannot start a formula);
    categorical text, float columns and column names are checked like text."""
    frame = pl.DataFrame({
        "line": [-5, 7],
        "kind": pl.Series(["=cmd", "ok"], dtype=pl.Categorical),
        "share": [-1.5, 2.0],
        "=name": ["x", None],
    })
    safe = neutralise(frame)
    assert safe.columns == ["line", "kind", "share", "'=name"]
    assert safe["line"].to_list() == [-5, 7]
    assert safe["kind"].to_list() == ["'=cmd", "ok"]
    assert safe["share"].to_list() == ["'-1.5", "2.0"]
    assert safe["'=name"].to_list() == ["x", None]


_BLANK = st.sampled_from(" \t\r\n\x0b\x0c\x1f\x85\xa0\u2003\u3000\u200b\ufeff")
_STARTER = st.sampled_from(
    "=+-@|%\uff1d\uff0b\uff0d\uff20\uff5c\uff05\ufe66\ufe62\u207a\u208c\ufb29\t\r\nA'0 ")
_RISKY = st.builds(lambda blanks, first, rest: "".join(blanks) + first + rest,
                   st.lists(_BLANK, max_size=3), _STARTER, st.text(max_size=8))
_CELL = st.one_of(st.none(), st.text(max_size=12), _RISKY)


@settings(max_examples=300, deadline=None)
@given(columns=st.lists(st.lists(_CELL, min_size=3, max_size=3), min_size=1, max_size=4))
def test_no_written_cell_is_evaluated(columns: list[list[str | None]], tmp_path_factory:
                                      pytest.TempPathFactory) -> None:
    """Whatever text goes in, every cell read back with csv is harmless, and is the value
    itself or the value behind one added quote (null reads back empty)."""
    frame = pl.DataFrame({f"c{i}": pl.Series(col, dtype=pl.String)
                          for i, col in enumerate(columns)})
    path = tmp_path_factory.mktemp("csv") / "preview.csv"
    artifacts.write_csv(frame, path)
    rows = read_back(path)
    assert rows[0] == frame.columns
    assert len(rows) == 1 + frame.height
    for r, row in enumerate(rows[1:]):
        for c, cell in enumerate(row):
            assert not evaluated(cell), (cell, columns[c][r])
            original = columns[c][r]
            if original is None:
                assert cell == ""
            elif evaluated(original):
                assert cell == "'" + original
            else:
                assert cell == original


def test_a_run_with_formula_names_writes_only_harmless_csvs(tmp_path: Path,
                                                            backend_url: str) -> None:
    """A dry run of students named ``＝1+1``, ``|cmd /c calc`` and a name starting with a
    line break: preview.csv, issues.csv and patch-summary.csv hold them quoted."""
    settings_ = make_settings(tmp_path, backend_url)
    settings_.state_dir.mkdir(parents=True, exist_ok=True)
    files = district(3)
    students = str(files["students.csv"])
    students = students.replace("First1", "\uff1d1+1").replace("First2", "|cmd /c calc")
    students = students.replace(",Last3,", ',"\n=HYPERLINK(1)",')
    files["students.csv"] = students
    files["rosters.csv"] = str(files["rosters.csv"]) + "R9,K404,P1\n"  # patch-summary row
    with open_store(settings_.database_url) as store:
        runner = Runner(settings_, store, clock=Clock(), mailer=Sent())
        run = runner.sync("t", upload(tmp_path, files), source="cli", dry_run=True)
    assert run.artifact_dir is not None
    folder = Path(run.artifact_dir)
    written = sorted(p.name for p in folder.glob("*.csv"))
    assert {"preview.csv", "issues.csv", "patch-summary.csv"} <= set(written)
    for name in written:
        for row in read_back(folder / name):
            assert not any(evaluated(cell) for cell in row), (name, row)
    preview = pl.read_csv(folder / "preview.csv", infer_schema=False)
    assert {"'\uff1d1+1", "'|cmd /c calc"} <= set(preview["first_name"].to_list())
    assert "'\n=HYPERLINK(1)" in preview["last_name"].to_list()
