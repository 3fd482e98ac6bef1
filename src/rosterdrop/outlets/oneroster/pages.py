"""One answer of the OneRoster provider: the count and the page, both in SQL.

An endpoint (``/users``, ``/schools/{id}/students``, …) is a collection of
``records`` plus the predicates that scope it. :class:`Pager.page` compiles the
query's filter into each segment's WHERE, counts the rows and reads one page in
one read transaction:

* in the default order (each segment's index order, segment after segment) a
  page that continues where an earlier one ended starts by keyset from that
  page's last key (``WHERE key > last``), remembered per tenant revision, filter
  and offset; any other offset is an ``OFFSET`` into the index. Counts are
  remembered the same way. So a client paging through a collection pays for one
  page per request, not for the rows before it (benchmarks/README.md, P12);
* with ``sort`` the rows are ordered by the database (over all segments at once),
  then ``OFFSET``/``LIMIT``.

The memo is per process and only a shortcut: a revision bump (any write to the
tenant's directory) makes every remembered entry of the tenant unreachable.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, and_, func, literal, or_, select, union_all
from sqlalchemy.sql import ColumnElement

from rosterdrop.outlets.oneroster.query import Junction, Minor, Op, Predicate, Query, QueryError
from rosterdrop.outlets.oneroster.records import (
    Context,
    Field,
    Kind,
    Record,
    Segment,
    after,
    in_locations,
    segments,
)
from rosterdrop.store.directory import current_revision
from rosterdrop.store.tables import CLASS_INSTRUCTORS, CLASSES, PEOPLE, ROSTERS

SINGULAR: Final = {"orgs": "org", "academicSessions": "academicSession", "courses": "course",
                   "classes": "class", "users": "user", "enrollments": "enrollment",
                   "demographics": "demographics"}
"""The JSON key of one record of each collection (``GET /users/{id}`` → ``{"user": …}``)."""

SELECTABLE: Final[dict[str, frozenset[str]]] = {
    "orgs": frozenset({"sourcedId", "status", "dateLastModified", "metadata", "name", "type",
                       "identifier", "parent", "children"}),
    "academicSessions": frozenset({"sourcedId", "status", "dateLastModified", "metadata",
                                   "title", "type", "startDate", "endDate", "parent",
                                   "children", "schoolYear"}),
    "courses": frozenset({"sourcedId", "status", "dateLastModified", "metadata", "title",
                          "schoolYear", "courseCode", "grades", "subjects", "org",
                          "subjectCodes", "resources"}),
    "classes": frozenset({"sourcedId", "status", "dateLastModified", "metadata", "title",
                          "classCode", "classType", "location", "grades", "subjects", "course",
                          "school", "terms", "subjectCodes", "periods", "resources"}),
    "users": frozenset({"sourcedId", "status", "dateLastModified", "metadata", "username",
                        "userIds", "enabledUser", "givenName", "familyName", "middleName",
                        "role", "roles", "identifier", "email", "sms", "phone", "agents",
                        "orgs", "primaryOrg", "grades", "password", "userMasterIdentifier",
                        "preferredFirstName", "preferredMiddleName", "preferredLastName",
                        "pronouns"}),
    "enrollments": frozenset({"sourcedId", "status", "dateLastModified", "metadata", "user",
                              "class", "school", "role", "primary", "beginDate", "endDate"}),
    "demographics": frozenset({"sourcedId", "status", "dateLastModified", "metadata",
                               "birthDate", "sex"}),
}
"""Fields ``fields=`` may name, per collection (the binding's, held or not)."""


@dataclass(frozen=True)
class Endpoint:
    """A top-level route: which collection, narrowed how."""

    collection: str
    predicates: tuple[Predicate, ...] = ()


def equals(field: str, value: str) -> Predicate:
    """``field='value'``."""
    return Predicate(field, Op.EQ, value)


ENDPOINTS: Final[dict[str, Endpoint]] = {
    "orgs": Endpoint("orgs"),
    "schools": Endpoint("orgs", (equals("type", "school"),)),
    "academicSessions": Endpoint("academicSessions"),
    "terms": Endpoint("academicSessions", (equals("type", "term"),)),
    "gradingPeriods": Endpoint("academicSessions", (equals("type", "gradingPeriod"),)),
    "courses": Endpoint("courses"),
    "classes": Endpoint("classes"),
    "users": Endpoint("users"),
    "students": Endpoint("users", (equals("role", "student"),)),
    "teachers": Endpoint("users", (equals("role", "teacher"),)),
    "enrollments": Endpoint("enrollments"),
    "demographics": Endpoint("demographics"),
}
"""``/{name}`` and ``/{name}/{id}`` of both versions."""

Where = Callable[[str, str], ColumnElement[bool]]
"""``where(tenant, parent_id)``: a nested route's extra condition on its rows."""


def _students_of(tenant: str, class_id: str) -> ColumnElement[bool]:
    r = ROSTERS.c
    return PEOPLE.c.person_id.in_(select(r.student_id).where(r.tenant == tenant,
                                                              r.class_id == class_id))


def _teachers_of(tenant: str, class_id: str) -> ColumnElement[bool]:
    i = CLASS_INSTRUCTORS.c
    return PEOPLE.c.person_id.in_(select(i.person_id).where(i.tenant == tenant,
                                                             i.class_id == class_id))


def _classes_of(tenant: str, person_id: str) -> ColumnElement[bool]:
    r, i = ROSTERS.c, CLASS_INSTRUCTORS.c
    return or_(
        CLASSES.c.class_id.in_(select(r.class_id).where(r.tenant == tenant,
                                                         r.student_id == person_id)),
        CLASSES.c.class_id.in_(select(i.class_id).where(i.tenant == tenant,
                                                         i.person_id == person_id)))


def _classes_in_term(tenant: str, term_id: str) -> ColumnElement[bool]:
    from json import dumps

    in_term = CLASSES.c.term_ids.contains(dumps(term_id), autoescape=True)
    if term_id.startswith("rosterdrop-school-year-"):
        # The synthetic school year is the term of every class that names none.
        return or_(in_term, CLASSES.c.term_ids.is_(None), CLASSES.c.term_ids == "[]")
    return in_term


def _at_school(tenant: str, location_id: str) -> ColumnElement[bool]:
    return in_locations(location_id)


@dataclass(frozen=True)
class Nested:
    """``/{parent}/{id}/{child}``: the parent must exist; the child endpoint is scoped."""

    parent: str
    child: str
    field: str = ""
    """The child's field that must equal the parent's id (or ``where``)."""
    where: Where | None = None


NESTED: Final[dict[tuple[str, str], Nested]] = {
    ("schools", "classes"): Nested("schools", "classes", "school.sourcedId"),
    ("schools", "courses"): Nested("schools", "courses", "org.sourcedId"),
    ("schools", "enrollments"): Nested("schools", "enrollments", "school.sourcedId"),
    ("schools", "students"): Nested("schools", "students", where=_at_school),
    ("schools", "teachers"): Nested("schools", "teachers", where=_at_school),
    ("schools", "terms"): Nested("schools", "terms"),
    ("classes", "students"): Nested("classes", "students", where=_students_of),
    ("classes", "teachers"): Nested("classes", "teachers", where=_teachers_of),
    ("classes", "enrollments"): Nested("classes", "enrollments", "class.sourcedId"),
    ("terms", "classes"): Nested("terms", "classes", where=_classes_in_term),
    ("courses", "classes"): Nested("courses", "classes", "course.sourcedId"),
    ("users", "classes"): Nested("users", "classes", where=_classes_of),
    ("students", "classes"): Nested("students", "classes", where=_classes_of),
    ("teachers", "classes"): Nested("teachers", "classes", where=_classes_of),
}


@dataclass(frozen=True)
class Page:
    records: list[Record]
    total: int


# --- filters → SQL --------------------------------------------------------------------------


def instant(value: str) -> datetime:
    """A filter value for ``dateLastModified``: ISO 8601, a date alone is its midnight UTC."""
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise QueryError(Minor.INVALID_FILTER_FIELD,
                         f"{value[:40]!r} is not a date-time (2026-01-15T02:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _predicate(field: Field, p: Predicate) -> ColumnElement[bool]:
    expr = field.expr
    value: Any = p.value
    if field.kind is Kind.TIME:
        if p.op is Op.CONTAINS:
            raise QueryError(Minor.INVALID_FILTER_FIELD,
                             f"{p.field}: ~ (contains) works on text fields only")
        value = instant(p.value)
    result: ColumnElement[bool]
    if p.op is Op.EQ:
        result = expr == value
    elif p.op is Op.NE:
        result = expr != value
    elif p.op is Op.GT:
        result = expr > value
    elif p.op is Op.GE:
        result = expr >= value
    elif p.op is Op.LT:
        result = expr < value
    elif p.op is Op.LE:
        result = expr <= value
    else:  # case-insensitive on both databases (SQLite's LIKE is, PostgreSQL's is not)
        result = func.lower(expr).contains(p.value.lower(), autoescape=True)
    return result


def compile_filter(junction: Junction, fields: Mapping[str, Field],
                   collection: str) -> ColumnElement[bool]:
    unknown = sorted(f for f in junction.fields if f not in fields)
    if unknown:
        raise QueryError(Minor.INVALID_FILTER_FIELD,
                         f"{collection} cannot be filtered by {unknown[0]!r}; filterable: "
                         f"{', '.join(sorted(fields))}")
    groups = [and_(*(_predicate(fields[p.field], p) for p in group))
              for group in junction.any_of if group]
    if not groups:
        return literal(True) == literal(True)
    return groups[0] if len(groups) == 1 else or_(*groups)


def check_selection(query: Query, collection: str) -> None:
    allowed = SELECTABLE[collection]
    unknown = [f for f in query.fields if f not in allowed]
    if unknown:
        raise QueryError(Minor.INVALID_SELECTION_FIELD,
                         f"{collection} has no field {unknown[0]!r}")


def select_fields(records: list[Record], fields: Sequence[str]) -> list[Record]:
    if not fields:
        return records
    return [{f: r[f] for f in fields if f in r} for r in records]


# --- the pager --------------------------------------------------------------------------------


class Pager:
    """Counts and pages of every endpoint; remembers counts and page ends (a small LRU)."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.keyset_hits = 0
        """Pages that started by keyset (tests and benchmarks read it)."""

    def _get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            value = self._memo.get(key)
            if value is not None:
                self._memo.move_to_end(key)
            return value

    def _put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._memo[key] = value
            self._memo.move_to_end(key)
            while len(self._memo) > self._size:
                self._memo.popitem(last=False)

    def scoped(self, conn: Connection, ctx: Context, collection: str, query: Query,
               where: ColumnElement[bool] | None = None) -> list[Segment]:
        """The collection's segments with the query's filter (and ``where``) applied."""
        if collection == "demographics":
            return []
        made = segments(conn, ctx, collection)
        scoped: list[Segment] = []
        for segment in made:
            clauses = list(segment.where)
            if query.filter is not None:
                clauses.append(compile_filter(query.filter, segment.fields, collection))
            if where is not None:
                clauses.append(where)
            scoped.append(replace(segment, where=tuple(clauses)))
        return scoped

    def page(self, conn: Connection, ctx: Context, collection: str, query: Query, *,
             scope: str = "", where: ColumnElement[bool] | None = None) -> Page:
        """One page of ``collection`` and the total; ``scope`` names ``where`` for the memo."""
        check_selection(query, collection)
        parts = self.scoped(conn, ctx, collection, query, where)
        if not parts:
            return Page([], 0)
        base = (ctx.tenant, current_revision(conn, ctx.tenant), ctx.stamp, ctx.school_year,
                collection, scope, query.signature)
        counts = self._counts(conn, ctx, parts, base)
        total = sum(counts)
        if query.sort:
            records = self._sorted(conn, ctx, collection, parts, query)
        else:
            records = self._in_order(conn, ctx, parts, counts, query, base)
        return Page(select_fields(records, query.fields), total)

    def _counts(self, conn: Connection, ctx: Context, parts: list[Segment],
                base: tuple[Any, ...]) -> list[int]:
        key = (*base, "count")
        cached = self._get(key)
        if cached is not None:
            return list(cached)
        counts = []
        for segment in parts:
            query = select(func.count()).select_from(segment.source).where(
                segment.tenant == ctx.tenant, *segment.where)
            counts.append(int(conn.execute(query).scalar_one()))
        self._put(key, tuple(counts))
        return counts

    def _in_order(self, conn: Connection, ctx: Context, parts: list[Segment], counts: list[int],
                  query: Query, base: tuple[Any, ...]) -> list[Record]:
        records: list[Record] = []
        start = query.offset
        wanted = query.limit
        for n, segment in enumerate(parts):
            if start >= counts[n]:
                start -= counts[n]
                continue
            rows_query = segment.rows(ctx.tenant).order_by(*segment.keys)
            last = self._get((*base, "end", n, start))
            if last is not None:
                self.keyset_hits += 1
                rows_query = rows_query.where(after(segment.keys, last))
            elif start:
                rows_query = rows_query.offset(start)
            rows = conn.execute(rows_query.limit(wanted)).all()
            if rows:
                self._put((*base, "end", n, start + len(rows)),
                          tuple(rows[-1][p] for p in segment.key_positions))
            records.extend(segment.make(row, ctx) for row in rows)
            wanted -= len(rows)
            start = 0
            if wanted <= 0:
                break
        return records

    def _sorted(self, conn: Connection, ctx: Context, collection: str, parts: list[Segment],
                query: Query) -> list[Record]:
        fields = parts[0].fields
        unknown = [s for s in query.sort if s not in fields]
        if unknown:
            raise QueryError(Minor.INVALID_SORT_FIELD,
                             f"{collection} cannot be sorted by {unknown[0]!r}; sortable: "
                             f"{', '.join(sorted(fields))}")
        sort = (*query.sort, *(() if "sourcedId" in query.sort else ("sourcedId",)))
        width = len(parts[0].columns)
        if len(parts) == 1:
            segment = parts[0]
            order = [fields[s].expr.desc() if query.descending else fields[s].expr.asc()
                     for s in sort]
            rows = conn.execute(segment.rows(ctx.tenant).order_by(*order)
                                .offset(query.offset).limit(query.limit)).all()
            return [segment.make(row, ctx) for row in rows]
        arms = [segment.rows(ctx.tenant).with_only_columns(
            *(c.label(f"c{i}") for i, c in enumerate(segment.columns)),
            *(segment.fields[s].expr.label(f"s{i}") for i, s in enumerate(sort)))
            for segment in parts]
        united = union_all(*arms).subquery("united")
        keys = [united.c[f"s{i}"] for i in range(len(sort))]
        rows = conn.execute(
            select(*(united.c[f"c{i}"] for i in range(width)))
            .order_by(*(k.desc() if query.descending else k.asc() for k in keys))
            .offset(query.offset).limit(query.limit)).all()
        make = parts[0].make
        return [make(row, ctx) for row in rows]

    def one(self, conn: Connection, ctx: Context, collection: str, sourced_id: str,
            query: Query | None = None) -> Record | None:
        """The record ``sourced_id`` of ``collection``, or None."""
        if query is not None:
            check_selection(query, collection)
        for segment in (segments(conn, ctx, collection) if collection != "demographics"
                        else []):
            row = conn.execute(segment.rows(ctx.tenant).where(
                segment.fields["sourcedId"].expr == sourced_id).limit(1)).first()
            if row is not None:
                record = segment.make(row, ctx)
                return select_fields([record], query.fields)[0] if query else record
        return None

    def exists(self, conn: Connection, ctx: Context, endpoint: Endpoint,
               sourced_id: str) -> bool:
        """Is ``sourced_id`` a record of ``endpoint`` (``/schools``, ``/students`` …)?"""
        query = Query(limit=1).also(*endpoint.predicates, equals("sourcedId", sourced_id))
        return any(conn.execute(select(literal(1)).select_from(s.source).where(
            s.tenant == ctx.tenant, *s.where).limit(1)).first() is not None
            for s in self.scoped(conn, ctx, endpoint.collection, query))


__all__ = ["ENDPOINTS", "NESTED", "SINGULAR", "Endpoint", "Nested", "Page", "Pager", "equals"]
