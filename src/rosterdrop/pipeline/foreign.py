"""Roster formats rosterdrop does not read, recognised so that one issue can name them.

A Clever export, Microsoft School Data Sync files, OneRoster 1.0, a Canvas SIS
import or a Google user list shares file names (``students.csv``,
``users.csv``, ``enrollments.csv``) with the two layouts rosterdrop reads, so
the layout checks would answer it with a wrong diagnosis or a flood of header
issues. Here such an upload is told apart from the entry names and each CSV's
header row, and gets one ``FORMAT_FOREIGN`` issue instead.

Genuine uploads come first: a ZIP with a ``manifest.csv``, or any file with a
column only Apple School Manager uses (``person_id``, ``location_id``, …), is
never foreign, and one with OneRoster's ``dateLastModified`` column is foreign
only as OneRoster 1.0 (1.0 columns and none that 1.1 or 1.2 added). Everything
else needs a positive sign of one format: its own columns in some file. A
near miss of rosterdrop's layouts therefore keeps its normal diagnosis.

``identify`` is pure (names and header rows in, a finding out); ``recognise``
reads the header rows from the archive, a bounded head of each entry.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rosterdrop.codes import Code
from rosterdrop.pipeline.issues import IssueLog

if TYPE_CHECKING:
    from rosterdrop.pipeline.archive import UploadArchive

TAKES = "rosterdrop reads OneRoster CSV 1.1 or 1.2, or Apple School Manager CSV"

ASM_MARKERS = frozenset({
    "location_id", "location_name", "person_id", "person_number", "sis_username",
    "password_policy", "instructor_id", "roster_id",
})
"""Columns only Apple School Manager CSV has: any of them means the upload is meant as ASM."""

ONEROSTER_MARKER = "datelastmodified"
"""Every OneRoster CSV file (1.0 to 1.2) has it; none of the other formats does."""

ONEROSTER_10_ONLY = {
    "users.csv": frozenset({"userid", "agents"}),
    "courses.csv": frozenset({"schoolyearid"}),
    "classes.csv": frozenset({"termsourcedid"}),
}
"""OneRoster 1.0 columns that 1.1 renamed (userIds, agentSourcedIds, schoolYearSourcedId,
termSourcedIds)."""

ONEROSTER_11_ON = frozenset({
    "enableduser", "userids", "agentsourcedids", "middlename", "password",
    "schoolyearsourcedid", "termsourcedids", "grades", "periods", "subjectcodes",
    "schoolyear", "begindate", "primaryorgsourcedid", "usermasteridentifier",
    "preferredgivenname", "pronouns", "roletype",
})
"""Columns OneRoster 1.1 or 1.2 added; one of them rules 1.0 out."""

ONEROSTER_11_ON_FILES = frozenset({"roles.csv", "userprofiles.csv", "categories.csv",
                                   "lineitems.csv", "results.csv", "resources.csv"})

SDS_V1_FILES = frozenset({
    "school.csv", "section.csv", "student.csv", "teacher.csv", "studentenrollment.csv",
    "teacherroster.csv", "user.csv", "guardianrelationship.csv",
})
SDS_V1_COLUMNS = frozenset({"sis id", "school sis id", "section sis id"})
SDS_V1_UK_COLUMNS = frozenset({"dfe number", "school dfe number"})

CLEVER_IDS = frozenset({"student_id", "teacher_id", "section_id", "school_name", "staff_id"})

_GOOGLE_MARK = re.compile(r".*\[(required|read only|upload only)\]", re.IGNORECASE)
_GOOGLE_TELLING = frozenset({"email address [required]", "org unit path [required]"})


@dataclass(frozen=True)
class Foreign:
    """A foreign format found, with the file and columns that tell it."""

    name: str
    """The format, e.g. ``Clever`` or ``Microsoft School Data Sync``."""
    version: str | None
    file: str
    """The file whose header shows the format."""
    evidence: str
    """What in that file shows it, e.g. ``Clever's School_id and Student_id columns``."""
    fix: str
    """How to get OneRoster or ASM CSV from the system that made the files."""
    kind: str = "export"
    """What the files are: an ``export``, an ``import`` (Canvas), a ``user list``…"""

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name

    def message(self) -> str:
        return (f"This upload is a {self.label} {self.kind}, not a roster layout rosterdrop "
                f"reads ({self.file} has {self.evidence}); {TAKES}. {self.fix}")


@dataclass(frozen=True)
class _Header:
    file: str
    columns: tuple[str, ...]
    """As written (trimmed)."""
    lower: frozenset[str]

    def has(self, *columns: str) -> bool:
        return all(c in self.lower for c in columns)

    def shown(self, *columns: str) -> str:
        """The columns (lower-cased names) as the file spells and orders them:
        ``X and Y columns``."""
        wanted = set(columns)
        spelled = list(dict.fromkeys(c for c in self.columns if c.lower() in wanted))
        return _columns(spelled)


def _columns(spelled: Sequence[str]) -> str:
    return f"{_join(spelled)} column" + ("s" if len(spelled) > 1 else "")


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


# --- the formats -----------------------------------------------------------------------


CLEVER_FIX = (
    "Clever gets its data from the district's SIS: export the roster from the SIS as "
    "OneRoster CSV (1.1 or 1.2, with its manifest.csv) or as Apple School Manager CSV, "
    "and upload that ZIP instead.")
SDS_V1_FIX = (
    "SDS's own CSV format is made for Microsoft 365 only: export the roster from the SIS "
    "as OneRoster CSV 1.1 or 1.2 (which SDS can read too) or as Apple School Manager CSV, "
    "and upload that ZIP instead.")
SDS_V2_FIX = (
    "These files look like OneRoster but follow SDS's own layout: export the roster from "
    "the SIS as OneRoster CSV 1.1 or 1.2 itself (with its manifest.csv), not converted "
    "for SDS, or as Apple School Manager CSV, and upload that ZIP instead.")
ONEROSTER_10_FIX = (
    "In the SIS's OneRoster export settings choose version 1.1 or 1.2 (those exports "
    "include a manifest.csv), export again and upload that ZIP.")
CANVAS_FIX = (
    "Canvas SIS CSV is the import format of the Canvas LMS, not a roster export: export "
    "the roster from the SIS as OneRoster CSV 1.1 or 1.2 or as Apple School Manager CSV, "
    "and upload that ZIP instead.")
GOOGLE_FIX = (
    "A list of accounts has no schools, classes or rosters: export the roster from the "
    "SIS as OneRoster CSV 1.1 or 1.2 or as Apple School Manager CSV, and upload that ZIP "
    "instead.")
CLASS_LIST_FIX = (
    "A list of names and email addresses has no schools, classes or rosters: export the "
    "roster from the SIS as OneRoster CSV 1.1 or 1.2 or as Apple School Manager CSV, and "
    "upload that ZIP instead.")


def _clever(head: _Header) -> str | None:
    ids = sorted(CLEVER_IDS & head.lower)
    if head.has("school_id") and ids:
        return f"Clever's {head.shown('school_id', ids[0])}"
    return None


def _sds_v1(head: _Header) -> str | None:
    known_name = head.file.lower() in SDS_V1_FILES
    if SDS_V1_COLUMNS & head.lower and (known_name or head.has("sis id", "school sis id")):
        return f"SDS's {head.shown(*sorted(SDS_V1_COLUMNS & head.lower))}"
    uk = SDS_V1_UK_COLUMNS & head.lower
    if uk and known_name:
        return f"SDS's {head.shown(*sorted(uk))}"
    return None


_NOT_ONEROSTER = "without OneRoster's sourcedId, status and dateLastModified columns"


def _sds_v2(head: _Header) -> str | None:
    name = head.file.lower()
    bare = not head.has("status") and not head.has(ONEROSTER_MARKER)
    if name == "enrollments.csv" and head.has("classsourcedid", "usersourcedid", "role") \
            and not head.has("sourcedid"):
        return f"SDS's {head.shown('classsourcedid', 'usersourcedid', 'role')} {_NOT_ONEROSTER}"
    if name == "roles.csv" and head.has("usersourcedid", "orgsourcedid", "role") \
            and not head.has("sourcedid"):
        return f"SDS's {head.shown('usersourcedid', 'orgsourcedid', 'role')} {_NOT_ONEROSTER}"
    if name == "users.csv" and head.has("activedirectorymatchid"):
        return f"SDS's {head.shown('activedirectorymatchid')}"
    if name == "users.csv" and bare and head.has("sourcedid", "givenname", "familyname") \
            and not head.has("enableduser"):
        return (f"SDS's {head.shown('sourcedid', 'givenname', 'familyname')} without "
                "OneRoster's status, dateLastModified and enabledUser columns")
    if name in ("userflags.csv", "relationships.csv") and head.has("usersourcedid"):
        return f"SDS's {head.shown('usersourcedid')} in a file only SDS has"
    return None


def _sds_v2_version(heads: Mapping[str, _Header]) -> str | None:
    users = next((h for h in heads.values() if h.file.lower() == "users.csv"), None)
    if users is not None and users.has("role"):
        return "v2"
    if users is not None or any(h.file.lower() == "roles.csv" for h in heads.values()):
        return "v2.1"
    return None


def _canvas(head: _Header) -> str | None:
    signs = (
        ("user_id", "login_id"),
        ("account_id", "parent_account_id"),
        ("course_id", "short_name", "long_name"),
        ("section_id", "course_id", "name"),
        ("xlist_course_id", "section_id"),
        ("observer_id", "student_id"),
    )
    for columns in signs:
        if head.has(*columns):
            return f"Canvas's {head.shown(*columns)}"
    if head.has("user_id", "role") and head.lower & {"course_id", "section_id"}:
        return f"Canvas's {head.shown('course_id', 'section_id', 'user_id', 'role')}"
    if head.has("term_id", "name", "status"):
        return f"Canvas's {head.shown('term_id', 'name', 'status')}"
    return None


def _google_workspace(head: _Header) -> str | None:
    marked = sorted((c for c in head.columns if _GOOGLE_MARK.fullmatch(c)),
                    key=lambda c: c.lower() not in _GOOGLE_TELLING)
    if head.has("email address [required]") or len(marked) >= 2:
        return f"the Google Admin console's {_columns(marked[:2])}"
    return None


def _google_class_list(head: _Header) -> str | None:
    if head.has("first name", "last name", "email address"):
        return f"only {head.shown('last name', 'first name', 'email address')}"
    return None


@dataclass(frozen=True)
class _Format:
    name: str
    sign: Callable[[_Header], str | None]
    """The evidence of the format in one file's header, or None."""
    fix: str
    prefer: tuple[str, ...]
    """Files whose evidence the message shows first: those most like rosterdrop's own."""
    version: Callable[[Mapping[str, _Header]], str | None] = lambda _heads: None
    kind: str = "export"

    def evidence(self, heads: Mapping[str, _Header]) -> list[tuple[_Header, str]]:
        found = [(head, why) for head in heads.values() if (why := self.sign(head))]
        rank = {name: i for i, name in enumerate(self.prefer)}
        return sorted(found, key=lambda hw: rank.get(hw[0].file.lower(), len(rank)))


def _sds_v1_version(heads: Mapping[str, _Header]) -> str | None:
    uk = any(h.lower & SDS_V1_UK_COLUMNS for h in heads.values())
    return "v1 (UK format)" if uk else "v1"


FORMATS = (
    _Format("Clever", _clever, CLEVER_FIX, ("students.csv", "teachers.csv")),
    _Format("Microsoft School Data Sync", _sds_v1, SDS_V1_FIX, ("student.csv", "teacher.csv"),
            _sds_v1_version),
    _Format("Microsoft School Data Sync", _sds_v2, SDS_V2_FIX,
            ("users.csv", "enrollments.csv", "roles.csv"), _sds_v2_version),
    _Format("Canvas SIS CSV", _canvas, CANVAS_FIX, ("users.csv", "enrollments.csv"),
            kind="import"),
    _Format("Google Workspace", _google_workspace, GOOGLE_FIX, (), kind="user list"),
    _Format("Google Classroom or spreadsheet", _google_class_list, CLASS_LIST_FIX, (),
            kind="class list"),
)
"""In order of preference when two formats show in as many files."""


# --- deciding ---------------------------------------------------------------------------


def identify(names: Sequence[str], headers: Mapping[str, Sequence[str]]) -> Foreign | None:
    """The foreign format the upload is in, or None when it may be OneRoster 1.1/1.2 or
    ASM (however broken) or shows no known format. ``headers``: entry name → header row."""
    if any(name.lower() == "manifest.csv" for name in names):
        return None
    heads = {
        name: _Header(name, tuple(c.strip() for c in row),
                      frozenset(c.strip().lower() for c in row))
        for name, row in headers.items()
    }
    if any(h.lower & ASM_MARKERS for h in heads.values()):
        return None
    if any(h.has(ONEROSTER_MARKER) for h in heads.values()):
        return _oneroster_10(names, heads)
    best: tuple[int, Foreign] | None = None
    for fmt in FORMATS:
        shown = fmt.evidence(heads)
        if shown and (best is None or len(shown) > best[0]):
            head, why = shown[0]
            best = (len(shown), Foreign(fmt.name, fmt.version(heads), head.file, why,
                                        fmt.fix, fmt.kind))
    return None if best is None else best[1]


def _oneroster_10(names: Sequence[str], heads: Mapping[str, _Header]) -> Foreign | None:
    """OneRoster 1.0: 1.0's own columns, and nothing 1.1 or 1.2 added."""
    if any(name.lower() in ONEROSTER_11_ON_FILES for name in names):
        return None
    if any(h.lower & ONEROSTER_11_ON for h in heads.values()):
        return None
    for head in sorted(heads.values(), key=lambda h: h.file.lower() != "users.csv"):
        old = ONEROSTER_10_ONLY.get(head.file.lower(), frozenset()) & head.lower
        if old:
            why = f"OneRoster 1.0's {head.shown(*old)} and there is no manifest.csv"
            return Foreign("OneRoster", "1.0", head.file, why, ONEROSTER_10_FIX)
    return None


def header_row(raw: bytes) -> list[str]:
    """The header row of a CSV file from its first bytes; [] when there is none."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16-le" if raw.startswith(codecs.BOM_UTF16_LE) else "utf-16-be"
        body = raw[2:]
        text = body[: len(body) - len(body) % 2].decode(encoding, errors="replace")
    else:
        first = raw.removeprefix(codecs.BOM_UTF8)
        first = re.split(rb"[\r\n]", first, maxsplit=1)[0]
        try:
            text = first.decode("utf-8")
        except UnicodeDecodeError:
            text = first.decode("cp1252", errors="replace")
    line = re.split(r"[\r\n]", text, maxsplit=1)[0].removeprefix("\ufeff")
    delimiter = "," if "," in line or not ({";", "\t"} & set(line)) else (
        ";" if ";" in line else "\t")
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:  # a NUL byte, on Pythons that refuse it: the names still tell
        return line.split(delimiter)


def recognise(archive: UploadArchive, names: list[str], issues: IssueLog) -> bool:
    """Report the upload as FORMAT_FOREIGN when it is in a foreign format (True).

    Reads only a bounded head of each CSV; adds nothing and returns False otherwise,
    leaving the upload to the layout checks.
    """
    if not names or any(name.lower() == "manifest.csv" for name in names):
        return False
    headers = {name: header_row(archive.head(name) or b"") for name in names}
    found = identify(names, headers)
    if found is None:
        return False
    issues.add(Code.FORMAT_FOREIGN, found.message(), file=found.file, value=found.label)
    return True
