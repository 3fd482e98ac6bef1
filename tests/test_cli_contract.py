"""The CLI contract's corrections (issue 17, parts 4 and 7): -c before or after the
command; --tenant may be left out when only one tenant is configured (with several, the
answer names them); both forms of people set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import wait_until
from test_cli_sync import as_json, run

from uploads import asm_files, make_zip


def test_one_tenant_needs_no_tenant_option(tmp_path: Path) -> None:
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.only]\nreport_to = ["a@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    synced = as_json(run(tmp_path, "sync", "u.zip", "--json"))
    assert synced["tenant"] == "only" and synced["status"] == "completed"
    people = as_json(run(tmp_path, "people", "--json"))
    assert len(people) == 5
    assert run(tmp_path, "people", "set", "P1", "middle_name=Q").returncode == 0
    assert run(tmp_path, "purge", "--dry-run").returncode == 0
    assert run(tmp_path, "resync").returncode == 0


def test_several_tenants_are_named_when_the_option_is_missing(tmp_path: Path) -> None:
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.north]\nreport_to = ["a@t.example"]\n'
        '[tenants.south]\nreport_to = ["b@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    (tmp_path / "ann.csv").write_text("email_address,first_name,last_name,role\n"
                                      "ann@t.example,Ann,Smith,staff\n")
    for args in (("sync", "u.zip"), ("people",), ("people", "reset", "P1"), ("resync",),
                 ("people", "set", "P1", "first_name=Q"), ("people", "import", "ann.csv"),
                 ("purge", "--dry-run"), ("classes", "clear"), ("pull",)):
        refused = run(tmp_path, *args)
        assert refused.returncode == 2, args
        assert "--tenant T (configured: north, south)" in refused.stderr, args
        assert "Traceback" not in refused.stderr
    for switch in ("pause", "resume"):
        refused = run(tmp_path, "tenant", switch)
        assert refused.returncode == 2
        assert refused.stderr == (f"rosterdrop: name the tenant with rosterdrop tenant "
                                  f"{switch} T (configured: north, south)\n")


def test_the_generated_password_warning_comes_once(tmp_path: Path) -> None:
    """The first start makes the password file and warns; the next start reuses it and
    only says so (it used to warn at every start)."""
    from structlog.testing import capture_logs

    from rosterdrop.config import parse_settings
    from rosterdrop.daemon.serve import generated_passwords
    from rosterdrop.paths import StatePaths

    settings = parse_settings({"state_dir": str(tmp_path / "state"),
                               "tenants": {"t": {"report_to": ["a@t.example"],
                                                 "accounts": [{"username": "t"}]}}})
    paths = StatePaths.of(settings)
    paths.root.mkdir(parents=True)
    with capture_logs() as first:
        hashes = generated_passwords(settings, paths)
    with capture_logs() as second:
        assert generated_passwords(settings, paths) .keys() == hashes.keys()
    assert [(e["event"], e["log_level"]) for e in first] == [
        ("sftp_password_generated", "warning")]
    assert [(e["event"], e["log_level"]) for e in second] == [
        ("sftp_password_file_used", "info")]
    [password_file] = list(paths.root.glob("*-password"))
    assert password_file.stat().st_mode & 0o777 == 0o600


def test_the_embedded_store_is_private_to_its_owner(tmp_path: Path) -> None:
    """rosterdrop.db holds children's names and emails: 0600 (its WAL too), in a 0700 state
    folder, on the embedded defaults (it was 0644)."""
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    assert run(tmp_path, "sync", "u.zip").returncode == 0
    state = tmp_path / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    files = [state / "rosterdrop.db", *state.glob("rosterdrop.db-*")]
    assert files[0].is_file()
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o600 for f in files}


def rosterdrop(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command line exactly as given (no -c added)."""
    return subprocess.run([sys.executable, "-m", "rosterdrop", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


@pytest.mark.parametrize("command", [
    ("serve",), ("doctor",), ("history",), ("people",), ("people", "set", "P9", "first_name=Q"),
    ("people", "reset", "P9"), ("purge", "--dry-run"), ("classes", "clear"), ("resync",),
    ("show", "20260101-000000-00000000"), ("approve", "20260101-000000-00000000"),
    ("tenant", "pause"), ("validate", "u.zip"), ("sync", "u.zip"), ("pull",),
], ids=" ".join)
def test_config_may_follow_the_command(tmp_path: Path, command: tuple[str, ...]) -> None:
    """`rosterdrop serve -c X` (and every other command with -c after its name or its
    arguments) reads X: its syntax error is the answer, never "No such option '-c'"."""
    (tmp_path / "elsewhere.toml").write_text("[sftp]\nlisen \"0.0.0.0:22\"\n")
    result = rosterdrop(tmp_path, *command, "-c", "elsewhere.toml")
    assert "No such option" not in result.stderr
    said = result.stdout if command == ("doctor",) else result.stderr
    assert "config elsewhere.toml is not valid TOML: line 2, column 7" in said, said
    assert result.returncode == (1 if command == ("doctor",) else 2)


def test_config_after_the_command_wins_and_serve_starts_with_it(tmp_path: Path) -> None:
    """With -c before and after the command the later one is read; `rosterdrop serve -c
    X` starts the daemon on X (its state folder is X's)."""
    (tmp_path / "bad.toml").write_text("not toml at all\n")
    (tmp_path / "good.toml").write_text(
        'state_dir = "good-state"\n[sftp]\nlisten = "127.0.0.1:0"\n'
        '[tenants.only]\nreport_to = ["a@t.example"]\n')
    listed = rosterdrop(tmp_path, "-c", "bad.toml", "history", "-c", "good.toml")
    assert listed.returncode == 0 and listed.stdout == "no runs yet\n", listed.stderr
    sample = rosterdrop(tmp_path, "sample", "s.zip", "-c", "good.toml", "--layout", "asm",
                        "--students", "5")
    assert sample.returncode == 0, sample.stderr
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([sys.executable, "-m", "rosterdrop", "serve", "-c",
                                   "good.toml"], cwd=tmp_path, stdout=out,
                                  stderr=subprocess.STDOUT, env={**os.environ,
                                                                 "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: '"daemon_started"' in log.read_text() or daemon.poll() is not None)
        [started] = [json.loads(line) for line in log.read_text().splitlines()
                     if '"daemon_started"' in line]
        assert started["state_dir"] == "good-state"
    finally:
        daemon.terminate()
        daemon.wait(30)
    assert daemon.returncode == 0, log.read_text()
    assert (tmp_path / "good-state" / "rosterdrop.db").is_file()


def test_people_set_takes_the_tenant_before_or_after_the_subcommand(tmp_path: Path) -> None:
    """`people set PERSON_ID --tenant T F=V` (the contract's form) and `people --tenant T
    set PERSON_ID F=V` both edit the account; a wrong tenant in either place is named."""
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.north]\nreport_to = ["a@t.example"]\n'
        '[tenants.south]\nreport_to = ["b@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    assert run(tmp_path, "sync", "u.zip", "--tenant", "north").returncode == 0
    after = run(tmp_path, "people", "set", "P1", "--tenant", "north", "first_name=Joe")
    assert after.returncode == 0, after.stderr
    assert after.stdout == "P1: updated first_name (source = local)\n"
    before = run(tmp_path, "people", "--tenant", "north", "set", "P2", "last_name=Roe")
    assert before.returncode == 0, before.stderr
    listed = {p["person_id"]: p for p in as_json(
        run(tmp_path, "people", "--tenant", "north", "--json"))}
    assert (listed["P1"]["first_name"], listed["P1"]["source"]) == ("Joe", "local")
    assert (listed["P2"]["last_name"], listed["P2"]["source"]) == ("Roe", "local")
    for args in (("people", "set", "P1", "--tenant", "west", "first_name=X"),
                 ("people", "--tenant", "west", "set", "P1", "first_name=X")):
        wrong = run(tmp_path, *args)
        assert wrong.returncode == 2
        assert wrong.stderr == ("rosterdrop: unknown tenant 'west' (configured: north, "
                                "south)\n")


def test_every_tenant_command_needs_no_tenant_with_one_tenant(tmp_path: Path) -> None:
    """With one tenant: people reset and import, classes clear, history, tenant pause and
    resume all run without naming it; pull says the tenant has no source (not that
    --tenant is missing)."""
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.only]\nreport_to = ["a@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    (tmp_path / "ann.csv").write_text("email_address,first_name,last_name,role\n"
                                      "ann@t.example,Ann,Smith,staff\n")
    assert run(tmp_path, "sync", "u.zip").returncode == 0
    imported = run(tmp_path, "people", "import", "ann.csv")
    assert imported.returncode == 0 and "1 account(s) imported" in imported.stdout
    assert run(tmp_path, "people", "set", "P1", "first_name=Q").returncode == 0
    reset = run(tmp_path, "people", "reset", "P1")
    assert reset.stdout == "P1: source = sis; the next sync applies the SIS's values\n"
    cleared = run(tmp_path, "classes", "clear")
    assert cleared.returncode == 0 and ": held; release it with" in cleared.stdout
    assert run(tmp_path, "history").stdout.count(" only ") == 2
    paused = run(tmp_path, "tenant", "pause")
    assert paused.stdout.startswith("only: paused"), paused.stderr
    assert run(tmp_path, "tenant", "resume").stdout.startswith("only: resumed")
    pulled = run(tmp_path, "pull")
    assert pulled.returncode == 2
    assert "tenant 'only' has no [tenants.only.source]" in pulled.stderr
