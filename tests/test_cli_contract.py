"""The CLI contract's corrections (issue 17, part 7): --tenant may be left out when only
one tenant is configured; with several, the answer names them."""

from __future__ import annotations

from pathlib import Path

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
    for args in (("sync", "u.zip"), ("people",), ("people", "reset", "P1"), ("resync",)):
        refused = run(tmp_path, *args)
        assert refused.returncode == 2, args
        assert "--tenant T (configured: north, south)" in refused.stderr, args
        assert "Traceback" not in refused.stderr


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
