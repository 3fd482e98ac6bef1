"""The ``rosterdrop`` command line (contract: docs/cli.md).

Exit codes: 0 success (warnings allowed), 1 the input has errors or the run
failed/was held, 2 usage, configuration or I/O problems: one line on stderr,
never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from rosterdrop.errors import InputError, RosterdropError, UsageError

if TYPE_CHECKING:
    # Loaded by the commands that read the config (not by --help): pydantic's models
    # cost about as much again as the interpreter and click.
    from rosterdrop.config import Settings

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


class _Context:
    def __init__(self, config: str | None) -> None:
        self._config_path = config
        self._settings: Settings | None = None

    @property
    def config_path(self) -> str | None:
        return self._config_path

    @config_path.setter
    def config_path(self, value: str | None) -> None:
        self._config_path = value
        self._settings = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from rosterdrop.config import load_settings

            self._settings = load_settings(self.config_path)
        return self._settings


pass_ctx = click.make_pass_decorator(_Context)

CONFIG_HELP = ("Config file (default: $ROSTERDROP_CONFIG, then ./rosterdrop.toml, then "
               "built-in defaults).")


def _config_after_command(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``rosterdrop serve -c X`` as ``rosterdrop -c X serve``: the one given last wins."""
    if value is not None:
        ctx.ensure_object(_Context).config_path = value


def _accept_config_everywhere(group: click.Group) -> None:
    """Give every command and group under ``group`` its own ``-c/--config`` (the
    contract: accepted before or after the command name)."""
    for command in group.commands.values():
        command.params.append(click.Option(
            ["-c", "--config"], metavar="PATH", expose_value=False,
            callback=_config_after_command, help=CONFIG_HELP))
        if isinstance(command, click.Group):
            _accept_config_everywhere(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config", metavar="PATH", default=None, help=CONFIG_HELP)
@click.version_option(package_name="rosterdrop")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """rosterdrop: an SFTP drop-box for school roster exports."""
    ctx.obj = _Context(config)


@cli.command()
@pass_ctx
def serve(ctx: _Context) -> None:
    """Run the daemon: SFTP server, watcher, workers. Stops cleanly on SIGINT/SIGTERM."""
    from rosterdrop.daemon.serve import serve as run_daemon
    from rosterdrop.logs import configure_logging

    settings = ctx.settings
    log_settings = settings.log
    if sys.stdout.isatty():
        log_settings = log_settings.model_copy(update={"format": "console"})
    configure_logging(log_settings)
    run_daemon(settings)


@cli.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(["oneroster-1.1", "oneroster-1.2", "asm"]),
              required=True)
@click.option("--students", type=click.IntRange(min=1), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
def sample(out: Path, layout: str, students: int, seed: int) -> None:
    """Write a realistic synthetic upload for demos, tests and benchmarks."""
    from rosterdrop.tools.sample import Layout, write_sample

    counts = write_sample(out, layout=cast(Layout, layout), students=students, seed=seed)
    summary = ", ".join(f"{n:,} {kind}" for kind, n in counts.items())
    click.echo(f"wrote {out} ({layout}): {summary}")


def _progress() -> Callable[[str], None] | None:
    """Progress lines on a terminal; silence when stderr is not one."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def say(step: str) -> None:
        click.echo(f"  {time.monotonic() - started:6.1f}s  {step}", err=True)

    return say


def _emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def _readable_file(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"cannot read {path}: no such file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return path


@cli.command()
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--tenant", "tenant_key", metavar="T", help="Use tenant T's filter and patch settings.")
@click.option("--as-of", "as_of", metavar="YYYY-MM-DD", type=click.DateTime(["%Y-%m-%d"]),
              help='"Today" for the filters (preview the first day of school).')
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document of cli.md.")
@pass_ctx
def validate(ctx: _Context, zip_path: Path, tenant_key: str | None, as_of: Any,
             as_json: bool) -> None:
    """Check one upload offline: read, validate, filter and patch; writes nothing."""
    from rosterdrop.config import TenantSettings
    from rosterdrop.pipeline.check import check_upload
    from rosterdrop.runs.document import check_document

    settings = ctx.settings
    tenant = settings.tenant(tenant_key) if tenant_key else TenantSettings()
    checked = check_upload(
        _readable_file(zip_path), tenant=tenant, limits=settings.limits,
        today=as_of.date() if as_of else date.today(), progress=_progress(),
    )
    document = check_document(checked).to_json()
    if as_json:
        _emit_json(document)
    else:
        click.echo(render_check(document))
    sys.exit(EXIT_INPUT if document["status"] == "failed" else EXIT_OK)


def render_check(document: dict[str, Any], examples: int = 10) -> str:
    """A short human summary: verdict, counts, the first issues."""
    verdict = {"ok": "OK", "warnings": "OK with warnings", "failed": "FAILED"}[document["status"]]
    lines = [f"{document['file']}: {verdict} (layout: {document['layout'] or 'unknown'})", ""]
    for kind, n in document["counts"].items():
        lines.append(f"  {kind:<10} {n:>10,}")
    if document["issue_counts"]:
        lines += ["", "  issues:"]
        for code, n in document["issue_counts"].items():
            lines.append(f"  {code:<24} {n:>8,}")
    for title, key in (("errors", "errors"), ("warnings", "warnings")):
        shown = document[key][:examples]
        if shown:
            lines += ["", f"first {title}:"]
            lines += [f"  [{i['code']}] {i['message']}" for i in shown]
    if document["files_ignored"]:
        lines += ["", "ignored: " + ", ".join(document["files_ignored"])]
    return "\n".join(lines)


def _one_tenant(settings: Settings, tenant_key: str | None, how: str = "--tenant T") -> str:
    """The tenant a command is about: the one named, or the only one configured."""
    if tenant_key:
        settings.tenant(tenant_key)
        return tenant_key
    if len(settings.tenants) == 1:
        return next(iter(settings.tenants))
    known = ", ".join(sorted(settings.tenants)) or "none"
    raise UsageError(f"name the tenant with {how} (configured: {known})")


def _open_store(settings: Settings) -> Any:
    from rosterdrop.store.engine import open_store

    if not settings.store.url:
        from rosterdrop.paths import private_folder

        try:
            private_folder(settings.state_dir)
        except OSError as exc:
            raise InputError(f"cannot create state folder {settings.state_dir}: "
                             f"{exc.strerror}") from exc
    store = open_store(settings.database_url, cache_dir=settings.state_dir / "cache")
    context = click.get_current_context(silent=True)
    if context is not None:  # closed with the command, also when it exits early
        context.call_on_close(store.close)
    return store


def _runner(ctx: _Context, store: Any = None) -> Any:
    from rosterdrop.logs import configure_logging
    from rosterdrop.runs.runner import Runner

    configure_logging(ctx.settings.log.model_copy(update={"level": "warning"}), sys.stderr)
    return Runner(ctx.settings, store if store is not None else _open_store(ctx.settings))


def _held_runner(ctx: _Context, run_id: str) -> Any:
    """A runner for approve/discard, once the run is known to be held (a wrong run id is
    answered without loading the pipeline)."""
    from rosterdrop.runs.lifecycle import held_run

    store = _open_store(ctx.settings)
    held_run(store, run_id)
    return _runner(ctx, store)


def _audit(store: Any, action: str, tenant: str | None, kind: str, target: str,
           detail: str = "") -> None:
    """The audit trail the console shows: who (``cli:<os user>``) did what, and when."""
    from rosterdrop.store.audit import Action, AuditEntry, Target, cli_actor, record

    record(store, AuditEntry(cli_actor(), Action(action), tenant, Target(kind), target, detail))


def _run_summary(run: Any, deliveries: Any = ()) -> dict[str, Any]:
    """A run document without its issue lists (history --json)."""
    summary: dict[str, Any] = run.summary(deliveries).to_json()
    return summary


def _run_document(run: Any, store: Any) -> dict[str, Any]:
    """One full run (show --json): the sync document plus timings, artifacts and the
    deliveries to the tenant's outlets."""
    from rosterdrop.runs.names import ARTIFACT_NAMES
    from rosterdrop.store.deliveries import of_run

    folder = Path(run.artifact_dir) if run.artifact_dir else None
    paths = {name: str(folder / name) for name in ARTIFACT_NAMES
             if folder and (folder / name).is_file()}
    details: dict[str, Any] = run.summary(of_run(store, run.run_id)).details_json(
        paths, run.timings)
    return details


def _render_deliveries(deliveries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for d in deliveries:
        state = d["status"]
        if state == "failed":
            state = "given up" if d["given_up"] else f"failed, retry at {d['next_attempt_at']}"
        what = d["detail"] if d["status"] == "delivered" else d["last_error"] or ""
        lines.append(f"  {d['outlet']:<40} {state}  {what or ''}".rstrip())
    return lines


def _deliver_now(runner: Any, run_id: str) -> list[dict[str, Any]]:
    """Outside the daemon the command makes its run's first delivery attempts itself
    (each bounded by its outlet's timeout); the daemon retries what fails."""
    import asyncio

    from rosterdrop.store.deliveries import of_run

    if not of_run(runner.store, run_id):
        return []
    return [d.to_json() for d in asyncio.run(runner.outlets.deliver_run(run_id))]


def _render_run(document: dict[str, Any]) -> str:
    lines = [f"run {document['run_id']} ({document['tenant']}): {document['status']}"
             + (" (dry run)" if document.get("dry_run") else "")]
    changes = document.get("changes") or {}
    kinds = ["locations", "students", "staff", "courses", "classes", "rosters"]
    if any(changes.get(k) for k in changes):
        lines.append(f"  {'':<12}" + "".join(f"{k:>11}" for k in kinds))
        for change in ("created", "updated", "deactivated", "removed", "unchanged"):
            row = changes.get(change) or {}
            lines.append(f"  {change:<12}" + "".join(
                f"{row[k]:>11,}" if k in row else f"{'-':>11}" for k in kinds))
    body = render_check({**document, "status": _CHECK_STATUS.get(document["status"], "ok")})
    lines += ["", *body.splitlines()[1:]]
    return "\n".join(lines)


_CHECK_STATUS = {"failed": "failed", "held": "failed", "completed_with_warnings": "warnings"}


@cli.command()
@click.argument("zip_path", metavar="ZIP", type=click.Path(path_type=Path))
@click.option("--tenant", "tenant_key", metavar="T",
              help="The tenant (may be left out when only one is configured).")
@click.option("--dry-run", is_flag=True, help="Show the changes; apply nothing.")
@click.option("--as-of", "as_of", metavar="YYYY-MM-DD", type=click.DateTime(["%Y-%m-%d"]),
              help='With --dry-run: "today" for the filters and the guard.')
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def sync(ctx: _Context, zip_path: Path, tenant_key: str | None, dry_run: bool, as_of: Any,
         as_json: bool) -> None:
    """Run the sync pipeline on one upload, record history and send the report."""
    tenant_key = _one_tenant(ctx.settings, tenant_key)
    ctx.settings.tenant(tenant_key)
    upload = _readable_file(zip_path)
    from rosterdrop.runs.runner import exit_code

    runner = _runner(ctx)
    if as_of and not dry_run:
        raise UsageError("--as-of previews a day: it needs --dry-run (a real sync runs as "
                         "of today)")
    if not dry_run:
        from rosterdrop.store.tenants import paused_since

        since = paused_since(runner.store, tenant_key)
        if since is not None:
            raise UsageError(f"tenant {tenant_key} is paused (since {since:%Y-%m-%d}); "
                             f"resume it with 'rosterdrop tenant resume {tenant_key}', or "
                             f"preview with --dry-run")
    run = runner.sync(tenant_key, upload, source="cli", dry_run=dry_run,
                      as_of=as_of.date() if as_of else None)
    document = run.document.to_json()
    deliveries = _deliver_now(runner, run.run_id)
    if as_json:  # the run document, as report.json has it; `show --json` adds deliveries
        _emit_json(document)
    else:
        click.echo(_render_run(document))
        if deliveries:
            click.echo("\ndeliveries:\n" + "\n".join(_render_deliveries(deliveries)))
    sys.exit(exit_code(run.status))


@cli.command()
@click.option("--tenant", "tenant_key", metavar="T")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def history(ctx: _Context, tenant_key: str | None, limit: int, as_json: bool) -> None:
    """Recent runs, newest first."""
    from rosterdrop.store.history import list_runs

    if tenant_key:
        ctx.settings.tenant(tenant_key)
    from rosterdrop.store.deliveries import of_runs

    store = _open_store(ctx.settings)
    runs = list_runs(store, tenant_key, limit, with_document=True)
    sent = of_runs(store, [run.run_id for run in runs])
    documents = [_run_summary(run, sent[run.run_id]) for run in runs]
    if as_json:
        _emit_json(documents)
        return
    if not documents:
        click.echo("no runs yet")
    for d in documents:
        issues = sum(d.get("issue_counts", {}).values())
        click.echo(f"{d['run_id']}  {d['tenant']:<14} {d['status']:<24} {d['source']:<7} "
                   f"{issues:>6} issues  {d['file']}")


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show(ctx: _Context, run_id: str, as_json: bool) -> None:
    """One run with its counts, issues and artifact paths."""
    from rosterdrop.store.history import get_run

    store = _open_store(ctx.settings)
    document = _run_document(get_run(store, run_id), store)
    if as_json:
        _emit_json(document)
        return
    click.echo(_render_run(document))
    for name, path in document["artifacts"].items():
        click.echo(f"  {name:<18} {path}")
    if document["deliveries"]:
        click.echo("\ndeliveries:\n" + "\n".join(_render_deliveries(document["deliveries"])))


@cli.command()
@click.option("--tenant", "tenant_key", metavar="T")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def deliveries(ctx: _Context, tenant_key: str | None, limit: int, as_json: bool) -> None:
    """Recent deliveries to the outlets (SFTP destinations, alerts), newest first."""
    from rosterdrop.store.deliveries import listing

    if tenant_key:
        ctx.settings.tenant(tenant_key)
    found = [d.to_json() for d in listing(_open_store(ctx.settings), tenant=tenant_key,
                                          limit=limit)]
    if as_json:
        _emit_json(found)
        return
    if not found:
        click.echo("no deliveries yet")
    for d in found:
        click.echo(f"{d['run_id']}  {d['tenant']:<14}" + _render_deliveries([d])[0][1:])


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def redeliver(ctx: _Context, run_id: str, as_json: bool) -> None:
    """Deliver a run to its outlets again now (after fixing what made a delivery fail)."""
    runner = _runner(ctx)
    records = runner.outlets.redeliver(run_id)
    run = next(iter(records), None)
    _audit(runner.store, "redeliver", run.tenant if run else None, "run", run_id,
           ", ".join(r.outlet for r in records))
    done = _deliver_now(runner, run_id)
    if as_json:
        _emit_json(done)
    else:
        click.echo("\n".join(_render_deliveries(done)) or f"run {run_id}: nothing to deliver")
    failed = [d for d in done if d["status"] != "delivered"]
    sys.exit(EXIT_INPUT if failed else EXIT_OK)


@cli.command()
@click.argument("run_id")
@pass_ctx
def approve(ctx: _Context, run_id: str) -> None:
    """Release a run held by the change threshold: apply it now."""
    from rosterdrop.runs.runner import exit_code

    runner = _held_runner(ctx, run_id)
    run = runner.approve(run_id)
    _audit(runner.store, "approve", run.tenant, "run", run.run_id, f"now {run.status.value}")
    click.echo(f"run {run.run_id}: {run.status}")
    sys.exit(exit_code(run.status))


@cli.group()
def classes() -> None:
    """The tenant's classes as a whole (year-end)."""


@classes.command("clear")
@click.option("--tenant", "tenant_key", metavar="T",
              help="The tenant (may be left out when only one is configured).")
@pass_ctx
def classes_clear(ctx: _Context, tenant_key: str | None) -> None:
    """Remove every class and roster of T for the new school year: held until approved."""
    tenant_key = _one_tenant(ctx.settings, tenant_key)
    ctx.settings.tenant(tenant_key)
    run = _runner(ctx).clear_classes(tenant_key)
    click.echo(f"run {run.run_id}: {run.status}; release it with 'rosterdrop approve "
               f"{run.run_id}' or drop it with 'rosterdrop discard {run.run_id}'")


@cli.group()
def tenant() -> None:
    """A tenant's switches: pause and resume its syncs."""


@tenant.command("pause")
@click.argument("tenant_key", metavar="[T]", required=False)
@pass_ctx
def tenant_pause(ctx: _Context, tenant_key: str | None) -> None:
    """Keep accepting T's uploads but apply none until `tenant resume T` (the summer)."""
    from rosterdrop.runs.runner import utc_now
    from rosterdrop.store.tenants import set_paused

    tenant_key = _one_tenant(ctx.settings, tenant_key, "rosterdrop tenant pause T")
    store = _open_store(ctx.settings)
    changed = set_paused(store, tenant_key, utc_now())
    _audit(store, "pause", tenant_key, "tenant", tenant_key, "" if changed else "it already was")
    click.echo(f"{tenant_key}: paused" + ("" if changed else " (it already was)")
               + "; uploads are kept and queued, none is applied until resumed")


@tenant.command("resume")
@click.argument("tenant_key", metavar="[T]", required=False)
@pass_ctx
def tenant_resume(ctx: _Context, tenant_key: str | None) -> None:
    """Apply T's uploads again; of those that waited, the newest valid one runs."""
    from rosterdrop.store.jobs import JobQueue
    from rosterdrop.store.tenants import set_paused

    tenant_key = _one_tenant(ctx.settings, tenant_key, "rosterdrop tenant resume T")
    store = _open_store(ctx.settings)
    changed = set_paused(store, tenant_key, None)
    _audit(store, "resume", tenant_key, "tenant", tenant_key, "" if changed else "it was not paused")
    waiting = sum(1 for job in JobQueue(store).pending() if job.tenant == tenant_key)
    click.echo(f"{tenant_key}: resumed" + ("" if changed else " (it was not paused)")
               + f"; {waiting} upload(s) waiting")


@cli.command()
@click.option("--tenant", "tenant_key", metavar="T",
              help="The tenant (may be left out when only one is configured).")
@click.option("--dry-run", is_flag=True, help="List who would be purged; delete nothing.")
@click.option("--as-of", "as_of", metavar="YYYY-MM-DD", type=click.DateTime(["%Y-%m-%d"]),
              help="With --dry-run: who would be purged on that day.")
@pass_ctx
def purge(ctx: _Context, tenant_key: str | None, dry_run: bool, as_of: Any) -> None:
    """Delete people deactivated longer than retention_days now (the daemon does it daily)."""
    tenant_key = _one_tenant(ctx.settings, tenant_key)
    ctx.settings.tenant(tenant_key)
    if as_of and not dry_run:
        raise UsageError("--as-of previews a day: it needs --dry-run (a purge runs as of "
                         "today)")
    names = _runner(ctx).purge(tenant_key, dry_run=dry_run,
                               today=as_of.date() if as_of else None)
    for name in names:
        click.echo(name)
    verb = "would be purged" if dry_run else "purged"
    click.echo(f"{len(names):,} account(s) {verb}")


@cli.command()
@click.argument("run_id")
@pass_ctx
def discard(ctx: _Context, run_id: str) -> None:
    """Drop a run held by the change threshold; nothing is applied."""
    runner = _held_runner(ctx, run_id)
    run = runner.discard(run_id)
    _audit(runner.store, "discard", run.tenant, "run", run.run_id, f"now {run.status.value}")
    click.echo(f"run {run.run_id}: {run.status}")


@cli.command()
@click.option("--tenant", "tenant_key", metavar="T",
              help="The tenant (may be left out when only one is configured).")
@pass_ctx
def resync(ctx: _Context, tenant_key: str | None) -> None:
    """"Sync Now": queue the tenant's last upload again (an API tenant: pull it now)."""
    tenant_key = _one_tenant(ctx.settings, tenant_key)
    from rosterdrop.daemon.resync import queue_last_upload

    if ctx.settings.tenant(tenant_key).source is not None:
        from rosterdrop.sources.oneroster.puller import PullStates

        PullStates.of(ctx.settings).request(tenant_key)
        _audit(_open_store(ctx.settings), "sync_now", tenant_key, "tenant", tenant_key,
               "asked for a pull")
        click.echo(f"asked the daemon to pull {tenant_key} from its SIS now; "
                   f"the daemon (rosterdrop serve) starts within seconds")
        return
    store = _open_store(ctx.settings)
    job_id, name = queue_last_upload(ctx.settings, store, tenant_key)
    _audit(store, "sync_now", tenant_key, "tenant", tenant_key, f"queued {name} (job {job_id})")
    click.echo(f"queued {name} again for {tenant_key} (job {job_id}); "
               f"the daemon (rosterdrop serve) will process it")


@cli.command()
@click.option("--tenant", "tenant_key", metavar="T",
              help="The tenant (may be left out when only one is configured).")
@click.option("--dry-run", is_flag=True,
              help="Fetch and check only: write nothing, queue nothing, record nothing.")
@pass_ctx
def pull(ctx: _Context, tenant_key: str | None, dry_run: bool) -> None:
    """Pull tenant T's roster from its OneRoster API now and queue it for the daemon."""
    tenant_key = _one_tenant(ctx.settings, tenant_key)
    import tempfile

    from rosterdrop.logs import configure_logging
    from rosterdrop.runs.runner import utc_now
    from rosterdrop.sources.oneroster.auth import read_secret
    from rosterdrop.sources.oneroster.puller import api_source, fetch_bundle, pull_file_name

    settings = ctx.settings
    source = api_source(settings, tenant_key)
    secret = read_secret(source, tenant_key)
    # One progress line per collection on a terminal; warnings only otherwise.
    level = "info" if sys.stderr.isatty() else "warning"
    configure_logging(settings.log.model_copy(update={"level": level, "format": "console"}),
                      sys.stderr)
    if not dry_run:
        _pull_and_queue(ctx, tenant_key, secret)
        return
    from rosterdrop.pipeline.check import check_upload
    from rosterdrop.runs.document import check_document

    with tempfile.TemporaryDirectory(prefix="rosterdrop-pull-") as folder:
        pulled = fetch_bundle(tenant_key, source, secret,
                              Path(folder) / pull_file_name(utc_now()))
        click.echo(render_pull(pulled))
        checked = check_upload(pulled.path, tenant=settings.tenant(tenant_key),
                               limits=settings.limits, today=date.today(),
                               name=pulled.path.name)
    document = check_document(checked).to_json()
    click.echo("")
    click.echo(render_check(document))
    click.echo("\n(dry run: nothing was queued or recorded)")
    sys.exit(EXIT_INPUT if document["status"] == "failed" else EXIT_OK)


def _pull_and_queue(ctx: _Context, tenant_key: str, secret: str) -> None:
    from rosterdrop.daemon.intake import Intake
    from rosterdrop.paths import StatePaths
    from rosterdrop.runs.runner import Runner, utc_now
    from rosterdrop.sources.oneroster.puller import PullService, PullStates
    from rosterdrop.store.jobs import JobQueue

    settings = ctx.settings
    runner = Runner(settings, _open_store(settings))
    intake = Intake(StatePaths.of(settings), JobQueue(runner.store), [tenant_key], utc_now)
    service = PullService(settings, PullStates.of(settings), runner=runner, take=intake.take,
                          secrets={tenant_key: secret}, clock=utc_now)
    outcome = service.pull(tenant_key)
    if outcome.pulled is None:
        click.echo(f"pull failed: {outcome.error}", err=True)
        click.echo(f"recorded as run {outcome.run_id} (failed); the report email says what "
                   f"to check")
        sys.exit(EXIT_INPUT)
    click.echo(render_pull(outcome.pulled))
    click.echo(f"\nqueued {outcome.pulled.path.name} for {tenant_key} (job {outcome.job_id}); "
               f"the daemon (rosterdrop serve) will process it")


def render_pull(pulled: Any, problems: int = 10) -> str:
    """Records per collection of a pull, and the first things worth a look."""
    lines = [f"pulled {pulled.tenant} (OneRoster {pulled.version}) in {pulled.seconds:.1f} s: "
             f"{pulled.requests:,} requests, {pulled.retries:,} retried", ""]
    for collection, n in pulled.records.items():
        lines.append(f"  {collection:<18} {n:>10,}")
    if "roles.csv" in pulled.rows:
        lines.append(f"  {'roles (in users)':<18} {pulled.rows['roles.csv']:>10,}")
    if pulled.notes:
        lines += ["", "first problems:"] + [f"  {note}" for note in pulled.notes[:problems]]
    return "\n".join(lines)


@cli.group(invoke_without_command=True)
@click.option("--tenant", "tenant_key", metavar="T",
              help="The tenant (before or after a subcommand's arguments).")
@click.option("--search", metavar="TEXT", help="Match person_id, names, email or account.")
@click.option("--inactive", is_flag=True, help="Include deactivated accounts.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def people(click_ctx: click.Context, tenant_key: str | None, search: str | None,
           inactive: bool, as_json: bool) -> None:
    """The tenant's accounts; `people set` edits one locally, `people reset` hands it back,
    `people import` adds accounts made outside the SIS."""
    ctx: _Context = click_ctx.obj
    if click_ctx.invoked_subcommand is not None:
        # Checked by the subcommand: a -c after it is not parsed yet.
        click_ctx.meta["tenant"] = tenant_key
        return
    tenant_key = _one_tenant(ctx.settings, tenant_key)
    from rosterdrop.store.people import list_people

    rows = list_people(_open_store(ctx.settings), tenant_key, search, inactive)
    if as_json:
        _emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['person_id']:<14} {row['role']:<8} {row['status']:<9} "
                   f"{row['source']:<8} {row['account'] or '-':<32} "
                   f"{row['last_name'] or ''}, {row['first_name'] or ''}")
    click.echo(f"{len(rows):,} account(s)")


@people.command("set")
@click.argument("person_id")
@click.argument("assignments", nargs=-1, required=True, metavar="FIELD=VALUE...")
@click.option("--tenant", "tenant_key", metavar="T")
@click.pass_context
def people_set(click_ctx: click.Context, person_id: str, assignments: tuple[str, ...],
               tenant_key: str | None) -> None:
    """Edit an account locally; later syncs will not overwrite it."""
    from rosterdrop.store.directory import set_person

    ctx: _Context = click_ctx.obj
    tenant = tenant_key or click_ctx.meta.get("tenant")
    tenant = _one_tenant(ctx.settings, tenant)
    ctx.settings.tenant(tenant)
    fields: dict[str, str] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise UsageError(f"expected FIELD=VALUE, got {assignment!r}")
        fields[name.strip()] = value
    store = _open_store(ctx.settings)
    set_person(store, tenant, person_id, fields)
    _audit(store, "edit", tenant, "person", person_id, "set " + ", ".join(sorted(fields)))
    click.echo(f"{person_id}: updated {', '.join(sorted(fields))} (source = local)")


@people.command("reset")
@click.argument("person_id")
@click.option("--tenant", "tenant_key", metavar="T")
@click.pass_context
def people_reset(click_ctx: click.Context, person_id: str, tenant_key: str | None) -> None:
    """Hand a local account back to the SIS; the next sync applies the SIS's values."""
    from rosterdrop.store.directory import reset_person

    ctx: _Context = click_ctx.obj
    tenant = tenant_key or click_ctx.meta.get("tenant")
    tenant = _one_tenant(ctx.settings, tenant)
    ctx.settings.tenant(tenant)
    store = _open_store(ctx.settings)
    reset_person(store, tenant, person_id)
    _audit(store, "reset", tenant, "person", person_id, "returned to the SIS")
    click.echo(f"{person_id}: source = sis; the next sync applies the SIS's values")


@people.command("import")
@click.argument("csv_path", metavar="FILE.csv", type=click.Path(path_type=Path))
@click.option("--tenant", "tenant_key", metavar="T")
@click.option("--dry-run", is_flag=True, help="Check the file and list the accounts; import "
              "nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the import document of cli.md.")
@click.pass_context
def people_import(click_ctx: click.Context, csv_path: Path, tenant_key: str | None,
                  dry_run: bool, as_json: bool) -> None:
    """Import accounts created outside the SIS, so duplicate prevention finds them."""
    from dataclasses import asdict

    from rosterdrop.store.directory import import_people

    ctx: _Context = click_ctx.obj
    tenant = tenant_key or click_ctx.meta.get("tenant")
    tenant = _one_tenant(ctx.settings, tenant)
    ctx.settings.tenant(tenant)
    path = _readable_file(csv_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    check = import_people(_open_store(ctx.settings), tenant, data, path.name, dry_run=dry_run)
    listed = [person.as_listed() for person in check.people]
    status = "failed" if not check.valid else "valid" if dry_run else "imported"
    if as_json:
        _emit_json({
            "file": path.name, "tenant": tenant, "dry_run": dry_run, "status": status,
            "people": listed, "errors": [asdict(issue) for issue in check.issues],
        })
    elif not check.valid:
        click.echo(f"{path.name}: {len(check.issues):,} problem(s); nothing was imported")
        for issue in check.issues:
            click.echo(f"  [{issue.code}] {issue.message}")
    else:
        for row in listed:
            click.echo(f"{row['role']:<8} {row['account']:<32} "
                       f"{row['last_name']}, {row['first_name']}")
        verb = "would be imported (dry run: nothing was written)" if dry_run else "imported"
        click.echo(f"{len(listed):,} account(s) {verb} (source = imported)")
    sys.exit(EXIT_OK if check.valid else EXIT_INPUT)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@pass_ctx
def doctor(ctx: _Context, as_json: bool) -> None:
    """Check config, folders, store, listen addresses and SMTP; exit 1 on any failure."""
    from rosterdrop.tools.doctor import run_doctor

    sys.exit(run_doctor(ctx.config_path, as_json=as_json))


@cli.command("hash-password")
def hash_password_command() -> None:
    """Print the argon2id hash of a password for the config (SFTP accounts, [[admins]]):
    asked twice at a terminal, else the first line of stdin."""
    from rosterdrop.passwords import hash_password

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                                err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password given (type it at the prompt, or pipe it on stdin)")
    click.echo(hash_password(password))


_accept_config_everywhere(cli)


def main(argv: list[str] | None = None) -> Any:
    from rosterdrop.foreign_warnings import quiet_foreign_warnings

    quiet_foreign_warnings()
    try:
        return cli.main(args=argv, prog_name="rosterdrop", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_USAGE)
    except RosterdropError as exc:
        click.echo(f"rosterdrop: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
