"""The console's reads stay a fixed number of SQL statements (no N+1) whatever the
number of tenants and runs, pick their run ids from ``ix_runs_console``, and a run's
issues are paged from ``issues.csv`` with the totals the run row already has."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import event

from rosterdrop.documents import RunSource, RunStatus
from rosterdrop.pipeline.issues import ISSUE_SCHEMA
from rosterdrop.runs.artifacts import write_csv
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import RunRecord, create_run
from rosterdrop.web import queries

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(name="store")
def store_fixture(backend_url: str) -> Iterator[Store]:
    with open_store(backend_url) as opened:
        yield opened


def fill(store: Store, tenants: int, runs_each: int, prefix: str = "d") -> list[str]:
    """``runs_each`` runs a tenant, an hour apart, through the store's ``create_run``:
    every tenant's second-newest run failed and its third held."""
    names = [f"{prefix}{n:02d}" for n in range(tenants)]
    for n, tenant in enumerate(names):
        for k in range(runs_each):
            status = {1: RunStatus.FAILED, 2: RunStatus.HELD}.get(k, RunStatus.COMPLETED)
            create_run(store, RunRecord(
                run_id=f"{tenant}-{k:03d}", tenant=tenant, source=RunSource.SFTP, status=status,
                file_name="u.zip", counts={"students": 10}, issue_counts={"X": k},
                created_at=NOW - timedelta(hours=k, minutes=n)))
    return names


class Statements:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.seen: list[str] = []

    def __enter__(self) -> Statements:
        event.listen(self.store.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.store.engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        # Queries only: SQLite's driver adds its own BEGIN and PRAGMAs per connection.
        if statement.lstrip().upper().startswith("SELECT"):
            self.seen.append(statement)


def reads(store: Store, tenants: list[str]) -> tuple[int, int, int]:
    with Statements(store) as board:
        found = queries.dashboard(store, tenants, NOW)
    assert sorted(found.last_runs) == tenants
    assert {r.run_id for r in found.last_runs.values()} == {f"{t}-000" for t in tenants}
    assert [r.run_id for r in found.held] == [f"{t}-002" for t in tenants][:20]
    assert found.failures_total == len(tenants)
    where = queries.HistoryFilter(tenants)
    with Statements(store) as first:
        page = queries.history(store, where, None, size=10)
    assert len(page.runs) == 10 and page.next_key is not None
    with Statements(store) as second:
        following = queries.history(store, where, page.next_key, size=10)
    everything = sorted(((r.created_at, r.run_id) for r in page.runs + following.runs),
                        reverse=True)
    assert [(r.created_at, r.run_id) for r in page.runs + following.runs] == everything
    return len(board.seen), len(first.seen), len(second.seen)


def test_dashboard_and_history_statements_do_not_grow_with_tenants_or_runs(
        store: Store) -> None:
    """3 tenants of 5 runs, then 12 tenants of 40 runs: the same statements each read
    (the dashboard's four, the history page's one), and the right runs."""
    small = reads(store, fill(store, 3, 5))
    large = reads(store, fill(store, 12, 40, prefix="e"))
    assert small == large
    assert large == (4, 1, 1)


def test_history_filters_use_the_console_index(tmp_path: Path) -> None:
    """SQLite's plan for a page of the history reads run ids from ix_runs_console
    alone (covering), then only the rows shown."""
    with open_store(f"sqlite:///{tmp_path / 'r.db'}") as store:
        names = fill(store, 3, 5)
        with Statements(store) as seen:
            queries.history(store, queries.HistoryFilter(names), None)
        [statement] = seen.seen
        raw = store.engine.raw_connection()
        try:
            params = ["d00", "d01", "d02", 51, 0][: statement.count("?")]
            plan = " | ".join(row[3] for row in raw.cursor().execute(
                "EXPLAIN QUERY PLAN " + statement, params).fetchall())
        finally:
            raw.close()
    assert "COVERING INDEX ix_runs_console" in plan, plan


def issues_file(tmp_path: Path, rows: int) -> tuple[Path, dict[str, int]]:
    n = pl.int_range(0, rows, eager=True)
    frame = pl.DataFrame({
        "code": pl.Series(["A", "B", "C"])[n % 3], "severity": "error", "file": "students.csv",
        "line": n + 2, "column": "x", "value": n.cast(pl.String).map_elements(
            lambda v: f"v{v}", return_dtype=pl.String), "message": "bad"},
        schema=ISSUE_SCHEMA)
    path = tmp_path / "issues.csv"
    write_csv(frame, path)
    counts = frame.group_by("code").len()
    return path, dict(zip(counts["code"].to_list(), counts["len"].to_list(), strict=True))


def test_issue_pages_by_code_search_and_last_page(tmp_path: Path) -> None:
    """Without a search the totals are the run's counts; a code's third page holds that
    code's issues 101–150 in file order; a search counts what it finds; a page past
    the end is the last page (with a search too); a search is text, never a pattern."""
    path, counts = issues_file(tmp_path, 1_000)
    rows, page = queries.issues_page(path, counts, code=None, search=None, page=None)
    assert rows.total == 1_000 and page.pages == 20
    assert [r["line"] for r in rows.rows] == [str(n + 2) for n in range(50)]
    rows, page = queries.issues_page(path, counts, code="B", search=None, page="3")
    assert rows.total == counts["B"] == 333 and page.number == 3
    assert [r["value"] for r in rows.rows] == [f"v{3 * k + 1}" for k in range(100, 150)]
    rows, page = queries.issues_page(path, counts, code=None, search="V99", page=None)
    assert rows.total == 11  # v99, v990–v999
    assert {r["value"] for r in rows.rows} == {"v99", *(f"v{n}" for n in range(990, 1000))}
    past, page = queries.issues_page(path, counts, code="A", search="v99", page="5")
    assert page.number == 1 and [r["value"] for r in past.rows] == [
        "v99", "v990", "v993", "v996", "v999"]
    literal, _ = queries.issues_page(path, counts, code=None, search="v9(.*", page=None)
    assert literal.total == 0 and literal.rows == []  # searched as text, not a pattern
    rows, page = queries.issues_page(path, counts, code="A", search=None, page="999")
    assert page.number == page.pages == 7 and len(rows.rows) == 334 - 300
    missing, page = queries.issues_page(tmp_path / "none.csv", counts, code=None,
                                        search=None, page=None)
    assert missing.rows == [] and missing.total == 0
