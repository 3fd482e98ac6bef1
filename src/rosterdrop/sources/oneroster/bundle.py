"""OneRoster REST JSON → a OneRoster CSV bundle ZIP (the upload layout of formats.md).

A pull does not map JSON onto the directory model itself: it writes exactly
the bulk upload an SIS would have exported, and the pipeline takes it from
there (one reader, one validator, one mapping). Records are written row by
row to one CSV part file per table as pages arrive, so memory does not grow
with the district; ``write_zip`` then sorts every part by ``sourcedId`` on
disk (polars, streaming) and packs a ZIP with fixed timestamps, so the same
SIS data always gives the same bytes (and a run of an unchanged SIS is
recorded as ``unchanged``).

The row functions are pure and total: any JSON value becomes a row of
strings, and whatever is wrong with it is left for validation to report.
Mapping (REST binding → CSV binding):

* references (``{"sourcedId": …, "href": …, "type": …}``) → their sourcedId;
  lists of references → comma-separated ids (``orgs`` → ``orgSourcedIds``,
  ``terms`` → ``termSourcedIds``, ``agents`` → ``agentSourcedIds``);
* lists of strings (grades, subjects, periods) → comma-separated;
  ``userIds`` → ``{type:identifier}`` items; booleans → ``true``/``false``;
* ``dateLastModified`` → ``YYYY-MM-DDTHH:MM:SS.sssZ`` (UTC) when it parses;
* 1.2: ``preferredFirstName``/``preferredLastName`` → ``preferredGivenName``/
  ``preferredFamilyName``, ``primaryOrg`` → ``primaryOrgSourcedId``, and each
  entry of a user's ``roles`` array → one ``roles.csv`` row (sourcedId
  ``<user>-role-<n>`` when the server gives none; status from the user).
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
import zipfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import polars as pl

from rosterdrop.errors import InputError
from rosterdrop.paths import private_file, private_folder
from rosterdrop.pipeline.headers import (
    CLASSES_HEADER,
    COURSES_HEADER,
    ENROLLMENTS_HEADER,
    MANIFEST_FILES,
    MANIFEST_HEADER,
    ORGS_HEADER,
    ROLES_HEADER,
    SESSIONS_HEADER,
    USERS_11_HEADER,
    USERS_12_HEADER,
)

Row = tuple[str, ...]
Record = dict[str, Any]

ZIP_DATE: Final = (2000, 1, 1, 0, 0, 0)
COMPRESS_LEVEL: Final = 6
ORDER: Final = "_order"
"""Extra column of the roles part: a role's position in its user's ``roles`` array."""

FILE_OF: Final = {
    "orgs": "orgs.csv",
    "academicSessions": "academicSessions.csv",
    "courses": "courses.csv",
    "classes": "classes.csv",
    "users": "users.csv",
    "enrollments": "enrollments.csv",
}


# --- JSON values → CSV fields -----------------------------------------------------------


def text(value: Any) -> str:
    """A scalar as the CSV binding writes it; lists comma-joined, references by id."""
    if value.__class__ is str:  # the common case, first
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return ",".join(s for s in (text(v) for v in value) if s)
    if isinstance(value, dict):
        return ref(value)
    return str(value)


def ref(value: Any) -> str:
    """A GUIDRef (``{"sourcedId": "org-1", …}``) or a bare id → the id."""
    if isinstance(value, dict):
        value = value.get("sourcedId")
    return "" if isinstance(value, dict | list) else text(value)


def refs(value: Any) -> str:
    """A list of GUIDRefs → ``id1,id2``."""
    if isinstance(value, list):
        return ",".join(s for s in (ref(v) for v in value) if s)
    return ref(value)


def user_ids(value: Any) -> str:
    """``[{"type": "LDAP", "identifier": "12"}]`` → ``{LDAP:12}``."""
    if not isinstance(value, list):
        return text(value)
    items = []
    for item in value:
        if isinstance(item, dict):
            items.append("{" + f"{text(item.get('type'))}:{text(item.get('identifier'))}" + "}")
        else:
            items.append(text(item))
    return ",".join(i for i in items if i)


def timestamp(value: Any) -> str:
    """``dateLastModified`` in the CSV binding's form, when it is a parseable instant."""
    raw = text(value)
    if not raw:
        return raw
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        return raw
    try:
        return instant_text(moment)
    except (OverflowError, ValueError):
        return raw


def instant_text(moment: datetime) -> str:
    """An instant as both OneRoster bindings write it, ``2026-01-15T02:00:00.000Z``
    (a naive one is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def _common(r: Record) -> Row:
    return text(r.get("sourcedId")), text(r.get("status")), timestamp(r.get("dateLastModified"))


# --- records → rows (one function per table) ----------------------------------------------


def org_row(r: Record) -> Row:
    return (*_common(r), text(r.get("name")), text(r.get("type")), text(r.get("identifier")),
            ref(r.get("parent")))


def session_row(r: Record) -> Row:
    return (*_common(r), text(r.get("title")), text(r.get("type")), text(r.get("startDate")),
            text(r.get("endDate")), ref(r.get("parent")), text(r.get("schoolYear")))


def course_row(r: Record) -> Row:
    return (*_common(r), ref(r.get("schoolYear")), text(r.get("title")),
            text(r.get("courseCode")), text(r.get("grades")), ref(r.get("org")),
            text(r.get("subjects")), text(r.get("subjectCodes")))


def class_row(r: Record) -> Row:
    return (*_common(r), text(r.get("title")), text(r.get("grades")), ref(r.get("course")),
            text(r.get("classCode")), text(r.get("classType")), text(r.get("location")),
            ref(r.get("school")), refs(r.get("terms")), text(r.get("subjects")),
            text(r.get("subjectCodes")), text(r.get("periods")))


def enrollment_row(r: Record) -> Row:
    return (*_common(r), ref(r.get("class")), ref(r.get("school")), ref(r.get("user")),
            text(r.get("role")), text(r.get("primary")), text(r.get("beginDate")),
            text(r.get("endDate")))


def user_row_11(r: Record) -> Row:
    return (*_common(r), text(r.get("enabledUser")), refs(r.get("orgs")), text(r.get("role")),
            text(r.get("username")), user_ids(r.get("userIds")), text(r.get("givenName")),
            text(r.get("familyName")), text(r.get("middleName")), text(r.get("identifier")),
            text(r.get("email")), text(r.get("sms")), text(r.get("phone")),
            refs(r.get("agents")), text(r.get("grades")), text(r.get("password")))


def user_row_12(r: Record) -> Row:
    return (*_common(r), text(r.get("enabledUser")), text(r.get("username")),
            user_ids(r.get("userIds")), text(r.get("givenName")), text(r.get("familyName")),
            text(r.get("middleName")), text(r.get("identifier")), text(r.get("email")),
            text(r.get("sms")), text(r.get("phone")), refs(r.get("agents")),
            text(r.get("grades")), text(r.get("password")), text(r.get("userMasterIdentifier")),
            text(r.get("preferredFirstName", r.get("preferredGivenName"))),
            text(r.get("preferredMiddleName")),
            text(r.get("preferredLastName", r.get("preferredFamilyName"))),
            ref(r.get("primaryOrg")), text(r.get("pronouns")))


def role_rows(r: Record) -> list[Row]:
    """A 1.2 user's ``roles`` array → ``roles.csv`` rows, plus their position (``_order``)."""
    roles = r.get("roles")
    if not isinstance(roles, list):
        return []
    user = text(r.get("sourcedId"))
    status = text(r.get("status"))
    modified = timestamp(r.get("dateLastModified"))
    rows: list[Row] = []
    for n, role in enumerate(roles, start=1):
        if not isinstance(role, dict):
            role = {}
        rows.append((
            text(role.get("sourcedId")) or f"{user}-role-{n}", status, modified, user,
            text(role.get("roleType")), text(role.get("role")), text(role.get("beginDate")),
            text(role.get("endDate")), ref(role.get("org")), ref(role.get("userProfile")),
            str(n),
        ))
    return rows


_ROWS: Final[dict[str, Callable[[Record], Row]]] = {
    "orgs": org_row,
    "academicSessions": session_row,
    "courses": course_row,
    "classes": class_row,
    "enrollments": enrollment_row,
}


def headers(version: str) -> dict[str, tuple[str, ...]]:
    """The CSV files of a bundle, in ZIP order, with their headers (formats.md)."""
    files = {
        "orgs.csv": ORGS_HEADER,
        "academicSessions.csv": SESSIONS_HEADER,
        "courses.csv": COURSES_HEADER,
        "classes.csv": CLASSES_HEADER,
        "users.csv": USERS_11_HEADER if version == "1.1" else USERS_12_HEADER,
    }
    if version == "1.2":
        files["roles.csv"] = ROLES_HEADER
    files["enrollments.csv"] = ENROLLMENTS_HEADER
    return files


# --- the writer (I/O) ---------------------------------------------------------------------


class BundleWriter:
    """Collects records into CSV part files in ``folder``, then packs the ZIP.

    ``counts`` are rows per CSV file; ``notes`` are findings for the admin
    that validation would not put into words (users without roles).
    """

    def __init__(self, folder: Path, version: str) -> None:
        if version not in ("1.1", "1.2"):
            raise ValueError(f"OneRoster version {version!r}")
        self.version = version
        self.folder = folder
        self.headers = headers(version)
        self.counts = dict.fromkeys(self.headers, 0)
        self.notes: list[str] = []
        self._without_roles = 0
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, Any] = {}
        try:
            private_folder(folder)
            for name, header in self.headers.items():
                handle = (folder / f"{name}.part").open(
                    "w", encoding="utf-8", errors="replace", newline="")
                self._files[name] = handle
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow((*header, ORDER) if name == "roles.csv" else header)
                self._writers[name] = writer
        except OSError as exc:
            self.close()
            raise InputError(f"cannot write the pulled data to {folder}: "
                             f"{exc.strerror or exc}") from exc

    def add(self, collection: str, records: Iterable[Record]) -> int:
        """Write every record of one collection; returns how many."""
        n = 0
        try:
            if collection == "users":
                n = self._add_users(records)
            else:
                name = FILE_OF[collection]
                make = _ROWS[collection]
                writer = self._writers[name]
                for record in records:
                    writer.writerow(make(record))
                    n += 1
                self.counts[name] += n
        except OSError as exc:
            raise InputError(f"cannot write the pulled data to {self.folder}: "
                             f"{exc.strerror or exc}") from exc
        return n

    def _add_users(self, records: Iterable[Record]) -> int:
        users = self._writers["users.csv"]
        roles = self._writers.get("roles.csv")
        row = user_row_11 if self.version == "1.1" else user_row_12
        n = 0
        for record in records:
            users.writerow(row(record))
            n += 1
            if roles is not None:
                made = role_rows(record)
                if not made:
                    self._without_roles += 1
                roles.writerows(made)
                self.counts["roles.csv"] += len(made)
        self.counts["users.csv"] += n
        return n

    def close(self) -> None:
        for handle in self._files.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._files.clear()

    def write_zip(self, out: Path, *, system_name: str, system_code: str) -> dict[str, int]:
        """Sort every part by sourcedId, pack the bundle into ``out`` (atomically)."""
        self.close()
        if self._without_roles:
            self.notes.append(f"users: {self._without_roles:,} user(s) have no roles, so they "
                              f"are not imported (OneRoster 1.2 takes the role from roles)")
        partial = out.with_name(f".{out.name}.partial")
        try:
            with zipfile.ZipFile(partial, "w") as archive:
                self._entry(archive, "manifest.csv", self._manifest(system_name, system_code))
                for name, header in self.headers.items():
                    part = self.folder / f"{name}.part"
                    ordered = self.folder / f"{name}.sorted"
                    frame = pl.scan_csv(part, infer_schema=False, quote_char='"')
                    keys: list[pl.Expr] = [pl.col("sourcedId")]
                    if name == "roles.csv":
                        keys = [pl.col("userSourcedId"), pl.col(ORDER).cast(pl.Int64)]
                    frame.sort(keys, maintain_order=True).select(header).sink_csv(
                        ordered, line_terminator="\n", null_value="")
                    with ordered.open("rb") as source:
                        self._entry(archive, name, source)
                    ordered.unlink()
            os.replace(private_file(partial), out)
        except OSError as exc:
            raise InputError(f"cannot write {out}: {exc.strerror or exc}") from exc
        except pl.exceptions.PolarsError as exc:
            raise InputError(f"cannot sort the pulled data in {self.folder}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                partial.unlink()
        return dict(self.counts)

    def remove_parts(self) -> None:
        self.close()
        for name in self.headers:
            for suffix in (".part", ".sorted"):
                with contextlib.suppress(OSError):
                    (self.folder / f"{name}{suffix}").unlink()

    def _manifest(self, system_name: str, system_code: str) -> bytes:
        supplied = {name.removesuffix(".csv") for name in self.headers}
        rows = [("manifest.version", "1.0"), ("oneroster.version", self.version)]
        rows += [(f"file.{name}", "bulk" if name in supplied else "absent")
                 for name in MANIFEST_FILES[self.version]]
        rows += [("source.systemName", system_name), ("source.systemCode", system_code)]
        lines = [",".join(MANIFEST_HEADER)] + [f"{k},{_csv_field(v)}" for k, v in rows]
        return ("\n".join(lines) + "\n").encode("utf-8")

    @staticmethod
    def _entry(archive: zipfile.ZipFile, name: str, source: bytes | IO[bytes]) -> None:
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3
        info.external_attr = 0o100644 << 16
        setattr(info, "compress_level" if sys.version_info >= (3, 13) else "_compresslevel",
                COMPRESS_LEVEL)
        # ZIP64 headers only where an entry might pass 2 GiB (plain ZIPs stay plain).
        big = not isinstance(source, bytes) and os.fstat(source.fileno()).st_size > 1 << 30
        with archive.open(info, "w", force_zip64=big) as stream:
            if isinstance(source, bytes):
                stream.write(source)
            else:
                shutil.copyfileobj(source, stream, 1 << 20)


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
