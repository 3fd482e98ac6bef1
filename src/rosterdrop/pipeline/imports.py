"""Checking a people import file (``rosterdrop people import``; cli.md "people import").

Accounts created outside the SIS (federated sign-ins, accounts already in Apple
School Manager) are imported so that the next sync's duplicate prevention
finds them. The file is a small CSV written by an admin, checked here as an
upload would be, all or nothing: :func:`read_import` returns the people to
import and every problem (``IMPORT_INVALID``), with its file, physical line
(the header is line 1), column and value. No I/O: the store passes in the
bytes, the tenant's locations and its existing accounts, and writes the result.

Plain Python rather than polars: the file holds tens or hundreds of rows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from rosterdrop.codes import Code, Severity
from rosterdrop.pipeline.issues import Issue
from rosterdrop.pipeline.people import EMAIL_PATTERN
from rosterdrop.pipeline.snapshot import ACTIVE, IMPORTED

REQUIRED_COLUMNS = ("email_address", "first_name", "last_name", "role")
OPTIONAL_COLUMNS = ("account", "person_number", "sis_username", "location_ids")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
ROLES = ("student", "staff")
PLACEHOLDER_PREFIX = "imported:"
"""An imported account has no SIS id; its person_id (unique, never null in the store) is
this prefix and its account name, until an SIS person takes it over."""
KNOWN_SHOWN = 10
"""How many of the tenant's location ids a message lists."""


def placeholder_id(account: str) -> str:
    """The person_id an imported account has until the SIS takes it over."""
    return PLACEHOLDER_PREFIX + account


@dataclass(frozen=True, slots=True)
class ExistingAccount:
    """An account of the tenant (active or deactivated), as the import checks it."""

    person_id: str
    account: str
    email_address: str | None
    status: str = ACTIVE


@dataclass(frozen=True, slots=True)
class ImportedPerson:
    """One row of the file, ready to store (``source = "imported"``, active)."""

    line: int
    account: str
    email_address: str
    first_name: str
    last_name: str
    role: str
    person_number: str | None = None
    sis_username: str | None = None
    location_ids: tuple[str, ...] = ()

    @property
    def person_id(self) -> str:
        return placeholder_id(self.account)

    def as_listed(self) -> dict[str, object]:
        """The person as ``people --json`` lists them."""
        return {
            "person_id": self.person_id,
            "role": self.role,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email_address": self.email_address,
            "location_ids": list(self.location_ids),
            "account": self.account,
            "status": ACTIVE,
            "source": IMPORTED,
        }


@dataclass(frozen=True)
class ImportCheck:
    """What :func:`read_import` found: the people, or why none can be imported."""

    file: str
    people: tuple[ImportedPerson, ...] = ()
    issues: list[Issue] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.issues


class _Problems:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[Issue] = []

    def add(self, line: int | None, column: str | None, value: str | None, text: str) -> None:
        where = f"{self.file} line {line}" if line is not None else self.file
        self.issues.append(Issue(
            code=Code.IMPORT_INVALID.value, severity=Severity.ERROR.value, file=self.file,
            line=line, column=column, value=value, message=f"{where}: {text}",
        ))


def _email_problem(value: str) -> str | None:
    """Why ``value`` cannot be an email address, by the upload's rules (pipeline/people.py)."""
    if "'" in value or "’" in value:
        return "contains an apostrophe, which managed accounts do not support"
    if re.match(EMAIL_PATTERN, value) is None or ".." in value:
        return "is not a valid email address"
    return None


def _decode(data: bytes, problems: _Problems) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.add(line, None, None, "the file is not UTF-8 text (byte "
                     f"0x{data[exc.start]:02x} cannot be read); save it as UTF-8 (CSV UTF-8) "
                     "and import it again.")
        return None


def _header(names: list[str], problems: _Problems) -> dict[str, int]:
    """Column name → index of the known columns; reports missing, unknown and repeated ones."""
    index: dict[str, int] = {}
    miscased: set[str] = set()
    for position, raw in enumerate(names):
        name = raw.strip()
        if name in index:
            problems.add(1, name, raw, f"column {name!r} appears twice; keep one of them.")
        elif name in COLUMNS:
            index[name] = position
        elif name.lower() in COLUMNS:
            miscased.add(name.lower())
            problems.add(1, name, raw, f"unknown column {name!r}; spell it "
                         f"{name.lower()!r} (column names are lower case).")
        else:
            problems.add(1, name or None, raw, f"unknown column {name!r}; remove it, or "
                         f"rename it to one of {', '.join(COLUMNS)}.")
    for name in REQUIRED_COLUMNS:
        if name not in index and name not in miscased:  # (a mis-cased one is reported once)
            problems.add(1, name, None, f"the required column {name!r} is missing; add it to "
                         f"the header row (required: {', '.join(REQUIRED_COLUMNS)}).")
    return index


def read_import(
    data: bytes,
    file: str,
    known_locations: Collection[str],
    existing: Iterable[ExistingAccount],
) -> ImportCheck:
    """Check a people import file against the tenant's locations and accounts.

    The file: UTF-8 (a byte order mark is allowed), comma-separated, RFC 4180
    quoting, a header row of :data:`COLUMNS` (the :data:`REQUIRED_COLUMNS`
    must be there). ``location_ids`` is a comma-separated list inside one
    (quoted) field, as in an ASM upload. ``account`` defaults to the email
    address; account names are stored in lower case. Blank rows are skipped.
    """
    problems = _Problems(file)
    text = _decode(data, problems)
    if text is None:
        return ImportCheck(file, issues=problems.issues)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        names = next(reader, None)
        while names is not None and not any(cell.strip() for cell in names):
            names = next(reader, None)
    except csv.Error as exc:
        problems.add(reader.line_num or 1, None, None, f"the header row cannot be read "
                     f"({exc}); check it for an unbalanced quote.")
        return ImportCheck(file, issues=problems.issues)
    if names is None:
        problems.add(1, None, None, "the file is empty; it needs a header row with at "
                     f"least {', '.join(REQUIRED_COLUMNS)}.")
        return ImportCheck(file, issues=problems.issues)
    header_line = reader.line_num
    index = _header(names, problems)

    existing = list(existing)
    by_account = {a.account.lower(): a for a in existing}
    by_email = {a.email_address.strip().lower(): a for a in existing if a.email_address}
    taken_ids = {a.person_id for a in existing}
    known = set(known_locations)
    first_email: dict[str, int] = {}
    first_account: dict[str, int] = {}
    people: list[ImportedPerson] = []

    end = header_line
    while True:
        start = end + 1
        try:
            record = next(reader, None)
        except csv.Error as exc:
            problems.add(start, None, None, f"the record cannot be read ({exc}); check it "
                         "for an unbalanced quote.")
            break
        end = reader.line_num
        if record is None:
            break
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(names):
            problems.add(start, None, None, f"the record has {len(record)} fields and the "
                         f"header {len(names)}; check it for a stray comma or an unbalanced "
                         "quote (a list of location_ids goes in quotes: \"S1,S2\").")
            continue
        person = _row(record, index, start, problems, known, first_email, first_account,
                      by_account, by_email, taken_ids)
        if person is not None:
            people.append(person)
    if problems.issues:
        return ImportCheck(file, issues=problems.issues)
    return ImportCheck(file, people=tuple(people))


def _describe(account: ExistingAccount) -> str:
    state = "" if account.status == ACTIVE else f", {account.status}"
    return f"account {account.account} (person '{account.person_id}'{state})"


def _row(
    record: list[str],
    index: dict[str, int],
    line: int,
    problems: _Problems,
    known: set[str],
    first_email: dict[str, int],
    first_account: dict[str, int],
    by_account: dict[str, ExistingAccount],
    by_email: dict[str, ExistingAccount],
    taken_ids: set[str],
) -> ImportedPerson | None:
    """One record checked; None when it has a problem (every problem is reported)."""
    before = len(problems.issues)
    values = {name: record[i].strip() for name, i in index.items()}

    def report(column: str, text: str) -> None:
        problems.add(line, column, values.get(column) or None, text)

    for name in REQUIRED_COLUMNS:
        if name in values and not values[name]:
            report(name, f"{name} is blank; every imported account needs one.")
    role = values.get("role", "").lower()
    if values.get("role") and role not in ROLES:
        report("role", f"unknown role {values['role']!r}; use student or staff.")

    email = values.get("email_address", "")
    email_ok = False
    if email:
        why = _email_problem(email)
        if why:
            report("email_address", f"email_address {email!r} {why}; correct it.")
        else:
            email_ok = True
            key = email.lower()
            if key in first_email:
                report("email_address", f"email_address {email!r} is also on line "
                       f"{first_email[key]}; each account is imported once.")
            else:
                first_email[key] = line
                owner = by_email.get(key)
                if owner is not None:
                    report("email_address", f"email_address {email!r} already belongs to "
                           f"the existing {_describe(owner)}; leave the row out (the account "
                           "is known) or correct the email.")

    account = values.get("account", "") or (email if email_ok else "")
    if values.get("account"):
        why = _email_problem(account)
        if why:
            why = why.replace("a valid email address", "an account name of the form name@domain")
            report("account", f"account {account!r} {why}; correct it, or leave it blank to "
                   "use the email address.")
            account = ""
    account = account.lower()
    if account:
        column = "account" if values.get("account") else "email_address"
        if account in first_account:
            report(column, f"account {account!r} is also on line {first_account[account]}; "
                   "each account is imported once.")
        else:
            first_account[account] = line
            owner = by_account.get(account)
            if owner is not None:
                report(column, f"account {account!r} already belongs to the existing "
                       f"{_describe(owner)}; leave the row out (the account is known) or "
                       "give this one another account name.")
            elif placeholder_id(account) in taken_ids:
                report(column, f"account {account!r} would get the person_id "
                       f"{placeholder_id(account)!r}, which a person of the tenant already "
                       "has; give this one another account name.")

    locations = tuple(dict.fromkeys(
        part.strip() for part in values.get("location_ids", "").split(",") if part.strip()))
    unknown = [location for location in locations if location not in known]
    if unknown:
        shown = sorted(known)[:KNOWN_SHOWN]
        more = ", …" if len(known) > KNOWN_SHOWN else ""
        report("location_ids", f"location_ids names unknown location(s) "
               f"{', '.join(unknown)}; use the tenant's location ids (separated by commas, "
               f"in quotes): {', '.join(shown) + more if shown else 'it has none yet'}.")

    if len(problems.issues) > before or any(name not in values for name in REQUIRED_COLUMNS):
        return None  # (a missing column is reported once, on line 1)
    return ImportedPerson(
        line=line, account=account, email_address=email,
        first_name=values["first_name"], last_name=values["last_name"], role=role,
        person_number=values.get("person_number") or None,
        sis_username=values.get("sis_username") or None,
        location_ids=locations,
    )
