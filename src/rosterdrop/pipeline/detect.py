"""Which layout an upload is, and which of its files to read.

Decided from the entry names alone (exact, case-sensitive), with "did you
mean" issues for case slips, plus the OneRoster manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rosterdrop.codes import Code, Severity
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.layouts import (
    ASM_FILES,
    ASM_ONLY_NAMES,
    ONEROSTER_FILES,
    ONEROSTER_ONLY_NAMES,
    FileSpec,
)

ASM = "asm"
ONEROSTER = "oneroster"
MODES = ("absent", "bulk", "delta")
NEEDED_FOR = {
    "orgs.csv": "every person, course and class names its school there",
    "users.csv": "it holds the students and staff",
    "roles.csv": "it gives each user a role and a school",
    "courses.csv": "every class names its course there",
    "classes.csv": "it holds the classes",
    "enrollments.csv": "it says who teaches and who attends each class",
    "academicSessions.csv": "every class names its terms there",
}
"""Why a OneRoster bulk upload cannot do without a file, in the admin's terms."""
_REFUSED = frozenset({Code.ZIP_UNSAFE.value, Code.ZIP_UNREADABLE.value})


@dataclass
class Detected:
    layout: str | None
    """``asm``, ``oneroster-1.1``, ``oneroster-1.2`` or None when unrecognised."""
    files: dict[str, str] = field(default_factory=dict)
    """Spec file name → entry name in the ZIP, for the layout's files found."""
    modes: dict[str, str] = field(default_factory=dict)
    """OneRoster: spec file name → bulk | delta."""
    ignored: list[str] = field(default_factory=list)
    unchanged: set[str] = field(default_factory=set)
    """Files a delta upload declares absent and leaves out: read as empty deltas."""

    @property
    def specs(self) -> dict[str, FileSpec]:
        if self.layout == ASM:
            return ASM_FILES
        if self.layout and self.layout.startswith("oneroster-"):
            return ONEROSTER_FILES[self.layout.removeprefix("oneroster-")]
        return {}


def family(names: list[str], issues: IssueLog, nested: Sequence[str] = ()) -> str | None:
    """ASM or OneRoster, from the file names (case ignored, so slips still tell).

    ``nested``: CSV files the archive found inside folders, already reported as
    ZIP_NESTED_FOLDER; when they are all there is, that issue is the whole answer.
    """
    lower = {name.lower() for name in names}
    asm = sorted(n for n in names if n.lower() in {a.lower() for a in ASM_ONLY_NAMES})
    oneroster = sorted(
        n for n in names if n.lower() in {o.lower() for o in ONEROSTER_ONLY_NAMES}
    )
    if asm and oneroster:
        issues.add(
            Code.FORMAT_UNKNOWN,
            f"The ZIP mixes Apple School Manager files ({', '.join(asm)}) with OneRoster "
            f"files ({', '.join(oneroster)}); upload one layout per ZIP.",
        )
        return None
    if asm:
        return ASM
    if oneroster:
        return ONEROSTER
    if not names and nested:
        return None
    found = ", ".join(sorted(names)) or "no CSV files"
    hint = "courses.csv and classes.csv alone are not enough to tell the layout; " if (
        lower and lower <= {"courses.csv", "classes.csv"}) else ""
    issues.add(
        Code.FORMAT_UNKNOWN,
        f"The upload is neither OneRoster CSV (manifest.csv, orgs.csv, users.csv, …) nor Apple "
        f"School Manager CSV (locations.csv, students.csv, staff.csv, …); it holds {found}. "
        f"{hint}Export the roster in one of these layouts.",
    )
    return None


def resolve_names(
    names: list[str], required: list[str], issues: IssueLog,
    may_lack: frozenset[str] = frozenset(), declared_absent: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Map each required file to its entry, reporting missing files and case slips (which
    are mapped all the same). ``declared_absent``: files the manifest says are absent,
    whose FILE_MISSING says so (one issue, not a header row and then a flood)."""
    by_lower: dict[str, list[str]] = {}
    for name in names:
        by_lower.setdefault(name.lower(), []).append(name)
    # An entry the archive refused (a ZIP bomb's ratio, a bad CRC) is not missing: its
    # ZIP_UNSAFE or ZIP_UNREADABLE already names it.
    refused = {i.file for i in issues if i.code in _REFUSED and i.file}
    found: dict[str, str] = {}
    for expected in required:
        if expected in names:
            found[expected] = expected
            continue
        if expected in refused:
            continue
        near = by_lower.get(expected.lower())
        if near:
            issues.add(
                Code.FILE_NAME_CASE,
                f"The file '{near[0]}' must be named exactly '{expected}' (file names are "
                f"case sensitive); rename it and upload again. It was checked as {expected}.",
                file=near[0],
                value=near[0],
            )
            # Read all the same, so the first report also covers what is in it; the
            # error keeps the upload from being applied.
            found[expected] = near[0]
        elif expected in declared_absent and expected not in may_lack:
            issues.add(
                Code.FILE_MISSING,
                f"manifest.csv declares {expected} absent, but a bulk upload needs it "
                f"({NEEDED_FOR.get(expected, 'the sync reads it')}); export {expected} with "
                f"its records and declare it bulk in the manifest "
                f"(file.{expected.removesuffix('.csv')},bulk). References to it were not "
                f"checked.",
                file=expected,
            )
        elif expected not in may_lack:
            issues.add(
                Code.FILE_MISSING,
                f"The required file '{expected}' is missing from the ZIP; add it (a header "
                f"row alone is enough when it has no records) and upload again.",
                file=expected,
            )
    return found


def detect_asm(names: list[str], issues: IssueLog) -> Detected:
    detected = Detected(ASM)
    detected.files = resolve_names(names, list(ASM_FILES), issues)
    expected_lower = {n.lower() for n in ASM_FILES}
    for name in sorted(names):
        if name.lower() not in expected_lower:
            issues.add(
                Code.ZIP_UNEXPECTED_FILE,
                f"'{name}' is not one of the six Apple School Manager files (locations.csv, "
                f"students.csv, staff.csv, courses.csv, classes.csv, rosters.csv); remove it "
                f"from the ZIP.",
                file=name,
            )
    return detected


def parse_manifest(
    rows: list[tuple[str, str, int]], issues: IssueLog
) -> tuple[str | None, dict[str, str]]:
    """(version, file modes) from manifest rows of (propertyName, value, line)."""
    version: str | None = None
    modes: dict[str, str] = {}
    for prop, value, line in rows:
        if prop == "oneroster.version":
            if value in ("1.1", "1.2"):
                version = value
            else:
                issues.add(
                    Code.MANIFEST_INVALID,
                    f"manifest.csv line {line}: oneroster.version is '{value}'; rosterdrop "
                    f"reads OneRoster 1.1 and 1.2, so export one of those versions.",
                    file="manifest.csv", line=line, column="value", value=value,
                )
                version = "invalid"
        elif prop.startswith("file."):
            name = prop.removeprefix("file.") + ".csv"
            if value in MODES:
                modes[name] = value
            else:
                issues.add(
                    Code.MANIFEST_INVALID,
                    f"manifest.csv line {line}: {prop} is '{value}' but must be absent, bulk "
                    f"or delta; correct the manifest.",
                    file="manifest.csv", line=line, column="value", value=value,
                )
        elif prop in ("manifest.version", "source.systemName", "source.systemCode"):
            continue
        else:
            issues.add(
                Code.MANIFEST_INVALID,
                f"manifest.csv line {line}: unknown property '{prop}' was ignored; check its "
                f"spelling (for example file.demographics).",
                file="manifest.csv", line=line, column="propertyName", value=prop,
                severity=Severity.WARNING,
            )
    if version is None:
        issues.add(
            Code.MANIFEST_INVALID,
            "manifest.csv has no oneroster.version row; add 'oneroster.version,1.1' (or 1.2).",
            file="manifest.csv",
        )
        version = "invalid"
    return (None if version == "invalid" else version), modes


def reconcile_manifest(
    names: list[str], modes: dict[str, str], required: list[str], issues: IssueLog
) -> dict[str, str]:
    """Check the manifest against the files present; return bulk/delta per required file."""
    present = set(names)
    for name, mode in sorted(modes.items()):
        if mode != "absent" and name not in present and name not in required:
            issues.add(
                Code.MANIFEST_INVALID,
                f"manifest.csv declares {name} as {mode}, but the ZIP has no {name}; add the "
                f"file or declare it absent.",
                file="manifest.csv", value=name,
            )
        if mode == "absent" and name in present:
            issues.add(
                Code.MANIFEST_INVALID,
                f"manifest.csv declares {name} absent, but the ZIP contains it; it was read "
                f"anyway. Correct the manifest.",
                file="manifest.csv", value=name, severity=Severity.WARNING,
            )
    return {name: ("delta" if modes.get(name) == "delta" else "bulk") for name in required}


def version_from_users_header(header: list[str]) -> str:
    """Without a manifest, the users.csv header tells 1.1 (role column) from 1.2."""
    columns = {c.strip() for c in header}
    return "1.1" if "role" in columns or "orgSourcedIds" in columns else "1.2"


def detect_oneroster(
    names: list[str], version: str, modes: dict[str, str], issues: IssueLog
) -> Detected:
    specs = ONEROSTER_FILES[version]
    detected = Detected(f"oneroster-{version}")
    required = list(specs)
    # A delta upload carries only what changed: a file it declares absent may be left out.
    delta = "delta" in modes.values()
    unchanged = frozenset(n for n in required if delta and modes.get(n) == "absent")
    declared_absent = frozenset(n for n in required if modes.get(n) == "absent")
    detected.files = resolve_names(names, required, issues, unchanged, declared_absent)
    detected.modes = reconcile_manifest(names, modes, required, issues)
    for name in unchanged:
        if name not in detected.files:
            detected.modes[name] = "delta"
            detected.unchanged.add(name)
    known_lower = {n.lower() for n in required} | {"manifest.csv"}
    detected.ignored = sorted(n for n in names if n.lower() not in known_lower)
    return detected
