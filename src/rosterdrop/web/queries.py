"""The console's reads: a few queries a page, paged by the database, never N+1.

- the dashboard: each tenant's last run, held runs, the failures of the last 7 days;
- the history: filtered, keyset-paged on ``(created_at, run_id)``, without the run
  documents;
- both pick the run ids of a page from the index ``ix_runs_console`` (tenant, status,
  created_at, run_id) alone, then read only those rows;
- a run's issues: they live in the run's ``issues.csv``, read lazily by polars
  (filter, count and one page sliced while scanning), so a run with a million
  issues is never in memory at once.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import ColumnElement, and_, func, or_, select

from rosterdrop.documents import RunSource, RunStatus
from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import RUNS
from rosterdrop.web.paging import Page, RunKey

HISTORY_PAGE = 50
ISSUES_PAGE = 50
CSV_PREVIEW_ROWS = 50
_LIST_COLUMNS = ("run_id", "tenant", "source", "status", "file_name", "dry_run", "applied",
                 "counts", "issue_counts", "created_at", "finished_at")


@dataclass(frozen=True)
class RunRow:
    """One run as a list shows it (no document)."""

    run_id: str
    tenant: str
    source: str
    status: str
    file_name: str
    dry_run: bool
    applied: bool
    counts: dict[str, int]
    issue_counts: dict[str, int]
    created_at: datetime
    finished_at: datetime | None

    @property
    def issues(self) -> int:
        return sum(self.issue_counts.values())

    @property
    def key(self) -> RunKey:
        return RunKey(self.created_at, self.run_id)


def _utc(moment: Any) -> Any:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ints(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items()}


def _row(row: Any) -> RunRow:
    return RunRow(
        run_id=row["run_id"], tenant=row["tenant"], source=row["source"],
        status=row["status"], file_name=row["file_name"] or "", dry_run=bool(row["dry_run"]),
        applied=bool(row["applied"]), counts=_ints(row["counts"]),
        issue_counts=_ints(row["issue_counts"]), created_at=_utc(row["created_at"]),
        finished_at=_utc(row["finished_at"]))


def _columns() -> list[Any]:
    return [RUNS.c[name] for name in _LIST_COLUMNS]


@dataclass(frozen=True)
class Dashboard:
    last_runs: dict[str, RunRow]
    held: list[RunRow]
    failures: list[RunRow]
    failures_total: int


_NEWEST = (RUNS.c.created_at.desc(), RUNS.c.run_id.desc())


def _picked(ids: Any) -> Any:
    """The list columns of the runs whose ids ``ids`` (a subquery) picks, newest first.

    The ids come from ``ix_runs_console`` alone; only the rows shown are read (a row's
    ``created_at`` lies behind its document, so sorting whole rows reads every document).
    """
    return select(*_columns()).where(RUNS.c.run_id.in_(ids)).order_by(*_NEWEST)


def dashboard(store: Store, tenants: list[str], now: datetime, *, limit: int = 20) -> Dashboard:
    """Four statements, whatever the number of tenants or runs."""
    if not tenants:
        return Dashboard({}, [], [], 0)
    # Each tenant's newest start time, then the runs started then (a group-by on the
    # index: 4 ms at 10,000 runs where a row_number() window took 18 ms).
    latest = (select(RUNS.c.tenant, func.max(RUNS.c.created_at).label("newest"))
              .where(RUNS.c.tenant.in_(tenants)).group_by(RUNS.c.tenant).subquery())
    last = _picked(select(RUNS.c.run_id).join(latest, (RUNS.c.tenant == latest.c.tenant)
                                              & (RUNS.c.created_at == latest.c.newest)))
    held = _picked(select(RUNS.c.run_id).where(
        RUNS.c.tenant.in_(tenants) & (RUNS.c.status == RunStatus.HELD.value)
        & RUNS.c.dry_run.is_(False)).order_by(*_NEWEST).limit(limit))
    week = (RUNS.c.tenant.in_(tenants) & (RUNS.c.status == RunStatus.FAILED.value)
            & (RUNS.c.created_at >= (now - timedelta(days=7)).astimezone(UTC)))
    failed = _picked(select(RUNS.c.run_id).where(week).order_by(*_NEWEST).limit(limit))
    with translate("reading the dashboard"), store.engine.connect() as conn:
        last_runs: dict[str, RunRow] = {}
        for found in map(_row, conn.execute(last).mappings()):  # newest first: ties by id
            last_runs.setdefault(found.tenant, found)
        held_rows = [_row(r) for r in conn.execute(held).mappings()]
        failed_rows = [_row(r) for r in conn.execute(failed).mappings()]
        total = int(conn.execute(select(func.count()).select_from(RUNS).where(week))
                    .scalar_one())
    return Dashboard(last_runs, held_rows, failed_rows, total)


@dataclass(frozen=True)
class HistoryFilter:
    tenants: list[str]
    """The tenants to show (already limited to the admin's)."""
    status: RunStatus | None = None
    source: RunSource | None = None
    day: date | None = None
    """Runs started on that day (UTC)."""


@dataclass
class HistoryPage:
    runs: list[RunRow] = field(default_factory=list)
    next_key: RunKey | None = None


def history(store: Store, where: HistoryFilter, after: RunKey | None,
            size: int = HISTORY_PAGE) -> HistoryPage:
    """One page of runs, newest first, starting after ``after`` (keyset)."""
    if not where.tenants:
        return HistoryPage()
    condition: ColumnElement[bool] = RUNS.c.tenant.in_(where.tenants)
    if where.status is not None:
        condition &= RUNS.c.status == where.status.value
    if where.source is not None:
        condition &= RUNS.c.source == where.source.value
    if where.day is not None:
        start = datetime.combine(where.day, time(0), tzinfo=UTC)
        condition &= (RUNS.c.created_at >= start) & (RUNS.c.created_at < start + timedelta(days=1))
    if after is not None:
        moment = after.created_at.astimezone(UTC)
        condition &= or_(RUNS.c.created_at < moment,
                         and_(RUNS.c.created_at == moment, RUNS.c.run_id < after.run_id))
    query = _picked(select(RUNS.c.run_id).where(condition).order_by(*_NEWEST).limit(size + 1))
    with translate("listing runs"), store.engine.connect() as conn:
        rows = [_row(r) for r in conn.execute(query).mappings()]
    more = len(rows) > size
    rows = rows[:size]
    return HistoryPage(rows, rows[-1].key if more and rows else None)


# --- a run's files ------------------------------------------------------------------

ISSUE_COLUMNS = ("code", "severity", "file", "line", "column", "value", "message")


@dataclass(frozen=True)
class IssueRows:
    rows: list[dict[str, Any]]
    total: int
    """Issues matching the code and the search, in all."""


def issues_page(path: Path, counts: dict[str, int], *, code: str | None,
                search: str | None, page: str | int | None,
                size: int = ISSUES_PAGE) -> tuple[IssueRows, Page]:
    """One page of the matching issues of ``issues.csv``, and where it is.

    ``counts`` are the run's issues by code (the run row's ``issue_counts``, counted
    from the frame ``issues.csv`` was written from): without a search the total is
    known, so the page is one slice of the file and the first page reads its head
    only. A search scans the file once for its count and page, never loading it.
    """
    total = counts.get(code, 0) if code else sum(counts.values())
    if not path.is_file():
        return IssueRows([], 0), Page.of(page, size, 0)
    frame = pl.scan_csv(path, infer_schema=False)
    if code:
        frame = frame.filter(pl.col("code") == code)
    if not search:
        where = Page.of(page, size, total)
        rows = frame.slice(where.offset, size).collect().to_dicts() if total else []
        return IssueRows(rows, total), where
    pattern = "(?i)" + re.escape(search)  # a case-blind regex: no lower-cased copy
    frame = frame.filter(pl.any_horizontal(
        pl.col(name).str.contains(pattern).fill_null(False)
        for name in ("message", "value", "file", "column")))
    # The count and the page asked for in one scan (collect_all shares it); only a page
    # past the end needs a second one.
    asked = Page.of(page, size, sys.maxsize)
    counted, found = pl.collect_all([frame.select(pl.len()), frame.slice(asked.offset, size)])
    total = int(counted.item())
    where = Page.of(page, size, total)
    if where.offset != asked.offset:
        found = frame.slice(where.offset, size).collect()
    return IssueRows(found.to_dicts() if total else [], total), where


def csv_head(path: Path, rows: int = CSV_PREVIEW_ROWS) -> tuple[list[str], list[list[str]], bool]:
    """(header, the first ``rows`` rows, whether there are more) of an artifact CSV."""
    if not path.is_file():
        return [], [], False
    frame = pl.scan_csv(path, infer_schema=False).head(rows + 1).collect()
    values = [["" if v is None else str(v) for v in row] for row in frame.rows()]
    return list(frame.columns), values[:rows], len(values) > rows


# --- people ---------------------------------------------------------------------------

PEOPLE_PAGE = 50


@dataclass(frozen=True)
class PeopleFilter:
    tenant: str
    search: str = ""
    role: str = ""
    status: str = ""
    source: str = ""
    location: str = ""


def _like(text: str, *, lower: bool = True) -> str:
    text = text.lower() if lower else text
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def people_page(store: Store, where: PeopleFilter, offset: int,
                size: int = PEOPLE_PAGE) -> tuple[list[dict[str, Any]], int]:
    """(one page of the tenant's people by last and first name, how many match)."""
    from rosterdrop.store.tables import PEOPLE

    condition: ColumnElement[bool] = PEOPLE.c.tenant == where.tenant
    if where.search:
        pattern = _like(where.search)
        condition &= or_(*[func.lower(PEOPLE.c[name]).like(pattern, escape="\\") for name in (
            "person_id", "first_name", "last_name", "email_address", "account",
            "person_number")])
    for name in ("role", "status", "source"):
        value = getattr(where, name)
        if value:
            condition &= PEOPLE.c[name] == value
    if where.location:
        condition &= PEOPLE.c.location_ids.like(_like(f'"{where.location}"', lower=False),
                                                escape="\\")
    columns = [PEOPLE.c[name] for name in (
        "person_id", "role", "first_name", "last_name", "email_address", "account", "status",
        "source", "location_ids", "grade_level")]
    query = (select(*columns).where(condition)
             .order_by(PEOPLE.c.last_name.nulls_last(), PEOPLE.c.first_name.nulls_last(),
                       PEOPLE.c.person_id).offset(offset).limit(size))
    with translate(f"listing the people of tenant {where.tenant!r}"), \
            store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        total = int(conn.execute(select(func.count()).select_from(PEOPLE).where(condition))
                    .scalar_one())
    return rows, total


def person(store: Store, tenant: str, person_id: str) -> dict[str, Any] | None:
    from rosterdrop.store.tables import PEOPLE

    query = select(PEOPLE).where((PEOPLE.c.tenant == tenant) & (PEOPLE.c.person_id == person_id))
    with translate(f"reading person {person_id!r}"), store.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def locations(store: Store, tenant: str) -> list[tuple[str, str]]:
    from rosterdrop.store.tables import LOCATIONS

    query = (select(LOCATIONS.c.location_id, LOCATIONS.c.location_name)
             .where(LOCATIONS.c.tenant == tenant).order_by(LOCATIONS.c.location_id))
    with translate("listing locations"), store.engine.connect() as conn:
        return [(str(r[0]), str(r[1] or "")) for r in conn.execute(query)]
