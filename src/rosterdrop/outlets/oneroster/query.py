"""The query parameters of a OneRoster REST request, parsed into a typed query (pure).

``parse_query(params)`` reads ``limit``, ``offset``, ``filter``, ``sort``,
``orderBy`` and ``fields`` as the REST binding writes them:

* ``filter=familyName='Smith' AND dateLastModified>'2026-01-01T00:00:00Z'``: a
  field, an operator (``=`` ``!=`` ``>`` ``>=`` ``<`` ``<=`` ``~`` contains), a value
  in single quotes (``''`` is a quote inside one); predicates joined by ``AND``
  and ``OR``, ``AND`` binding tighter (no parentheses in the binding);
* ``sort=familyName`` (several: comma-separated), ``orderBy=asc|desc``;
* ``fields=sourcedId,givenName``: only these fields of each record.

Whether a field exists is the collection's business (``pages``); here only the
syntax is checked. Every refusal is a :class:`QueryError` carrying the
binding's ``imsx_CodeMinor`` value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

DEFAULT_LIMIT: Final = 100
"""The binding's default page size."""
MAX_LIMIT: Final = 10_000
"""Larger pages are cut to this (the answer's ``Link`` says so)."""
MAX_FILTER_LENGTH: Final = 4096
MAX_PREDICATES: Final = 32


class Minor(Enum):
    """``imsx_CodeMinor`` values the provider answers with."""

    INVALID_FILTER_FIELD = "invalid_filter_field"
    INVALID_SELECTION_FIELD = "invalid_selection_field"
    INVALID_SORT_FIELD = "invalid_sort_field"
    INVALID_DATA = "invaliddata"
    UNKNOWN_OBJECT = "unknownobject"
    UNAUTHORISED = "unauthorisedrequest"
    FORBIDDEN = "forbidden"
    SERVER_BUSY = "server_busy"


class QueryError(Exception):
    """A request the provider refuses: its codeMinor, a sentence, and the HTTP status."""

    def __init__(self, minor: Minor, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.minor = minor
        self.description = description
        self.status = status


class Op(Enum):
    EQ = "="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    CONTAINS = "~"


@dataclass(frozen=True)
class Predicate:
    field: str
    op: Op
    value: str


@dataclass(frozen=True)
class Junction:
    """``AND`` of ``OR`` groups: ``any_of[i]`` is a conjunction of predicates."""

    any_of: tuple[tuple[Predicate, ...], ...]

    @property
    def fields(self) -> set[str]:
        return {p.field for group in self.any_of for p in group}


@dataclass(frozen=True)
class Query:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    filter: Junction | None = None
    sort: tuple[str, ...] = ()
    descending: bool = False
    fields: tuple[str, ...] = ()
    """Empty: every field."""
    limit_asked: int = DEFAULT_LIMIT

    def also(self, *predicates: Predicate) -> Query:
        """This query with ``predicates`` added to every OR group (a nested route's scope)."""
        groups = self.filter.any_of if self.filter else ((),)
        joined = Junction(tuple((*g, *predicates) for g in groups))
        return Query(self.limit, self.offset, joined, self.sort, self.descending, self.fields,
                     self.limit_asked)

    @property
    def signature(self) -> str:
        """What selects and orders the rows (not which page): a cache key part."""
        return repr((self.filter, self.sort, self.descending))


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_OPS = ("!=", ">=", "<=", "=", ">", "<", "~")
_JOINER = re.compile(r"\s+(AND|OR)\s+", re.IGNORECASE)


def parse_filter(text: str) -> Junction:
    """``field op 'value' (AND|OR field op 'value')*`` → OR groups of AND-ed predicates."""
    if len(text) > MAX_FILTER_LENGTH:
        raise QueryError(Minor.INVALID_FILTER_FIELD,
                         f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    groups: list[list[Predicate]] = [[]]
    pos, count = 0, 0
    text = text.strip()
    while True:
        match = _FIELD.match(text, pos)
        if match is None:
            raise _bad_filter(text, pos, "a field name")
        name = match.group()
        pos = _skip(text, match.end())
        op = next((o for o in _OPS if text.startswith(o, pos)), None)
        if op is None:
            raise _bad_filter(text, pos, "an operator (=, !=, >, >=, <, <=, ~)")
        pos = _skip(text, pos + len(op))
        if not text.startswith("'", pos):
            raise _bad_filter(text, pos, "a value in single quotes")
        value, pos = _quoted(text, pos)
        count += 1
        if count > MAX_PREDICATES:
            raise QueryError(Minor.INVALID_FILTER_FIELD,
                             f"the filter has more than {MAX_PREDICATES} predicates")
        groups[-1].append(Predicate(name, Op(op), value))
        if pos >= len(text):
            break
        joiner = _JOINER.match(text, pos)
        if joiner is None:
            raise _bad_filter(text, pos, "AND, OR or the end of the filter")
        if joiner.group(1).upper() == "OR":
            groups.append([])
        pos = joiner.end()
    return Junction(tuple(tuple(g) for g in groups))


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] == " ":
        pos += 1
    return pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "'":
            if text.startswith("''", pos):
                out.append("'")
                pos += 2
                continue
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    raise QueryError(Minor.INVALID_FILTER_FIELD, "a filter value has no closing quote (')")


def _bad_filter(text: str, pos: int, wanted: str) -> QueryError:
    shown = text[pos:pos + 30] or "the end"
    return QueryError(Minor.INVALID_FILTER_FIELD,
                      f"filter: expected {wanted} at character {pos + 1} ({shown!r}); the "
                      f"form is field='value', joined by AND or OR")


def _number(params: Mapping[str, str], name: str, default: int, low: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 12 or int(raw) < low:
        raise QueryError(Minor.INVALID_DATA,
                         f"{name} must be a whole number of at least {low}, got {raw[:20]!r}")
    return int(raw)


def _names(raw: str, what: str, minor: Minor) -> tuple[str, ...]:
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    bad = [n for n in names if not _FIELD.fullmatch(n)]
    if bad or not names:
        raise QueryError(minor, f"{what}: {bad[0][:40]!r} is not a field name" if bad
                         else f"{what} names no field")
    return names


def parse_query(params: Mapping[str, str]) -> Query:
    """The paging, filter, sort and field selection of one request."""
    asked = _number(params, "limit", DEFAULT_LIMIT, 1)
    offset = _number(params, "offset", 0, 0)
    raw_filter = params.get("filter")
    filter_ = parse_filter(raw_filter) if raw_filter else None
    sort = _names(params["sort"], "sort", Minor.INVALID_SORT_FIELD) if params.get("sort") else ()
    order = (params.get("orderBy") or "asc").lower()
    if order not in ("asc", "desc"):
        raise QueryError(Minor.INVALID_SORT_FIELD,
                         f"orderBy must be asc or desc, got {order[:20]!r}")
    fields = (_names(params["fields"], "fields", Minor.INVALID_SELECTION_FIELD)
              if params.get("fields") is not None else ())
    return Query(min(asked, MAX_LIMIT), offset, filter_, sort, order == "desc", fields, asked)
