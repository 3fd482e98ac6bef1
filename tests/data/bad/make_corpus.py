"""Generate the bad-input corpus: malformed uploads, each with the issues it must raise.

Every case is built here from the small valid uploads of ``tests/uploads.py``
(or from nothing), so the corpus is code, not hand-copied binaries. Each case
declares the exact set of ``(code, severity)`` pairs that checking it must
report; a case with sync codes also names the store it is planned against
(``existing`` people), because ``MATCH_AMBIGUOUS`` and friends need one.

``tests/test_bad_corpus.py`` writes the corpus into a temporary folder once per
session and checks every case. Standalone, the script writes the uploads and a
``cases.json`` index to a folder, for trying them by hand::

    python tests/data/bad/make_corpus.py /tmp/bad
    rosterdrop validate --json /tmp/bad/nul_bytes.zip

Not covered, because no upload's content can raise it: ``UPLOAD_SUPERSEDED``
(the queue's decision when a newer bulk upload arrives; see test_daemon.py).
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import stat
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import uploads
except ImportError:  # run as a script: tests/ is not on the path yet
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import uploads

ERROR, WARNING = "error", "warning"
Expect = tuple[tuple[str, str], ...]
Files = dict[str, str | bytes]
STAMP = (2026, 11, 20, 8, 0, 0)
"""Every entry's modification time, so the same case is the same bytes on every run."""


def E(*codes: str) -> Expect:
    """The codes as errors."""
    return tuple((code, ERROR) for code in codes)


def W(*codes: str) -> Expect:
    """The codes as warnings."""
    return tuple((code, WARNING) for code in codes)


@dataclass(frozen=True)
class Case:
    """One malformed upload and the verdict the spec asks for."""

    name: str
    build: Callable[[], bytes]
    expect: Expect
    """Exactly the (code, severity) pairs checking the upload reports; () = clean."""
    about: str
    tenant: dict[str, Any] = field(default_factory=dict)
    """TenantSettings fields for this case (filter, patch, account_format, guard…)."""
    existing: tuple[dict[str, Any], ...] | None = None
    """People already in the store: the upload is also planned against them."""

    def index(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": f"{self.name}.zip", "about": self.about,
            "expect": [list(pair) for pair in self.expect], "tenant": self.tenant,
            "existing": None if self.existing is None else list(self.existing),
        }


CASES: list[Case] = []


def case(name: str, expect: Expect, about: str, **options: Any) -> Callable[
        [Callable[[], bytes]], Callable[[], bytes]]:
    """Register the decorated builder as a corpus case."""
    def register(build: Callable[[], bytes]) -> Callable[[], bytes]:
        if any(c.name == name for c in CASES):
            raise ValueError(f"duplicate case {name}")
        CASES.append(Case(name, build, expect, about, **options))
        return build
    return register


# --- building blocks ---------------------------------------------------------------------


def asm(**changes: str | bytes | None) -> Files:
    """The valid ASM upload with files replaced (or removed, with None)."""
    files: Files = dict(uploads.asm_files())
    return _changed(files, changes)


def oneroster(version: str = "1.1", **changes: str | bytes | None) -> Files:
    files: Files = dict(uploads.oneroster_files(version))
    return _changed(files, changes)


def _changed(files: Files, changes: dict[str, str | bytes | None]) -> Files:
    for key, content in changes.items():
        name = key if "." in key else f"{key}.csv"
        if content is None:
            files.pop(name, None)
        else:
            files[name] = content
    return files


def text(files: Files, name: str) -> str:
    value = files[name]
    return value if isinstance(value, str) else value.decode("utf-8")


def zipped(files: Files, method: int = zipfile.ZIP_DEFLATED, **info: Any) -> bytes:
    """A ZIP of ``files`` (str → UTF-8) with fixed timestamps."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in files.items():
            entry = zipfile.ZipInfo(name, STAMP)
            entry.compress_type = method
            for key, value in info.items():
                setattr(entry, key, value)
            data = content.encode("utf-8") if isinstance(content, str) else content
            archive.writestr(entry, data)
    return buffer.getvalue()


@dataclass
class Member:
    """One entry of a hand-built ZIP, for what zipfile will not write."""

    name: bytes
    payload: bytes = b""
    """The bytes stored (already compressed for deflate)."""
    method: int = zipfile.ZIP_STORED
    size: int | None = None
    """Declared uncompressed size (default: the payload's length)."""
    crc: int | None = None
    flags: int = 0
    local_flags: int | None = None
    """Flags in the local header when they differ from the directory's."""
    external_attr: int = 0o100644 << 16
    same_data_as: int | None = None
    """No data of its own: the directory points at that earlier member's header."""
    compressed_size: int | None = None
    """Declared compressed size (default: the payload's length)."""


def raw_zip(members: list[Member], *, disk: int = 0, comment: bytes = b"") -> bytes:
    out = bytearray()
    central = bytearray()
    offsets: list[int] = []
    for member in members:
        size = len(member.payload) if member.size is None else member.size
        csize = len(member.payload) if member.compressed_size is None else member.compressed_size
        crc = zlib.crc32(member.payload) if member.crc is None else member.crc
        if member.same_data_as is None:
            offsets.append(len(out))
            local_flags = member.flags if member.local_flags is None else member.local_flags
            out += struct.pack("<4s5HL2L2H", b"PK\x03\x04", 20, local_flags, member.method,
                               0, 0x5B74, crc, csize, size, len(member.name), 0)
            out += member.name + member.payload
        else:
            offsets.append(offsets[member.same_data_as])
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, member.flags,
                               member.method, 0, 0x5B74, crc, csize, size, len(member.name),
                               0, 0, 0, 0, member.external_attr, offsets[-1])
        central += member.name
    start = len(out)
    out += central
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", disk, disk, len(members), len(members),
                       len(central), start, len(comment))
    return bytes(out + comment)


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def zeros_deflated(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MiB of zeros, made without holding them:
    after a full flush the compressor emits the same block for the same input."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + compressor.flush()


def members(files: Files) -> list[Member]:
    """The files as stored members of a hand-built ZIP."""
    return [Member(name.encode(), c.encode() if isinstance(c, str) else c)
            for name, c in files.items()]


def replace_line(content: str, start: str, new: str) -> str:
    """``content`` with the line beginning with ``start`` replaced by ``new``."""
    lines = content.split("\n")
    hits = [i for i, line in enumerate(lines) if line.startswith(start)]
    if len(hits) != 1:
        raise ValueError(f"{start!r} starts {len(hits)} lines")
    lines[hits[0]] = new
    return "\n".join(lines)


def students(*rows: str) -> str:
    header = text(uploads.asm_files(), "students.csv").split("\n", 1)[0]
    return "\n".join([header, *rows]) + "\n"


def users(*rows: str, version: str = "1.1") -> str:
    header = uploads.USERS_11 if version == "1.1" else uploads.USERS_12
    return "\n".join([header, *rows]) + "\n"


def header_only(files: Files, name: str) -> str:
    return text(files, name).split("\n", 1)[0] + "\n"


# --- the archive ---------------------------------------------------------------------------


@case("not_a_zip", E("ZIP_UNREADABLE"), "a CSV file uploaded as it is, not zipped")
def _() -> bytes:
    return text(asm(), "students.csv").encode()


@case("zero_byte_file", E("ZIP_UNREADABLE"), "an upload of 0 bytes")
def _() -> bytes:
    return b""


@case("pdf_named_zip", E("ZIP_UNREADABLE"), "a PDF renamed to .zip")
def _() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


@case("truncated_zip", E("ZIP_UNREADABLE"), "the upload cut off half way")
def _() -> bytes:
    raw = zipped(asm())
    return raw[: len(raw) // 2]


@case("truncated_end_record", E("ZIP_UNREADABLE"), "the last 8 bytes of the end record lost")
def _() -> bytes:
    return zipped(asm())[:-8]


@case("crc_mismatch", E("ZIP_UNREADABLE"), "one byte of a stored entry changed after zipping")
def _() -> bytes:
    raw = bytearray(zipped(asm(), zipfile.ZIP_STORED))
    at = raw.index(b"Zo\xc3\xab")
    raw[at] = ord("X")
    return bytes(raw)


@case("corrupt_deflate_stream", E("ZIP_UNREADABLE"), "garbage where deflate data should be")
def _() -> bytes:
    parts = members(asm())
    parts[1] = Member(b"students.csv", b"\xff" * 64, zipfile.ZIP_DEFLATED,
                      size=200, crc=0)
    return raw_zip(parts)


@case("bzip2_entry", E("ZIP_UNREADABLE", "FORMAT_UNKNOWN"),
      "every entry compressed with bzip2: none can be read, so no layout either")
def _() -> bytes:
    return zipped(asm(), zipfile.ZIP_BZIP2)


@case("lzma_entry", E("ZIP_UNREADABLE", "FORMAT_UNKNOWN"),
      "every entry compressed with LZMA (7-Zip's option)")
def _() -> bytes:
    return zipped(asm(), zipfile.ZIP_LZMA)


@case("deflate64_entry", E("ZIP_UNREADABLE"),
      "students.csv compressed with Deflate64 (Windows Explorer, large files)")
def _() -> bytes:
    parts = members(asm())
    parts[1].method = 9
    return raw_zip(parts)


@case("stored_sizes_disagree", E("ZIP_UNREADABLE"),
      "a stored entry whose compressed and uncompressed sizes differ")
def _() -> bytes:
    parts = members(asm())
    parts[1].size = len(parts[1].payload) + 10
    return raw_zip(parts)


@case("entry_runs_into_directory", E("ZIP_UNREADABLE"),
      "an entry whose compressed size runs past the start of the directory")
def _() -> bytes:
    parts = members(asm())
    parts[-1].compressed_size = len(parts[-1].payload) + 100
    return raw_zip(parts)


@case("local_header_other_name", E("ZIP_UNREADABLE"),
      "the directory says students.csv, the local header says student5.csv")
def _() -> bytes:
    raw = bytearray(raw_zip(members(asm())))
    at = raw.index(b"students.csv")  # the local header's copy comes first
    raw[at + 7] = ord("5")
    return bytes(raw)


@case("bad_local_signature", E("ZIP_UNREADABLE"), "a local header without its PK\\3\\4 mark")
def _() -> bytes:
    raw = bytearray(raw_zip(members(asm())))
    at = raw.index(b"students.csv") - 30
    raw[at : at + 4] = b"JUNK"
    return bytes(raw)


@case("zip64_claims_millions", E("ZIP_UNSAFE"),
      "a ZIP64 end record claiming 50 million entries")
def _() -> bytes:
    raw = zipped(asm())
    _, _, _, _, _, size, offset, _ = struct.unpack("<4s4H2LH", raw[-22:])
    body = raw[:-22]
    n = 50_000_000
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                      0xFFFFFFFF, 0)
    return body + record + locator + end


@case("folder_named_like_a_file", E("ZIP_NESTED_FOLDER", "FILE_MISSING"),
      "a folder entry 'students.csv/' instead of the file")
def _() -> bytes:
    files = asm()
    files["students.csv/"] = files.pop("students.csv")
    return raw_zip(members({k: (b"" if k.endswith("/") else v) for k, v in files.items()}))


@case("split_archive", E("ZIP_UNREADABLE"), "the end record of part 2 of a split ZIP")
def _() -> bytes:
    return raw_zip(members(asm()), disk=1)


@case("xlsx_as_upload", E("ZIP_NESTED_FOLDER", "ZIP_UNEXPECTED_FILE", "FORMAT_UNKNOWN"),
      "an Excel workbook (itself a ZIP) uploaded instead of the export")
def _() -> bytes:
    return zipped({
        "[Content_Types].xml": "<Types/>", "_rels/.rels": "<Relationships/>",
        "xl/workbook.xml": "<workbook/>", "xl/worksheets/sheet1.xml": "<worksheet/>",
    })


@case("empty_zip", E("FORMAT_UNKNOWN"), "a ZIP with no entries at all")
def _() -> bytes:
    return zipped({})


@case("nested_folder", E("ZIP_NESTED_FOLDER"),
      "the export folder zipped instead of its files")
def _() -> bytes:
    return zipped({f"export/{name}": c for name, c in asm().items()})


@case("windows_backslash_folder", E("ZIP_NESTED_FOLDER"),
      "a folder written with Windows separators (export\\students.csv)")
def _() -> bytes:
    return raw_zip(members({f"export\\{name}": c for name, c in asm().items()}))


@case("nested_zip", E("ZIP_UNEXPECTED_FILE", "FORMAT_UNKNOWN"),
      "the export ZIP zipped again")
def _() -> bytes:
    return zipped({"roster.zip": zipped(asm())})


@case("nested_zip_beside_csvs", E("ZIP_UNEXPECTED_FILE"), "a backup ZIP next to the CSVs")
def _() -> bytes:
    return zipped(asm(**{"backup.zip": zipped(asm())}))


@case("readme_beside_csvs", E("ZIP_UNEXPECTED_FILE"), "readme.txt next to the CSVs")
def _() -> bytes:
    return zipped(asm(**{"readme.txt": "Exported by the SIS\n"}))


@case("macos_finder_junk", (), "__MACOSX/ and .DS_Store from Finder: ignored, no issue")
def _() -> bytes:
    return zipped(asm(**{"__MACOSX/._students.csv": b"\x00\x05\x16\x07",
                         ".DS_Store": b"\x00\x00\x00\x01Bud1"}))


@case("dotdot_path", E("ZIP_UNSAFE", "FILE_MISSING"), "../students.csv (zip slip)")
def _() -> bytes:
    files = asm()
    files["../students.csv"] = files.pop("students.csv")
    return zipped(files)


@case("absolute_path", E("ZIP_UNSAFE", "FILE_MISSING"), "/students.csv, an absolute path")
def _() -> bytes:
    files = asm()
    files["/students.csv"] = files.pop("students.csv")
    return raw_zip(members(files))


@case("drive_letter_path", E("ZIP_UNSAFE", "FILE_MISSING"), "C:students.csv, a Windows drive")
def _() -> bytes:
    files = asm()
    files["C:students.csv"] = files.pop("students.csv")
    return raw_zip(members(files))


@case("symlink_entry", E("ZIP_UNSAFE"),
      "students.csv stored as a symlink to /etc/passwd")
def _() -> bytes:
    parts = members(asm())
    parts[1] = Member(b"students.csv", b"/etc/passwd", external_attr=(stat.S_IFLNK | 0o777) << 16)
    return raw_zip(parts)


@case("encrypted_entry", E("ZIP_UNSAFE"),
      "students.csv encrypted (general purpose flag bit 0)")
def _() -> bytes:
    parts = members(asm())
    parts[1].flags = 0x1
    return raw_zip(parts)


@case("encrypted_local_header_only", E("ZIP_UNSAFE"),
      "the directory says plain, the local header says encrypted")
def _() -> bytes:
    parts = members(asm())
    parts[1].local_flags = 0x1
    return raw_zip(parts)


@case("too_many_entries", E("ZIP_UNSAFE"), "65 entries, one over limits.max_entries")
def _() -> bytes:
    return zipped({**asm(), **{f"extra{i}.csv": "a\n1\n" for i in range(59)}})


@case("ratio_bomb", E("ZIP_UNSAFE"),
      "students.csv: 1 GiB of zeros in 1 MiB, refused from the directory")
def _() -> bytes:
    parts = members(asm())
    parts[1] = Member(b"students.csv", zeros_deflated(1024), zipfile.ZIP_DEFLATED,
                      size=1 << 30, crc=0)
    return raw_zip(parts)


@case("size_lie_bomb", E("ZIP_UNSAFE"),
      "students.csv declares 2,000 bytes and inflates to 256 MiB of zeros")
def _() -> bytes:
    parts = members(asm())
    parts[1] = Member(b"students.csv", zeros_deflated(256), zipfile.ZIP_DEFLATED,
                      size=2000, crc=0)
    return raw_zip(parts)


@case("overlapping_entries_bomb", E("ZIP_UNSAFE"),
      "20 directory entries share one compressed kernel (the Fifield bomb)")
def _() -> bytes:
    kernel = deflated(bytes(1 << 20))
    parts = members(asm())
    first = len(parts)
    parts.append(Member(b"kernel00.csv", kernel, zipfile.ZIP_DEFLATED, size=1 << 20))
    parts += [Member(f"kernel{i:02}.csv".encode(), kernel, zipfile.ZIP_DEFLATED, size=1 << 20,
                     same_data_as=first) for i in range(1, 20)]
    return raw_zip(parts)


@case("staggered_overlap_bomb", E("ZIP_UNSAFE"),
      "each entry's data runs over the next entry's header (quoted overlap)")
def _() -> bytes:
    kernel = deflated(b"a,b\n" * 50_000)
    names = [f"part{i}.csv".encode() for i in range(10)]
    headers = 30 * len(names) + sum(len(n) for n in names)
    out = members(asm())
    base = raw_zip(out)
    body_end = struct.unpack("<L", base[-6:-2])[0]  # where the directory starts
    body = bytearray(base[:body_end])
    central = bytearray(base[body_end:-22])
    data_end = body_end + headers + len(kernel)
    for name in names:
        offset = len(body)
        csize = data_end - (offset + 30 + len(name))
        body += struct.pack("<4s5HL2L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x5B74, 0, csize,
                            200_000, len(name), 0) + name
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 8, 0,
                               0x5B74, 0, csize, 200_000, len(name), 0, 0, 0, 0,
                               0o100644 << 16, offset) + name
    body += kernel
    count = len(out) + len(names)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
    return bytes(body + central + end)


@case("total_size_over_limit", E("ZIP_UNSAFE"),
      "three entries declaring 3 GiB each, past limits.max_total_bytes")
def _() -> bytes:
    parts = members(asm())
    kernel = deflated(b"x")
    for i in range(3):
        parts.append(Member(f"big{i}.csv".encode(), kernel, zipfile.ZIP_DEFLATED,
                            size=3 * (1 << 30), crc=0))
    return raw_zip(parts)


@case("zip64_end_record", (), "a ZIP64 end record, as big exports are written: accepted")
def _() -> bytes:
    raw = zipped(asm())
    _, _, _, n, _, size, offset, _ = struct.unpack("<4s4H2LH", raw[-22:])
    body = raw[:-22]
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                      0xFFFFFFFF, 0)
    return body + record + locator + end


@case("zip64_entries", (), "every entry with ZIP64 size fields (force_zip64): accepted")
def _() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in asm().items():
            with archive.open(zipfile.ZipInfo(name, STAMP), "w", force_zip64=True) as out:
                out.write(str(content).encode())
    return buffer.getvalue()


class _Unseekable(io.RawIOBase):
    """A write-only stream without seek, so zipfile writes data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def _streamed(files: Files) -> bytes:
    stream = _Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for name, content in files.items():
            with archive.open(zipfile.ZipInfo(name, STAMP), "w") as out:
                out.write(content.encode() if isinstance(content, str) else content)
    return bytes(stream.data)


@case("data_descriptor", (), "sizes and CRC after the data (a streaming zipper): accepted")
def _() -> bytes:
    return _streamed(asm())


@case("data_descriptor_bad_crc", E("ZIP_UNREADABLE"),
      "a streamed ZIP whose descriptor and directory CRC do not match the data")
def _() -> bytes:
    raw = bytearray(_streamed(asm()))
    at = raw.index(b"Ann,,Smith")
    raw[at] = ord("B")  # the data changed after the CRC was taken
    return bytes(raw)


@case("self_extracting_prefix", (), "64 KiB of stub before the ZIP (an SFX .exe): accepted")
def _() -> bytes:
    return b"MZ" + bytes(65534) + zipped(asm())


@case("end_record_in_comment", E("ZIP_UNREADABLE"),
      "the archive comment quotes an end record: ambiguous, refused (as zipfile reads it)")
def _() -> bytes:
    raw = zipped(asm())
    fake = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, 46, 0, 0)
    comment = b"copy of " + fake
    return raw[:-2] + struct.pack("<H", len(comment)) + comment


@case("longest_comment", (), "a 65,535-byte archive comment: accepted")
def _() -> bytes:
    raw = zipped(asm())
    return raw[:-2] + struct.pack("<H", 0xFFFF) + b"#" * 0xFFFF


@case("invalid_utf8_name", E("ZIP_UNREADABLE"),
      "an entry name flagged UTF-8 whose bytes are not UTF-8")
def _() -> bytes:
    parts = members(asm())
    parts.append(Member(b"sch\xfcler.csv", b"a\n", flags=0x800))
    return raw_zip(parts)


@case("cp437_name", E("ZIP_UNEXPECTED_FILE"),
      "Schüler.csv named in the DOS code page (no UTF-8 flag) beside the CSVs")
def _() -> bytes:
    parts = members(asm())
    parts.append(Member("Schüler.csv".encode("cp437"), b"a\n"))
    return raw_zip(parts)


@case("utf8_name_without_flag", E("ZIP_UNEXPECTED_FILE"),
      "Schüler.csv in UTF-8 bytes without the UTF-8 flag (read as cp437 mojibake)")
def _() -> bytes:
    parts = members(asm())
    parts.append(Member("Schüler.csv".encode(), b"a\n"))
    return raw_zip(parts)


@case("utf8_name_with_flag", (), "every name with the UTF-8 flag set: accepted")
def _() -> bytes:
    return raw_zip([Member(m.name, m.payload, flags=0x800) for m in members(asm())])


@case("homoglyph_file_name", E("ZIP_UNEXPECTED_FILE", "FILE_MISSING"),
      "students.csv spelled with a Cyrillic 's'")
def _() -> bytes:
    files = asm()
    files["\u0455tudents.csv"] = files.pop("students.csv")
    return zipped(files)


@case("trailing_space_name", E("ZIP_UNEXPECTED_FILE", "FILE_MISSING"),
      "'students.csv ' with a trailing space")
def _() -> bytes:
    files = asm()
    files["students.csv "] = files.pop("students.csv")
    return zipped(files)


@case("nul_in_entry_name", E("ZIP_UNSAFE"),
      "'students.csv\\0.exe': a name cut short by a NUL byte")
def _() -> bytes:
    parts = members(asm())
    parts[1].name = b"students.csv\x00.exe"
    return raw_zip(parts)


@case("duplicate_entry", E("FILE_DUPLICATE"), "students.csv twice")
def _() -> bytes:
    parts = members(asm())
    parts.append(Member(b"students.csv", str(asm()["students.csv"]).encode()))
    return raw_zip(parts)


@case("same_name_other_case", E("FILE_DUPLICATE"),
      "students.csv and Students.csv: two copies that differ only in case")
def _() -> bytes:
    return zipped(asm(Students=asm()["students.csv"]))


@case("file_name_case", E("FILE_NAME_CASE"), "Students.csv instead of students.csv")
def _() -> bytes:
    files = asm()
    files["Students.csv"] = files.pop("students.csv")
    return zipped(files)


@case("file_missing", E("FILE_MISSING"), "rosters.csv left out")
def _() -> bytes:
    return zipped(asm(rosters=None))


@case("oneroster_12_without_roles", E("FILE_MISSING"), "a OneRoster 1.2 upload without roles.csv")
def _() -> bytes:
    return zipped(oneroster("1.2", roles=None))


@case("zero_byte_csv", E("FILE_EMPTY"), "students.csv of 0 bytes")
def _() -> bytes:
    return zipped(asm(students=""))


@case("blank_lines_csv", E("FILE_EMPTY"), "staff.csv holding only line breaks")
def _() -> bytes:
    return zipped(asm(staff="\r\n\r\n\n"))


@case("bom_only_csv", E("FILE_EMPTY"), "courses.csv holding only a UTF-8 BOM")
def _() -> bytes:
    return zipped(asm(courses=codecs.BOM_UTF8))


@case("whitespace_only_csv", E("FILE_EMPTY"), "staff.csv holding spaces and tabs only")
def _() -> bytes:
    return zipped(asm(staff=" \t \r\n  \r\n"))


@case("mixed_layouts", E("FORMAT_UNKNOWN"), "ASM and OneRoster files in one ZIP")
def _() -> bytes:
    return zipped({**asm(), "users.csv": oneroster()["users.csv"]})


@case("courses_and_classes_only", E("FORMAT_UNKNOWN"), "only the two files both layouts share")
def _() -> bytes:
    files = asm()
    return zipped({"courses.csv": files["courses.csv"], "classes.csv": files["classes.csv"]})


@case("clever_export", E("FORMAT_FOREIGN"),
      "a Clever export (students.csv, enrollments.csv …), whose names both layouts share")
def _() -> bytes:
    return zipped({
        "schools.csv": "School_id,School_name\nS1,North High\n",
        "students.csv": "School_id,Student_id,Last_name,First_name\nS1,P1,Chen,Li\n",
        "teachers.csv": "School_id,Teacher_id,Last_name,First_name\nS1,T1,Smith,Ann\n",
        "sections.csv": "School_id,Section_id,Teacher_id\nS1,K1,T1\n",
        "enrollments.csv": "School_id,Section_id,Student_id\nS1,K1,P1\n",
    })


# --- the OneRoster manifest --------------------------------------------------------------


@case("manifest_version_1_0", E("MANIFEST_INVALID"), "oneroster.version 1.0")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.0")))


@case("manifest_excel_number", (),
      "Excel turned manifest.version 1.0 into 1 (it is not checked): accepted")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1").replace(
        "manifest.version,1.0", "manifest.version,1")))


@case("manifest_excel_version_1", E("MANIFEST_INVALID"),
      "oneroster.version saved by Excel as 1 (from a hand-typed 1.0)")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1").replace(
        "oneroster.version,1.1", "oneroster.version,1")))


@case("manifest_missing", W("MANIFEST_INVALID"), "no manifest.csv: version read from users.csv")
def _() -> bytes:
    return zipped(oneroster(manifest=None))


@case("manifest_declares_missing_file", E("MANIFEST_INVALID"),
      "file.demographics,bulk but no demographics.csv")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1", extra="file.demographics,bulk\n")))


@case("manifest_unknown_property", W("MANIFEST_INVALID"), "a misspelt property (file.demografics)")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1", extra="fiel.users,bulk\n")))


@case("manifest_present_declared_absent", W("MANIFEST_INVALID"),
      "demographics.csv present but declared absent")
def _() -> bytes:
    return zipped(oneroster(
        manifest=uploads.manifest("1.1", extra="file.demographics,absent\n"),
        demographics="sourcedId\nU1\n"))


@case("manifest_bad_mode", E("MANIFEST_INVALID"), "file.users,full: not absent, bulk or delta")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1").replace(
        "file.users,bulk", "file.users,full")))


@case("manifest_bad_header", E("MANIFEST_INVALID"), "manifest header 'property,value'")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1").replace(
        "propertyName,value", "property,value")))


@case("manifest_columns_swapped", (), "manifest header 'value,propertyName': matched by name")
def _() -> bytes:
    rows = uploads.manifest("1.1").splitlines()
    return zipped(oneroster(manifest="".join(",".join(reversed(r.split(","))) + "\n"
                                             for r in rows)))


@case("manifest_empty", E("MANIFEST_INVALID"), "manifest.csv of 0 bytes")
def _() -> bytes:
    return zipped(oneroster(manifest=""))


@case("manifest_nul_bytes", E("ENCODING_INVALID"), "manifest.csv saved as UTF-16 without a BOM")
def _() -> bytes:
    return zipped(oneroster(manifest=uploads.manifest("1.1").encode("utf-16-le")))


# --- headers -------------------------------------------------------------------------------


@case("header_missing_column", E("HEADER_MISSING_COLUMN"), "students.csv without last_name")
def _() -> bytes:
    rows = [line.split(",") for line in text(asm(), "students.csv").splitlines()]
    return zipped(asm(students="\n".join(",".join(r[:4] + r[5:]) for r in rows) + "\n"))


@case("header_near_miss", E("HEADER_NEAR_MISS"), "users.csv with 'grade' for 'grades'")
def _() -> bytes:
    return zipped(oneroster(users=text(oneroster(), "users.csv").replace(",grades,", ",grade,", 1)))


@case("header_missing_unused", W("HEADER_MISSING_UNUSED"),
      "users.csv without sms, a column the sync never reads")
def _() -> bytes:
    rows = [line.split(",") for line in text(oneroster(), "users.csv").splitlines()]
    at = rows[0].index("sms")
    return zipped(oneroster(users="\n".join(",".join(r[:at] + r[at + 1:]) for r in rows) + "\n"))


@case("header_field_count", E("HEADER_FIELD_COUNT"),
      "orgs.csv's header names one column more than every record has (an unknown one, "
      "named in the issue; the records are read without it)")
def _() -> bytes:
    return zipped(oneroster(orgs=text(oneroster(), "orgs.csv").replace(
        "parentSourcedId", "parentSourcedId,extra", 1)))


@case("header_column_case", E("HEADER_COLUMN_CASE"), "Person_ID instead of person_id")
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").replace("person_id", "Person_ID", 1)))


@case("asm_unknown_column", E("HEADER_UNKNOWN_COLUMN"), "an extra 'homeroom' column in ASM")
def _() -> bytes:
    rows = text(asm(), "staff.csv").splitlines()
    out = [rows[0] + ",homeroom", *(r + ",101" for r in rows[1:])]
    return zipped(asm(staff="\n".join(out) + "\n"))


@case("oneroster_unknown_column", W("HEADER_UNKNOWN_COLUMN"), "an extra column in orgs.csv")
def _() -> bytes:
    rows = text(oneroster(), "orgs.csv").splitlines()
    out = [rows[0] + ",region", *(r + ",north" for r in rows[1:])]
    return zipped(oneroster(orgs="\n".join(out) + "\n"))


@case("duplicate_header", E("HEADER_DUPLICATE_COLUMN"), "rosters.csv with student_id twice")
def _() -> bytes:
    rows = text(asm(), "rosters.csv").splitlines()
    out = [rows[0] + ",student_id", *(r + "," + r.rsplit(",", 1)[1] for r in rows[1:])]
    return zipped(asm(rosters="\n".join(out) + "\n"))


@case("padded_header_names", (), "' person_id ' with spaces around header names: accepted")
def _() -> bytes:
    content = text(asm(), "locations.csv").replace("location_id,location_name",
                                                   " location_id , location_name ")
    return zipped(asm(locations=content))


def _million_columns() -> str:
    return ",".join(["location_id", "location_name", *(["x"] * 999_998)]) + "\nS1,North\n"


@case("million_columns_stored", E("ROW_COLUMN_COUNT"),
      "a header line of a million columns, stored uncompressed")
def _() -> bytes:
    return zipped(asm(locations=_million_columns()), zipfile.ZIP_STORED)


@case("million_columns_deflated", E("ZIP_UNSAFE"),
      "the same header deflated: over 200:1, refused from the directory")
def _() -> bytes:
    return zipped(asm(locations=_million_columns()))


@case("trailing_separator", W("HEADER_BLANK_COLUMNS"),
      "every line of locations.csv ends with a separator: an unnamed, empty column, ignored")
def _() -> bytes:
    rows = text(asm(), "locations.csv").splitlines()
    return zipped(asm(locations="".join(r + ",\n" for r in rows)))


@case("all_fields_quoted", (), "every field quoted, header included: accepted")
def _() -> bytes:
    rows = text(asm(), "courses.csv").splitlines()
    return zipped(asm(courses="".join(",".join(f'"{v}"' for v in r.split(",")) + "\r\n"
                                      for r in rows)))


@case("quoted_line_breaks", E("VALUE_TOO_LONG"),
      "a course name holding 10,000 quoted line breaks: read whole, over the 255 limit")
def _() -> bytes:
    content = text(asm(), "courses.csv").replace("Algebra", '"Alg' + "\n" * 10_000 + 'ebra"')
    return zipped(asm(courses=content))


@case("semicolon_separated_asm", (), "ASM files separated by ';' (European Excel): accepted")
def _() -> bytes:
    return zipped({name: str(c).replace(",", ";") for name, c in asm().items()})


# --- encodings and line breaks --------------------------------------------------------------


@case("cp1252_names", W("ENCODING_CONVERTED"), "students.csv saved by US Excel (Windows-1252)")
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").encode("cp1252")))


@case("utf16le_with_bom", W("ENCODING_CONVERTED"), "staff.csv in UTF-16 LE with a BOM")
def _() -> bytes:
    return zipped(asm(staff=codecs.BOM_UTF16_LE + text(asm(), "staff.csv").encode("utf-16-le")))


@case("utf16be_with_bom", W("ENCODING_CONVERTED"), "staff.csv in UTF-16 BE with a BOM")
def _() -> bytes:
    return zipped(asm(staff=codecs.BOM_UTF16_BE + text(asm(), "staff.csv").encode("utf-16-be")))


@case("excel_unicode_text",
      E("HEADER_MISSING_COLUMN", "HEADER_UNKNOWN_COLUMN") + W("ENCODING_CONVERTED"),
      "Excel's 'Unicode Text': UTF-16 with a BOM and tab-separated")
def _() -> bytes:
    content = text(asm(), "locations.csv").replace(",", "\t")
    return zipped(asm(locations=codecs.BOM_UTF16_LE + content.encode("utf-16-le")))


@case("utf16_without_bom", E("ENCODING_INVALID"), "UTF-16 LE without a BOM (NUL bytes)")
def _() -> bytes:
    return zipped(asm(staff=text(asm(), "staff.csv").encode("utf-16-le")))


@case("utf16_odd_length", E("ENCODING_INVALID"), "UTF-16 with a BOM, cut off mid-character")
def _() -> bytes:
    data = codecs.BOM_UTF16_LE + text(asm(), "staff.csv").encode("utf-16-le")
    return zipped(asm(staff=data[:-1] + b"\x00\xd8"))


@case("undefined_cp1252_bytes", E("ENCODING_INVALID"),
      "bytes 0x81 and 0x8D: neither UTF-8 nor Windows-1252")
def _() -> bytes:
    return zipped(asm(courses=text(asm(), "courses.csv").encode().replace(b"Algebra",
                                                                          b"Alg\x81\x8dbra")))


@case("nul_bytes", E("ENCODING_INVALID"), "a NUL byte inside a name")
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").replace("Chen", "Ch\x00en")))


@case("utf8_bom", (), "a UTF-8 BOM at the start of every file: accepted silently")
def _() -> bytes:
    return zipped({name: codecs.BOM_UTF8 + str(c).encode() for name, c in asm().items()})


@case("bom_in_the_middle", E("VALUE_INVALID"),
      "a BOM before a record's ID, from pasting two exports together")
def _() -> bytes:
    content = text(asm(), "locations.csv") + "\ufeffS3,West Elementary\n"
    return zipped(asm(locations=content))


@case("concatenated_exports", E("VALUE_INVALID", "ID_DUPLICATE", "REFERENCE_MISSING"),
      "courses.csv appended to itself, BOM and header included (the header row becomes a "
      "record naming location 'location_id')")
def _() -> bytes:
    content = "\ufeff" + text(asm(), "courses.csv")
    return zipped(asm(courses=(content + content).encode()))


@case("cr_only_line_breaks", (), "every file with classic-Mac CR line breaks: accepted")
def _() -> bytes:
    return zipped({name: str(c).replace("\n", "\r") for name, c in asm().items()})


@case("crlf_line_breaks", (), "every file with CRLF line breaks: accepted")
def _() -> bytes:
    return zipped({name: str(c).replace("\n", "\r\n") for name, c in asm().items()})


@case("mixed_line_breaks", (), "LF, CRLF and a lone CR in one file: accepted")
def _() -> bytes:
    rows = text(asm(), "students.csv").splitlines()
    return zipped(asm(students=rows[0] + "\n" + rows[1] + "\r\n" + rows[2] + "\r" + rows[3]
                      + "\n"))


@case("ctrl_z_at_end", E("ROW_COLUMN_COUNT"), "a DOS end-of-file mark (Ctrl-Z) on its own line")
def _() -> bytes:
    return zipped(asm(rosters=text(asm(), "rosters.csv") + "\x1a"))


# --- records and values -------------------------------------------------------------------


@case("unbalanced_quote", E("ROW_COLUMN_COUNT") + W("PATCHED_REFERENCE"),
      'a name with an opening " only: the rest of staff.csv is one bad record, so T2 is '
      "patched out of its class")
def _() -> bytes:
    return zipped(asm(staff=text(asm(), "staff.csv").replace("Bob,", '"Bob,')))


@case("extra_field", E("ROW_COLUMN_COUNT", "REFERENCE_MISSING"),
      "a course with one field too many: left out, so its class names a missing course")
def _() -> bytes:
    return zipped(asm(courses=text(asm(), "courses.csv").replace("Science,S2", "Science,S2,x")))


@case("misplaced_quote", (), 'a quote inside an unquoted field (ab"c), read as Excel does')
def _() -> bytes:
    return zipped(asm(courses=text(asm(), "courses.csv").replace("Algebra", 'Alg"ebra')))


@case("field_100k_characters", E("VALUE_TOO_LONG"),
      "a 100,000-character course name: read, over the 255-character limit")
def _() -> bytes:
    return zipped(asm(courses=text(asm(), "courses.csv").replace("Algebra", "A" * 100_000)))


@case("field_100k_unclosed_quote", E("ROW_COLUMN_COUNT", "REFERENCE_MISSING"),
      "a quoted 100,000-character field that is never closed")
def _() -> bytes:
    content = text(asm(), "courses.csv").replace("Algebra", '"' + "A" * 100_000)
    return zipped(asm(courses=content))


@case("field_200k_misquoted", E("ROW_COLUMN_COUNT", "REFERENCE_MISSING"),
      "a 200,000-character quoted field in a file with a stray quote")
def _() -> bytes:
    content = text(asm(), "courses.csv").replace("Algebra", '"' + "A" * 200_000 + '"')
    return zipped(asm(courses=content.replace("Science", 'Sci"ence')))


@case("blank_required_value", E("VALUE_REQUIRED"), "a student without a first name")
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").replace("Li,", ",")))


@case("excel_blank_rows", E("VALUE_REQUIRED") + W("EMAIL_MISSING"),
      "rows of separators only, left by cleared cells in Excel")
def _() -> bytes:
    return zipped(asm(staff=text(asm(), "staff.csv") + ",,,,,,,\n,,,,,,,\n"))


@case("password_policy_5", E("VALUE_INVALID"), "password_policy 5")
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").replace("lchen,4,", "lchen,5,")))


@case("id_with_space", E("VALUE_INVALID", "REFERENCE_MISSING"),
      "a location_id with a space; the records at that location name a missing one")
def _() -> bytes:
    content = text(asm(), "locations.csv").replace("S2,South", "S 2,South")
    return zipped(asm(locations=content))


@case("excel_scientific_id", E("VALUE_INVALID", "REFERENCE_MISSING"),
      "a long numeric course_id turned into 1.23457E+11 by Excel")
def _() -> bytes:
    files = asm()
    content = text(files, "courses.csv").replace("C1,MATH9", "1.23457E+11,MATH9")
    return zipped(asm(courses=content))


@case("excel_us_dates", E("VALUE_INVALID"), "startDate saved as 08/15/2024 (used by the term filter)")
def _() -> bytes:
    content = text(oneroster(), "academicSessions.csv").replace("2026-08-01,2027-01-15",
                                                                "08/01/2026,01/15/2027")
    return zipped(oneroster(academicSessions=content))


@case("excel_us_dates_unused", W("VALUE_INVALID"),
      "an enrollment beginDate saved as 08/15/2024 (not used: dropped)")
def _() -> bytes:
    content = text(oneroster(), "enrollments.csv").replace("student,false,,",
                                                           "student,false,08/15/2024,", 1)
    return zipped(oneroster(enrollments=content))


@case("excel_datetime", W("VALUE_INVALID"),
      "dateLastModified as 8/15/2024 10:00 AM in a bulk file (not used: dropped)")
def _() -> bytes:
    content = text(oneroster(), "orgs.csv").replace("S1,,,", "S1,,8/15/2024 10:00 AM,")
    return zipped(oneroster(orgs=content))


@case("enabled_user_upper_case", W("VALUE_CASE"), "enabledUser TRUE (Excel's boolean)")
def _() -> bytes:
    content = text(oneroster(), "users.csv").replace("U2,,,true", "U2,,,TRUE")
    return zipped(oneroster(users=content))


@case("role_title_case", W("VALUE_CASE"), "users.role 'Student'")
def _() -> bytes:
    content = text(oneroster(), "users.csv").replace(",student,bo,", ",Student,bo,")
    return zipped(oneroster(users=content))


@case("class_type_invalid", W("VALUE_INVALID"), "classType 'lecture' (not used: dropped)")
def _() -> bytes:
    content = text(oneroster(), "classes.csv").replace("scheduled,,S2", "lecture,,S2")
    return zipped(oneroster(classes=content))


@case("org_type_invalid", W("VALUE_INVALID"), "orgs.type 'campus' (never read: dropped)")
def _() -> bytes:
    content = text(oneroster(), "orgs.csv").replace("South Middle,school", "South Middle,campus")
    return zipped(oneroster(orgs=content))


@case("oneroster_12_ext_values", (), "1.2 extension terms (ext:) in roles.role: accepted")
def _() -> bytes:
    files = oneroster("1.2")
    content = text(files, "roles.csv") + "R10,,,U9,secondary,ext:coach,,,S1,\n"
    return zipped(oneroster("1.2", roles=content))


@case("delta_without_status", E("VALUE_REQUIRED"),
      "a delta users.csv whose status and dateLastModified are blank")
def _() -> bytes:
    files = oneroster(manifest=uploads.manifest("1.1", mode="delta"))
    return zipped(files)


@case("user_without_org", E("VALUE_REQUIRED"), "a student with no orgSourcedIds")
def _() -> bytes:
    content = text(oneroster(), "users.csv").replace("U2,,,true,S2,", "U2,,,true,,")
    return zipped(oneroster(users=content))


@case("many_bad_rows", E("VALUE_INVALID"),
      "200,000 students with password_policy 5: one issue each, bounded time and memory")
def _() -> bytes:
    header = text(asm(), "students.csv").split("\n", 1)[0]
    rows = "".join(f"Q{n},{n},Ann,,Lee,9,q{n}@d.example,q{n},5,S1\n" for n in range(200_000))
    return zipped(asm(students=header + "\n" + rows, rosters="roster_id,class_id,student_id\n"))


@case("id_duplicate", E("ID_DUPLICATE"), "course_id C1 twice")
def _() -> bytes:
    return zipped(asm(courses=text(asm(), "courses.csv") + "C1,MATH9B,Algebra B,S1\n"))


@case("id_student_and_staff", E("ID_DUPLICATE"), "person_id P1 for a student and a teacher")
def _() -> bytes:
    return zipped(asm(staff=text(asm(), "staff.csv") + "P1,9003,Cy,,Diaz,cy@d.example,cd,S1\n"))


@case("reference_class_course", E("REFERENCE_MISSING"), "a class naming a course not in courses.csv")
def _() -> bytes:
    return zipped(asm(classes=text(asm(), "classes.csv").replace("K2,2,C2", "K2,2,C9")))


@case("reference_person_location", E("REFERENCE_MISSING"),
      "a student at a location not in locations.csv")
def _() -> bytes:
    content = text(asm(), "students.csv").replace("lchen,4,S2", "lchen,4,S9")
    return zipped(asm(students=content))


@case("reference_class_term", E("REFERENCE_MISSING"), "a class naming a term not in academicSessions")
def _() -> bytes:
    content = text(oneroster(), "classes.csv").replace("S2,T2,", "S2,T9,")
    return zipped(oneroster(classes=content))


@case("reference_filtered_school", E("REFERENCE_MISSING"),
      "a class at S1 whose course sits at S2, with the school filter on S1",
      tenant={"filter": {"schools": ["S1"]}})
def _() -> bytes:
    return zipped(asm(courses=text(asm(), "courses.csv").replace("Algebra,S1", "Algebra,S2")))


@case("patched_roster", W("PATCHED_REFERENCE"), "a roster row naming a student not in students.csv")
def _() -> bytes:
    return zipped(asm(rosters=text(asm(), "rosters.csv") + "R4,K2,P9\n"))


@case("patched_instructor", W("PATCHED_REFERENCE"), "a class whose instructor is not in staff.csv")
def _() -> bytes:
    return zipped(asm(classes=text(asm(), "classes.csv").replace("K2,2,C2,T2,", "K2,2,C2,T2,T7")))


@case("roster_unpatched", E("REFERENCE_MISSING"),
      "the same dangling roster row with patch.rosters off",
      tenant={"patch": {"rosters": False}})
def _() -> bytes:
    return zipped(asm(rosters=text(asm(), "rosters.csv") + "R4,K2,P9\n"))


@case("email_missing", W("EMAIL_MISSING"), "a teacher without an email address")
def _() -> bytes:
    return zipped(asm(staff=text(asm(), "staff.csv").replace("bob.jones@d.example", "")))


@case("email_apostrophe", W("EMAIL_INVALID"), "ann.o'neil@d.example")
def _() -> bytes:
    content = text(asm(), "staff.csv").replace("ann.smith@d.example", "ann.o'neil@d.example")
    return zipped(asm(staff=content))


@case("email_malformed", W("EMAIL_INVALID"), "an email without a domain part")
def _() -> bytes:
    content = text(asm(), "students.csv").replace("li.chen@d.example", "li.chen@")
    return zipped(asm(students=content))


# --- the sync (planned against a store) ---------------------------------------------------


def _person(account_id: int, person_id: str, first: str, last: str, email: str,
            **more: Any) -> dict[str, Any]:
    """One stored account, as a row of the snapshot's people frame."""
    row = {"account_id": account_id, "person_id": person_id, "role": "student",
           "first_name": first, "last_name": last, "email_address": email,
           "location_ids": ["S1"], "account": f"{first}.{last}@appleid.example".lower(),
           "status": "active", "source": "sis"}
    row.update(more)
    return row


@case("account_name_failed", E("ACCOUNT_NAME_FAILED"),
      "account_format {sis_username} and a new student without one",
      tenant={"account_format": "{sis_username}"}, existing=())
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").replace("lchen,", ",")))


@case("account_name_all_folded_away", E("ACCOUNT_NAME_FAILED"),
      "a name with no Latin letter (王 李) leaves an empty account name", existing=())
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv").replace("Li,,Chen", "王,,李")))


@case("match_ambiguous", E("MATCH_AMBIGUOUS"),
      "two new SIS ids matching one existing account on name and email",
      existing=(_person(1, "OLD1", "Li", "Chen", "li.chen@d.example"),))
def _() -> bytes:
    return zipped(asm(students=text(asm(), "students.csv") + "P4,1004,Li,,Chen,6,"
                      "li.chen@d.example,lchen2,,S2\n"))


@case("account_local", W("ACCOUNT_LOCAL"), "a locally edited account the SIS would change",
      existing=(_person(1, "P3", "Li", "Chen-Local", "li.chen@d.example", source="local",
                        person_number="1003", grade_level="6", sis_username="lchen",
                        password_policy="4", location_ids=["S2"]),))
def _() -> bytes:
    return zipped(asm())


@case("change_threshold", E("CHANGE_THRESHOLD"),
      "an export that drops 10 of 13 active people (the guard holds it)",
      tenant={"guard": {"min_population": 5}},
      existing=tuple(_person(n + 1, f"X{n}", f"First{n}", f"Last{n}", f"x{n}@d.example")
                     for n in range(10)))
def _() -> bytes:
    return zipped(asm())


# --- writing ----------------------------------------------------------------------------


def generate() -> Iterator[tuple[Case, bytes]]:
    for entry in CASES:
        yield entry, entry.build()


def write_corpus(folder: Path) -> list[dict[str, Any]]:
    """Write every case as ``<name>.zip`` plus ``cases.json``; returns the index."""
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for entry, data in generate():
        (folder / f"{entry.name}.zip").write_bytes(data)
        index.append(entry.index())
    (folder / "cases.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the uploads and cases.json")
    args = parser.parse_args(argv)
    index = write_corpus(args.folder)
    print(f"wrote {len(index)} cases to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
