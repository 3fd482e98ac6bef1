"""formats.table: CSV bytes → a frame of strings with physical line numbers."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.pipeline import read as table
from rosterdrop.pipeline.issues import Issue, IssueLog
from rosterdrop.pipeline.read import LINE, Table, read_table


def _read(raw: bytes, separators: tuple[str, ...] = (",",)) -> tuple[Table | None, list[Issue]]:
    issues = IssueLog()
    parsed = read_table(raw, "users.csv", issues, separators)
    return parsed, list(issues)


def _ok(raw: bytes, separators: tuple[str, ...] = (",",)) -> Table:
    parsed, issues = _read(raw, separators)
    assert parsed is not None
    assert issues == []
    return parsed


def _rows(parsed: Table) -> list[tuple[Any, ...]]:
    return parsed.frame.rows()


@contextmanager
def _tiny_chunks(size: int) -> Iterator[None]:
    """Scan in chunks of ``size`` bytes, so state carries across many chunk edges."""
    saved = table._CHUNK, table._SCAN_CHUNK
    table._CHUNK = table._SCAN_CHUNK = size
    try:
        yield
    finally:
        table._CHUNK, table._SCAN_CHUNK = saved


# --- shape of the result -------------------------------------------------------


def test_plain_file_gives_string_columns_and_lines() -> None:
    """Every header position is a String column; _line is Int64, header on line 1."""
    parsed = _ok(b"person_id,first_name\n1,Ann\n2,Bo\n")
    assert parsed.file == "users.csv"
    assert parsed.header == ["person_id", "first_name"]
    assert parsed.separator == ","
    assert parsed.frame.schema == pl.Schema(
        {"person_id": pl.String, "first_name": pl.String, LINE: pl.Int64}
    )
    assert _rows(parsed) == [("1", "Ann", 2), ("2", "Bo", 3)]


def test_empty_fields_are_null_and_values_are_not_trimmed() -> None:
    """Empty fields, quoted or not, are null; surrounding spaces stay."""
    parsed = _ok(b'a,b,c\n, x ,""\n"",,"  "\n')
    assert _rows(parsed) == [(None, " x ", None, 2), (None, None, "  ", 3)]


def test_header_only_gives_empty_frame_with_columns() -> None:
    """A header without records gives the columns and no rows."""
    parsed = _ok(b"a,b\n")
    assert parsed.header == ["a", "b"]
    assert parsed.frame.columns == ["a", "b", LINE]
    assert parsed.frame.height == 0


@pytest.mark.parametrize("raw", [b"", b"\n", b"\r\n\r\n", b"\n\n\n", b"\xef\xbb\xbf"])
def test_empty_or_blank_file_has_no_header(raw: bytes) -> None:
    """0 bytes or only line breaks: header [] and an empty frame (the caller says FILE_EMPTY)."""
    parsed = _ok(raw)
    assert parsed.header == []
    assert parsed.frame.height == 0
    assert LINE in parsed.frame.columns


def test_duplicate_header_names_are_made_unique() -> None:
    """Repeated names become name#2, name#3; a header named _line does not clash."""
    parsed = _ok(b"name,name,_line,name#2,name\n1,2,3,4,5\n")
    assert parsed.header == ["name", "name", "_line", "name#2", "name"]
    assert parsed.frame.columns == ["name", "name#3", "_line#2", "name#2", "name#4", LINE]
    assert _rows(parsed) == [("1", "2", "3", "4", "5", 2)]


def test_quoted_header_is_unquoted() -> None:
    """Header names may be quoted, with doubled quotes and separators inside."""
    parsed = _ok(b'"id","a,b","say ""hi"""\n1,2,3\n')
    assert parsed.header == ["id", "a,b", 'say "hi"']


# --- line breaks and quoting ----------------------------------------------------


def test_quoted_line_breaks_keep_lines_right() -> None:
    """A record with a line break inside quotes starts where it starts; later ones too."""
    raw = b'id,note\n1,"two\nlines"\n2,"three\r\nlines\nhere"\n3,x\n'
    parsed = _ok(raw)
    assert _rows(parsed) == [
        ("1", "two\nlines", 2),
        ("2", "three\r\nlines\nhere", 4),
        ("3", "x", 7),
    ]


def test_crlf_line_endings() -> None:
    """CRLF files read like LF files; the CR is not part of the last value."""
    parsed = _ok(b"a,b\r\n1,2\r\n3,\r\n")
    assert _rows(parsed) == [("1", "2", 2), ("3", None, 3)]


def test_cr_only_line_endings() -> None:
    """Old Mac/Excel files that break lines with CR alone read the same."""
    parsed = _ok(b'a,b\r1,"x\ry"\r3,4')
    assert _rows(parsed) == [("1", "x\ny", 2), ("3", "4", 4)]


def test_doubled_quotes_inside_quotes() -> None:
    """RFC 4180: "" inside a quoted field is one quote."""
    parsed = _ok(b'a,b\n"say ""hi""","x,y"\n')
    assert _rows(parsed) == [('say "hi"', "x,y", 2)]


def test_blank_lines_are_skipped() -> None:
    """Blank lines (empty or just CR) are not records, and do not shift lines."""
    parsed = _ok(b"\n\na,b\n1,2\n\n\r\n3,4\n\n")
    assert parsed.header == ["a", "b"]
    assert _rows(parsed) == [("1", "2", 4), ("3", "4", 7)]


def test_blank_lines_in_a_one_column_file() -> None:
    """With one column a blank line would look like a null record; it is skipped."""
    parsed = _ok(b"id\n1\n\n2\n")
    assert _rows(parsed) == [("1", 2), ("2", 4)]


def test_stray_quote_inside_unquoted_field_is_a_character() -> None:
    """A quote in the middle of an unquoted field is kept, as csv and Excel read it."""
    parsed = _ok(b'a,b\nO"Neil,2\n3,4\n')
    assert _rows(parsed) == [('O"Neil', "2", 2), ("3", "4", 3)]


def test_lone_cr_in_lf_file_breaks_the_line() -> None:
    """A lone CR in an LF file is a line break, as an editor shows it."""
    parsed = _ok(b"a,b\n1,2\r3,4\n5,6\n")
    assert _rows(parsed) == [("1", "2", 2), ("3", "4", 3), ("5", "6", 4)]


def test_clean_files_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed files never fall back to the record-by-record paths."""

    def refuse(*_args: object) -> None:
        raise AssertionError("fell back from the fast path")

    monkeypatch.setattr(table, "_read_medium", refuse)
    monkeypatch.setattr(table, "_read_slow", refuse)
    _ok(b"a,b\n1,2\n3,4\n")
    _ok(b'"a","b"\r\n"1","x,y"\r\n"3",""\r\n')
    _ok(b'a;b\n"1";"2"\n', separators=(",", ";"))
    _ok(b"id\n1\n2")


# --- separators -------------------------------------------------------------------


def test_semicolon_chosen_from_header() -> None:
    """With (",", ";") the separator that splits the header into more fields wins."""
    parsed = _ok(b"location_id;location_name\n1;Main, North\n", separators=(",", ";"))
    assert parsed.separator == ";"
    assert _rows(parsed) == [("1", "Main, North", 2)]


def test_separator_counted_outside_quotes_only() -> None:
    """Separators inside a quoted header name do not count."""
    parsed = _ok(b'"a;b;c",d,e\n1,2,3\n', separators=(";", ","))
    assert parsed.separator == ","
    assert parsed.header == ["a;b;c", "d", "e"]


def test_separator_tie_goes_to_first() -> None:
    """A single-column header has no separator at all: the first one listed is used."""
    assert _ok(b"id\n1\n", separators=(";", ",")).separator == ";"


def test_bad_separator_argument_is_a_bug() -> None:
    """Separators must be single characters other than quote and line breaks."""
    with pytest.raises(ValueError):
        read_table(b"a\n", "x.csv", IssueLog(), ('"',))
    with pytest.raises(ValueError):
        read_table(b"a\n", "x.csv", IssueLog(), ())


# --- ragged records ------------------------------------------------------------------


def test_ragged_records_are_reported_and_left_out() -> None:
    """Too few and too many fields: ROW_COLUMN_COUNT at the record's line; good rows stay."""
    parsed, issues = _read(b"a,b,c\n1,2,3\n4,5\n6,7,8,9\n10,11,12\n")
    assert parsed is not None
    assert _rows(parsed) == [("1", "2", "3", 2), ("10", "11", "12", 5)]
    assert [(i.code, i.severity, i.file, i.line) for i in issues] == [
        ("ROW_COLUMN_COUNT", "error", "users.csv", 3),
        ("ROW_COLUMN_COUNT", "error", "users.csv", 4),
    ]
    assert "users.csv line 3" in issues[0].message
    assert "expected 3 fields" in issues[0].message and "found 2" in issues[0].message
    assert "found 4" in issues[1].message
    assert "unbalanced quote" in issues[0].message


def test_ragged_record_after_quoted_line_break_has_its_own_line() -> None:
    """Lines stay physical when a bad record follows a multi-line one."""
    parsed, issues = _read(b'a,b\n"x\ny",1\n2\n3,4\n')
    assert parsed is not None
    assert _rows(parsed) == [("x\ny", "1", 2), ("3", "4", 5)]
    assert [(i.code, i.line) for i in issues] == [("ROW_COLUMN_COUNT", 4)]


def test_unclosed_quote_reported_where_it_starts() -> None:
    """A quote never closed swallows the rest of the file; reported at its start line."""
    parsed, issues = _read(b'a,b\n1,2\n3,"oops\n5,6\n7,8\n')
    assert parsed is not None
    assert _rows(parsed) == [("1", "2", 2)]
    assert [(i.code, i.severity, i.file, i.line) for i in issues] == [
        ("ROW_COLUMN_COUNT", "error", "users.csv", 3)
    ]
    assert "never closed" in issues[0].message
    assert "expected 2 fields" in issues[0].message


def test_quote_followed_by_text_is_read_as_csv_does() -> None:
    """"ab"c is not RFC 4180; it is read as the csv module reads it (abc)."""
    parsed = _ok(b'a,b\n"ab"c,2\n3,4\n')
    assert _rows(parsed) == [("abc", "2", 2), ("3", "4", 3)]


def test_ragged_record_with_stray_quotes_takes_the_slow_path() -> None:
    """Misquoted and ragged: the csv path still reports the right line."""
    parsed, issues = _read(b'a,b\nO"Neil,2,3\nx,y\n')
    assert parsed is not None
    assert _rows(parsed) == [("x", "y", 3)]
    assert [(i.code, i.line) for i in issues] == [("ROW_COLUMN_COUNT", 2)]


def test_unclosed_quote_on_the_slow_path() -> None:
    """A stray quote sends the file to csv; an unclosed quote there is still found."""
    parsed, issues = _read(b'a,b\nO"Neil,2\n3,"4\n5,6\n')
    assert parsed is not None
    assert _rows(parsed) == [('O"Neil', "2", 2)]
    assert [(i.code, i.line) for i in issues] == [("ROW_COLUMN_COUNT", 3)]
    assert "never closed" in issues[0].message


# --- encodings ------------------------------------------------------------------------


def test_utf8_bom_removed_silently() -> None:
    """A UTF-8 BOM is not part of the first header name and raises no issue."""
    parsed = _ok(b"\xef\xbb\xbfperson_id,name\n1,Zo\xc3\xab\n")
    assert parsed.header == ["person_id", "name"]
    assert _rows(parsed) == [("1", "Zoë", 2)]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom_converted_with_warning(encoding: str) -> None:
    """UTF-16 with a BOM is converted, with one ENCODING_CONVERTED warning naming the file."""
    bom = b"\xff\xfe" if encoding.endswith("le") else b"\xfe\xff"
    raw = bom + "id,name\r\n1,José\r\n2,李\r\n".encode(encoding)
    parsed, issues = _read(raw)
    assert parsed is not None
    assert parsed.header == ["id", "name"]
    assert _rows(parsed) == [("1", "José", 2), ("2", "李", 3)]
    assert [(i.code, i.severity, i.file) for i in issues] == [
        ("ENCODING_CONVERTED", "warning", "users.csv")
    ]
    assert "users.csv" in issues[0].message and "UTF-16" in issues[0].message


def test_windows_1252_converted_with_warning() -> None:
    """Bytes that are not UTF-8 but are Windows-1252 are converted (José), with a warning."""
    parsed, issues = _read(b"id,name\n1,Ann\n2,Jos\xe9\n3,\x93q\x94\n")
    assert parsed is not None
    assert _rows(parsed) == [("1", "Ann", 2), ("2", "José", 3), ("3", "\u201cq\u201d", 4)]
    assert [(i.code, i.severity, i.file, i.line) for i in issues] == [
        ("ENCODING_CONVERTED", "warning", "users.csv", 3)
    ]
    assert "users.csv" in issues[0].message and "Windows-1252" in issues[0].message


def test_invalid_bytes_are_encoding_invalid() -> None:
    """Neither UTF-8 nor Windows-1252: ENCODING_INVALID at the first bad byte's line."""
    parsed, issues = _read(b'id,name\n1,"a\nb"\n2,\xe9\x81\n')
    assert parsed is None
    assert [(i.code, i.severity, i.file, i.line) for i in issues] == [
        ("ENCODING_INVALID", "error", "users.csv", 4)
    ]
    assert "users.csv line 4" in issues[0].message
    assert "0xE9" in issues[0].message or "0x81" in issues[0].message


def test_nul_bytes_are_encoding_invalid() -> None:
    """NUL is not text (a spreadsheet saved as .csv): ENCODING_INVALID with its line."""
    parsed, issues = _read(b"id\r\n1\r\n2\x003\r\n")
    assert parsed is None
    assert [(i.code, i.line) for i in issues] == [("ENCODING_INVALID", 3)]
    assert "NUL" in issues[0].message


def test_broken_utf16_is_encoding_invalid() -> None:
    """A UTF-16 BOM with an odd number of bytes after it is not text."""
    parsed, issues = _read(b"\xff\xfea\x00\n\x00b")
    assert parsed is None
    assert [(i.code, i.line) for i in issues] == [("ENCODING_INVALID", 2)]


# --- pathological input ----------------------------------------------------------------


def test_million_column_header_refused_quickly() -> None:
    """A header wider than a spreadsheet can be is refused, fast, instead of parsed."""
    raw = b",".join(b"c%d" % i for i in range(1_000_000)) + b"\n1,2\n"
    started = time.perf_counter()
    parsed, issues = _read(raw)
    assert time.perf_counter() - started < 5
    assert parsed is None
    assert [(i.code, i.line) for i in issues] == [("ROW_COLUMN_COUNT", 1)]
    assert "1,000,000 fields" in issues[0].message


def test_wide_header_within_limit() -> None:
    """A few thousand columns are fine."""
    header = b",".join(b"c%d" % i for i in range(5000))
    parsed = _ok(header + b"\n" + b"x," * 4999 + b"y\n")
    assert len(parsed.header) == 5000
    assert parsed.frame.row(0)[-2:] == ("y", 2)


def test_huge_header_fields() -> None:
    """100,000-character header fields (quoted or not) are read, not choked on."""
    long = b"x" * 100_000
    parsed = _ok(b'"' + long + b'",' + long + b"\n1,2\n")
    assert parsed.header == [long.decode(), long.decode()]
    assert parsed.frame.height == 1


def test_many_bad_records_reported_in_bulk() -> None:
    """Tens of thousands of ragged records are each reported, quickly."""
    raw = b"a,b\n" + b"1,2\n3\n" * 20_000
    parsed, issues = _read(raw)
    assert parsed is not None
    assert parsed.frame.height == 20_000
    assert len(issues) == 20_000
    assert issues[-1].line == 40_001


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    """Any bytes end in a Table or None, with issues, never an exception."""
    issues = IssueLog()
    parsed = read_table(raw, "x.csv", issues, (",", ";"))
    if parsed is None:
        assert issues.has_errors()
    else:
        assert parsed.frame.columns[-1] == LINE


_PIECES = ["a", "é", " ", ",", ";", '"', '""', "\n", "\r\n", "\r", "\n\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=60))
def test_arbitrary_text_never_raises(pieces: list[str]) -> None:
    """CSV-ish text full of quotes, separators and line breaks never raises: it is
    read (UTF-8 and narrow, it is never refused) into a string column per header
    name plus the line numbers, split by one of the separators offered."""
    parsed = read_table("".join(pieces).encode(), "x.csv", IssueLog(), (",", ";"))
    assert parsed is not None
    assert parsed.separator in (",", ";")
    assert parsed.frame.width == len(parsed.header) + 1
    assert parsed.frame.schema[LINE] == pl.Int64
    assert all(dtype == pl.String for name, dtype in parsed.frame.schema.items() if name != LINE)


def _field() -> st.SearchStrategy[str]:
    plain = st.text(alphabet="ab é", max_size=4)
    quoted = st.text(alphabet='ab,"\n\r', max_size=6).map(lambda v: '"' + v.replace('"', '""') + '"')
    return st.one_of(plain, quoted)


@st.composite
def _csv_text(draw: st.DrawFn) -> str:
    width = draw(st.integers(1, 4))
    rows = draw(
        st.lists(
            st.lists(_field(), min_size=width, max_size=width)
            | st.lists(_field(), min_size=0, max_size=width + 2),
            min_size=1,
            max_size=8,
        )
    )
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = ending.join(",".join(row) for row in rows)
    if draw(st.booleans()):
        text += ending
    # now and then, damage it
    damage = draw(st.sampled_from(["", "", "", '"', "\r", "x\"y", ending * 2]))
    at = draw(st.integers(0, len(text)))
    return text[:at] + damage + text[at:]


def _same_as_csv(raw: bytes) -> None:
    issues = IssueLog()
    parsed = read_table(raw, "x.csv", issues)
    assert parsed is not None
    if not raw.strip(b" \t\r\n"):  # nothing but blanks: no header row at all
        assert (parsed.header, parsed.frame.height, len(issues)) == ([], 0, 0)
        return
    data = raw if b"\n" in raw or b"\r" not in raw else raw.replace(b"\r", b"\n")
    reference = IssueLog()
    slow = table._read_slow(data, "x.csv", ",", reference, frozenset())
    assert slow is not None
    header, frame, _ = slow
    assert parsed.header == header
    assert parsed.frame.rows() == frame.rows()
    assert sorted((i.code, i.line) for i in issues) == sorted(
        (i.code, i.line) for i in reference
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_csv_text())
def test_fast_paths_agree_with_csv_module(text: str) -> None:
    """Whatever path a file takes, header, rows, lines and issues equal the csv path's."""
    _same_as_csv(text.encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_csv_text(), st.sampled_from([64, 128, 192]))
def test_chunk_edges_do_not_matter(text: str, chunk: int) -> None:
    """Quote state, CRs and counts carry correctly across the scan's chunk edges."""
    with _tiny_chunks(chunk):
        _same_as_csv(text.encode() * 3)


def _big_csv(rows: int) -> bytes:
    lines = ["id,name,note"]
    for i in range(rows):
        note = f'"a, ""b"" {i}"' if i % 7 == 0 else ("" if i % 5 == 0 else f"n{i}")
        lines.append(f"{i},name {i},{note}")
    return ("\r\n".join(lines) + "\r\n").encode()


def test_big_clean_file_matches_polars() -> None:
    """Across many scan chunks, the frame is exactly polars' and lines run 2, 3, …"""
    raw = _big_csv(60_000)
    parsed = _ok(raw)
    expected = pl.read_csv(raw, infer_schema=False)
    assert parsed.frame.drop(LINE).equals(expected)
    assert parsed.frame[LINE].to_list() == list(range(2, 60_002))


def test_big_file_with_bad_records_keeps_the_rest() -> None:
    """Bad records deep in a large file are reported at their lines; the rest is kept."""
    lines = _big_csv(60_000).split(b"\r\n")
    lines[30_001] = b"broken"  # the record on line 30,002
    lines[50_001] = b'1,"two\nlines",3,4'  # line 50,002, one line longer than the others
    parsed, issues = _read(b"\r\n".join(lines))
    assert parsed is not None
    assert parsed.frame.height == 59_998
    assert [(i.code, i.line) for i in issues] == [
        ("ROW_COLUMN_COUNT", 30_002),
        ("ROW_COLUMN_COUNT", 50_002),
    ]
    assert parsed.frame[LINE].tail(1).item() == 60_002


@pytest.mark.parametrize(
    ("raw", "padded", "quoted_empty"),
    [
        (b"a,b\n1,2\n3,4\n", False, False),
        (b"a,b\n1, 2\n", True, False),
        (b"a,b\n1 ,2\n", True, False),
        (b'a,b\n" 1",2\n', True, False),
        (b"a,b\n1,2\t\n", True, False),
        (b'a,b\n"",2\n', False, True),
        (b"a,b\nMary Ann,2\n", False, False),
    ],
)
def test_value_hints(raw: bytes, padded: bool, quoted_empty: bool) -> None:
    """The byte-level hints that let validation skip trimming never miss a padded field."""
    table = read_table(raw, "x.csv", IssueLog())
    assert table is not None
    assert (table.padded, table.quoted_empty) == (padded, quoted_empty)


def _hints_by_hand(data: bytes) -> tuple[bool, bool]:
    blanks, edges = b" \t", b',"\r\n'
    pairs = itertools.pairwise(data)
    padded = data[:1] in (b" ", b"\t") or any(
        (a in blanks and b in edges) or (a in edges and b in blanks) for a, b in pairs)
    return padded, b'""' in data


@given(st.binary(max_size=200).map(lambda b: bytes(b" a\t,\"\r\n"[x % 7] for x in b)),
       st.sampled_from([3, 16, 1 << 20]))
def test_value_hints_match_a_byte_by_byte_reading(data: bytes, chunk: int) -> None:
    """Also across scan chunk edges, and with the byte searches that skip the scan."""
    saved = table._SCAN_CHUNK
    table._SCAN_CHUNK = chunk
    try:
        assert table._value_hints(data, ord(",")) == _hints_by_hand(data)
    finally:
        table._SCAN_CHUNK = saved
