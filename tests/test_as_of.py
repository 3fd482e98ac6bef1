"""Seeing ahead (issue 16, part 7): `validate` and `sync --dry-run` take `--as-of DATE`,
so an admin previews the first day of school with the tenant's filters and guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_sync import as_json, run

from uploads import make_zip, oneroster_files

CONFIG = """
state_dir = "state"
[tenants.t]
name = "Test"
report_to = ["a@t.example"]
[tenants.t.filter]
active_terms = true
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "rd.toml").write_text(CONFIG)
    (tmp_path / "u.zip").write_bytes(make_zip(dict(oneroster_files())))
    return tmp_path


def test_validate_and_a_dry_run_as_of_another_day(workdir: Path) -> None:
    """The sample's K1 runs this autumn term, K2 from January: a dry run as of a summer
    day keeps no class, as of 2027-01-15 it keeps K2 — the same filter, another 'today'."""
    checked = run(workdir, "validate", "u.zip", "--tenant", "t", "--as-of", "2027-01-15")
    assert checked.returncode == 0, checked.stderr
    summer = as_json(run(workdir, "sync", "u.zip", "--tenant", "t", "--dry-run", "--as-of",
                         "2026-07-01", "--json"))
    assert summer["changes"]["created"]["classes"] == 0
    assert summer["filtered"]["classes"] == 2
    winter = as_json(run(workdir, "sync", "u.zip", "--tenant", "t", "--dry-run", "--as-of",
                         "2027-01-15", "--json"))
    assert winter["dry_run"] is True
    assert winter["changes"]["created"]["classes"] == 1
    assert winter["filtered"]["classes"] == 1
    people = as_json(run(workdir, "people", "--tenant", "t", "--json"))
    assert people == []  # a preview applied nothing


def test_as_of_needs_a_dry_run_and_a_real_date(workdir: Path) -> None:
    real = run(workdir, "sync", "u.zip", "--tenant", "t", "--as-of", "2027-01-15")
    assert real.returncode == 2 and "needs --dry-run" in real.stderr
    bad = run(workdir, "validate", "u.zip", "--as-of", "15/01/2027")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
