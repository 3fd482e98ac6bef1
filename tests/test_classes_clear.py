"""Year-end rollover (issue 16, part 8): `rosterdrop classes clear` removes every class
and roster for the new school year — held for approval like a guarded run."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli_sync import as_json, run

from uploads import asm_files, make_zip

CONFIG = 'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\n'


def test_classes_clear_is_held_until_approved_and_survives_a_new_upload(
        tmp_path: Path) -> None:
    (tmp_path / "rd.toml").write_text(CONFIG)
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    assert run(tmp_path, "sync", "u.zip", "--tenant", "t").returncode == 0
    cleared = run(tmp_path, "classes", "clear", "--tenant", "t")
    assert cleared.returncode == 0, cleared.stderr
    run_id = cleared.stdout.split()[1].rstrip(":")
    shown = as_json(run(tmp_path, "show", run_id, "--json"))
    assert shown["status"] == "held" and shown["source"] == "classes-clear"
    assert shown["changes"]["removed"]["classes"] == 2
    assert shown["changes"]["removed"]["rosters"] == 3
    assert [e["code"] for e in shown["errors"]] == ["CHANGE_THRESHOLD"]
    assert "preview.csv" in shown["artifacts"]
    # the nightly upload of the same export does not discard the admin's clear
    (tmp_path / "again.zip").write_bytes(make_zip({**asm_files(), "locations.csv":
        asm_files()["locations.csv"].replace("North High", "North High School")}))
    assert run(tmp_path, "sync", "again.zip", "--tenant", "t").returncode == 0
    approved = run(tmp_path, "approve", run_id)
    assert approved.returncode == 0 and "completed" in approved.stdout, approved.stderr
    after = as_json(run(tmp_path, "show", run_id, "--json"))
    assert after["status"] == "completed"
    people = as_json(run(tmp_path, "people", "--tenant", "t", "--json"))
    assert len(people) == 5  # people stay
    # nothing left to clear a second time, but it is still a held run to approve
    second = run(tmp_path, "classes", "clear", "--tenant", "t")
    second_id = second.stdout.split()[1].rstrip(":")
    report = json.loads((tmp_path / "state" / "tenants" / "t" / "reports" / second_id
                         / "report.json").read_text())
    assert report["changes"]["removed"]["classes"] == 0
    assert run(tmp_path, "discard", second_id).returncode == 0
