"""Directory rows → OneRoster REST records (1.1 and 1.2), read from SQL in batches.

The inverse of the OneRoster mapping of docs/formats.md: what a pull of this
directory from a OneRoster server would have read. Each collection is one or
more *segments*: a SELECT over one directory table whose rows come in the
order of an index the table has (the tables are clustered on (tenant, id)), the
expressions each filterable JSON field stands for, and a function that makes a
JSON record of a row. ``iter_records`` and :func:`all_records` walk the segments
by keyset (``WHERE key > last ORDER BY key LIMIT batch``), so memory holds one
batch and every batch costs the same, however far into the table.

What the directory does not keep is synthesized (docs/outlets.md, "The OneRoster
API"):

* one **school year** session, ``rosterdrop-school-year-<YYYY>``, 1 July to the
  next 1 July (``endDate`` exclusive, as formats.md reads sessions) around
  ``today``, ``schoolYear`` its ending year; every course's ``schoolYear``, and
  the term of every class that has none;
* one **term** per distinct class term id, with the school year's dates (the
  directory keeps term ids only), ``parent`` the school year;
* ``dateLastModified`` of a person is ``updated_at``; of every other record the
  time of the tenant's last applied run (no other row has a timestamp);
* every org is a ``school``; staff are ``teacher`` (the directory keeps
  student/staff only); a class's first instructor is the ``primary`` one; a
  teacher enrollment without a source id is ``<class>-<person>-teacher``.

Deactivated people are listed with ``status = "tobedeleted"`` and
``enabledUser = false`` (an incremental pull sees them go); a bulk reader such
as rosterdrop's own pull leaves them out. The managed account name is the
user's ``username`` and a ``userIds`` entry ``{"type": "rosterdrop"}``; the SIS's
own username, when there is one, is the ``{"type": "sis"}`` entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from functools import cached_property
from typing import Any, Final

from sqlalchemy import (
    Connection,
    String,
    and_,
    case,
    func,
    literal,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.sql import ColumnElement, FromClause

from rosterdrop.sources.oneroster.bundle import instant_text
from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import (
    CLASS_INSTRUCTORS,
    CLASSES,
    COURSES,
    LOCATIONS,
    PEOPLE,
    ROSTERS,
    RUNS,
)

Record = dict[str, Any]
"""One OneRoster JSON object, as the REST binding writes it."""

COLLECTIONS: Final = ("orgs", "academicSessions", "courses", "classes", "users", "enrollments")
"""The six collections a pull reads, in the order it reads them."""

VERSIONS: Final = ("1.1", "1.2")
SOURCE_TYPE: Final = "rosterdrop"
"""The ``userIds`` type of the managed account name."""
SIS_TYPE: Final = "sis"
"""The ``userIds`` type of the SIS's own username."""
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ACTIVE = "active"


class Kind(Enum):
    """How a field's filter values compare: as text, or as instants (``dateLastModified``)."""

    TEXT = "text"
    TIME = "time"


@dataclass(frozen=True)
class Field:
    """A filterable, sortable JSON field and the SQL expression it stands for."""

    expr: ColumnElement[Any]
    kind: Kind = Kind.TEXT


@dataclass(frozen=True)
class SchoolYear:
    """The synthetic school-year session around ``today``."""

    sourced_id: str
    title: str
    start: str
    end: str
    year: str

    @classmethod
    def around(cls, today: date) -> SchoolYear:
        first = today.year if today.month >= 7 else today.year - 1
        return cls(f"rosterdrop-school-year-{first + 1}", f"{first}-{first + 1}",
                   f"{first}-07-01", f"{first + 1}-07-01", str(first + 1))


@dataclass(frozen=True)
class Context:
    """What every record of one answer shares."""

    tenant: str
    version: str
    stamp: datetime
    """``dateLastModified`` of every record that is not a person."""
    school_year: SchoolYear
    base: str = ""
    """Prefix of every ``href`` (the API's base URL; empty: relative references)."""

    @cached_property
    def stamp_text(self) -> str:
        return iso(self.stamp)


@dataclass(frozen=True)
class Segment:
    """One SELECT of a collection; ``keys`` is its unique order (an index of the table)."""

    name: str
    source: FromClause
    tenant: ColumnElement[Any]
    columns: tuple[ColumnElement[Any], ...]
    keys: tuple[ColumnElement[Any], ...]
    fields: Mapping[str, Field]
    make: Callable[[Sequence[Any], Context], Record]
    where: tuple[ColumnElement[bool], ...] = field(default=())

    @property
    def key_positions(self) -> tuple[int, ...]:
        """Where each key is among ``columns`` (every key is selected)."""
        return tuple(next(n for n, c in enumerate(self.columns) if c is key)
                     for key in self.keys)

    def rows(self, tenant: str) -> Any:
        """The segment's SELECT for one tenant, in key order (no paging yet)."""
        query = select(*self.columns).select_from(self.source).where(self.tenant == tenant)
        for clause in self.where:
            query = query.where(clause)
        return query


def iso(moment: datetime | None) -> str:
    """An instant as the REST binding writes it: ``2026-01-15T02:00:00.000Z``."""
    return instant_text(EPOCH if moment is None else moment)


def _ref(ctx: Context, kind: str, collection: str, sourced_id: str) -> Record:
    return {"href": f"{ctx.base}/{collection}/{sourced_id}", "sourcedId": sourced_id,
            "type": kind}


def _list(raw: str | None) -> list[str]:
    """A JSON-array text column → its strings (blank or damaged: none)."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    return [str(i) for i in items if i] if isinstance(items, list) else []


def _bool(ctx: Context, value: bool) -> bool | str:
    """1.1 writes booleans as the strings ``true``/``false``; 1.2 as JSON booleans."""
    if ctx.version == "1.1":
        return "true" if value else "false"
    return value


def _common(ctx: Context, sourced_id: str) -> Record:
    return {"sourcedId": sourced_id, "status": _ACTIVE, "dateLastModified": ctx.stamp_text}


def _stamp_field(ctx: Context) -> Field:
    return Field(literal(ctx.stamp), Kind.TIME)


def _status_fields(ctx: Context, sourced_id: ColumnElement[Any]) -> dict[str, Field]:
    return {"sourcedId": Field(sourced_id), "status": Field(literal(_ACTIVE, String)),
            "dateLastModified": _stamp_field(ctx)}


# --- orgs ----------------------------------------------------------------------------------


def _org(row: Sequence[Any], ctx: Context) -> Record:
    record = _common(ctx, row[0])
    record.update(name=row[1] or row[0], type="school", identifier="")
    return record


def org_segments(ctx: Context) -> list[Segment]:
    t = LOCATIONS.c
    fields = _status_fields(ctx, t.location_id)
    fields |= {"name": Field(func.coalesce(t.location_name, t.location_id)),
               "type": Field(literal("school", String))}
    return [Segment("orgs", LOCATIONS, t.tenant, (t.location_id, t.location_name),
                    (t.location_id,), fields, _org)]


# --- academicSessions (synthesized) ----------------------------------------------------------


def distinct_terms(conn: Connection, tenant: str) -> list[str]:
    """Every term id some class of the tenant names, sorted."""
    terms: set[str] = set()
    query = select(CLASSES.c.term_ids).where(CLASSES.c.tenant == tenant).distinct()
    for (raw,) in conn.execute(query):
        terms.update(_list(raw))
    return sorted(terms)


def _session(row: Sequence[Any], ctx: Context) -> Record:
    record = _common(ctx, row[0])
    record.update(title=row[1], type=row[2], startDate=row[3], endDate=row[4],
                  schoolYear=row[6])
    if row[5]:
        record["parent"] = _ref(ctx, "academicSession", "academicSessions", row[5])
    return record


def session_segments(ctx: Context, terms: Sequence[str]) -> list[Segment]:
    """The school year, then one term per id (a VALUES list: the same SQL as tables)."""
    sy = ctx.school_year
    data = [(sy.sourced_id, sy.title, "schoolYear", sy.start, sy.end, "", sy.year, ctx.tenant)]
    data += [(t, t, "term", sy.start, sy.end, sy.sourced_id, sy.year, ctx.tenant)
             for t in terms if t != sy.sourced_id]
    names = ("sourced_id", "title", "type", "start_date", "end_date", "parent", "school_year",
             "tenant")
    # Not VALUES: SQLite cannot name the columns of a VALUES list (``AS s (a, b)``).
    rows = [select(*(literal(v, String).label(n) for n, v in zip(names, row, strict=True)))
            for row in data]
    table = (rows[0] if len(rows) == 1 else union_all(*rows)).subquery("sessions")
    c = table.c
    fields = _status_fields(ctx, c.sourced_id)
    fields |= {"title": Field(c.title), "type": Field(c.type), "startDate": Field(c.start_date),
               "endDate": Field(c.end_date), "schoolYear": Field(c.school_year),
               "parent.sourcedId": Field(c.parent)}
    return [Segment("academicSessions", table, c.tenant,
                    (c.sourced_id, c.title, c.type, c.start_date, c.end_date, c.parent,
                     c.school_year), (c.sourced_id,), fields, _session)]


# --- courses -------------------------------------------------------------------------------


def _course(row: Sequence[Any], ctx: Context) -> Record:
    record = _common(ctx, row[0])
    record.update(title=row[2] or row[1] or row[0],
                  schoolYear=_ref(ctx, "academicSession", "academicSessions",
                                  ctx.school_year.sourced_id),
                  courseCode=row[1] or "", grades=[], subjects=[])
    if row[3]:
        record["org"] = _ref(ctx, "org", "orgs", row[3])
    return record


def course_segments(ctx: Context) -> list[Segment]:
    t = COURSES.c
    fields = _status_fields(ctx, t.course_id)
    fields |= {"title": Field(func.coalesce(t.course_name, t.course_number, t.course_id)),
               "courseCode": Field(func.coalesce(t.course_number, "")),
               "org.sourcedId": Field(t.location_id)}
    return [Segment("courses", COURSES, t.tenant,
                    (t.course_id, t.course_number, t.course_name, t.location_id),
                    (t.course_id,), fields, _course)]


# --- classes -------------------------------------------------------------------------------


def _class(row: Sequence[Any], ctx: Context) -> Record:
    record = _common(ctx, row[0])
    terms = _list(row[5]) or [ctx.school_year.sourced_id]
    record.update(title=row[4] or row[1] or row[0], classCode=row[1] or "",
                  classType="scheduled", location="", grades=[], subjects=[], periods=[],
                  terms=[_ref(ctx, "academicSession", "academicSessions", t) for t in terms])
    if row[2]:
        record["course"] = _ref(ctx, "course", "courses", row[2])
    if row[3]:
        record["school"] = _ref(ctx, "org", "orgs", row[3])
    return record


def class_segments(ctx: Context) -> list[Segment]:
    t = CLASSES.c
    fields = _status_fields(ctx, t.class_id)
    fields |= {"title": Field(func.coalesce(t.class_display_name, t.class_number, t.class_id)),
               "classCode": Field(func.coalesce(t.class_number, "")),
               "classType": Field(literal("scheduled", String)),
               "course.sourcedId": Field(t.course_id), "school.sourcedId": Field(t.location_id)}
    return [Segment("classes", CLASSES, t.tenant,
                    (t.class_id, t.class_number, t.course_id, t.location_id,
                     t.class_display_name, t.term_ids), (t.class_id,), fields, _class)]


# --- users ---------------------------------------------------------------------------------

_P = PEOPLE.c
_USER_COLUMNS = (_P.person_id, _P.status, _P.updated_at, _P.account, _P.role, _P.first_name,
                 _P.middle_name, _P.last_name, _P.person_number, _P.email_address,
                 _P.sis_username, _P.grade_level, _P.location_ids)
ROLE_OF: Final = {"student": "student", "staff": "teacher"}
"""Directory role → OneRoster role."""


def _user(row: Sequence[Any], ctx: Context) -> Record:
    (person_id, status, updated_at, account, role, first, middle, last, number, email,
     sis_username, grade, location_ids) = row
    active = status == _ACTIVE
    ids = [{"type": SOURCE_TYPE, "identifier": account}]
    if sis_username:
        ids.append({"type": SIS_TYPE, "identifier": sis_username})
    orgs = _list(location_ids)
    one_role = ROLE_OF.get(role, "teacher")
    record: Record = {
        "sourcedId": person_id, "status": _ACTIVE if active else "tobedeleted",
        "dateLastModified": iso(updated_at), "enabledUser": _bool(ctx, active),
        "username": account, "userIds": ids, "givenName": first or "",
        "familyName": last or "", "middleName": middle or "", "identifier": number or "",
        "email": email or "", "sms": "", "phone": "", "agents": [],
        "grades": [grade] if grade else [],
    }
    if ctx.version == "1.1":
        record["role"] = one_role
        record["orgs"] = [_ref(ctx, "org", "orgs", o) for o in orgs]
    else:
        record["roles"] = [
            {"roleType": "primary" if n == 0 else "secondary", "role": one_role,
             "org": _ref(ctx, "org", "orgs", o)} for n, o in enumerate(orgs)]
        if orgs:
            record["primaryOrg"] = _ref(ctx, "org", "orgs", orgs[0])
    return record


ROLE_EXPR: Final = case((_P.role == "student", literal("student")), else_=literal("teacher"))
STATUS_EXPR: Final = case((_P.status == _ACTIVE, literal(_ACTIVE)), else_=literal("tobedeleted"))


def user_fields() -> dict[str, Field]:
    return {
        "sourcedId": Field(_P.person_id), "status": Field(STATUS_EXPR),
        "dateLastModified": Field(_P.updated_at, Kind.TIME),
        "enabledUser": Field(case((_P.status == _ACTIVE, literal("true")),
                                  else_=literal("false"))),
        "username": Field(_P.account), "givenName": Field(func.coalesce(_P.first_name, "")),
        "familyName": Field(func.coalesce(_P.last_name, "")),
        "middleName": Field(func.coalesce(_P.middle_name, "")),
        "identifier": Field(func.coalesce(_P.person_number, "")),
        "email": Field(func.coalesce(_P.email_address, "")), "role": Field(ROLE_EXPR),
        "grades": Field(func.coalesce(_P.grade_level, "")),
    }


def user_segments(ctx: Context) -> list[Segment]:
    # (tenant, person_id) is unique: its index gives the order.
    return [Segment("users", PEOPLE, _P.tenant, _USER_COLUMNS, (_P.person_id,), user_fields(),
                    _user)]


def in_locations(location_id: str) -> ColumnElement[bool]:
    """People with ``location_id`` among their schools (a JSON text column: ``"id"``)."""
    return _P.location_ids.contains(json.dumps(location_id), autoescape=True)


# --- enrollments ---------------------------------------------------------------------------


def _enrollment(row: Sequence[Any], ctx: Context) -> Record:
    sourced_id, class_id, user_id, school, role, primary = row
    record = {**_common(ctx, sourced_id), "user": _ref(ctx, "user", "users", user_id),
              "class": _ref(ctx, "class", "classes", class_id), "role": role,
              "primary": _bool(ctx, primary == "true")}
    if school:
        record["school"] = _ref(ctx, "org", "orgs", school)
    return record


def enrollment_segments(ctx: Context) -> list[Segment]:
    """Teachers (class instructors), then students (rosters); ``school`` is the class's."""
    i, r, k = CLASS_INSTRUCTORS.c, ROSTERS.c, CLASSES.c
    teacher_id = func.coalesce(i.source_id, i.class_id + "-" + i.person_id + "-teacher")
    primary = case((i.position == 0, literal("true")), else_=literal("false"))
    teachers_from = CLASS_INSTRUCTORS.outerjoin(
        CLASSES, and_(k.tenant == i.tenant, k.class_id == i.class_id))
    students_from = ROSTERS.outerjoin(CLASSES, and_(k.tenant == r.tenant, k.class_id == r.class_id))

    def fields(sourced_id: ColumnElement[Any], class_id: ColumnElement[Any],
               user_id: ColumnElement[Any], role: str,
               primary_expr: ColumnElement[Any]) -> dict[str, Field]:
        made = _status_fields(ctx, sourced_id)
        made |= {"class.sourcedId": Field(class_id), "user.sourcedId": Field(user_id),
                 "school.sourcedId": Field(k.location_id), "role": Field(literal(role, String)),
                 "primary": Field(primary_expr)}
        return made

    return [
        Segment("teachers", teachers_from, i.tenant,
                (teacher_id, i.class_id, i.person_id, k.location_id,
                 literal("teacher", String), primary), (i.class_id, i.person_id),
                fields(teacher_id, i.class_id, i.person_id, "teacher", primary), _enrollment),
        Segment("students", students_from, r.tenant,
                (r.roster_id, r.class_id, r.student_id, k.location_id,
                 literal("student", String), literal("false", String)), (r.roster_id,),
                fields(r.roster_id, r.class_id, r.student_id, "student",
                       literal("false", String)), _enrollment),
    ]


# --- the collections -----------------------------------------------------------------------


def segments(conn: Connection, ctx: Context, collection: str) -> list[Segment]:
    """The segments of one of :data:`COLLECTIONS` (``KeyError`` for another name)."""
    if collection == "academicSessions":
        return session_segments(ctx, distinct_terms(conn, ctx.tenant))
    builders: dict[str, Callable[[Context], list[Segment]]] = {
        "orgs": org_segments, "courses": course_segments, "classes": class_segments,
        "users": user_segments, "enrollments": enrollment_segments,
    }
    return builders[collection](ctx)


def last_applied(conn: Connection, tenant: str) -> datetime:
    """When the tenant's directory last changed by a run (the epoch if never)."""
    moment = conn.execute(select(func.max(RUNS.c.applied_at)).where(
        RUNS.c.tenant == tenant, RUNS.c.applied.is_(True))).scalar_one_or_none()
    if moment is None:
        moment = conn.execute(select(func.max(_P.updated_at)).where(
            _P.tenant == tenant)).scalar_one_or_none()
    if not isinstance(moment, datetime):
        return EPOCH
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def context(conn: Connection, tenant: str, version: str, *, today: date | None = None,
            base: str = "") -> Context:
    if version not in VERSIONS:
        raise ValueError(f"OneRoster version {version!r}")
    today = today or datetime.now(UTC).date()
    return Context(tenant, version, last_applied(conn, tenant), SchoolYear.around(today), base)


def after(keys: Sequence[ColumnElement[Any]], last: Sequence[Any]) -> ColumnElement[bool]:
    """Rows whose key sorts after ``last`` (a row value comparison; both databases)."""
    if len(keys) == 1:
        compared: ColumnElement[bool] = keys[0] > last[0]
    else:
        compared = tuple_(*keys) > tuple_(*(literal(v) for v in last))
    return compared


def iter_records(conn: Connection, ctx: Context, collection: str, *,
                 batch: int = 1000) -> Iterator[list[Record]]:
    """Every record of ``collection`` in batches of at most ``batch``, read by keyset on
    ``conn`` (hold one read transaction around several calls for one consistent state)."""
    if batch < 1:
        raise ValueError("batch must be positive")
    for segment in segments(conn, ctx, collection):
        last: Sequence[Any] | None = None
        positions = segment.key_positions
        while True:
            query = segment.rows(ctx.tenant)
            if last is not None:
                query = query.where(after(segment.keys, last))
            rows = conn.execute(query.order_by(*segment.keys).limit(batch)).all()
            if not rows:
                break
            make = segment.make
            yield [make(row, ctx) for row in rows]
            if len(rows) < batch:
                break
            last = tuple(rows[-1][p] for p in positions)


def all_records(store: Store, tenant: str, collection: str, version: str, *,
                batch: int = 1000, today: date | None = None,
                base: str = "") -> Iterator[list[dict[str, Any]]]:
    """Every record of one collection of ``tenant``'s directory as OneRoster ``version``
    (``"1.1"``/``"1.2"``) REST JSON, in batches of at most ``batch`` records.

    ``collection`` is one of :data:`COLLECTIONS`; 1.2 users carry their ``roles``.
    Fed to ``BundleWriter(folder, version).add(collection, records)`` batch by
    batch, the six collections make the OneRoster CSV bundle a pull of the API
    would write, which the pipeline reads back into the same directory. ``today``
    places the synthetic school year (default: the UTC date). The whole walk is
    one read transaction; StoreError when the store cannot be read.
    """
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}; expected one of "
                         f"{', '.join(COLLECTIONS)}")
    with translate(f"reading {collection} of {tenant}"), store.read() as conn:
        ctx = context(conn, tenant, version, today=today, base=base)
        yield from iter_records(conn, ctx, collection, batch=batch)
