"""formats.archive: vetting an uploaded ZIP and inflating its entries safely."""

from __future__ import annotations

import io
import stat
import struct
import time
import tracemalloc
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.config import LimitSettings
from rosterdrop.pipeline.archive import Entry, UploadArchive, open_upload
from rosterdrop.pipeline.issues import Issue, IssueLog

LIMITS = LimitSettings()
CSV = b"location_id,location_name\n1,Main\n"


def _zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _open(
    raw: bytes | Path, limits: LimitSettings = LIMITS
) -> tuple[UploadArchive | None, list[Issue], IssueLog]:
    issues = IssueLog()
    archive = open_upload(raw, limits, issues)
    return archive, list(issues), issues


def _summary(issues: list[Issue]) -> list[tuple[str, str, str | None]]:
    return [(i.code, i.severity, i.file) for i in issues]


@dataclass
class Member:
    """One entry of a hand-built ZIP, for what zipfile refuses to write."""

    name: str
    payload: bytes
    """The bytes stored (already compressed when method is deflate)."""
    method: int = zipfile.ZIP_STORED
    size: int | None = None
    """Declared uncompressed size; the payload's length by default."""
    crc: int | None = None
    flags: int = 0
    external_attr: int = 0o100644 << 16
    same_data_as: int | None = None
    """Write no data; point the directory at that earlier member's header."""


def _raw_zip(members: list[Member], *, declared_count: int | None = None) -> bytes:
    out = bytearray()
    central = bytearray()
    offsets: list[int] = []
    for member in members:
        name = member.name.encode()
        size = len(member.payload) if member.size is None else member.size
        crc = zlib.crc32(member.payload) if member.crc is None else member.crc
        if member.same_data_as is None:
            offset = len(out)
            out += struct.pack(
                "<4s5HL2L2H", b"PK\x03\x04", 20, member.flags, member.method, 0, 0x21,
                crc, len(member.payload), size, len(name), 0,
            )
            out += name + member.payload
        else:
            offset = offsets[member.same_data_as]
        offsets.append(offset)
        central += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, member.flags, member.method, 0,
            0x21, crc, len(member.payload), size, len(name), 0, 0, 0, 0,
            member.external_attr, offset,
        )
        central += name
    count = len(members) if declared_count is None else declared_count
    start = len(out)
    out += central
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(central), start, 0)
    return bytes(out)


def _zeros_deflated(megabytes: int) -> bytes:
    """A raw deflate stream of ``megabytes`` MiB of zeros, built without inflating
    anything: after a full flush the compressor emits the same block again."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * megabytes + compressor.flush()


def _as_zip64(raw: bytes, *, count: int | None = None) -> bytes:
    """The same ZIP with a ZIP64 end record (and, optionally, a claimed entry count)."""
    _, _, _, n, _, size, offset, _ = struct.unpack("<4s4H2LH", raw[-22:])
    entries = n if count is None else count
    body = raw[:-22]
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries,
                         size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                      0xFFFFFFFF, 0)
    return body + record + locator + end


# --- accepted uploads -------------------------------------------------------------


def test_clean_archive_lists_and_reads_entries() -> None:
    """Flat .csv entries are listed with their sizes and inflate to their bytes."""
    raw = _zip({"locations.csv": CSV, "students.csv": b"person_id\n"})
    archive, issues, _ = _open(raw)
    assert archive is not None and issues == []
    with archive:
        assert set(archive.entries) == {"locations.csv", "students.csv"}
        entry = archive.entries["locations.csv"]
        assert isinstance(entry, Entry)
        assert entry.name == "locations.csv" and entry.size == len(CSV)
        assert entry.compressed_size > 0
        assert archive.ignored == []
        assert archive.read("locations.csv") == CSV
        assert archive.read("students.csv") == b"person_id\n"


def test_stored_entries_and_path_source(tmp_path: Path) -> None:
    """An uncompressed ZIP given as a path reads the same; close releases the file."""
    path = tmp_path / "upload.zip"
    path.write_bytes(_zip({"orgs.csv": CSV}, zipfile.ZIP_STORED))
    archive, issues, _ = _open(path)
    assert archive is not None and issues == []
    with archive:
        assert archive.read("orgs.csv") == CSV


def test_empty_zip_has_no_entries() -> None:
    """A ZIP without files is readable; the layout check reports what is missing."""
    archive, issues, _ = _open(_zip({}))
    assert archive is not None and issues == []
    assert archive.entries == {}


def test_csv_extension_in_any_case_is_accepted() -> None:
    """Students.CSV is a CSV file (the layout check judges the name's case)."""
    archive, issues, _ = _open(_zip({"Students.CSV": CSV}))
    assert archive is not None and issues == []
    assert list(archive.entries) == ["Students.CSV"]


def test_macos_finder_files_ignored_and_listed() -> None:
    """__MACOSX/ entries and .DS_Store files are ignored without an issue, and listed."""
    raw = _zip({
        "users.csv": CSV,
        "__MACOSX/": b"",
        "__MACOSX/._users.csv": b"\x00\x05\x16\x07",
        ".DS_Store": b"Bud1",
    })
    archive, issues, _ = _open(raw)
    assert archive is not None and issues == []
    assert list(archive.entries) == ["users.csv"]
    assert archive.ignored == ["__MACOSX/", "__MACOSX/._users.csv", ".DS_Store"]


def test_small_repetitive_entry_is_not_a_bomb() -> None:
    """A tiny CSV may compress better than the ratio limit; below 1 MiB that is fine."""
    data = b"id\n" + b"x\n" * 200_000
    archive, issues, _ = _open(_zip({"rosters.csv": data}))
    assert archive is not None and issues == []
    assert archive.read("rosters.csv") == data


# --- entries refused, archive kept -----------------------------------------------------


def test_nested_folder_reported_once_per_folder() -> None:
    """Files inside a folder: one ZIP_NESTED_FOLDER naming the folder; told to zip the files."""
    raw = _zip({
        "export/": b"",
        "export/students.csv": CSV,
        "export/staff.csv": CSV,
        "classes.csv": CSV,
    })
    archive, issues, _ = _open(raw)
    assert archive is not None
    assert list(archive.entries) == ["classes.csv"]
    assert _summary(issues) == [("ZIP_NESTED_FOLDER", "error", "export/")]
    message = issues[0].message
    assert "'export/'" in message and "export/students.csv" in message
    assert "not the folder" in message and "files themselves" in message


def test_directory_entry_alone_counts_as_nested_folder() -> None:
    """An empty folder in the ZIP is a folder all the same."""
    archive, issues, _ = _open(_zip({"data/": b"", "orgs.csv": CSV}))
    assert archive is not None
    assert _summary(issues) == [("ZIP_NESTED_FOLDER", "error", "data/")]


def test_windows_backslash_path_is_a_folder() -> None:
    """A Windows-style path (export\\users.csv) is a folder too."""
    archive, issues, _ = _open(_zip({"export\\users.csv": CSV}))
    assert archive is not None and archive.entries == {}
    assert _summary(issues) == [("ZIP_NESTED_FOLDER", "error", "export/")]


@pytest.mark.parametrize("name", ["readme.txt", "export.xlsx", "students.csv.bak"])
def test_unexpected_file(name: str) -> None:
    """A file that is not .csv: ZIP_UNEXPECTED_FILE naming it; the CSVs still come through."""
    archive, issues, _ = _open(_zip({name: b"hello", "orgs.csv": CSV}))
    assert archive is not None
    assert list(archive.entries) == ["orgs.csv"]
    assert _summary(issues) == [("ZIP_UNEXPECTED_FILE", "error", name)]
    assert repr(name) in issues[0].message and "not a CSV file" in issues[0].message


@pytest.mark.parametrize("name", ["../users.csv", "a/../../users.csv", "/etc/users.csv",
                                  "C:/users.csv", "..\\users.csv"])
def test_escaping_paths_are_unsafe(name: str) -> None:
    """Absolute or .. paths: ZIP_UNSAFE naming the entry, which is left out."""
    archive, issues, _ = _open(_raw_zip([Member(name, CSV), Member("orgs.csv", CSV)]))
    assert archive is not None
    assert list(archive.entries) == ["orgs.csv"]
    assert _summary(issues) == [("ZIP_UNSAFE", "error", name)]
    assert repr(name) in issues[0].message


def test_symlink_entry_is_unsafe() -> None:
    """An entry whose unix mode is a symlink: ZIP_UNSAFE."""
    link = Member("users.csv", b"/etc/passwd", external_attr=(stat.S_IFLNK | 0o777) << 16)
    archive, issues, _ = _open(_raw_zip([link]))
    assert archive is not None and archive.entries == {}
    assert _summary(issues) == [("ZIP_UNSAFE", "error", "users.csv")]
    assert "link" in issues[0].message and "users.csv" in issues[0].message


def test_encrypted_entry_is_unsafe() -> None:
    """General-purpose flag bit 0 (encryption): ZIP_UNSAFE, never decrypted."""
    archive, issues, _ = _open(_raw_zip([Member("users.csv", CSV, flags=0x1)]))
    assert archive is not None and archive.entries == {}
    assert _summary(issues) == [("ZIP_UNSAFE", "error", "users.csv")]
    assert "encrypted" in issues[0].message and "password" in issues[0].message


def test_duplicate_names() -> None:
    """Two entries with one name: FILE_DUPLICATE; the first copy is the one read."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("users.csv", CSV)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("users.csv", b"other\n")
    archive, issues, _ = _open(buffer.getvalue())
    assert archive is not None
    assert _summary(issues) == [("FILE_DUPLICATE", "error", "users.csv")]
    assert "users.csv" in issues[0].message and "more than once" in issues[0].message
    assert archive.read("users.csv") == CSV


def test_unsupported_compression_is_unreadable() -> None:
    """bzip2 (or any method but stored/deflate): ZIP_UNREADABLE naming the entry."""
    archive, issues, _ = _open(_zip({"users.csv": CSV * 100}, zipfile.ZIP_BZIP2))
    assert archive is not None and archive.entries == {}
    assert _summary(issues) == [("ZIP_UNREADABLE", "error", "users.csv")]
    assert "bzip2" in issues[0].message and "deflate" in issues[0].message


def test_zip64_end_record() -> None:
    """A ZIP64 archive (as big exports are written) is found and read like any other."""
    archive, issues, _ = _open(_as_zip64(_zip({"users.csv": CSV, "orgs.csv": CSV})))
    assert archive is not None and issues == []
    assert archive.read("orgs.csv") == CSV


def test_zip64_entry_count_over_limit() -> None:
    """A ZIP64 end record claiming millions of entries is refused before they are parsed."""
    raw = _as_zip64(_zip({"users.csv": CSV}), count=5_000_000)
    archive, issues, _ = _open(raw)
    assert archive is None
    assert _summary(issues) == [("ZIP_UNSAFE", "error", None)]
    assert "5,000,000 entries" in issues[0].message


# --- limits and bombs -----------------------------------------------------------------------


def test_too_many_entries() -> None:
    """More entries than limits.max_entries: ZIP_UNSAFE and no archive."""
    raw = _zip({f"f{i}.csv": CSV for i in range(5)})
    archive, issues, _ = _open(raw, LimitSettings(max_entries=4))
    assert archive is None
    assert _summary(issues) == [("ZIP_UNSAFE", "error", None)]
    assert "5 entries" in issues[0].message and "limit of 4" in issues[0].message


def test_entry_count_is_taken_from_the_directory_not_its_claim() -> None:
    """An end record that claims fewer entries than the directory holds does not help."""
    raw = _raw_zip([Member(f"f{i}.csv", CSV) for i in range(6)], declared_count=1)
    archive, issues, _ = _open(raw, LimitSettings(max_entries=4))
    assert archive is None
    assert _summary(issues) == [("ZIP_UNSAFE", "error", None)]
    assert "more than 4 entries" in issues[0].message


def test_total_size_limit() -> None:
    """Declared sizes adding up past limits.max_total_bytes: ZIP_UNSAFE and no archive."""
    raw = _zip({"a.csv": bytes(600), "b.csv": bytes(600)})
    archive, issues, _ = _open(raw, LimitSettings(max_total_bytes=1000))
    assert archive is None
    assert _summary(issues) == [("ZIP_UNSAFE", "error", None)]
    assert "1,200 bytes" in issues[0].message and "1,000" in issues[0].message


def test_ratio_bomb_refused_from_the_directory() -> None:
    """1 GiB of zeros deflated to ~1 MiB: over the ratio limit, refused without inflating."""
    bomb = Member("users.csv", _zeros_deflated(1024), method=zipfile.ZIP_DEFLATED,
                  size=1 << 30, crc=0)
    archive, issues, _ = _open(_raw_zip([bomb, Member("orgs.csv", CSV)]))
    assert archive is not None
    assert list(archive.entries) == ["orgs.csv"]
    assert _summary(issues) == [("ZIP_UNSAFE", "error", "users.csv")]
    assert "users.csv" in issues[0].message and "ZIP bomb" in issues[0].message


def test_multi_gigabyte_bomb_is_cheap_to_refuse() -> None:
    """~4 GB of zeros: refused well under a second with little memory, and never inflated."""
    raw = _raw_zip([
        Member("users.csv", _zeros_deflated(4000), method=zipfile.ZIP_DEFLATED,
               size=4000 << 20, crc=0),
        Member("roles.csv", _zeros_deflated(4000), method=zipfile.ZIP_DEFLATED,
               size=4000 << 20, crc=0),
    ])
    tracemalloc.start()
    try:
        started = time.perf_counter()
        archive, issues, _ = _open(raw, LimitSettings(max_total_bytes=16 * 1024**3))
        assert archive is not None
        with archive:
            assert archive.entries == {}
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5
    assert peak < 50 * 1024**2
    assert [i.code for i in issues] == ["ZIP_UNSAFE", "ZIP_UNSAFE"]


def test_entry_inflating_past_its_declared_size_is_unsafe() -> None:
    """A directory that lies about the size (4 GB of zeros declared as 1,000 bytes):
    inflating stops just past the declared size, with ZIP_UNSAFE."""
    liar = Member("users.csv", _zeros_deflated(4000), method=zipfile.ZIP_DEFLATED,
                  size=1000, crc=0)
    archive, issues, log = _open(_raw_zip([liar]))
    assert archive is not None and issues == []
    tracemalloc.start()
    try:
        started = time.perf_counter()
        assert archive.read("users.csv") is None
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5
    assert peak < 50 * 1024**2
    issues = list(log)
    assert _summary(issues) == [("ZIP_UNSAFE", "error", "users.csv")]
    assert "more than the 1,000 bytes" in issues[0].message


def test_overlapping_entries_are_unsafe() -> None:
    """Entries sharing compressed data (the overlapping-entry bomb): ZIP_UNSAFE, left out."""
    kernel = Member("a.csv", zlib.compress(CSV * 10)[2:-4], method=zipfile.ZIP_DEFLATED,
                    size=len(CSV) * 10, crc=zlib.crc32(CSV * 10))
    copies = [
        Member(f"{c}.csv", kernel.payload, method=zipfile.ZIP_DEFLATED, size=kernel.size,
               crc=kernel.crc, same_data_as=0)
        for c in "bcd"
    ]
    archive, issues, _ = _open(_raw_zip([kernel, *copies, Member("orgs.csv", CSV)]))
    assert archive is not None
    assert list(archive.entries) == ["orgs.csv"]
    assert {i.code for i in issues} == {"ZIP_UNSAFE"}
    assert all("overlap" in i.message for i in issues)


# --- damaged uploads ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"not a zip at all", b"PK\x03\x04" + bytes(100)])
def test_not_a_zip(raw: bytes) -> None:
    """Bytes that are not a ZIP: ZIP_UNREADABLE and no archive."""
    archive, issues, _ = _open(raw)
    assert archive is None
    assert _summary(issues) == [("ZIP_UNREADABLE", "error", None)]
    assert "not a readable ZIP" in issues[0].message


def test_truncated_zip() -> None:
    """An upload cut off part way: ZIP_UNREADABLE, no archive."""
    raw = _zip({"users.csv": CSV * 1000, "orgs.csv": CSV})
    archive, issues, _ = _open(raw[: len(raw) // 2])
    assert archive is None
    assert _summary(issues) == [("ZIP_UNREADABLE", "error", None)]
    assert "complete ZIP" in issues[0].message


def test_entry_cut_off_before_the_directory() -> None:
    """An entry whose data would run into the directory: ZIP_UNREADABLE for that entry."""
    raw = _raw_zip([Member("orgs.csv", CSV), Member("users.csv", CSV)])
    # Declare users.csv's compressed size larger than the data that is there.
    at = raw.index(b"PK\x01\x02", raw.index(b"PK\x01\x02") + 4)
    patched = raw[: at + 20] + struct.pack("<L", len(CSV) + 50) + raw[at + 24 :]
    archive, issues, _ = _open(patched)
    assert archive is not None
    assert list(archive.entries) == ["orgs.csv"]
    assert _summary(issues) == [("ZIP_UNREADABLE", "error", "users.csv")]


def test_crc_mismatch_is_unreadable() -> None:
    """A damaged byte inside an entry: read gives None with ZIP_UNREADABLE naming it."""
    raw = _zip({"users.csv": CSV}, zipfile.ZIP_STORED)
    at = raw.index(b"Main")
    damaged = raw[:at] + b"Moin" + raw[at + 4 :]
    archive, issues, log = _open(damaged)
    assert archive is not None and issues == []
    assert archive.read("users.csv") is None
    issues = list(log)
    assert _summary(issues) == [("ZIP_UNREADABLE", "error", "users.csv")]
    assert "users.csv" in issues[0].message and "checksum" in issues[0].message


def test_corrupt_deflate_stream_is_unreadable() -> None:
    """Garbage where deflate data should be: ZIP_UNREADABLE, not a zlib exception."""
    garbage = Member("users.csv", b"\xff" * 64, method=zipfile.ZIP_DEFLATED, size=100)
    archive, _, log = _open(_raw_zip([garbage]))
    assert archive is not None
    assert archive.read("users.csv") is None
    assert _summary(list(log)) == [("ZIP_UNREADABLE", "error", "users.csv")]


def test_reading_an_unlisted_name_is_a_bug() -> None:
    """read() only takes names from entries; anything else is the caller's mistake."""
    archive, _, _ = _open(_zip({"orgs.csv": CSV}))
    assert archive is not None
    with pytest.raises(KeyError):
        archive.read("users.csv")


# --- properties ---------------------------------------------------------------------------


def _read_all(raw: bytes) -> None:
    issues = IssueLog()
    archive = open_upload(raw, LimitSettings(max_entries=16), issues)
    if archive is None:
        assert issues.has_errors()
        return
    with archive:
        for name, entry in archive.entries.items():
            data = archive.read(name)
            assert data is None or len(data) == entry.size


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    """Any bytes as an upload end in an archive or None, never an exception."""
    _read_all(raw)
    _read_all(b"PK\x03\x04" + raw + b"PK\x05\x06" + bytes(18))


_names = st.sampled_from(
    ["users.csv", "orgs.csv", "a/b.csv", "x.txt", "__MACOSX/._u.csv", ".DS_Store", "../e.csv"]
)


@st.composite
def _mangled_zip(draw: st.DrawFn) -> bytes:
    files = draw(st.lists(st.tuples(_names, st.binary(max_size=200)), max_size=5))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as zf:
        warnings.simplefilter("ignore")  # zipfile warns when it writes a name twice
        for name, data in files:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            zf.writestr(info, data)
    raw = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(0, 4))):
        if raw:
            # half the time aim at the directory at the end, where sizes and offsets live
            low = draw(st.sampled_from([0, max(0, len(raw) - 150)]))
            at = draw(st.integers(low, len(raw) - 1))
            raw[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(raw)))
    return bytes(raw[:cut]) if draw(st.booleans()) else bytes(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mangled_zip())
def test_mangled_zips_never_raise(raw: bytes) -> None:
    """Real ZIPs with random bytes changed or cut off never raise from open or read."""
    _read_all(raw)


# --- reading ahead ---------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1, 256 << 20])
def test_read_each_reads_in_order_and_reports_in_order(
    budget: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_each gives each entry's bytes in the order asked, inflating ahead within its
    budget (a budget smaller than any entry still reads them all, one at a time); a
    damaged entry is None and its issue is logged when the caller reaches it."""
    import rosterdrop.pipeline.archive as archive_module

    monkeypatch.setattr(archive_module, "READ_AHEAD_BYTES", budget)
    good = {f"f{n}.csv": (f"id\n{n}\n" * (n + 1) * 1000).encode() for n in range(4)}
    members = [Member(name, zlib.compress(data)[2:-4], method=zipfile.ZIP_DEFLATED,
                      size=len(data), crc=zlib.crc32(data)) for name, data in good.items()]
    members.insert(2, Member("bad.csv", CSV, crc=zlib.crc32(CSV) ^ 1))
    archive, issues, log = _open(_raw_zip(members))
    assert archive is not None and issues == []
    order = ["f3.csv", "bad.csv", "f0.csv", "f2.csv", "f1.csv"]
    seen: list[str] = []
    with archive:
        for name, data in archive.read_each(order):
            seen.append(name)
            assert data == good.get(name)
            assert len(list(log)) == (1 if seen.index(name) >= 1 else 0)
    assert seen == order
    assert _summary(list(log)) == [("ZIP_UNREADABLE", "error", "bad.csv")]


def test_read_each_abandoned_half_way_does_not_hang() -> None:
    """A caller that stops early (an error in the first file) leaves no thread waiting."""
    files = {f"f{n}.csv": CSV * 100 for n in range(5)}
    archive, _, _ = _open(_zip(files))
    assert archive is not None
    with archive:
        reader = archive.read_each(list(files))
        assert next(reader) == ("f0.csv", CSV * 100)
        started = time.perf_counter()
        reader.close()
        assert time.perf_counter() - started < 5
