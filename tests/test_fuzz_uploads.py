"""Fuzzing: mutated valid uploads never crash the validator or ``rosterdrop validate --json``.

A mutation program is drawn by hypothesis and applied to one of the valid
uploads of ``uploads.py``: files dropped, renamed, duplicated or added;
columns shuffled, renamed, dropped; rows shuffled; cells replaced by nasty
values; separators, line breaks and encodings changed; bytes flipped,
inserted or cut; and the ZIP rebuilt with another compression method,
ZIP64 fields, data descriptors or the UTF-8 flag, then possibly damaged.
Each upload goes through ``check_upload`` and through the CLI in-process; both
must end in a JSON verdict with known codes, agree with each other, and stay
within a time and traced-memory bound.

``benchmarks/fuzz.py`` runs the same mutator for many more examples.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
import time
import tracemalloc
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rosterdrop.cli import main
from rosterdrop.codes import Code
from rosterdrop.config import LimitSettings, TenantSettings
from rosterdrop.pipeline.check import check_upload
from rosterdrop.runs.document import check_document
from uploads import asm_files, manifest, oneroster_files

LAYOUTS = ("asm", "oneroster-1.1", "oneroster-1.2", "oneroster-1.1-delta", "oneroster-1.2-delta")
MAX_SECONDS = 3.0
"""Per upload and path, generous: a mutated upload takes tens of milliseconds."""
MAX_TRACED_MIB = 64.0
KNOWN_CODES = frozenset(code.value for code in Code)
STATUSES = ("ok", "warnings", "failed")
Op = tuple[Any, ...]

NAMES = ("readme.txt", "demographics.csv", "users.csv", "students.csv", "Students.csv",
         "locations.csv", "manifest.csv", "extra.csv", "nested.zip", "export/users.csv",
         "../staff.csv", "__MACOSX/._users.csv", ".DS_Store", "roles.csv", "orgs.csv")
CONTENTS = (b"", b"a,b\n1,2\n", b"\xef\xbb\xbf", b"\x00\x01\x02", b"propertyName,value\n",
            b"sourcedId\nX\n", b"\r\n\r\n", b"PK\x03\x04", b"x" * 5000)
COLUMN_NAMES = ("", " padded ", "metadata.extra", "Unknown", "PERSON_ID", "sourcedId",
                "location_id_2", "instructor_id_4", "role", "status")
VALUES = ("", " ", "TRUE", "False", "tobedeleted", "active", "08/15/2024", "2024-02-30",
          "1.0", '"a,b"', '"', '""', "ext:thing", "o'neil@x.org", "=cmd|' /C calc'!A0",
          "José", "王", "x" * 1000, "\ufeffP1", "S9", "P1", "U1", "K1", "T1", "student",
          "Student", "teacher", "9", "5", "a@b", "\t", "a\nb", '"a\nb"')
BYTES = (b",", b";", b'"', b"\n", b"\r", b"\r\n\r\n", b"\xff\xfe", b"\xfe\xff",
         b"\xef\xbb\xbf", b"\x00", b"\xc3", b"\x81", b"\x1a", b"\t")
ENCODINGS = ("utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252", "latin-1",
             "cp437", "mac-roman")
METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
STAMP = (2026, 11, 20, 8, 0, 0)
STAMP_TEXT = "2026-11-20T08:00:00.000Z"


# --- the mutator ------------------------------------------------------------------------


def base_files(layout: str) -> dict[str, bytes]:
    """The valid upload of ``layout``; a delta has status and dateLastModified filled in."""
    if layout == "asm":
        return {name: content.encode() for name, content in asm_files().items()}
    version = layout.split("-")[1]
    files = oneroster_files(version)
    if layout.endswith("-delta"):
        files["manifest.csv"] = manifest(version, mode="delta")
        for name, content in files.items():
            if name != "manifest.csv":
                header, *rows = content.splitlines()
                files[name] = "\n".join(
                    [header, *(r.replace(",,,", f",active,{STAMP_TEXT},", 1) for r in rows)]
                ) + "\n"
    return {name: content.encode() for name, content in files.items()}


def _index(files: dict[str, bytes], at: int) -> str | None:
    names = list(files)
    return names[at % len(names)] if names else None


def _rows(data: bytes) -> list[list[str]]:
    """Naive CSV split that round-trips any bytes (surrogateescape)."""
    lines = data.decode("utf-8", "surrogateescape").split("\n")
    return [line.split(",") for line in lines]


def _join(rows: list[list[str]]) -> bytes:
    return "\n".join(",".join(row) for row in rows).encode("utf-8", "surrogateescape")


def _columns(data: bytes, change: Any) -> bytes:
    """Apply ``change(row) -> row`` to every line that has cells."""
    return _join([change(row) if row != [""] else row for row in _rows(data)])


def apply_op(files: dict[str, bytes], op: Op) -> None:
    """One mutation, in place. Positions are taken modulo the sizes they index."""
    kind, at, *args = op
    name = _index(files, at)
    if name is None:
        if kind == "add":
            files[NAMES[args[0] % len(NAMES)]] = CONTENTS[args[1] % len(CONTENTS)]
        return
    data = files[name]
    if kind == "drop":
        del files[name]
    elif kind == "rename":
        variants = (name.upper(), name.title(), f"export/{name}", name + ".txt", name + " ",
                    f"../{name}", name.replace(".csv", ".CSV"), NAMES[args[0] % len(NAMES)])
        new = variants[args[0] % len(variants)]
        del files[name]
        files[new] = data
    elif kind == "duplicate":
        files[name.swapcase()] = data
    elif kind == "add":
        files[NAMES[args[0] % len(NAMES)]] = CONTENTS[args[1] % len(CONTENTS)]
    elif kind == "shuffle_columns":
        width = len(_rows(data)[0])
        order = list(range(width))
        random.Random(args[0]).shuffle(order)
        files[name] = _columns(data, lambda row: [row[i] if i < len(row) else "" for i in order]
                               + row[width:])
    elif kind == "rename_column":
        rows = _rows(data)
        column = args[0] % max(len(rows[0]), 1)
        new = COLUMN_NAMES[args[1] % len(COLUMN_NAMES)]
        rows[0][column] = rows[0][column].upper() if new == "PERSON_ID" else new
        files[name] = _join(rows)
    elif kind == "drop_column":
        column = args[0] % max(len(_rows(data)[0]), 1)
        files[name] = _columns(data, lambda row: row[:column] + row[column + 1:])
    elif kind == "shuffle_rows":
        header, *body = data.split(b"\n")
        random.Random(args[0]).shuffle(body)
        files[name] = b"\n".join([header, *body])
    elif kind == "cell":
        rows = _rows(data)
        row = rows[args[0] % len(rows)]
        row[args[1] % len(row)] = VALUES[args[2] % len(VALUES)]
        files[name] = _join(rows)
    elif kind == "separator":
        files[name] = data.replace(b",", (b";", b"\t", b"|")[args[0] % 3])
    elif kind == "line_breaks":
        files[name] = data.replace(b"\n", (b"\r\n", b"\r", b"\n\n")[args[0] % 3])
    elif kind == "encoding":
        encoding = ENCODINGS[args[0] % len(ENCODINGS)]
        files[name] = data.decode("utf-8", "replace").encode(encoding, "replace")
    elif kind == "flip" and data:
        position = args[0] % len(data)
        files[name] = data[:position] + bytes([args[1] % 256]) + data[position + 1:]
    elif kind == "truncate":
        files[name] = data[: args[0] % (len(data) + 1)]
    elif kind == "insert":
        position = args[0] % (len(data) + 1)
        files[name] = data[:position] + BYTES[args[1] % len(BYTES)] + data[position:]


@dataclass(frozen=True)
class ZipOptions:
    method: int = zipfile.ZIP_DEFLATED
    level: int | None = None
    streamed: bool = False
    """Written to an unseekable stream: sizes and CRC in data descriptors."""
    zip64: bool = False
    utf8_flag: bool = False


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def zip_files(files: dict[str, bytes], options: ZipOptions) -> bytes:
    stream: Any = _Unseekable() if options.streamed else io.BytesIO()
    with zipfile.ZipFile(stream, "w", options.method, compresslevel=options.level) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, STAMP)
            info.compress_type = options.method
            if options.utf8_flag:
                info.flag_bits |= 0x800
            if options.streamed or options.zip64:
                with archive.open(info, "w", force_zip64=options.zip64) as out:
                    out.write(data)
            else:
                archive.writestr(info, data)
    return bytes(stream.data) if options.streamed else stream.getvalue()


@dataclass(frozen=True)
class Mutation:
    """A drawn mutation program: what hypothesis shows when a case fails."""

    layout: str
    ops: tuple[Op, ...]
    options: ZipOptions
    damage: tuple[Op, ...]
    """Flips and cuts applied to the ZIP's own bytes."""

    def build(self) -> bytes:
        files = base_files(self.layout)
        for op in self.ops:
            apply_op(files, op)
        raw = zip_files(files, self.options)
        for kind, position, value in self.damage:
            if not raw:
                break
            if kind == "flip":
                at = position % len(raw)
                raw = raw[:at] + bytes([value % 256]) + raw[at + 1:]
            else:
                raw = raw[: position % (len(raw) + 1)]
        return raw


_N = st.integers(min_value=0, max_value=1 << 16)
OPS = st.one_of(
    st.tuples(st.just("drop"), _N),
    st.tuples(st.just("rename"), _N, _N),
    st.tuples(st.just("duplicate"), _N),
    st.tuples(st.just("add"), _N, _N, _N),
    st.tuples(st.just("shuffle_columns"), _N, _N),
    st.tuples(st.just("rename_column"), _N, _N, _N),
    st.tuples(st.just("drop_column"), _N, _N),
    st.tuples(st.just("shuffle_rows"), _N, _N),
    st.tuples(st.just("cell"), _N, _N, _N, _N),
    st.tuples(st.just("cell"), _N, _N, _N, _N),
    st.tuples(st.just("separator"), _N, _N),
    st.tuples(st.just("line_breaks"), _N, _N),
    st.tuples(st.just("encoding"), _N, _N),
    st.tuples(st.just("flip"), _N, _N, _N),
    st.tuples(st.just("truncate"), _N, _N),
    st.tuples(st.just("insert"), _N, _N, _N),
)
OPTIONS = st.builds(
    ZipOptions,
    method=st.sampled_from(METHODS).filter(lambda m: m != zipfile.ZIP_STORED) | st.sampled_from(
        (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)),
    level=st.none() | st.integers(min_value=1, max_value=9),
    streamed=st.booleans(),
    zip64=st.booleans(),
    utf8_flag=st.booleans(),
)
DAMAGE = st.lists(st.tuples(st.sampled_from(("flip", "cut")), _N, _N), max_size=2).map(tuple)


@st.composite
def mutations(draw: st.DrawFn) -> Mutation:
    """A valid upload's layout and a short mutation program over it."""
    layout = draw(st.sampled_from(LAYOUTS))
    ops = tuple(draw(st.lists(OPS, min_size=1, max_size=5)))
    # Mostly a plain ZIP, so most cases get past the archive to the CSV checks.
    options = draw(OPTIONS) if draw(st.integers(0, 9)) < 3 else ZipOptions()
    damage = draw(DAMAGE) if draw(st.integers(0, 9)) < 2 else ()
    return Mutation(layout, ops, options, damage)


# --- one case through both paths ----------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    status: str
    codes: frozenset[str]
    seconds: float
    """Both paths together."""
    peak_mib: float


def check_both(raw: bytes, folder: Path) -> Verdict:
    """Run ``raw`` through check_upload and ``rosterdrop validate --json``; assert both give
    the same JSON verdict with known codes within the bounds. Raises AssertionError."""
    path = folder / "upload.zip"
    path.write_bytes(raw)
    config = folder / "rosterdrop.toml"
    config.write_text("", encoding="utf-8")

    tracemalloc.start()
    try:
        started = time.perf_counter()
        checked = check_upload(path, tenant=TenantSettings(), limits=LimitSettings(),
                               today=date.today())
        direct = json.loads(json.dumps(check_document(checked).to_json(), default=str))
        direct_seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()
    assert direct["status"] in STATUSES
    assert set(direct["issue_counts"]) <= KNOWN_CODES
    assert (direct["status"] == "failed") == bool(direct["errors"])
    assert direct_seconds < MAX_SECONDS, f"check_upload took {direct_seconds:.2f} s"
    assert peak < MAX_TRACED_MIB, f"check_upload peaked at {peak:.1f} MiB"

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["-c", str(config), "validate", "--json", str(path)])
            exit_code: object = 0
        except SystemExit as exc:
            exit_code = exc.code
    cli_seconds = time.perf_counter() - started
    assert exit_code == (1 if direct["status"] == "failed" else 0), err.getvalue()
    assert "Traceback" not in err.getvalue()
    document = json.loads(out.getvalue())
    assert {k: v for k, v in document.items() if k != "file"} == {
        k: v for k, v in direct.items() if k != "file"}
    assert cli_seconds < MAX_SECONDS, f"validate --json took {cli_seconds:.2f} s"
    return Verdict(direct["status"], frozenset(direct["issue_counts"]),
                   direct_seconds + cli_seconds, peak)


# --- the tests ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutations())
def test_mutated_uploads_end_in_a_json_verdict(mutation: Mutation) -> None:
    """Any mutation program over a valid upload gives the same JSON verdict, with known
    codes, from check_upload and from ``rosterdrop validate --json``; nothing raises and
    each path stays under the time and traced-memory bounds."""
    with tempfile.TemporaryDirectory() as folder:
        check_both(mutation.build(), Path(folder))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LAYOUTS), st.lists(st.sampled_from(
    ["shuffle_columns", "shuffle_rows"]), min_size=1, max_size=3), _N)
@example("oneroster-1.1", ["shuffle_columns", "shuffle_columns"], 0)  # manifest value first
def test_reordering_columns_and_rows_changes_nothing(layout: str, kinds: list[str],
                                                      seed: int) -> None:
    """Columns are matched by name and records are independent: shuffling either keeps a
    valid upload valid, with the same counts."""
    files = base_files(layout)
    expected = check_upload(zip_files(files, ZipOptions()), tenant=TenantSettings(),
                            limits=LimitSettings(), today=date.today())
    for at, kind in enumerate(kinds):
        for index in range(len(files)):
            apply_op(files, (kind, index, seed + at))
    checked = check_upload(zip_files(files, ZipOptions()), tenant=TenantSettings(),
                           limits=LimitSettings(), today=date.today())
    assert checked.status == expected.status == "ok", list(checked.issues)
    assert checked.counts == expected.counts


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(LAYOUTS), OPTIONS.filter(
    lambda o: o.method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)))
def test_any_standard_zip_writer_is_read_alike(layout: str, options: ZipOptions) -> None:
    """Stored or deflated at any level, streamed with data descriptors, ZIP64 fields or
    the UTF-8 flag: the same valid upload reads the same."""
    files = base_files(layout)
    checked = check_upload(zip_files(files, options), tenant=TenantSettings(),
                           limits=LimitSettings(), today=date.today())
    assert checked.status == "ok", list(checked.issues)
