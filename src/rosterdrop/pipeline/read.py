"""CSV bytes → a polars frame of strings, with the physical line of each record.

``read_table`` decodes (UTF-8, UTF-16 with a BOM, Windows-1252), picks the
separator from the header row, and parses RFC 4180 CSV. Every record keeps the
1-based physical line it starts on (``_line``; the header is line 1), counting
LF, CRLF and lone CR as line breaks, so issues can point at the line an admin
sees in an editor.

Three ways to the same result, cheapest first:

fast
    ``polars.read_csv`` plus one vectorised pass over the bytes that proves the
    file is well formed: quotes only where RFC 4180 allows them, every record
    with the header's field count, no blank lines, no line break inside quotes
    (so record *k* starts on line *k* + 2). The pass works on bit-packed
    masks: the quote state at every byte is a prefix XOR of the quote bits,
    64 bytes per machine word, in chunks of ``_CHUNK`` bytes carrying the
    state across, so memory stays at a few times the chunk size.
medium
    Quoting is well formed but records are ragged, blank lines appear, a
    quoted field holds a line break, or a quote is left open. The same pass
    collects every record's end, field count and start line; bad records are
    reported, and the byte ranges of the good ones go to polars.
slow
    Quotes in places RFC 4180 does not allow (``ab"c``, ``"ab"c``), a lone CR
    in a file that otherwise uses LF, or polars disagreeing with the pass: the
    standard library ``csv`` module reads record by record, tracking lines.

Problems are issues (``ENCODING_CONVERTED``, ``ENCODING_INVALID``,
``ROW_COLUMN_COUNT``); nothing raises for bad bytes.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from rosterdrop.codes import Code
from rosterdrop.pipeline.issues import IssueLog

LINE = "_line"
"""The column holding each record's physical start line."""
MAX_FIELDS = 16_384
"""Widest header accepted: the most columns a spreadsheet can hold."""

_QUOTE, _LF, _CR = 0x22, 0x0A, 0x0D
_CHUNK = 1 << 20
_SCAN_CHUNK = 1 << 18  # a multiple of 64: whole machine words per chunk
_SLOW_BATCH = 50_000
_FIELD_LIMIT = csv.field_size_limit()

_U64 = np.dtype("<u8")
_ONE = np.uint64(1)
_TOP = np.uint64(63)
_ALL = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
_SHIFTS = tuple(np.uint64(k) for k in (1, 2, 4, 8, 16, 32))
_LEADING_BREAKS = re.compile(rb"[\r\n]*")
_BLANK = re.compile(rb"[ \t\r\n]*")

Words = NDArray[np.uint64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class Table:
    """One CSV file, parsed."""

    file: str
    header: list[str]
    """Raw header names (BOM removed, not trimmed); [] for an empty/blank file."""
    frame: pl.DataFrame
    """A pl.String column per header position (duplicate names made unique:
    ``name``, ``name#2``) and ``_line`` (pl.Int64). Empty fields are null;
    values are not trimmed."""
    separator: str
    padded: bool = True
    """Some field may start or end with white space (False: trimming can be skipped)."""
    quoted_empty: bool = True
    """Some field may be a quoted empty string ``""`` (False: no "" values to null)."""
    header_mismatch: bool = False
    """Most records have another field count than the header (``HEADER_FIELD_COUNT``):
    the header is wrong, so no record was read and the frame is empty."""


def read_table(
    raw: bytes, file: str, issues: IssueLog, separators: tuple[str, ...] = (",",),
    known: frozenset[str] = frozenset(),
) -> Table | None:
    """Parse the CSV file ``file`` from its bytes.

    Returns None, after reporting why, when the bytes are not text
    (``ENCODING_INVALID``) or the header is too wide to be a roster file.
    Records with the wrong number of fields are reported (``ROW_COLUMN_COUNT``)
    and left out of the frame; when most records agree on a count other than the
    header's, the header is blamed once instead (``HEADER_FIELD_COUNT``) and no
    record is read. Records may leave out fields that the header ends in without
    names (a spreadsheet's empty cells): those read as blank. ``known``: the layout's
    column names; when the names the header has too many are exactly the ones the
    layout does not know (a column added to the header but to no record), the records
    are read without them, so the report still covers them (the header issue says so,
    and the run fails on it).
    """
    if not separators or any(
        len(s) != 1 or not s.isascii() or s in '"\r\n' for s in separators
    ):
        raise ValueError(f"separators must be single ASCII characters, got {separators!r}")
    data = _decode(raw, file, issues)
    if data is None:
        return None
    if b"\n" not in data and b"\r" in data:
        data = data.replace(b"\r", b"\n")  # old Mac / Excel: CR-only line breaks

    head = _header_span(data)
    if head is None:
        return Table(file, [], pl.DataFrame(schema={LINE: pl.Int64}), separators[0])
    start, stop = head
    sep = _choose_separator(data, start, stop, separators)
    width = _unquoted(data, start, stop, ord(sep)).size + 1
    if width > MAX_FIELDS:
        _too_wide(file, width, 1 + _count_breaks(data, start), issues)
        return None
    parsed = _read_fast(data, file, sep, head, issues, known)
    if parsed is None:
        parsed = _read_slow(data, file, sep, issues, known)
    if parsed is None:
        return None
    header, frame, mismatch = parsed
    drop = _surplus(header, known, mismatch)
    if drop and b"\n" not in data[start:stop] and b"\r" not in data[start:stop]:
        line = io.StringIO()
        csv.writer(line, delimiter=sep, lineterminator="").writerow(
            [name for i, name in enumerate(header) if i not in drop])
        kept = line.getvalue().encode()
        data = data[:start] + kept + data[stop:]
        reread = _read_fast(data, file, sep, (start, start + len(kept)), issues, frozenset())
        if reread is None:
            reread = _read_slow(data, file, sep, issues, frozenset())
        if reread is not None and reread[2] is None:
            header, frame, mismatch = reread
    padded, quoted_empty = _value_hints(data, ord(sep))
    return Table(file, header, frame, sep, padded, quoted_empty, mismatch is not None)


def _value_hints(data: bytes, sep: int) -> tuple[bool, bool]:
    """Cheap byte-level hints that spare the validator whole-column string scans.

    A field with surrounding white space shows in the bytes as a space or tab
    next to a separator, quote or line break; a quoted empty field as two
    adjacent quotes. Both answers may be false alarms, never false negatives.
    """
    # Most exports have no quotes, and many no spaces or tabs: a byte search
    # (memchr: 2 ms for a 50 MB file) settles those without the scan below.
    may_be_padded = b" " in data or b"\t" in data
    may_be_quoted = b'"' in data
    padded = quoted_empty = False
    n = len(data)
    step = _SCAN_CHUNK
    for lo in range(0, n, step):
        if (padded or not may_be_padded) and (quoted_empty or not may_be_quoted):
            break
        # One byte of overlap so pairs across chunk edges are seen.
        a = np.frombuffer(data, np.uint8, min(step + 1, n - lo), lo)
        quotes = a == _QUOTE
        if may_be_padded and not padded:
            blank = (a == 0x20) | (a == 0x09)
            if blank.any():
                edge = (a == sep) | (a == _LF) | (a == _CR) | quotes
                padded = bool((blank[1:] & edge[:-1]).any() or (blank[:-1] & edge[1:]).any()
                              or (lo == 0 and blank[0]))
        if may_be_quoted and not quoted_empty:
            quoted_empty = bool((quotes[1:] & quotes[:-1]).any())
    return padded, quoted_empty


# --- encoding ---------------------------------------------------------------


def _decode(raw: bytes, file: str, issues: IssueLog) -> bytes | None:
    """The file as UTF-8 bytes without BOM, or None after ENCODING_INVALID."""
    if raw.startswith(codecs.BOM_UTF8):
        data = raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16-le" if raw.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
        body = raw[2:]
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError as exc:
            good = body[: exc.start - exc.start % 2].decode(encoding, errors="replace")
            line = 1 + _count_breaks(good.encode("utf-8"), len(good.encode("utf-8")))
            issues.add(
                Code.ENCODING_INVALID,
                f"{file} line {line}: the file starts as UTF-16 text but is not valid "
                "UTF-16 from here on (it may be cut off or damaged); export the file "
                "again as UTF-8 and upload it again.",
                file=file,
                line=line,
            )
            return None
        data = text.encode("utf-8", errors="surrogatepass")
        issues.add(
            Code.ENCODING_CONVERTED,
            f"{file} is UTF-16 text and was converted to UTF-8; no action is needed, "
            "but exporting the file as UTF-8 avoids the conversion.",
            file=file,
        )
    else:
        data = raw

    nul = data.find(b"\x00")
    if nul >= 0:
        line = 1 + _count_breaks(data, nul)
        issues.add(
            Code.ENCODING_INVALID,
            f"{file} line {line}: the file contains a NUL byte, which text does not; "
            "it may be a spreadsheet or a damaged file, so export it again as a CSV "
            "(UTF-8) file.",
            file=file,
            line=line,
        )
        return None
    if data.isascii():
        return data
    bad = _first_invalid_utf8(data)
    if bad is None:
        return data
    line = 1 + _count_breaks(data, bad)
    try:
        converted = b"".join(
            data[lo : lo + _CHUNK].decode("cp1252").encode("utf-8")
            for lo in range(0, len(data), _CHUNK)
        )
    except UnicodeDecodeError:
        issues.add(
            Code.ENCODING_INVALID,
            f"{file} line {line}: byte 0x{data[bad]:02X} is not UTF-8, UTF-16 or "
            "Windows-1252 text; export the file again as UTF-8 (in Excel: CSV UTF-8) "
            "and upload it again.",
            file=file,
            line=line,
        )
        return None
    issues.add(
        Code.ENCODING_CONVERTED,
        f"{file} is not UTF-8 and was read as Windows-1252 (the first such character "
        f"is on line {line}); check that accented names look right, and export the "
        "file as UTF-8 to avoid the conversion.",
        file=file,
        line=line,
    )
    return converted


def _first_invalid_utf8(data: bytes) -> int | None:
    """Offset of the first byte that is not valid UTF-8, decoding chunk by chunk
    (a whole-file decode would hold a str up to 4 times the file's size)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    for lo in range(0, len(data), _CHUNK):
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(view[lo : lo + _CHUNK], final=lo + _CHUNK >= len(data))
        except UnicodeDecodeError as exc:
            return lo - pending + exc.start
    return None


def _count_breaks(data: bytes, end: int) -> int:
    """Line breaks (LF, CRLF, lone CR) in ``data[:end]``."""
    return data.count(b"\n", 0, end) + data.count(b"\r", 0, end) - data.count(b"\r\n", 0, end)


# --- header -----------------------------------------------------------------


def _header_span(data: bytes) -> tuple[int, int] | None:
    """Byte range of the first non-blank record, without its line break; None for a
    file of nothing but spaces, tabs and line breaks (it has no header row)."""
    match = _LEADING_BREAKS.match(data)
    start = match.end() if match else 0
    blank = _BLANK.match(data, start)
    if start >= len(data) or (blank is not None and blank.end() == len(data)):
        return None
    return start, _record_stop(data, start)


def _record_stop(data: bytes, start: int) -> int:
    """Offset of the first line break outside quotes at or after ``start``."""
    parity = 0
    lo, step = start, 1 << 16
    while lo < len(data):
        hi = min(len(data), lo + step)
        a = np.frombuffer(data, np.uint8, hi - lo, lo)
        breaks = (a == _LF) | (a == _CR)
        quotes = a == _QUOTE
        if parity or quotes.any():
            inside = (np.cumsum(quotes, dtype=np.uint8) & 1) ^ parity
            breaks &= inside == 0
            parity = int(inside[-1])
        found = np.flatnonzero(breaks)
        if found.size:
            return lo + int(found[0])
        lo, step = hi, min(step * 4, _CHUNK * 4)
    return len(data)


def _unquoted(data: bytes, start: int, stop: int, byte: int) -> Ints:
    """Offsets (relative to ``start``) of ``byte`` outside quotes in data[start:stop]."""
    a = np.frombuffer(data, np.uint8, stop - start, start)
    hits = a == byte
    quotes = a == _QUOTE
    if quotes.any():
        hits &= (np.cumsum(quotes, dtype=np.uint8) & 1) == 0
    return np.flatnonzero(hits)


def _choose_separator(data: bytes, start: int, stop: int, separators: tuple[str, ...]) -> str:
    if len(separators) == 1:
        return separators[0]
    counts = [_unquoted(data, start, stop, ord(s)).size for s in separators]
    return separators[counts.index(max(counts))]  # a tie goes to the first listed


def _split_header(data: bytes, start: int, stop: int, sep: str) -> list[str]:
    """The header record's fields; only for well-formed quoting."""
    raw = data[start:stop]
    if b'"' not in raw:
        parts = raw.split(sep.encode())
    else:
        cuts = _unquoted(data, start, stop, ord(sep)).tolist()
        bounds = [-1, *cuts, len(raw)]
        parts = [raw[bounds[i] + 1 : bounds[i + 1]] for i in range(len(bounds) - 1)]
        parts = [
            (p[1:-1] if len(p) > 1 and p.endswith(b'"') else p[1:]).replace(b'""', b'"')
            if p.startswith(b'"')
            else p
            for p in parts
        ]
    return [p.decode("utf-8", errors="replace") for p in parts]


def _column_names(header: list[str]) -> list[str]:
    """Header names made unique (``name``, ``name#2``, …), never ``_line``.

    A name's first use keeps it; later uses get the next suffix that no header
    name has, so a real ``name#2`` column keeps its name.
    """
    taken = {*header, LINE}
    seen: set[str] = set()
    last: dict[str, int] = {}
    names = []
    for name in header:
        if name not in seen and name != LINE:
            seen.add(name)
            names.append(name)
            continue
        k = last.get(name, 1)
        while True:
            k += 1
            candidate = f"{name}#{k}"
            if candidate not in taken:
                break
        last[name] = k
        taken.add(candidate)
        names.append(candidate)
    return names


def _too_wide(file: str, fields: int, line: int, issues: IssueLog) -> None:
    issues.add(
        Code.ROW_COLUMN_COUNT,
        f"{file} line {line}: the header has {fields:,} fields, more than the "
        f"{MAX_FIELDS:,} a spreadsheet can hold, so this is not a roster export; "
        "export the file again.",
        file=file,
        line=line,
    )


# --- the bit-parallel pass ----------------------------------------------------


@dataclass
class _Scan:
    misquoted: bool = False
    """A quote where RFC 4180 allows none, or a lone CR outside quotes."""
    lone_cr: bool = False
    """A lone CR anywhere (a line break inside a quoted field, at best)."""
    open_at_end: bool = False
    """The file ends inside a quoted field."""
    seps: int = 0
    """Separators outside quotes."""
    breaks: int = 0
    """LFs outside quotes: record ends."""
    quoted_breaks: int = 0
    """LFs inside quotes."""
    ends: Ints | None = None
    """With detail: offset of every LF outside quotes."""
    seps_before: Ints | None = None
    """With detail: separators outside quotes before each of ``ends``."""
    lines_through: Ints | None = None
    """With detail: line breaks at or before each of ``ends``."""


def _bits(mask: NDArray[np.bool_]) -> Words:
    """A byte mask packed 64 bytes to a word: bit i of word w is byte 64w + i."""
    packed = np.packbits(mask, bitorder="little")
    pad = -packed.size % 8
    if pad:
        packed = np.concatenate((packed, np.zeros(pad, np.uint8)))
    return packed.view(_U64)


def _after(bits: Words, carry: np.uint64) -> Words:
    """Bit i set iff bit i - 1 is set; ``carry`` is the previous chunk's last word."""
    out = bits << _ONE
    out[0] |= carry >> _TOP
    out[1:] |= bits[:-1] >> _TOP
    return out


def _count(bits: Words) -> int:
    return int(np.bitwise_count(bits).sum(dtype=np.int64))


def _offsets(bits: Words) -> Ints:
    """Positions of the set bits, lowest first; cheap when they are sparse."""
    words = np.flatnonzero(bits)
    rest = bits[words]
    found = []
    while words.size:
        lowest = rest & (~rest + _ONE)
        found.append(words * 64 + np.log2(lowest).astype(np.int64))  # exact: powers of 2
        rest = rest ^ lowest
        keep = rest != 0
        words, rest = words[keep], rest[keep]
    return np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _rank(bits: Words, at: Ints) -> Ints:
    """For each position in ``at``, how many bits are set before it."""
    per_word = np.bitwise_count(bits).astype(np.int64)
    before = np.cumsum(per_word) - per_word
    word = at >> 6
    below = (_ONE << (at & 63).astype(np.uint64)) - _ONE
    ranks: Ints = before[word] + np.bitwise_count(bits[word] & below).astype(np.int64)
    return ranks


def _survey(data: bytes, sep: int) -> _Scan:
    """The fast check's numbers; without quotes, plain counting does."""
    if b'"' in data:
        return _scan(data, sep, detail=False)
    result = _Scan()
    has_cr = b"\r" in data
    n = len(data)
    lone = 0
    for lo in range(0, n, _SCAN_CHUNK):
        a = np.frombuffer(data, np.uint8, min(_SCAN_CHUNK, n - lo), lo)
        result.seps += int(np.count_nonzero(a == sep))
        lfs = a == _LF
        result.breaks += int(np.count_nonzero(lfs))
        if has_cr:
            crs = a == _CR
            lone += int(np.count_nonzero(crs)) - int(np.count_nonzero(crs[:-1] & lfs[1:]))
            if crs[-1] and data[lo + a.size : lo + a.size + 1] == b"\n":
                lone -= 1
    result.lone_cr = result.misquoted = lone > 0
    return result


def _scan(data: bytes, sep: int, *, detail: bool) -> _Scan:
    """One pass over ``data``; with ``detail``, also where every record ends."""
    result = _Scan()
    n = len(data)
    has_quotes = b'"' in data
    has_cr = b"\r" in data
    zero = np.uint64(0)
    parity = zero  # inside quotes at the end of the previous chunk
    last_text = last_quote = last_cr = last_cr_out = zero
    bad = lone = lone_out = 0
    ends: list[Ints] = []
    seps_before: list[Ints] = []
    lines_through: list[Ints] = []
    seps_so_far = breaks_so_far = 0
    for lo in range(0, n, _SCAN_CHUNK):
        m = min(_SCAN_CHUNK, n - lo)
        a = np.frombuffer(data, np.uint8, m, lo)
        seps = _bits(a == sep)
        lfs = _bits(a == _LF)
        crs = _bits(a == _CR) if has_cr else None
        valid = np.uint64((1 << (m % 64)) - 1) if m % 64 else _ALL
        inside: Words | None = None
        if has_quotes:
            quotes = _bits(a == _QUOTE)
            # Inside quotes after byte i = XOR of the quote bits up to i: within
            # a word by doubling shifts, across words by an XOR scan of parities.
            prefix = quotes.copy()
            for shift in _SHIFTS:
                prefix ^= prefix << shift
            cumulative = np.bitwise_xor.accumulate(prefix >> _TOP)
            carry_in = np.empty_like(cumulative)
            carry_in[0] = parity
            carry_in[1:] = cumulative[:-1] ^ parity
            parity ^= cumulative[-1]
            inside = prefix ^ (carry_in * _ALL)
            # RFC 4180 puts quotes only at the edges of a field: no text outside
            # quotes may touch one (`ab"c`, `"ab"c`).
            boundary = seps | lfs | quotes
            if crs is not None:
                boundary |= crs
            text = ~(inside | boundary)
            text[-1] &= valid
            bad += _count((_after(text, last_text) & quotes) | (_after(quotes, last_quote) & text))
            last_text, last_quote = text[-1], quotes[-1]
            outside = ~inside
            seps &= outside
            record_ends = lfs & outside
            result.quoted_breaks += _count(lfs) - _count(record_ends)
        else:
            record_ends = lfs
        lone_next: Words | None = None
        if crs is not None:
            no_lf = ~lfs
            no_lf[-1] &= valid
            lone_next = _after(crs, last_cr) & no_lf  # the byte after a lone CR
            lone += _count(lone_next)
            last_cr = crs[-1]
            crs_out = crs if inside is None else crs & ~inside
            lone_out += _count(_after(crs_out, last_cr_out) & no_lf)
            last_cr_out = crs_out[-1]
        result.seps += _count(seps)
        result.breaks += _count(record_ends)
        if detail:
            here = _offsets(record_ends)
            ends.append(here + lo)
            seps_before.append(_rank(seps, here) + seps_so_far)
            seps_so_far += _count(seps)
            # the line breaks before a record end, plus the LF that ends it; a
            # lone CR is counted at the byte after it, which is never that LF
            breaks = lfs if lone_next is None else lfs | lone_next
            lines_through.append(_rank(breaks, here) + breaks_so_far + 1)
            breaks_so_far += _count(breaks)
    if n and data[-1] == _CR:
        lone += 1
        lone_out += int(parity == 0)
    result.misquoted = bad > 0 or lone_out > 0
    result.lone_cr = lone > 0
    result.open_at_end = bool(parity)
    if detail:
        empty = np.zeros(0, np.int64)
        result.ends = np.concatenate(ends) if ends else empty
        result.seps_before = np.concatenate(seps_before) if seps_before else empty
        result.lines_through = np.concatenate(lines_through) if lines_through else empty
    return result


# --- fast and medium paths ----------------------------------------------------


def _polars(source: bytes, sep: str, names: list[str], skip_rows: int,
            first_line: int | None = None, short: bool = False) -> pl.DataFrame | None:
    """The records of ``source``; with ``first_line``, numbered from it in ``LINE``.

    The numbers come from the reader itself, so they are chunked like the
    values: a column added afterwards (one chunk against the reader's dozens)
    would make the first ``select`` copy every column into one chunk.
    """
    try:
        frame = pl.read_csv(
            source,
            has_header=False,
            skip_rows=skip_rows,
            schema=dict.fromkeys(names, pl.String),
            separator=sep,
            quote_char='"',
            eol_char="\n",
            null_values=[""],  # also a quoted empty field
            raise_if_empty=False,
            row_index_name=None if first_line is None else LINE,
            row_index_offset=first_line or 0,
            # records that leave out the header's trailing blank names: blank there
            missing_columns="insert" if short else "raise",
        )
    except (pl.exceptions.PolarsError, ValueError, OSError):
        return None
    if first_line is None:
        return frame
    return frame.select(*names, pl.col(LINE).cast(pl.Int64))


Parsed = tuple[list[str], pl.DataFrame, int | None]
"""Header, records, and the field count most records have when the header was blamed
(``Table.header_mismatch``), else None."""


def _blank_tail(header: list[str]) -> int:
    """How many names the header ends in that are blank (never all of them)."""
    tail = 0
    while tail < len(header) - 1 and not header[len(header) - 1 - tail].strip():
        tail += 1
    return tail


def _read_fast(
    data: bytes, file: str, sep: str, head: tuple[int, int], issues: IssueLog,
    known: frozenset[str],
) -> Parsed | None:
    """The fast or the medium path; None when only the slow path can tell."""
    scan = _survey(data, ord(sep))
    if scan.misquoted:
        return None
    start, stop = head
    header = _split_header(data, start, stop, sep)
    names = _column_names(header)
    records = scan.breaks + (0 if data.endswith(b"\n") else 1)
    if (
        start == 0
        and not scan.lone_cr
        and not scan.open_at_end
        and scan.quoted_breaks == 0
        and scan.seps == records * (len(header) - 1)
        and (len(header) > 1 or (b"\n\n" not in data and b"\n\r\n" not in data))
    ):
        # Every record has the header's field count: with one field too many
        # polars raises, so none has one too few either.
        if records <= 1:
            return header, _empty(names).with_columns(pl.lit(None, pl.Int64).alias(LINE)), None
        frame = _polars(data, sep, names, 1, first_line=2)
        if frame is not None and frame.height == records - 1:
            return header, frame, None
    return _read_medium(data, file, sep, header, names, issues, known)


def _empty(names: list[str]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict.fromkeys(names, pl.String))


def _read_medium(
    data: bytes, file: str, sep: str, header: list[str], names: list[str], issues: IssueLog,
    known: frozenset[str],
) -> Parsed | None:
    scan = _scan(data, ord(sep), detail=True)
    assert scan.ends is not None and scan.seps_before is not None
    assert scan.lines_through is not None
    n = len(data)
    last_start = int(scan.ends[-1]) + 1 if scan.ends.size else 0
    count = scan.ends.size + (last_start < n)  # and a last record without a line break
    starts = np.concatenate(([0], scan.ends + 1))[:count]
    stops = np.concatenate((scan.ends, [n]))[:count]
    seps = np.concatenate(([0], scan.seps_before, [scan.seps]))[: count + 1]
    fields = np.diff(seps) + 1
    lines = np.concatenate(([1], scan.lines_through + 1))[:count]

    length = stops - starts
    blank = length == 0
    single = np.flatnonzero(length == 1)
    if single.size:
        blank[single] = np.frombuffer(data, np.uint8)[starts[single]] == _CR
    nonblank = np.flatnonzero(~blank)
    first = int(nonblank[0])
    expected = len(header)
    fewest = expected - _blank_tail(header)
    is_data = ~blank
    is_data[: first + 1] = False
    bad = is_data & ((fields > expected) | (fields < fewest))
    unclosed = np.zeros(count, np.bool_)
    if scan.open_at_end:
        unclosed[-1] = True
        bad[-1] = is_data[-1]
    blamed = _header_blamed(file, header, fields[bad & ~unclosed], int(is_data.sum()), known,
                            issues)
    if blamed is not None:
        return header, _empty(names).with_columns(pl.lit(None, pl.Int64).alias(LINE)), blamed
    good = is_data & ~bad

    rows = int(good.sum())
    if rows == 0:
        frame = _empty(names)
    else:
        edges = np.diff(np.concatenate(([0], good.astype(np.int8), [0])))
        run_first = np.flatnonzero(edges == 1)
        run_last = np.flatnonzero(edges == -1) - 1
        byte_from = starts[run_first]
        byte_to = np.minimum(stops[run_last] + 1, n)
        short = fewest < expected
        if first == 0 and run_first.size == 1 and run_first[0] == 1 and byte_to[0] == n:
            maybe = _polars(data, sep, names, 1, short=short)
        else:
            view = memoryview(data)
            pieces = b"".join(
                view[int(lo) : int(hi)] for lo, hi in zip(byte_from, byte_to, strict=True)
            )
            maybe = _polars(pieces, sep, names, 0, short=short)
        if maybe is None or maybe.height != rows:
            return None  # polars read the records otherwise than the pass: csv decides
        frame = maybe
    _report_counts(file, expected, lines[bad], fields[bad], unclosed[bad], issues)
    return header, frame.with_columns(pl.Series(LINE, lines[good], dtype=pl.Int64)), None


def _surplus(header: list[str], known: frozenset[str], fields: int | None) -> set[int]:
    """Positions of the names the header has too many, when they are exactly the names
    the layout does not know (blank names aside) and the rest is the whole layout; empty
    when that cannot be told. A misspelt name of a column the header then lacks holds
    that column's data: dropping it would shift every later column, so it is kept."""
    if fields is None or not known or fields >= len(header):
        return set()
    unknown = {i for i, name in enumerate(header) if name.strip() and name not in known}
    rest = {name for i, name in enumerate(header) if i not in unknown}
    if len(unknown) != len(header) - fields or not known <= rest:
        return set()
    return unknown


def _header_blamed(file: str, header: list[str], found: Ints, records: int,
                   known: frozenset[str], issues: IssueLog) -> int | None:
    """When most records agree on a field count other than the header's, the header
    is wrong, not each record: one HEADER_FIELD_COUNT, and that count (else None)."""
    expected = len(header)
    if records < 2 or found.size * 2 <= records:
        return None
    counts, times = np.unique(found, return_counts=True)
    top = int(np.argmax(times))
    agree, fields = int(times[top]), int(counts[top])
    if agree * 2 <= records:
        return None
    if fields < expected:
        why = (f"the header has {expected - fields} name{'s' if expected - fields > 1 else ''}"
               " too many (or the records lack a column)")
    else:
        why = (f"the header lacks {fields - expected} column "
               f"name{'s' if fields - expected > 1 else ''} (or every record has a stray "
               "separator)")
    drop = _surplus(header, known, fields)
    if drop:
        names = ", ".join(f"'{header[i]}'" for i in sorted(drop))
        then = (f"{names} {'is' if len(drop) == 1 else 'are'} not a column of the layout and "
                f"no record has {'it' if len(drop) == 1 else 'them'}, so the records were "
                f"checked without {'it' if len(drop) == 1 else 'them'} (nothing is applied "
                "until the header is right); remove "
                f"{'it' if len(drop) == 1 else 'them'} from the header row and export again.")
    else:
        then = (f"No record of {file} was read, so the checks that need it were skipped; "
                "correct the header row and export again.")
    issues.add(
        Code.HEADER_FIELD_COUNT,
        f"{file} line 1: the header row names {expected} columns, but {agree:,} of the "
        f"{records:,} records have {fields} fields: {why}. {then}",
        file=file, line=1, value=f"{expected} names, {fields} fields",
    )
    return fields


def _report_counts(
    file: str,
    expected: int,
    lines: Ints,
    found: Ints,
    unclosed: NDArray[np.bool_],
    issues: IssueLog,
) -> None:
    if lines.size == 0:
        return
    bad = pl.DataFrame(
        {"line": lines, "found": found, "unclosed": unclosed},
        schema={"line": pl.Int64, "found": pl.Int64, "unclosed": pl.Boolean},
    )
    ragged = pl.format(
        "{} line {}: expected {} fields, as in the header, but found {}; an unbalanced "
        'quote (") or a stray separator is the usual cause, so correct the record in '
        "the SIS and export again.",
        pl.lit(file), pl.col("line"), pl.lit(expected), pl.col("found"),
    )
    open_quote = pl.format(
        '{} line {}: a quote (") opened in this record is never closed, so the rest of '
        "the file was read as one record (expected {} fields, found {}); close or "
        "remove the unbalanced quote in the SIS and export again.",
        pl.lit(file), pl.col("line"), pl.lit(expected), pl.col("found"),
    )
    issues.extend(
        bad.select(
            pl.lit(file).alias("file"),
            pl.col("line"),
            pl.when(pl.col("unclosed")).then(open_quote).otherwise(ragged).alias("message"),
        ),
        Code.ROW_COLUMN_COUNT,
    )


# --- slow path ------------------------------------------------------------------


def _read_slow(
    data: bytes, file: str, sep: str, issues: IssueLog, known: frozenset[str]
) -> Parsed | None:
    """Record by record with the csv module: quotes where RFC 4180 allows none
    are read as csv (and Excel) read them."""
    exhausted = False

    def physical_lines() -> Iterator[str]:
        nonlocal exhausted
        yield from io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
        exhausted = True

    reader = csv.reader(physical_lines(), delimiter=sep, quotechar='"', doublequote=True)
    header: list[str] | None = None
    names: list[str] = []
    fewest = 0
    frames: list[pl.DataFrame] = []
    batch: list[list[str]] = []
    batch_lines: list[int] = []
    bad_lines: list[int] = []
    bad_found: list[int] = []
    bad_open: list[bool] = []
    long_lines: list[int] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:  # only "field larger than field limit" when not strict
            long_lines.append(line)
            continue
        if not row:
            continue
        if header is None:
            if len(row) > MAX_FIELDS:
                _too_wide(file, len(row), line, issues)
                return None
            header, names = row, _column_names(row)
            fewest = len(header) - _blank_tail(header)
            continue
        if not fewest <= len(row) <= len(header) or exhausted:
            # csv hands back an unclosed quoted field when the lines run out
            bad_lines.append(line)
            bad_found.append(len(row))
            bad_open.append(exhausted)
            continue
        batch.append(row if len(row) == len(header) else row + [""] * (len(header) - len(row)))
        batch_lines.append(line)
        if len(batch) >= _SLOW_BATCH:
            frames.append(_batch_frame(batch, batch_lines, names))
            batch, batch_lines = [], []
    if header is None:
        return [], pl.DataFrame(schema={LINE: pl.Int64}), None
    records = sum(f.height for f in frames) + len(batch_lines) + len(bad_lines)
    found = np.array([n for n, unclosed in zip(bad_found, bad_open, strict=True)
                      if not unclosed], np.int64)
    blamed = _header_blamed(file, header, found, records, known, issues)
    if blamed is not None:
        return header, _empty(names).with_columns(pl.lit(None, pl.Int64).alias(LINE)), blamed
    if batch or not frames:
        frames.append(_batch_frame(batch, batch_lines, names))
    _report_counts(
        file, len(header), np.array(bad_lines, np.int64), np.array(bad_found, np.int64),
        np.array(bad_open, np.bool_), issues,
    )
    for line in long_lines:
        issues.add(
            Code.ROW_COLUMN_COUNT,
            f"{file} line {line}: a field is longer than {_FIELD_LIMIT:,} characters, "
            'which usually means a quote (") is never closed; correct the record in '
            "the SIS and export again.",
            file=file,
            line=line,
        )
    return header, pl.concat(frames, how="vertical"), None


def _batch_frame(rows: list[list[str]], lines: list[int], names: list[str]) -> pl.DataFrame:
    columns: dict[str, Any] = dict(zip(names, zip(*rows, strict=True), strict=True)) if rows else {}
    frame = pl.DataFrame(
        {name: columns.get(name, ()) for name in names},
        schema=dict.fromkeys(names, pl.String),
    )
    frame = frame.with_columns(pl.when(pl.col(c) != "").then(pl.col(c)).alias(c) for c in names)
    return frame.with_columns(pl.Series(LINE, lines, dtype=pl.Int64))
