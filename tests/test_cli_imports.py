"""The read-only commands do not load the heavy libraries (issue 15: fast interactive commands).

A structural check, not a timing test (the times are benchmark P10's): a fresh
interpreter runs the command as ``rosterdrop`` would, then reports which
modules it had loaded. polars, SQLModel, asyncssh and jinja2 each cost more
than the whole of a ``history`` answer should; none of them is needed to read
the run history.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rosterdrop.store.engine import open_store

NEVER = ("polars", "sqlmodel", "asyncssh", "jinja2", "numpy", "psycopg", "sqlalchemy.orm",
         "structlog", "httpx", "watchdog")

PROBE = """
import json, sys
from rosterdrop.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
never = json.loads(sys.argv[1])
print(json.dumps({"exit": code, "loaded": sorted(m for m in never if m in sys.modules)}),
      file=sys.stderr)
"""


def loaded_by(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``rosterdrop ARGS`` in a fresh interpreter: its exit status and which of
    NEVER it imported."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(NEVER), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return int(report["exit"] or 0), list(report["loaded"])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Embedded-default-like settings on a store that exists (schema current)."""
    path = tmp_path / "rosterdrop.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[tenants.demo]\n')
    open_store(f"sqlite:///{tmp_path / 'state' / 'rosterdrop.db'}").close()
    return path


def test_importing_the_cli_loads_no_heavy_library(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import json, sys; import rosterdrop.cli; "
         f"print(json.dumps(sorted(m for m in {list(NEVER)!r} + ['pydantic', 'sqlalchemy'] "
         "if m in sys.modules)))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("args", [["--help"], ["history"], ["history", "--json"],
                                  ["show", "20260101-000000-00000000"], ["doctor"]],
                         ids=" ".join)
def test_read_only_commands_load_no_heavy_library(config: Path, args: list[str]) -> None:
    """history reads the store through SQLAlchemy Core only (show too, up to "no such
    run"); doctor reads a SQLite store with the standard library (and asyncssh only
    once a host key exists)."""
    status, loaded = loaded_by(["-c", str(config), *args], config.parent)
    assert status in (0, 1, 2)
    assert loaded == []


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A config whose store holds one completed run: (config, run id)."""
    folder = tmp_path_factory.mktemp("synced")
    config = folder / "rosterdrop.toml"
    config.write_text(f'state_dir = "{folder / "state"}"\n[tenants.demo]\n')
    upload = folder / "upload.zip"
    for args in (["sample", str(upload), "--layout", "oneroster-1.1", "--students", "20"],
                 ["-c", str(config), "sync", str(upload), "--tenant", "demo"]):
        subprocess.run([sys.executable, "-m", "rosterdrop", *args], cwd=folder,
                       capture_output=True, timeout=120, check=False)
    history = subprocess.run([sys.executable, "-m", "rosterdrop", "-c", str(config), "history",
                              "--json"], cwd=folder, capture_output=True, text=True, timeout=60,
                             check=True)
    return config, str(json.loads(history.stdout)[0]["run_id"])


def test_history_of_a_real_run_loads_no_heavy_library(synced: tuple[Path, str]) -> None:
    config, _ = synced
    assert loaded_by(["-c", str(config), "history"], config.parent) == (0, [])


def test_show_of_a_real_run_loads_no_heavy_library(synced: tuple[Path, str]) -> None:
    config, run_id = synced
    assert loaded_by(["-c", str(config), "show", run_id], config.parent) == (0, [])


def test_people_loads_no_heavy_library(synced: tuple[Path, str]) -> None:
    config, _ = synced
    assert loaded_by(["-c", str(config), "people", "--tenant", "demo"], config.parent)[1] == []


def test_discard_of_a_run_not_held_loads_no_heavy_library(synced: tuple[Path, str]) -> None:
    config, run_id = synced
    assert loaded_by(["-c", str(config), "discard", run_id], config.parent) == (2, [])
