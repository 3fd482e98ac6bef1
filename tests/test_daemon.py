"""`rosterdrop serve` end to end: real clients, a real process, loopback only."""

from __future__ import annotations

import email
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Daemon, free_port, wait_until
from test_sftp_support import make_key, openssh_batch, paramiko_sftp, password_hash

from rosterdrop.tools.sample import write_sample

PASSWORD = "district password"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("samples")
    made = {}
    for name, students, seed in (("small", 300, 1), ("other", 300, 2), ("big", 60000, 3)):
        made[name] = folder / f"{name}.zip"
        write_sample(made[name], layout="oneroster-1.1", students=students, seed=seed)
    return made


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    return {"a": make_key(tmp_path, "key-a"), "b": make_key(tmp_path, "key-b")}


@pytest.fixture
def daemon(tmp_path: Path, keys: dict[str, tuple[Path, str]]) -> Iterator[Daemon]:
    running = Daemon(tmp_path, {
        "alpha": {"username": "alpha", "password_hash": password_hash(PASSWORD),
                  "keys": [keys["a"][1]]},
        "beta": {"username": "beta", "keys": [keys["b"][1]]},
    }).start()
    yield running
    if running.process is not None:
        running.stop(signal.SIGKILL)


def runs_of(daemon: Daemon) -> list[dict[str, object]]:
    return daemon.named("run_finished")


def test_paramiko_upload_one_run_one_email(daemon: Daemon, samples: dict[str, Path]) -> None:
    """paramiko put (password) → exactly one run and one email; logs are JSON lines."""
    with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
        sftp.put(str(samples["small"]), "/dropbox/district.zip")
        assert sftp.stat("/dropbox/district.zip").st_size == samples["small"].stat().st_size
    daemon.wait_event("job_finished")
    finished = daemon.wait_event("run_finished")
    assert finished[0]["tenant"] == "alpha"
    assert finished[0]["status"] == "completed_with_warnings"
    wait_until(lambda: len(daemon.outbox()) == 1)
    message = email.message_from_bytes(daemon.outbox()[0].read_bytes())
    assert message["To"] == "admin@alpha.example"
    events = {e["event"] for e in daemon.events()}
    assert {"login_ok", "upload_started", "upload_completed", "job_queued", "job_started",
            "run_finished", "mail_sent"} <= events
    assert all("ts" in e and "level" in e for e in daemon.events())
    report = daemon.state / "tenants" / "alpha" / "reports" / str(finished[0]["run_id"])
    assert (report / "report.json").is_file()


def test_openssh_direct_and_winscp_sequence(daemon: Daemon, samples: dict[str, Path],
                                            keys: dict[str, tuple[Path, str]],
                                            tmp_path: Path) -> None:
    """OpenSSH sftp with a key: a direct put, then WinSCP's .filepart + rename + chmod."""
    key = keys["b"][0]
    shutil.copy(samples["small"], tmp_path / "x.zip")
    direct = openssh_batch(daemon.port, "beta", key, ["put x.zip"], cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr
    daemon.wait_event("run_finished", tenant="beta")
    shutil.copy(samples["other"], tmp_path / "x.zip")
    winscp = openssh_batch(daemon.port, "beta", key, [
        "put x.zip x.zip.filepart", "-rm x.zip", "rename x.zip.filepart x.zip",
        "chmod 644 x.zip"], cwd=tmp_path)
    assert winscp.returncode == 0, winscp.stderr
    runs = daemon.wait_event("run_finished", count=2, tenant="beta")
    assert [r["status"] for r in runs] == ["completed_with_warnings"] * 2
    wait_until(lambda: len(daemon.outbox()) == 2)
    assert len(daemon.named("job_queued")) == 2


def test_killed_client_queues_nothing(daemon: Daemon, samples: dict[str, Path],
                                      keys: dict[str, tuple[Path, str]],
                                      tmp_path: Path) -> None:
    """A client killed mid-upload: nothing queued, the partial file gone, daemon healthy."""
    big = tmp_path / "big.zip"
    big.write_bytes(b"\0" * (200 * 1024 * 1024))
    from test_sftp_support import openssh_command

    client = subprocess.Popen(
        ["bash", "-c", f"echo 'put {big} big.zip' | " + " ".join(
            openssh_command(daemon.port, "beta", keys["b"][0], "-l", "8000"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon.wait_event("upload_started", tenant="beta")
    subprocess.run(["pkill", "-KILL", "-P", str(client.pid)], check=False)
    client.kill()
    client.wait()
    daemon.wait_event("upload_aborted", tenant="beta")
    wait_until(lambda: not (daemon.dropbox("beta") / "big.zip").exists())
    assert daemon.named("job_queued") == []
    with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
        sftp.put(str(samples["small"]), "/dropbox/after.zip")
    daemon.wait_event("run_finished", tenant="alpha")


def test_copied_file_and_rescan_after_downtime(tmp_path: Path,
                                               samples: dict[str, Path]) -> None:
    """A file copied into a drop folder is processed, also one that arrived while down."""
    daemon = Daemon(tmp_path, {"alpha": {"username": "alpha",
                                         "password_hash": password_hash(PASSWORD)}})
    daemon.dropbox("alpha").mkdir(parents=True)
    shutil.copy(samples["small"], daemon.dropbox("alpha") / "while-down.zip")
    daemon.start()
    try:
        daemon.wait_event("run_finished", tenant="alpha")
        shutil.copy(samples["other"], daemon.dropbox("alpha") / ".copying.zip")
        (daemon.dropbox("alpha") / ".copying.zip").rename(daemon.dropbox("alpha") / "cp.zip")
        runs = daemon.wait_event("run_finished", count=2, tenant="alpha")
        assert len(runs) == 2
        assert {e["source"] for e in daemon.named("job_queued")} == {"watch"}
    finally:
        assert daemon.stop() == 0


def test_sigterm_drains_and_exits_zero(daemon: Daemon, samples: dict[str, Path]) -> None:
    """SIGTERM stops the daemon cleanly with exit 0 within seconds."""
    assert daemon.stop(signal.SIGTERM, timeout=15) == 0
    assert daemon.named("daemon_stopped")


def test_sigkill_during_sync_then_restart(tmp_path: Path, samples: dict[str, Path]) -> None:
    """Killed with SIGKILL mid-sync, restarted: the upload ends in exactly one run and mail."""
    daemon = Daemon(tmp_path, {"alpha": {"username": "alpha",
                                         "password_hash": password_hash(PASSWORD)}},
                    extra="")
    daemon.start()
    try:
        with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
            sftp.put(str(samples["big"]), "/dropbox/big.zip")
        daemon.wait_event("run_started")
        daemon.stop(signal.SIGKILL)
        assert daemon.named("run_finished") == []
        daemon.start()
        assert daemon.named("daemon_started")[-1]["released"] == 1
        runs = daemon.wait_event("run_finished", timeout=120)
        assert len(runs) == 1
        run_ids = {e["run_id"] for e in daemon.named("run_started")}
        resumed = {e["run_id"] for e in daemon.named("run_resumed")}
        assert run_ids == {runs[0]["run_id"]}
        assert resumed <= run_ids
        wait_until(lambda: len(daemon.outbox()) == 1)
    finally:
        if daemon.process is not None:
            daemon.stop(signal.SIGKILL)


def test_resync_goes_through_the_queue(daemon: Daemon, samples: dict[str, Path],
                                       tmp_path: Path) -> None:
    """`rosterdrop resync` queues the last upload and the running daemon processes it."""
    with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
        sftp.put(str(samples["small"]), "/dropbox/d.zip")
    daemon.wait_event("run_finished", tenant="alpha")
    result = subprocess.run(
        [sys.executable, "-m", "rosterdrop", "-c", str(daemon.config), "resync",
         "--tenant", "alpha"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    runs = daemon.wait_event("run_finished", count=2, tenant="alpha")
    assert runs[1]["status"] == "completed_with_warnings"
    assert daemon.named("run_started")[1]["source"] == "resync"


def test_startup_errors_are_clear(tmp_path: Path) -> None:
    """Port in use, an unwritable state folder and a bad config: exit 2, one line."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = Daemon(tmp_path, {"alpha": {"username": "alpha",
                                             "password_hash": password_hash(PASSWORD)}},
                        port=port)
        result = subprocess.run(
            [sys.executable, "-m", "rosterdrop", "-c", str(daemon.config), "serve"],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr

    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / "bad.toml").write_text(f'state_dir = "{blocker}/state"\n')
    unwritable = subprocess.run(
        [sys.executable, "-m", "rosterdrop", "-c", str(tmp_path / "bad.toml"), "serve"],
        capture_output=True, text=True, timeout=60)
    assert unwritable.returncode == 2 and "state folder" in unwritable.stderr

    (tmp_path / "typo.toml").write_text(f"[sftp]\nlisten = \"127.0.0.1:{free_port()}\"\n"
                                        "settle = 3\n")
    typo = subprocess.run(
        [sys.executable, "-m", "rosterdrop", "-c", str(tmp_path / "typo.toml"), "serve"],
        capture_output=True, text=True, timeout=60)
    assert typo.returncode == 2 and "sftp.settle: unknown key" in typo.stderr


def test_reports_go_to_a_real_smtp_server(tmp_path: Path, samples: dict[str, Path]) -> None:
    """With [mail] smtp_host set, the daemon's report reaches an aiosmtpd server; the
    first attempt gets a 451 and the daemon's mail retrier sends it once it is due."""
    from test_mail import Recorder, _LoopbackController

    recorder = Recorder(fail_first=1)
    controller = _LoopbackController(recorder, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        daemon = Daemon(tmp_path, {"alpha": {"username": "alpha",
                                             "password_hash": password_hash(PASSWORD)}},
                        extra=f'[mail]\nsmtp_host = "127.0.0.1"\nsmtp_port = {controller.port}\n'
                              "starttls = false\ntimeout_seconds = 5\nretry_seconds = 0.5\n")
        daemon.start()
        try:
            with paramiko_sftp(daemon.port, "alpha", password=PASSWORD) as sftp:
                sftp.put(str(samples["small"]), "/dropbox/d.zip")
            daemon.wait_event("mail_sent", timeout=60)
            assert len(recorder.envelopes) == 1
            assert recorder.envelopes[0].rcpt_tos == ["admin@alpha.example"]
            message = recorder.message()
            assert "alpha: sync completed with" in str(message["Subject"])
            failed = daemon.named("mail_failed", logger="rosterdrop.mail")
            assert [(e["smtp_code"], e["transient"]) for e in failed] == [(451, True)]
            sent = daemon.named("mail_sent")
            assert len(sent) == 1 and sent[0]["ts"] > failed[0]["ts"]
            assert recorder.attempts == 2
            assert daemon.outbox() == []
        finally:
            assert daemon.stop() == 0
    finally:
        controller.stop()
