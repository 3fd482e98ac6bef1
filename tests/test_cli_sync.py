"""The sync-side commands as a user runs them: JSON shapes, exit codes, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from uploads import asm_files, make_zip

RUN_KEYS = {"file", "sha256", "layout", "status", "counts", "issue_counts", "errors",
            "warnings", "files_ignored", "run_id", "tenant", "dry_run", "changes",
            "filtered", "patched", "matched", "purged"}
CHANGE_KEYS = {"created", "updated", "deactivated", "removed", "unchanged"}
PERSON_KEYS = {"person_id", "role", "first_name", "last_name", "email_address",
               "location_ids", "account", "status", "source"}
CONFIG = """
state_dir = "state"
[tenants.t]
name = "Test"
report_to = ["a@t.example"]
[tenants.t.guard]
min_population = 3
"""


def run(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rosterdrop", "-c", "rd.toml", *args], cwd=cwd, text=True,
        capture_output=True, timeout=120, input=stdin,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "rd.toml").write_text(CONFIG)
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    return tmp_path


def test_sync_json_history_show_people(workdir: Path) -> None:
    """sync --json, history --json, show --json and people --json have cli.md's shapes."""
    synced = run(workdir, "sync", "u.zip", "--tenant", "t", "--json")
    assert synced.returncode == 0, synced.stderr
    doc = as_json(synced)
    assert set(doc) == RUN_KEYS and set(doc["changes"]) == CHANGE_KEYS
    assert doc["status"] == "completed" and doc["dry_run"] is False
    assert doc["changes"]["created"]["students"] == 3

    history = as_json(run(workdir, "history", "--tenant", "t", "--json"))
    assert [h["run_id"] for h in history] == [doc["run_id"]]
    assert "errors" not in history[0] and history[0]["status"] == "completed"

    shown = as_json(run(workdir, "show", doc["run_id"], "--json"))
    assert set(shown) >= RUN_KEYS
    assert set(shown["artifacts"]) == {"report.json", "issues.csv", "patch-summary.csv",
                                       "modified.zip"}

    listed = as_json(run(workdir, "people", "--tenant", "t", "--json"))
    assert len(listed) == 5 and all(set(p) == PERSON_KEYS for p in listed)
    assert {p["role"] for p in listed} == {"student", "staff"}
    found = as_json(run(workdir, "people", "--tenant", "t", "--search", "garcía", "--json"))
    assert [p["person_id"] for p in found] == ["P1"]


def test_dry_run_and_people_set(workdir: Path) -> None:
    """--dry-run applies nothing; people set makes a local edit."""
    dry = as_json(run(workdir, "sync", "u.zip", "--tenant", "t", "--dry-run", "--json"))
    assert dry["dry_run"] is True
    assert as_json(run(workdir, "people", "--tenant", "t", "--json")) == []
    assert run(workdir, "sync", "u.zip", "--tenant", "t").returncode == 0
    edited = run(workdir, "people", "--tenant", "t", "set", "P1", "last_name=Local")
    assert edited.returncode == 0, edited.stderr
    person = next(p for p in as_json(run(workdir, "people", "--tenant", "t", "--json"))
                  if p["person_id"] == "P1")
    assert (person["last_name"], person["source"]) == ("Local", "local")
    bad = run(workdir, "people", "--tenant", "t", "set", "P1", "shoe_size=9")
    assert bad.returncode == 2 and "shoe_size" in bad.stderr


def test_held_run_exit_1_then_approve(workdir: Path) -> None:
    """A held sync exits 1; approve applies it; approving again is a usage error."""
    assert run(workdir, "sync", "u.zip", "--tenant", "t").returncode == 0
    files = asm_files()
    files["students.csv"] = files["students.csv"].split("\n")[0] + "\n"
    files["rosters.csv"] = "roster_id,class_id,student_id\n"
    (workdir / "empty.zip").write_bytes(make_zip(dict(files)))
    held = run(workdir, "sync", "empty.zip", "--tenant", "t", "--json")
    assert held.returncode == 1
    doc = as_json(held)
    assert doc["status"] == "held"
    approved = run(workdir, "approve", doc["run_id"])
    assert approved.returncode == 0 and "completed" in approved.stdout
    again = run(workdir, "approve", doc["run_id"])
    assert again.returncode == 2 and "not held" in again.stderr


def test_unknown_things_are_exit_2(workdir: Path) -> None:
    """Unknown tenants and run ids, missing files and missing options are exit 2."""
    cases = [
        ("sync", "u.zip", "--tenant", "nobody"),
        ("sync", "missing.zip", "--tenant", "t"),
        ("sync", "u.zip", "--dry-run", "--as-of", "not-a-date"),
        ("show", "20990101-000000-abcd"),
        ("approve", "nope"),
        ("discard", "nope"),
        ("people", "--tenant", "nobody"),
        ("resync", "--tenant", "t"),
        ("history", "--tenant", "nobody"),
    ]
    for args in cases:
        result = run(workdir, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr.strip(), args


def test_resync_and_hash_password(workdir: Path) -> None:
    """resync queues the last upload for the daemon; hash-password prints a verifiable hash."""
    assert run(workdir, "sync", "u.zip", "--tenant", "t").returncode == 0
    resynced = run(workdir, "resync", "--tenant", "t")
    assert resynced.returncode == 0 and "queued u.zip again" in resynced.stdout
    assert len(list((workdir / "state" / "spool" / "t").glob("*__u.zip"))) == 1
    hashed = run(workdir, "hash-password", stdin="s3cret\n")
    assert hashed.returncode == 0
    from rosterdrop.passwords import verify_password

    assert verify_password(hashed.stdout.strip(), "s3cret")
    assert run(workdir, "hash-password", stdin="").returncode == 2


def test_no_config_demo_round_trip(tmp_path: Path) -> None:
    """With no config file the embedded demo tenant syncs a generated sample."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def plain(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "rosterdrop", *args], cwd=tmp_path,
                              text=True, capture_output=True, timeout=120, env=env)

    assert plain("sample", "demo.zip", "--layout", "asm", "--students", "200").returncode == 0
    synced = plain("sync", "demo.zip", "--tenant", "demo", "--json")
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["changes"]["created"]["students"] == 200
    assert len(list((tmp_path / "rosterdrop-data" / "outbox").glob("*.eml"))) == 1
