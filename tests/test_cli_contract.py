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
