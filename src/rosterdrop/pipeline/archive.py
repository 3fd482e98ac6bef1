"""Safe intake of an uploaded ZIP.

Everything that can be decided from the archive's central directory is decided
there, before a single byte is inflated: entry count, sizes, compression ratio,
paths, links, encryption, overlapping entries. An accepted entry is inflated
only when asked for (``UploadArchive.read``), in bounded chunks, and refused as
soon as it inflates past the size its directory entry declares, so a ZIP bomb
costs neither time nor memory. Nothing is ever written to disk.

Problems are reported as issues (``ZIP_*``, ``FILE_DUPLICATE``); nothing raises
out of this module for bad input. ``open_upload`` returns None only when the
archive as a whole cannot be used (not a ZIP, or over an archive-wide limit).
"""

from __future__ import annotations

import io
import stat
import struct
import threading
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from isal import isal_zlib

from rosterdrop.codes import Code
from rosterdrop.config import LimitSettings
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.zip_records import (
    CENTRAL_HEADER,
    CENTRAL_SIG,
    END_RECORD,
    END_SIG,
    LOCAL_HEADER,
    LOCAL_SIG,
)

_EOCD64_LOCATOR = struct.Struct("<4sLQL")
_EOCD64_LOCATOR_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_EOCD64_SIG = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF
_MAX_CENTRAL_ENTRY = CENTRAL_HEADER.size + 3 * 0xFFFF  # header + name + extra + comment

_STORED = zipfile.ZIP_STORED
_DEFLATED = zipfile.ZIP_DEFLATED
READ_AHEAD_BYTES = 256 << 20
"""How much inflated data ``read_each`` may hold that its caller has not taken yet."""
HEAD_BYTES = 64 << 10
"""How much of an entry ``head`` inflates: room for any real header row."""
_SHOWN_FILES = 6
"""How many of a folder's files a ZIP_NESTED_FOLDER message names."""
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, zlib.error,
    cast("type[BaseException]", isal_zlib.IsalError),  # its stub types it as an instance
)
_METHOD_NAMES = {9: "Deflate64", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "XZ", 98: "PPMd"}

_RATIO_FLOOR = 1 << 20
"""Entries that inflate to at most this many bytes are not held to the ratio
limit: a small, very repetitive CSV can compress far better than 200:1 and is
harmless, since no entry may inflate past its declared size."""

_MAC_FOLDER = "__MACOSX"
_MAC_FILE = ".DS_Store"
_FIX = "export again and upload the complete ZIP file"


@dataclass(frozen=True)
class Entry:
    """One acceptable CSV entry of the upload."""

    name: str
    """Name as in the ZIP (flat: no folder part)."""
    size: int
    """Declared uncompressed size."""
    compressed_size: int


class UploadArchive:
    """An opened upload: its acceptable ``.csv`` entries, inflated on demand."""

    def __init__(
        self,
        fp: BinaryIO,
        infos: dict[str, zipfile.ZipInfo],
        ignored: list[str],
        directory_start: int,
        issues: IssueLog,
        nested: Sequence[str] = (),
    ) -> None:
        self._fp = fp
        self._infos = infos
        self._directory_start = directory_start
        self._issues = issues
        self.entries: dict[str, Entry] = {
            name: Entry(name, info.file_size, info.compress_size)
            for name, info in infos.items()
        }
        self.ignored = ignored
        self.nested = list(nested)
        """The CSV files found inside folders (reported as ZIP_NESTED_FOLDER, not read)."""

    def read(self, name: str) -> bytes | None:
        """Inflate the entry ``name`` (a key of ``entries``) and check its CRC.

        On failure the issue (``ZIP_UNREADABLE`` or ``ZIP_UNSAFE``) is added to
        the log and None is returned. Raises KeyError for a name that is not in
        ``entries``: that is a bug in the caller, not a problem of the upload.
        """
        return self._reported(name, self._inflate_safely(name))

    def read_each(self, names: Sequence[str]) -> Iterator[tuple[str, bytes | None]]:
        """(name, ``read(name)``) for each name in order.

        A second thread inflates the entries ahead of the caller, up to
        ``READ_AHEAD_BYTES`` not yet taken: ISA-L runs without the GIL, so on two
        cores inflating hides behind parsing (0.25 s of an L check).
        """
        held = 0
        stopped = False
        turn = threading.Condition()

        def inflate(name: str) -> bytes | tuple[Code, str]:
            nonlocal held
            size = self.entries[name].size
            with turn:
                turn.wait_for(lambda: stopped or held == 0 or held + size <= READ_AHEAD_BYTES)
                if stopped:
                    return Code.ZIP_UNREADABLE, "not read"
                held += size
            return self._inflate_safely(name)

        with ThreadPoolExecutor(1, thread_name_prefix="rosterdrop-inflate") as pool:
            ahead = [pool.submit(inflate, name) for name in names]
            try:
                for name, future in zip(names, ahead, strict=True):
                    result = future.result()
                    with turn:
                        held -= self.entries[name].size
                        turn.notify_all()
                    yield name, self._reported(name, result)
            finally:
                with turn:
                    stopped = True
                    turn.notify_all()

    def head(self, name: str, limit: int = HEAD_BYTES) -> bytes | None:
        """The first ``limit`` bytes (at most) of the entry ``name``, or None.

        For a look at a file's header row before deciding how to read the upload:
        only the compressed bytes needed for ``limit`` are read and at most
        ``limit`` are inflated, whatever the entry declares. The checksum cannot
        be checked on a part, so nothing is reported here: an entry that fails
        is left for ``read`` to report when the upload is read in full.
        """
        info = self._infos[name]
        try:
            start = self._data_start(info)
            if isinstance(start, tuple):
                return None
            fp = self._fp
            fp.seek(start)
            want = min(limit, info.file_size)
            if info.compress_type == _DEFLATED:
                # Deflate never needs much more input than the output it yields
                # (stored blocks cost 5 bytes per 64 KiB), so this bounds the read.
                compressed = fp.read(min(info.compress_size, want + (want >> 4) + 1024))
                return isal_zlib.decompressobj(-15).decompress(compressed, want)
            return fp.read(want)
        except _INFLATE_ERRORS:
            return None

    def _inflate_safely(self, name: str) -> bytes | tuple[Code, str]:
        info = self._infos[name]
        try:
            return self._inflate(info)
        except _INFLATE_ERRORS as exc:
            return Code.ZIP_UNREADABLE, f"The ZIP entry {name!r} could not be read ({exc})"

    def _reported(self, name: str, result: bytes | tuple[Code, str]) -> bytes | None:
        if isinstance(result, bytes):
            return result
        code, what = result
        fix = (
            "export again and upload a plain ZIP of the CSV files"
            if code is Code.ZIP_UNSAFE
            else _FIX
        )
        self._issues.add(code, f"{what}; {fix}.", file=name)
        return None

    def _data_start(self, info: zipfile.ZipInfo) -> int | tuple[Code, str]:
        """Where the entry's data starts, once its local header agrees with the directory."""
        entry = f"The ZIP entry {info.filename!r}"
        fp = self._fp
        fp.seek(info.header_offset)
        header = fp.read(LOCAL_HEADER.size)
        if len(header) < LOCAL_HEADER.size:
            return Code.ZIP_UNREADABLE, f"{entry} is cut off"
        sig, _, flags, _, _, _, _, _, _, name_len, extra_len = LOCAL_HEADER.unpack(header)
        if sig != LOCAL_SIG:
            return Code.ZIP_UNREADABLE, f"{entry} is damaged (bad local header)"
        if flags & 0x1:
            return Code.ZIP_UNSAFE, f"{entry} is encrypted"
        if fp.read(name_len) != _raw_name(info):
            return Code.ZIP_UNREADABLE, f"{entry} is damaged (its header names another file)"
        start: int = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
        if start + info.compress_size > self._directory_start:
            return Code.ZIP_UNREADABLE, f"{entry} is cut off"
        return start

    def _inflate(self, info: zipfile.ZipInfo) -> bytes | tuple[Code, str]:
        entry = f"The ZIP entry {info.filename!r}"
        start = self._data_start(info)
        if isinstance(start, tuple):
            return start
        fp = self._fp
        fp.seek(start)

        declared = info.file_size
        compressed = fp.read(info.compress_size)
        if len(compressed) < info.compress_size:
            return Code.ZIP_UNREADABLE, f"{entry} is cut off"
        if info.compress_type == _DEFLATED:
            # One call, its output capped one byte past the declared size: a lying
            # entry (a ZIP bomb) stops there. ISA-L inflates twice as fast as zlib,
            # and without the GIL.
            inflater = isal_zlib.decompressobj(-15)
            data = inflater.decompress(compressed, declared + 1)
            del compressed
            if len(data) > declared:
                return Code.ZIP_UNSAFE, (
                    f"{entry} inflates to more than the {declared:,} bytes it "
                    "declares, which is how a ZIP bomb looks"
                )
            if not inflater.eof:
                return Code.ZIP_UNREADABLE, f"{entry} is damaged (it is incomplete)"
        else:
            data = compressed
        if len(data) != declared:
            return Code.ZIP_UNREADABLE, f"{entry} is damaged (it is incomplete)"
        if isal_zlib.crc32(data) != info.CRC:
            return Code.ZIP_UNREADABLE, f"{entry} is damaged (its checksum does not match)"
        return data

    def close(self) -> None:
        self._fp.close()

    def __enter__(self) -> UploadArchive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_upload(
    source: Path | bytes, limits: LimitSettings, issues: IssueLog
) -> UploadArchive | None:
    """Open an uploaded ZIP (a path or its bytes) and vet every entry.

    Returns None, with a ``ZIP_UNREADABLE`` or ``ZIP_UNSAFE`` issue, when the
    archive as a whole is unusable; otherwise an archive whose ``entries`` are
    the acceptable CSV files (problem entries are reported and left out).
    """
    try:
        fp: BinaryIO = open(source, "rb") if isinstance(source, Path) else io.BytesIO(source)  # noqa: SIM115
    except OSError as exc:
        issues.add(
            Code.ZIP_UNREADABLE,
            f"The upload could not be read ({exc.strerror or exc}); upload the ZIP file again.",
        )
        return None
    try:
        archive = _open(fp, limits, issues)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error,
            NotImplementedError, OverflowError) as exc:
        issues.add(
            Code.ZIP_UNREADABLE,
            f"The upload is not a readable ZIP file ({exc}); {_FIX}.",
        )
        archive = None
    if archive is None:
        fp.close()
    return archive


def _open(fp: BinaryIO, limits: LimitSettings, issues: IssueLog) -> UploadArchive | None:
    directory_start = _vet_directory(fp, limits, issues)
    if directory_start is None:
        return None
    with zipfile.ZipFile(fp) as zf:  # does not close fp: we passed it in
        infos = zf.infolist()

    total = sum(info.file_size for info in infos)
    if total > limits.max_total_bytes:
        issues.add(
            Code.ZIP_UNSAFE,
            f"The ZIP's files add up to {total:,} bytes uncompressed, more than the "
            f"limit of {limits.max_total_bytes:,} bytes; upload a smaller export or "
            "ask the rosterdrop administrator to raise limits.max_total_bytes.",
        )
        return None

    refused = _overlapping(infos, directory_start, issues)
    accepted: dict[str, zipfile.ZipInfo] = {}
    folded: dict[str, str] = {}  # lower-cased name → the accepted name
    ignored: list[str] = []
    folders: dict[str, list[str]] = {}
    for info in infos:
        name = info.filename
        path = name.replace("\\", "/")
        while path.startswith("./"):
            path = path[2:]
        parts = path.rstrip("/").split("/")
        if path.startswith("/") or (len(path) > 1 and path[1] == ":") or ".." in parts:
            issues.add(
                Code.ZIP_UNSAFE,
                f"The ZIP entry {name!r} has a path that points outside the ZIP; "
                "zip the CSV files themselves and upload again.",
                file=name,
            )
            continue
        if "\x00" in info.orig_filename:
            # zipfile cuts a name at a NUL ("users.csv\0.exe" → "users.csv"): such an
            # entry has two names, depending on the program reading it.
            issues.add(
                Code.ZIP_UNSAFE,
                f"The ZIP entry {info.orig_filename!r} has a NUL byte in its name, so "
                "programs disagree on what it is called; zip the CSV files themselves "
                "and upload again.",
                file=name,
            )
            continue
        if parts[0] == _MAC_FOLDER or parts[-1] == _MAC_FILE:
            ignored.append(name)
            continue
        if id(info) in refused:
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            issues.add(
                Code.ZIP_UNSAFE,
                f"The ZIP entry {name!r} is a link, not a file; zip the CSV files "
                "themselves and upload again.",
                file=name,
            )
            continue
        if info.flag_bits & 0x1:
            issues.add(
                Code.ZIP_UNSAFE,
                f"The ZIP entry {name!r} is encrypted; upload a ZIP without a password.",
                file=name,
            )
            continue
        if len(parts) > 1 or path.endswith("/"):
            folders.setdefault(parts[0], []).append(name)
            continue
        if not path.lower().endswith(".csv"):
            issues.add(
                Code.ZIP_UNEXPECTED_FILE,
                f"The ZIP contains {name!r}, which is not a CSV file; remove it from "
                "the ZIP and upload again.",
                file=name,
            )
            continue
        if not _vet_sizes(info, path, limits, issues):
            continue
        if path in accepted:
            issues.add(
                Code.FILE_DUPLICATE,
                f"The ZIP contains {path!r} more than once; keep one copy of the file "
                "and upload again.",
                file=path,
            )
            continue
        # Names differing only in case are one file once unzipped on Windows or
        # macOS; the layout would read one and silently pass over the other.
        twin = folded.get(path.lower())
        if twin is not None:
            issues.add(
                Code.FILE_DUPLICATE,
                f"The ZIP contains {twin!r} and {path!r}, whose names differ only in "
                "case; keep one copy of the file and upload again.",
                file=path,
            )
            continue
        accepted[path] = info
        folded[path.lower()] = path

    nested: list[str] = []
    for folder, names in folders.items():
        files = [n for n in names if not n.endswith(("/", "\\"))]
        csvs = [n for n in files if n.lower().endswith(".csv")]
        nested.extend(csvs)
        issues.add(
            Code.ZIP_NESTED_FOLDER,
            f"The ZIP contains the folder {folder + '/'!r}{_holding(files, csvs)}; the CSV "
            "files must sit at the top of the ZIP, so select the files themselves and "
            "compress them, not the folder that holds them.",
            file=folder + "/",
        )
    return UploadArchive(fp, accepted, ignored, directory_start, issues, nested)


def _holding(files: list[str], csvs: list[str]) -> str:
    """What a folder holds, for its ZIP_NESTED_FOLDER message: the CSV files first."""
    if not files:
        return ""
    listed = csvs or files
    shown = ", ".join(repr(n) for n in listed[:_SHOWN_FILES])
    more = len(listed) - _SHOWN_FILES
    shown += f" and {more} more" if more > 0 else ""
    if not csvs:
        return f" holding {shown}"
    count = f"{len(csvs)} CSV file" + ("s" if len(csvs) != 1 else "")
    return f" holding {count} ({shown})"



def _vet_directory(fp: BinaryIO, limits: LimitSettings, issues: IssueLog) -> int | None:
    """Find the central directory and count its entries without parsing them.

    zipfile would read the whole directory into memory and build an object per
    entry; a hostile upload could declare millions. Returns where the central
    directory starts, or None after reporting why the archive is refused.
    """
    size = fp.seek(0, io.SEEK_END)
    tail_len = min(size, END_RECORD.size + _MAX_COMMENT)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    at = tail.rfind(END_SIG)
    if at < 0 or at + END_RECORD.size > len(tail):
        raise zipfile.BadZipFile("no end of central directory; the file is not a ZIP or is cut off")
    record = size - tail_len + at
    _, disk, cd_disk, n_disk, count, cd_size, _, _ = END_RECORD.unpack_from(tail, at)
    if record >= _EOCD64_LOCATOR.size:
        fp.seek(record - _EOCD64_LOCATOR.size)
        locator = fp.read(_EOCD64_LOCATOR.size)
        if locator[:4] == _EOCD64_LOCATOR_SIG:
            record -= _EOCD64_LOCATOR.size + _EOCD64.size
            if record < 0:
                raise zipfile.BadZipFile("damaged ZIP64 end record")
            fp.seek(record)
            big = fp.read(_EOCD64.size)
            if len(big) < _EOCD64.size or big[:4] != _EOCD64_SIG:
                raise zipfile.BadZipFile("damaged ZIP64 end record")
            _, _, _, _, disk, cd_disk, n_disk, count, cd_size, _ = _EOCD64.unpack(big)
    if disk or cd_disk or n_disk != count:
        raise zipfile.BadZipFile("the ZIP is split over several parts")
    start = record - int(cd_size)
    if start < 0:
        raise zipfile.BadZipFile("damaged central directory")
    if count > limits.max_entries:
        _too_many(f"{count:,}", limits, issues)
        return None
    if cd_size > limits.max_entries * _MAX_CENTRAL_ENTRY:
        _too_many(f"more than {limits.max_entries:,}", limits, issues)
        return None
    fp.seek(start)
    directory = fp.read(cd_size)
    seen = 0
    offset = 0
    while offset < len(directory):
        if (
            offset + CENTRAL_HEADER.size > len(directory)
            or directory[offset : offset + 4] != CENTRAL_SIG
        ):
            raise zipfile.BadZipFile("damaged central directory")
        name_len, extra_len, comment_len = struct.unpack_from("<3H", directory, offset + 28)
        offset += CENTRAL_HEADER.size + name_len + extra_len + comment_len
        seen += 1
        if seen > limits.max_entries:
            _too_many(f"more than {limits.max_entries:,}", limits, issues)
            return None
    return start


def _too_many(count: str, limits: LimitSettings, issues: IssueLog) -> None:
    issues.add(
        Code.ZIP_UNSAFE,
        f"The ZIP holds {count} entries, over the limit of {limits.max_entries:,}; "
        "upload a ZIP of just the export's CSV files.",
    )


def _vet_sizes(info: zipfile.ZipInfo, name: str, limits: LimitSettings, issues: IssueLog) -> bool:
    method = info.compress_type
    if method not in (_STORED, _DEFLATED):
        label = _METHOD_NAMES.get(method, f"method {method}")
        issues.add(
            Code.ZIP_UNREADABLE,
            f"The ZIP entry {name!r} is compressed with {label}, which rosterdrop cannot "
            "read; compress "
            "the files with standard ZIP (deflate) compression and upload again.",
            file=name,
        )
        return False
    if method == _STORED and info.compress_size != info.file_size:
        issues.add(
            Code.ZIP_UNREADABLE,
            f"The ZIP entry {name!r} is damaged (its sizes do not agree); {_FIX}.",
            file=name,
        )
        return False
    if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(
        info.compress_size, 1
    ):
        ratio = info.file_size // max(info.compress_size, 1)
        issues.add(
            Code.ZIP_UNSAFE,
            f"The ZIP entry {name!r} would inflate {ratio:,} times its compressed size "
            f"(the limit is {limits.max_ratio:,}), which is how a ZIP bomb looks; export "
            "the file again and upload a plain ZIP of the CSV files.",
            file=name,
        )
        return False
    return True


def _overlapping(
    infos: list[zipfile.ZipInfo], directory_start: int, issues: IssueLog
) -> set[int]:
    """Entries whose data overlaps another's, or runs past where the ZIP ends.

    Overlapping entries are how a ZIP bomb multiplies one compressed kernel;
    an honest archive never has them. Returns the ids of the refused ZipInfos.
    """
    refused: set[int] = set()
    ordered = sorted(infos, key=lambda info: info.header_offset)
    for index, info in enumerate(ordered):
        end = info.header_offset + LOCAL_HEADER.size + len(_raw_name(info)) + info.compress_size
        after = ordered[index + 1] if index + 1 < len(ordered) else None
        if after is not None and end > after.header_offset:
            refused.update((id(info), id(after)))
            issues.add(
                Code.ZIP_UNSAFE,
                f"The ZIP entries {info.filename!r} and {after.filename!r} overlap, "
                "which is how a ZIP bomb looks; export again and upload a plain ZIP "
                "of the CSV files.",
                file=info.filename,
            )
        elif end > directory_start:
            refused.add(id(info))
            issues.add(
                Code.ZIP_UNREADABLE,
                f"The ZIP entry {info.filename!r} is cut off; {_FIX}.",
                file=info.filename,
            )
    return refused


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """The entry name's bytes as stored in the archive."""
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    return info.orig_filename.encode(encoding, errors="replace")
