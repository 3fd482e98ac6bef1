"""Retention (issue 16, parts 6 and 9): kept uploads and report folders — student data —
leave the disk by [retention]; people deactivated longer than retention_days are purged
by `rosterdrop purge` and every applied sync, counted in the run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from test_cli_sync import run
from test_run_lifecycle import Sent, make_settings
from test_sync_runner import Clock, district, people, upload

from rosterdrop.config import Settings
from rosterdrop.documents import RunStatus
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import Store, open_store
from uploads import asm_files, make_zip


def _runner(tmp_path: Path, backend_url: str, **top: object) -> tuple[Settings, Store, Runner,
                                                                      Clock]:
    settings = make_settings(tmp_path, backend_url, **top)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.database_url)
    clock = Clock()
    return settings, store, Runner(settings, store, clock=clock, mailer=Sent()), clock


def test_old_reports_and_uploads_go_a_held_runs_stay(tmp_path: Path, backend_url: str) -> None:
    settings, store, runner, clock = _runner(
        tmp_path, backend_url,
        retention={"uploads_keep": 2, "uploads_days": 30, "reports_days": 90})
    kept = settings.state_dir / "tenants" / "t" / "uploads"
    reports = settings.state_dir / "tenants" / "t" / "reports"
    with store:
        first = runner.sync("t", upload(tmp_path, district(10), "a.zip"), source="cli")
        held = runner.sync("t", upload(tmp_path, district(4), "held.zip"), source="cli")
        assert held.status is RunStatus.HELD
        clock.now += timedelta(days=31)
        runner.housekeep("t")
        # a.zip is past uploads_days; the held upload stays whatever its age
        assert [p.stem for p in kept.glob("*.zip")] == [held.run_id]
        assert (reports / first.run_id).is_dir()
        clock.now += timedelta(days=60)
        assert runner.housekeep("t").reports == 1
        assert not (reports / first.run_id).exists() and (reports / held.run_id).is_dir()
        assert runner.discard(held.run_id).status is RunStatus.DISCARDED
        assert not kept.exists() or list(kept.glob("*.zip")) == []
        assert list(reports.iterdir()) == []
        newest = [runner.sync("t", upload(tmp_path, district(10 + n), f"n{n}.zip"),
                              source="cli").run_id for n in range(3)]
        assert sorted(p.stem for p in kept.glob("*.zip")) == sorted(newest[1:])


def test_purge_by_command_and_in_an_applied_sync(tmp_path: Path) -> None:
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\nretention_days = 1\n'
        "[tenants.t.guard]\nmax_deactivate_percent = 100\n")
    (tmp_path / "all.zip").write_bytes(make_zip(dict(asm_files())))
    assert run(tmp_path, "sync", "all.zip", "--tenant", "t").returncode == 0
    files = dict(asm_files())
    files["students.csv"] = "\n".join(
        line for line in files["students.csv"].splitlines() if not line.startswith("P3,"))
    files["rosters.csv"] = "\n".join(
        line for line in files["rosters.csv"].splitlines() if not line.endswith(",P3"))
    (tmp_path / "less.zip").write_bytes(make_zip(files))
    assert run(tmp_path, "sync", "less.zip", "--tenant", "t").returncode == 0
    # deactivated today: retention_days = 1 makes it due tomorrow, not now
    nothing = run(tmp_path, "purge", "--tenant", "t", "--dry-run")
    assert nothing.returncode == 0 and "0 account(s) would be purged" in nothing.stdout
    ahead = run(tmp_path, "purge", "--tenant", "t", "--dry-run", "--as-of", "2099-01-01")
    assert ahead.returncode == 0, ahead.stderr
    [name, count] = ahead.stdout.splitlines()
    assert name.startswith("li.chen") and count == "1 account(s) would be purged"
    assert run(tmp_path, "purge", "--tenant", "t", "--as-of", "2099-01-01").returncode == 2
    listed = run(tmp_path, "people", "--tenant", "t", "--inactive", "--json")
    assert '"P3"' in listed.stdout  # the preview deleted nothing
    unknown = run(tmp_path, "purge", "--tenant", "nobody")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr


def test_purge_frees_names_and_is_counted(tmp_path: Path, backend_url: str) -> None:
    _, store, runner, clock = _runner(tmp_path, backend_url)
    with store:
        runner.sync("t", upload(tmp_path, district(10), "a.zip"), source="cli")
        shrunk = runner.sync("t", upload(tmp_path, district(9), "b.zip"), source="cli")
        assert shrunk.applied
        assert people(store)["P10"]["status"] == "inactive"
        clock.now += timedelta(days=200)
        assert runner.purge("t", dry_run=True) == ["first10.last10@t.example"]
        assert "P10" in people(store)  # a dry run deletes nothing
        again = runner.sync("t", upload(tmp_path, district(8), "c.zip"), source="cli")
        assert again.document is not None and again.document.purged == 1
        assert "P10" not in people(store)
        assert runner.purge("t") == []


def test_a_purge_outside_a_sync_is_a_run_with_its_email(tmp_path: Path,
                                                       backend_url: str) -> None:
    """The daemon's daily purge (and `rosterdrop purge`) is one history record (source
    purge) and one email naming how many accounts went; nothing purged, no record."""
    from rosterdrop.documents import RunSource
    from rosterdrop.store.history import list_runs

    settings, store, _, clock = _runner(tmp_path, backend_url)
    sent = Sent()
    runner = Runner(settings, store, clock=clock, mailer=sent)
    with store:
        runner.sync("t", upload(tmp_path, district(10), "a.zip"), source="cli")
        runner.sync("t", upload(tmp_path, district(9), "b.zip"), source="cli")
        assert runner.purge("t") == []
        count = len(list_runs(store, "t"))
        clock.now += timedelta(days=200)
        assert runner.purge("t") == ["first10.last10@t.example"]
        runs = list_runs(store, "t", with_document=True)
        assert len(runs) == count + 1 and runs[0].source is RunSource.PURGE
        assert runs[0].status is RunStatus.COMPLETED and not runs[0].applied
        summary = runs[0].summary().to_json()
        assert summary["purged"] == 1 and summary["file"] == "(purge)"
        assert "1 account purged" in str(sent.messages[-1]["Subject"])
        body = sent.messages[-1].get_body(("plain",))
        assert body is not None and "account names are free again" in body.get_content()
