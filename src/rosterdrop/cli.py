"""The ``rosterdrop`` command line (contract: ../shared/spec/cli.md).

Exit codes: 0 success (warnings allowed), 1 the input has errors or the run
failed/was held, 2 usage, configuration or I/O problems: one line on stderr,
never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from rosterdrop.config import Settings, load_settings
from rosterdrop.errors import RosterdropError

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
    from rosterdrop.sample import write_sample

    counts = write_sample(out, layout=layout, students=students, seed=seed)
    summary = ", ".join(f"{n:,} {kind}" for kind, n in counts.items())
    click.echo(f"wrote {out} ({layout}): {summary}")


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
