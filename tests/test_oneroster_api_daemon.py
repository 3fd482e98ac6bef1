"""API tenants end to end: a running daemon pulls, syncs and emails; `rosterdrop pull`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Daemon, free_port, wait_until
from oneroster_server import OneRosterServer, load_dataset, serving

from rosterdrop.tools.sample import write_sample


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    export = tmp_path_factory.mktemp("export") / "export.zip"
    write_sample(export, layout="oneroster-1.1", students=300, seed=11)
    return load_dataset(export, "1.1")


def toml_table(name: str, table: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())


def rosterdrop(config: Path, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rosterdrop", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_api_tenant_in_a_running_daemon(tmp_path: Path,
                                        dataset: dict[str, list[dict[str, Any]]]) -> None:
    """At start the daemon pulls a never-pulled API tenant (OAuth 1, paged), syncs it,
    emails the report and keeps the bundle; `resync` pulls again; a refused pull is one
    failed run and one email; `history` shows source oneroster-api."""
    with serving(OneRosterServer(dataset, auth="oauth1", max_limit=150)) as api:
        secret = tmp_path / "sis-secret"
        secret.write_text(api.secret + "\n")
        daemon = Daemon(tmp_path, {"alpha": {"username": "alpha"}})
        source = api.source(client_secret_env="", client_secret_file=str(secret), retries=0,
                            page_size=150, time="02:00", timezone="America/Chicago")
        with daemon.config.open("a") as config:
            config.write(toml_table("tenants.alpha.source", source))
        daemon.start()
        try:
            first = daemon.wait_event("run_finished", tenant="alpha")[0]
            assert first["status"] == "completed_with_warnings"
            started = daemon.named("run_started", tenant="alpha")[0]
            assert started["source"] == "oneroster-api"
            assert started["file"].startswith("oneroster-api-")
            wait_until(lambda: len(daemon.outbox()) == 1)
            fetched = daemon.named("api_collection_fetched", tenant="alpha")
            assert [e["collection"] for e in fetched] == [
                "orgs", "academicSessions", "courses", "classes", "users", "enrollments"]
            assert daemon.named("pull_scheduled")[0]["schedule"] == \
                "daily at 02:00 America/Chicago"

            kept = daemon.state / "tenants" / "alpha" / "uploads" / f"{first['run_id']}.zip"
            checked = rosterdrop(daemon.config, "validate", str(kept), "--json")
            assert checked.returncode == 0, checked.stderr
            assert json.loads(checked.stdout)["counts"]["students"] == 300

            asked = rosterdrop(daemon.config, "resync", "--tenant", "alpha")
            assert asked.returncode == 0 and "asked the daemon to pull alpha" in asked.stdout
            second = daemon.wait_event("run_finished", count=2, tenant="alpha")[1]
            assert second["status"] == "completed_with_warnings"
            assert daemon.named("run_started", tenant="alpha")[1]["source"] == "resync"

            api.secret = "rotated-in-the-sis"
            assert rosterdrop(daemon.config, "resync", "--tenant", "alpha").returncode == 0
            third = daemon.wait_event("run_finished", count=3, tenant="alpha")[2]
            assert third["status"] == "failed"
            wait_until(lambda: len(daemon.outbox()) == 3)
            assert sum("SOURCE_REFUSED" in p.read_text() for p in daemon.outbox()) == 1

            history = rosterdrop(daemon.config, "history", "--json")
            runs = json.loads(history.stdout)
            assert [(r["source"], r["status"]) for r in runs] == [
                ("resync", "failed"), ("resync", "completed_with_warnings"),
                ("oneroster-api", "completed_with_warnings")]
            assert runs[0]["issue_counts"] == {"SOURCE_REFUSED": 1}
            log_text = daemon.log_path.read_text()
            assert api.secret not in log_text and "sis-secret" not in log_text.replace(
                str(secret), "")
            assert api.methods() == {"GET"}
            assert not [e for e in daemon.events() if e.get("logger") in ("httpx", "httpcore")]
        finally:
            assert daemon.stop() == 0


def test_pull_command(tmp_path: Path, dataset: dict[str, list[dict[str, Any]]]) -> None:
    """`pull --dry-run` prints counts and the verdict and writes nothing; `pull` queues the
    bundle; a refused pull records one failed run; missing secrets and upload-only tenants
    are usage errors (exit 2); `serve` refuses to start without a secret."""
    with serving(OneRosterServer(dataset, version="1.1", max_limit=500)) as api:
        state = tmp_path / "state"
        config = tmp_path / "rd.toml"
        config.write_text(
            f'state_dir = "{state}"\n[sftp]\nlisten = "127.0.0.1:{free_port()}"\n'
            '[tenants.t]\nreport_to = ["a@t.example"]\n'
            + toml_table("tenants.t.source", api.source(retries=0))
            + '[tenants.u]\nreport_to = ["a@u.example"]\n')
        env = {"RD_TEST_SECRET": api.secret}

        dry = rosterdrop(config, "pull", "--tenant", "t", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "pulled t (OneRoster 1.1)" in dry.stdout
        assert "enrollments" in dry.stdout and "OK with warnings" in dry.stdout
        assert "nothing was queued or recorded" in dry.stdout
        assert not state.exists()

        queued = rosterdrop(config, "pull", "--tenant", "t", env=env)
        assert queued.returncode == 0, queued.stderr
        assert "(job 1); the daemon (rosterdrop serve) will process it" in queued.stdout
        assert len(list((state / "spool" / "t").glob("*oneroster-api-*.zip"))) == 1

        api.secret = "rotated"
        refused = rosterdrop(config, "pull", "--tenant", "t", env=env)
        assert refused.returncode == 1
        assert "pull failed: token request to" in refused.stderr
        runs = json.loads(rosterdrop(config, "history", "--json").stdout)
        assert [(r["source"], r["status"], r["issue_counts"]) for r in runs] == [
            ("oneroster-api", "failed", {"SOURCE_REFUSED": 1})]
        assert len(list((state / "outbox").glob("*.eml"))) == 1

        unset = rosterdrop(config, "pull", "--tenant", "t")
        assert unset.returncode == 2
        assert "environment variable RD_TEST_SECRET is not set" in unset.stderr
        upload_only = rosterdrop(config, "pull", "--tenant", "u", env=env)
        assert upload_only.returncode == 2 and "has no [tenants.u.source]" in upload_only.stderr
        serve = subprocess.Popen([sys.executable, "-m", "rosterdrop", "-c", str(config),
                                  "serve"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={"PATH": "/usr/bin:/bin"})
        try:
            _, err = serve.communicate(timeout=60)
        finally:
            if serve.poll() is None:
                serve.send_signal(signal.SIGKILL)
                serve.wait()
        assert serve.returncode == 2 and "RD_TEST_SECRET is not set" in err
        assert "Traceback" not in err
