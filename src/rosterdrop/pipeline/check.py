"""The pure front half of the pipeline: an upload in, a checked model out.

    open safely → detect layout → read + validate → map to model
    → person checks → filter → references → patch

``check_upload`` is what ``rosterdrop validate`` runs, and the first half of
every sync. It reads the upload and nothing else: no clock (``today`` is a
parameter), no store, no network.

One pass: a file that is missing or unreadable, or a column the header lacks,
does not stop the checks that can still run. The model is built from what
could be read (the rest as empty), and every later check runs on it, minus
the consequences of what is missing (no blank value for a missing column, no
dangling reference into a file that could not be read): the header or file
issue already said it. Such a model is never handed on (``Checked.model`` is
None), so a partial upload is never planned, let alone applied.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from rosterdrop.codes import Code, Severity
from rosterdrop.config import LimitSettings, TenantSettings
from rosterdrop.documents import CheckStatus
from rosterdrop.pipeline import detect, foreign
from rosterdrop.pipeline.archive import UploadArchive, open_upload
from rosterdrop.pipeline.filter import apply_filter, summary_frame
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.layouts import FileSpec
from rosterdrop.pipeline.mapping import asm_model, oneroster_model
from rosterdrop.pipeline.model import Model
from rosterdrop.pipeline.patch import apply_patch, check_references
from rosterdrop.pipeline.people import check_people
from rosterdrop.pipeline.read import Table, read_table
from rosterdrop.pipeline.validate import check_header, check_values, tidy

Progress = Callable[[str], None]


@dataclass
class Checked:
    """What checking an upload found; the model is None when it could not be built."""

    file: str
    sha256: str
    layout: str | None = None
    issues: IssueLog = field(default_factory=IssueLog)
    files_ignored: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("locations", "students", "staff", "courses", "classes", "rosters"), 0)
    )
    model: Model | None = None
    """None when the upload could not be read whole (a file or a column the sync reads
    is missing): only a whole model may be planned."""
    filtered: dict[str, int] = field(default_factory=dict)
    patched: dict[str, int] = field(default_factory=dict)
    summary: pl.DataFrame = field(default_factory=lambda: summary_frame([]))

    @property
    def status(self) -> CheckStatus:
        if self.issues.has_errors():
            return CheckStatus.FAILED
        return CheckStatus.WARNINGS if len(self.issues) else CheckStatus.OK


def sha256_of(source: Path | bytes) -> str:
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
        return digest.hexdigest()
    with source.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_upload(
    source: Path | bytes,
    *,
    tenant: TenantSettings,
    limits: LimitSettings,
    today: date,
    name: str | None = None,
    progress: Progress | None = None,
    sha256: str | None = None,
) -> Checked:
    """Read, validate, filter and patch one upload. ``sha256``: the upload's digest,
    when the caller has it already (the runner hashes every upload first)."""
    file_name = name or (source.name if isinstance(source, Path) else "upload.zip")
    checked = Checked(file_name, sha256 or sha256_of(source))
    say = progress or (lambda _step: None)
    issues = checked.issues

    archive = open_upload(source, limits, issues)
    if archive is None:
        return checked
    with archive:
        checked.files_ignored = list(archive.ignored)
        names = list(archive.entries)
        if foreign.recognise(archive, names, issues):
            return checked
        family = detect.family(names, issues, nested=archive.nested)
        if family is None:
            return checked
        built = _read_model(archive, names, family, checked, say,
                            strict=tenant.strict_headers)
    if built is None:
        return checked

    say("checking people")
    people_checked = check_people(built.model, issues, built.unread_email)
    checked.counts = people_checked.counts()
    say("filtering")
    filtered = apply_filter(people_checked, tenant.filter, today, family)
    checked.filtered = _count_by_kind(filtered.counts)
    say("checking references")
    check_references(filtered.model, family, filtered.gone, issues, built.unavailable,
                     roles_file=checked.layout == "oneroster-1.2")
    patched = apply_patch(filtered.model, tenant.patch, family, issues, built.unavailable)
    checked.patched = patched.counts
    checked.summary = summary_frame(filtered.summary + patched.summary)
    checked.model = None if built.partial else patched.model
    return checked


@dataclass(frozen=True)
class _Files:
    """Every file of the layout as read: a frame for each, empty where none could be."""

    frames: dict[str, pl.DataFrame]
    unread: frozenset[str]
    """Files whose records could not be read (missing, unreadable, header blamed)."""
    missing: dict[str, tuple[str, ...]]
    """File → base columns its header lacks (their frame columns are all blank)."""

    def lacks(self, file: str, column: str) -> bool:
        return file in self.unread or column in self.missing.get(file, ())

    def partial(self, specs: dict[str, FileSpec]) -> bool:
        """Something the sync reads could not be read."""
        return bool(self.unread) or any(
            specs[file].read_by_sync(column)
            for file, columns in self.missing.items() for column in columns)


@dataclass(frozen=True)
class _Built:
    """The model, and what the checks after it must leave alone."""

    model: Model
    partial: bool
    unavailable: frozenset[str] = frozenset()
    """Kinds (locations, courses, classes, terms, students, staff) whose file or ID
    column could not be read: references to them are not checked."""
    unread_email: frozenset[str] = frozenset()
    """Files whose email column is missing: nobody there is "missing an email"."""


Needs = tuple[tuple[str, str], ...]
_ASM_KINDS: dict[str, Needs] = {
    "locations": (("locations.csv", "location_id"),),
    "courses": (("courses.csv", "course_id"),),
    "classes": (("classes.csv", "class_id"),),
    "students": (("students.csv", "person_id"),),
    "staff": (("staff.csv", "person_id"),),
}
_PEOPLE_11: Needs = (("users.csv", "sourcedId"), ("users.csv", "role"))
_PEOPLE_12: Needs = (("users.csv", "sourcedId"), ("roles.csv", "userSourcedId"), ("roles.csv", "role"))
_ONEROSTER_KINDS: dict[str, Needs] = {
    "locations": (("orgs.csv", "sourcedId"),),
    "courses": (("courses.csv", "sourcedId"),),
    "classes": (("classes.csv", "sourcedId"),),
    "terms": (("academicSessions.csv", "sourcedId"),),
}
"""Kind → the (file, column) pairs its records need: without one, it is unavailable."""


def _unavailable(files: _Files, kinds: dict[str, Needs]) -> frozenset[str]:
    return frozenset(kind for kind, needs in kinds.items()
                     if any(files.lacks(file, column) for file, column in needs))


def _count_by_kind(counts: dict[str, int]) -> dict[str, int]:
    return {kind: n for kind, n in counts.items() if n}


def _read_model(archive: UploadArchive, names: list[str], family: str, checked: Checked,
                say: Progress, *, strict: bool) -> _Built | None:
    issues = checked.issues
    if family == detect.ASM:
        detected = detect.detect_asm(names, issues)
        checked.layout = detected.layout
        files = _read_files(archive, detected, (",", ";"), checked, say, oneroster_12=False,
                            strict=strict)
        return _Built(
            asm_model(files.frames), files.partial(detected.specs),
            _unavailable(files, _ASM_KINDS),
            frozenset(f for f in ("students.csv", "staff.csv")
                      if files.lacks(f, "email_address")),
        )

    version, modes, users = _oneroster_version(archive, names, issues)
    if version is None:
        return None
    detected = detect.detect_oneroster(names, version, modes, issues)
    checked.layout = detected.layout
    checked.files_ignored = sorted({*checked.files_ignored, *detected.ignored})
    files = _read_files(archive, detected, (",",), checked, say, strict=strict,
                        oneroster_12=version == "1.2", preread={"users.csv": users})
    delta_files = {n for n, mode in detected.modes.items() if mode == "delta"}
    if version == "1.1":
        people, orgs_unread = _PEOPLE_11, files.lacks("users.csv", "orgSourcedIds")
    else:
        people, orgs_unread = _PEOPLE_12, files.lacks("roles.csv", "orgSourcedId")
    model = oneroster_model(files.frames, version, delta_files, issues,
                            orgs_unread=orgs_unread)
    return _Built(
        model, files.partial(detected.specs),
        _unavailable(files, {**_ONEROSTER_KINDS, "students": people, "staff": people}),
        frozenset({"users.csv"}) if files.lacks("users.csv", "email") else frozenset(),
    )


def file_modes(source: Path, limits: LimitSettings) -> dict[str, str]:
    """The file modes a OneRoster upload's manifest declares (``{"users.csv": "delta"}``),
    read exactly as a sync reads them; empty for an ASM upload, an upload without a
    manifest, or one that cannot be read (the sync then says what is wrong with it)."""
    issues = IssueLog()
    archive = open_upload(source, limits, issues)
    if archive is None:
        return {}
    with archive:
        names = list(archive.entries)
        if "manifest.csv" not in names:
            return {}
        _, modes, _ = _oneroster_version(archive, names, issues)
    return modes


def _oneroster_version(
    archive: UploadArchive, names: list[str], issues: IssueLog
) -> tuple[str | None, dict[str, str], Table | None]:
    """The OneRoster version and file modes: from the manifest, else the users.csv header."""
    if "manifest.csv" in names:
        table = _read(archive, "manifest.csv", (",",), issues)
        if table is None:
            return None, {}, None
        if not table.header:
            issues.add(Code.MANIFEST_INVALID, "manifest.csv is empty; export it with its "
                       "propertyName,value header and the oneroster.version row.",
                       file="manifest.csv", line=1)
            return None, {}, None
        header = [h.strip() for h in table.header]
        if "propertyName" not in header or "value" not in header:
            issues.add(Code.MANIFEST_INVALID, "manifest.csv line 1: the header must be "
                       "'propertyName,value'; export the manifest again.",
                       file="manifest.csv", line=1, value=",".join(table.header))
            return None, {}, None
        frame = table.frame  # columns are matched by name, in any order
        props = frame.columns[header.index("propertyName")]
        values = frame.columns[header.index("value")]
        rows = [
            ((p or "").strip(), (v or "").strip(), line)
            for p, v, line in frame.select(props, values, "_line").iter_rows()
        ]
        version, modes = detect.parse_manifest(rows, issues)
        return version, modes, None
    users_entry = next((n for n in names if n.lower() == "users.csv"), None)
    users = _read(archive, users_entry, (",",), issues) if users_entry else None
    version = detect.version_from_users_header(users.header if users else [])
    issues.add(
        Code.MANIFEST_INVALID,
        f"The ZIP has no manifest.csv; the files were read as OneRoster {version} "
        f"(judged from the users.csv header). Include the manifest in the export.",
        file="manifest.csv", severity=Severity.WARNING,
    )
    return version, {}, users


def _read(archive: UploadArchive, entry: str, separators: tuple[str, ...],
          issues: IssueLog) -> Table | None:
    raw = archive.read(entry)
    if raw is None:
        return None
    return read_table(raw, entry, issues, separators)


def _read_files(
    archive: UploadArchive,
    detected: detect.Detected,
    separators: tuple[str, ...],
    checked: Checked,
    say: Progress,
    *,
    oneroster_12: bool,
    strict: bool,
    preread: dict[str, Table | None] | None = None,
) -> _Files:
    """Read and check every file of the layout, as far as each can be read."""
    issues = checked.issues
    frames: dict[str, pl.DataFrame] = {}
    unread: set[str] = set()
    missing: dict[str, tuple[str, ...]] = {}
    unknown_is_error = detected.layout == detect.ASM

    def already_read(spec_name: str) -> Table | None:
        entry = detected.files.get(spec_name)
        return (preread or {}).get(spec_name) if entry == spec_name else None

    to_read = [
        entry for spec_name in detected.specs
        if spec_name not in detected.unchanged
        and (entry := detected.files.get(spec_name)) is not None
        and already_read(spec_name) is None
    ]
    contents = archive.read_each(to_read)
    for spec_name, spec in detected.specs.items():
        entry = detected.files.get(spec_name)
        frames[spec_name] = pl.DataFrame(
            schema={**dict.fromkeys(spec.columns, pl.String), "_line": pl.Int64})
        if spec_name in detected.unchanged:
            continue
        if entry is None:
            unread.add(spec_name)
            continue
        say(f"reading {entry}")
        table = already_read(spec_name)
        if table is None:
            _, raw = next(contents)
            table = None if raw is None else read_table(raw, entry, issues, separators,
                                                        known=frozenset(spec.columns))
        if table is None:
            unread.add(spec_name)
            continue
        if not table.header:
            issues.add(Code.FILE_EMPTY, f"{spec_name} is empty (no header row); export it "
                       f"again with its header row, even when it has no records.",
                       file=spec_name, line=1)
            unread.add(spec_name)
            continue
        frame, lacking = _check_file(table, spec, spec_name, detected, unknown_is_error,
                                     oneroster_12, strict, issues)
        if table.header_mismatch:
            unread.add(spec_name)  # HEADER_FIELD_COUNT: its records were not read
            continue
        frames[spec_name] = frame
        if lacking:
            missing[spec_name] = lacking
    return _Files(frames, frozenset(unread), missing)


def _check_file(table: Table, spec: FileSpec, name: str, detected: detect.Detected,
                unknown_is_error: bool, oneroster_12: bool, strict: bool,
                issues: IssueLog) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The file's frame with the spec's column names (a missing column all blank, and
    never "blank but required": its header issue said it), and the missing columns."""
    header = check_header(table, spec, unknown_is_error=unknown_is_error, issues=issues,
                          strict=strict)
    frame = tidy(table, header.mapping)
    delta = detected.modes.get(name) == "delta"
    frame = check_values(frame, spec, name, delta=delta, oneroster_12=oneroster_12,
                         issues=issues)
    if header.missing:
        frame = frame.with_columns(pl.lit(None, pl.String).alias(c) for c in header.missing)
    return frame, header.missing
