"""The pure front half of the pipeline: an upload in, a checked model out.

    open safely → detect layout → read + validate → map to model
    → person checks → filter → references → patch

``check_upload`` is what ``rosterdrop validate`` runs, and the first half of
every sync. It reads the upload and nothing else: no clock (``today`` is a
parameter), no store, no network.
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
        model = _read_model(archive, names, family, checked, say)
    if model is None:
        return checked

    say("checking people")
    model = check_people(model, issues)
    checked.counts = model.counts()
    say("filtering")
    filtered = apply_filter(model, tenant.filter, today, family)
    checked.filtered = _count_by_kind(filtered.counts)
    say("checking references")
    check_references(filtered.model, family, filtered.gone, issues)
    patched = apply_patch(filtered.model, tenant.patch, family, issues)
    checked.patched = patched.counts
    checked.summary = summary_frame(filtered.summary + patched.summary)
    checked.model = patched.model
    return checked


def _count_by_kind(counts: dict[str, int]) -> dict[str, int]:
    return {kind: n for kind, n in counts.items() if n}


def _read_model(archive: UploadArchive, names: list[str], family: str, checked: Checked,
                say: Progress) -> Model | None:
    issues = checked.issues
    if family == detect.ASM:
        detected = detect.detect_asm(names, issues)
        checked.layout = detected.layout
        frames = _read_files(archive, detected, (",", ";"), checked, say, oneroster_12=False)
        return None if frames is None else asm_model(frames)

    version, modes, users = _oneroster_version(archive, names, issues)
    if version is None:
        return None
    detected = detect.detect_oneroster(names, version, modes, issues)
    checked.layout = detected.layout
    checked.files_ignored = sorted({*checked.files_ignored, *detected.ignored})
    frames = _read_files(archive, detected, (",",), checked, say,
                         oneroster_12=version == "1.2", preread={"users.csv": users})
    if frames is None:
        return None
    delta_files = {n for n, mode in detected.modes.items() if mode == "delta"}
    return oneroster_model(frames, version, delta_files, issues)


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
    preread: dict[str, Table | None] | None = None,
) -> dict[str, pl.DataFrame] | None:
    """Read and check every file of the layout; None when the model cannot be built."""
    issues = checked.issues
    frames: dict[str, pl.DataFrame] = {}
    complete = True
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
        if spec_name in detected.unchanged:
            frames[spec_name] = pl.DataFrame(
                schema={**dict.fromkeys(spec.columns, pl.String), "_line": pl.Int64})
            continue
        if entry is None:
            complete = False
            continue
        say(f"reading {entry}")
        table = already_read(spec_name)
        if table is None:
            _, raw = next(contents)
            table = None if raw is None else read_table(raw, entry, issues, separators)
        if table is None:
            complete = False
            continue
        if not table.header:
            issues.add(Code.FILE_EMPTY, f"{spec_name} is empty (no header row); export it "
                       f"again with its header row, even when it has no records.",
                       file=spec_name, line=1)
            complete = False
            continue
        frame = _check_file(table, spec, spec_name, detected, unknown_is_error,
                            oneroster_12, issues)
        if frame is None:
            complete = False
            continue
        frames[spec_name] = frame
    return frames if complete else None


def _check_file(table: Table, spec: FileSpec, name: str, detected: detect.Detected,
                unknown_is_error: bool, oneroster_12: bool,
                issues: IssueLog) -> pl.DataFrame | None:
    mapping = check_header(table, spec, unknown_is_error=unknown_is_error, issues=issues)
    frame = tidy(table, mapping)
    delta = detected.modes.get(name) == "delta"
    frame = check_values(frame, spec, name, delta=delta, oneroster_12=oneroster_12,
                         issues=issues)
    if any(column not in mapping for column in spec.columns):
        return None
    return frame
