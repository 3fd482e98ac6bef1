"""The ``rosterdrop`` command line (contract: ../shared/spec/cli.md).

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
from typing import Any, cast

import click

from rosterdrop.config import Settings, load_settings
from rosterdrop.errors import InputError, RosterdropError

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2


class _Context:
    def __init__(self, config: str | None) -> None:
        self.config_path = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


pass_ctx = click.make_pass_decorator(_Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c", "--config", "config", metavar="PATH", default=None,
    help="Config file (default: $ROSTERDROP_CONFIG, then ./rosterdrop.toml, then built-in defaults).",
)
@click.version_option(package_name="rosterdrop")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """rosterdrop: an SFTP drop-box for school roster exports."""
    ctx.obj = _Context(config)


@cli.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--layout", type=click.Choice(["oneroster-1.1", "oneroster-1.2", "asm"]),
              required=True)
@click.option("--students", type=click.IntRange(min=1), required=True)
@click.option("--seed", type=int, default=1, show_default=True)
def sample(out: Path, layout: str, students: int, seed: int) -> None:
    """Write a realistic synthetic upload for demos, tests and benchmarks."""
    from rosterdrop.sample import Layout, write_sample

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
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document of cli.md.")
@pass_ctx
def validate(ctx: _Context, zip_path: Path, tenant_key: str | None, as_json: bool) -> None:
    """Check one upload offline: read, validate, filter and patch; writes nothing."""
    from rosterdrop.check import check_upload
    from rosterdrop.config import TenantSettings
    from rosterdrop.report import check_document

    settings = ctx.settings
    tenant = settings.tenant(tenant_key) if tenant_key else TenantSettings()
    checked = check_upload(
        _readable_file(zip_path), tenant=tenant, limits=settings.limits,
        today=date.today(), progress=_progress(),
    )
    document = check_document(checked)
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


def main(argv: list[str] | None = None) -> Any:
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
