"""Dashboard, history, a run's page, its files, approve and discard."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse, Response
from starlette.routing import Route

from rosterdrop.documents import RunSource, RunStatus
from rosterdrop.errors import NotFound, UsageError
from rosterdrop.mail.report import run_sentence
from rosterdrop.runs.names import (
    ARTIFACT_NAMES,
    ISSUES_CSV,
    MATCHES_CSV,
    PREVIEW_CSV,
    SUMMARY_CSV,
)
from rosterdrop.sources.oneroster.schedule import Schedule
from rosterdrop.store.audit import Action, Target, entries_for
from rosterdrop.store.deliveries import of_run
from rosterdrop.store.history import RunRecord, get_run
from rosterdrop.web import queries
from rosterdrop.web.console import Console
from rosterdrop.web.http import Ctx, Refusal, flash, query_param, redirect, route
from rosterdrop.web.paging import Page, decode_cursor, encode_cursor
from rosterdrop.web.roles import Permission

KINDS = ("locations", "students", "staff", "courses", "classes", "rosters")


def dashboard(ctx: Ctx) -> Response:
    now = ctx.now
    board = queries.dashboard(ctx.console.store, ctx.tenants, now)
    pulls: dict[str, Any] = {}
    for key in ctx.tenants:
        source = ctx.console.settings.tenants[key].source
        if source is not None:
            schedule = Schedule.of(source)
            pulls[key] = (schedule.next_after(now), schedule.describe())
    tenants = [(key, ctx.console.settings.tenants[key]) for key in ctx.tenants]
    return ctx.render("dashboard.html", title="Dashboard", board=board, pulls=pulls,
                      tenants=tenants, done=flash(ctx.request))


def _enum(kind: type[RunStatus] | type[RunSource], value: str) -> Any:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise Refusal(400, f"unknown {kind.__name__.removeprefix('Run').lower()} {value!r} "
                      f"(one of {', '.join(v.value for v in kind)})") from None


def history(ctx: Ctx) -> Response:
    request = ctx.request
    tenant = query_param(request, "tenant")
    tenants = [ctx.tenant(tenant)] if tenant else ctx.tenants
    status = _enum(RunStatus, query_param(request, "status"))
    source = _enum(RunSource, query_param(request, "source"))
    day_text = query_param(request, "date")
    try:
        day = date.fromisoformat(day_text) if day_text else None
    except ValueError:
        raise Refusal(400, f"date must be YYYY-MM-DD, got {day_text!r}") from None
    where = queries.HistoryFilter(tenants, status, source, day)
    page = queries.history(ctx.console.store, where, decode_cursor(query_param(request, "page")))
    filters = {"tenant": tenant, "status": status.value if status else "",
               "source": source.value if source else "", "date": day_text}
    return ctx.render("runs.html", title="History", runs=page.runs, filters=filters,
                      next_page=encode_cursor(page.next_key) if page.next_key else "",
                      statuses=list(RunStatus), sources=list(RunSource),
                      tenant_choices=ctx.tenants)


def _run(ctx: Ctx, run_id: str, permission: Permission = Permission.READ) -> RunRecord:
    try:
        run = get_run(ctx.console.store, run_id)
    except NotFound:
        raise Refusal(404, f"no run {run_id!r}") from None
    try:
        ctx.tenant(run.tenant, Permission.READ)
    except Refusal as refused:
        raise Refusal(404, f"no run {run_id!r}") from refused
    ctx.tenant(run.tenant, permission)
    return run


def _ints(counts: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in counts.items()}


def _folder(run: RunRecord) -> Path | None:
    return Path(run.artifact_dir) if run.artifact_dir else None


def run_page(ctx: Ctx) -> Response:
    run_id = ctx.request.path_params["run_id"]
    run = _run(ctx, run_id)
    document = run.document
    folder = _folder(run)
    request = ctx.request
    code = query_param(request, "code")
    search = query_param(request, "q")[:200]
    issue_total = sum(run.issue_counts.values())
    issues: queries.IssueRows | None = None
    page: Page | None = None
    if folder is not None and issue_total:
        issues, page = queries.issues_page(folder / ISSUES_CSV, _ints(run.issue_counts),
                                           code=code or None, search=search or None,
                                           page=query_param(request, "page"))
    files = [name for name in ARTIFACT_NAMES if folder and (folder / name).is_file()]
    tables = {name: queries.csv_head(folder / name) for name in (SUMMARY_CSV, MATCHES_CSV,
                                                                   PREVIEW_CSV)
              if folder is not None and name in files}
    held = run.status is RunStatus.HELD and not run.dry_run
    return ctx.render(
        "run.html", title=f"Run {run.run_id}", run=run, document=document,
        sentence=run_sentence(document) if document is not None else "",
        kinds=KINDS, issues=issues, page=page, code=code, search=search, files=files,
        tables=tables, held=held, may_act=ctx.may(Permission.ACT, run.tenant),
        audit=entries_for(ctx.console.store, Target.RUN, run.run_id), done=flash(request),
        deliveries=of_run(ctx.console.store, run.run_id),
        tenant_name=ctx.console.settings.tenants[run.tenant].name or run.tenant)


def run_file(ctx: Ctx) -> Response:
    run = _run(ctx, ctx.request.path_params["run_id"])
    name = ctx.request.path_params["name"]
    folder = _folder(run)
    if name not in ARTIFACT_NAMES or folder is None or not (folder / name).is_file():
        raise Refusal(404, f"run {run.run_id} has no file {name!r}")
    return FileResponse(folder / name, filename=name,
                        media_type="application/zip" if name.endswith(".zip") else
                        "application/json" if name.endswith(".json") else
                        "text/csv; charset=utf-8")


ACTIONS = {"approve": "Approve", "discard": "Discard"}


def confirm(ctx: Ctx) -> Response:
    """The confirmation step: what approving (or discarding) this held run means."""
    action = ctx.request.url.path.rsplit("/", 1)[-1]
    run = _run(ctx, ctx.request.path_params["run_id"], Permission.ACT)
    if run.status is not RunStatus.HELD or run.dry_run:
        raise Refusal(409, f"run {run.run_id} is {run.status.value}, not held: there is "
                      f"nothing to {action}")
    return ctx.render("confirm.html", title=f"{ACTIONS[action]} run {run.run_id}", run=run,
                      action=action, label=ACTIONS[action], kinds=KINDS,
                      document=run.document)


def approve(ctx: Ctx) -> Response:
    run = _run(ctx, ctx.request.path_params["run_id"], Permission.ACT)
    done = ctx.console.runner.approve(run.run_id)
    ctx.audit(Action.APPROVE, run.tenant, Target.RUN, run.run_id, f"now {done.status.value}")
    return redirect(f"/runs/{run.run_id}", done=f"Approved: the run is {done.status.value}.")


def discard(ctx: Ctx) -> Response:
    run = _run(ctx, ctx.request.path_params["run_id"], Permission.ACT)
    done = ctx.console.runner.discard(run.run_id)
    ctx.audit(Action.DISCARD, run.tenant, Target.RUN, run.run_id, f"now {done.status.value}")
    return redirect(f"/runs/{run.run_id}", done="Discarded: nothing of it was applied.")


def redeliver(ctx: Ctx) -> Response:
    """Every delivery of the run due again now; the daemon's outlets task makes them."""
    run = _run(ctx, ctx.request.path_params["run_id"], Permission.ACT)
    try:
        records = ctx.console.runner.outlets.redeliver(run.run_id)
    except UsageError as exc:
        raise Refusal(409, str(exc)) from None
    ctx.audit(Action.REDELIVER, run.tenant, Target.RUN, run.run_id,
              ", ".join(r.outlet for r in records))
    return redirect(f"/runs/{run.run_id}#deliveries-heading",
                    done=f"Delivering again to {len(records)} outlet(s): reload in a moment "
                    f"for the outcome.")


def routes(console: Console) -> list[Route]:
    return [
        Route("/", route(console, dashboard), methods=["GET"]),
        Route("/runs", route(console, history), methods=["GET"]),
        Route("/runs/{run_id}", route(console, run_page), methods=["GET"]),
        Route("/runs/{run_id}/files/{name}", route(console, run_file), methods=["GET"]),
        Route("/runs/{run_id}/approve", route(console, confirm), methods=["GET"]),
        Route("/runs/{run_id}/discard", route(console, confirm), methods=["GET"]),
        Route("/runs/{run_id}/approve", route(console, approve, changes=True),
              methods=["POST"]),
        Route("/runs/{run_id}/discard", route(console, discard, changes=True),
              methods=["POST"]),
        Route("/runs/{run_id}/redeliver", route(console, redeliver, changes=True),
              methods=["POST"]),
    ]
