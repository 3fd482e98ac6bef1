"""Files holding personal data are their owner's alone (issue 17, part 7): every folder
rosterdrop makes in the state (and shared) folder is 0700 and every file 0600, in every
mode (commands, the daemon, pulls), whatever the umask; what an older version left
looser is tightened. Each process runs with umask 000, so a writer that does not go
through ``rosterdrop.paths`` would show up as 0666/0777."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import paramiko
from daemon_harness import Daemon, wait_until
from oneroster_server import OneRosterServer, load_dataset, serving

from rosterdrop.paths import open_private, private_file, private_folder
from rosterdrop.tools.sample import write_sample
from uploads import asm_files, make_zip


def loose(root: Path) -> dict[str, str]:
    """Every folder under ``root`` (itself included) not 0700 and every file not 0600,
    as ``relative path → mode``."""
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            found[str(path.relative_to(root)) or "."] = oct(mode)
    return found


def rosterdrop(cwd: Path, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """``rosterdrop -c rd.toml ARGS`` with umask 000."""
    return subprocess.run([sys.executable, "-m", "rosterdrop", "-c", "rd.toml", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120, umask=0,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **(env or {})})


def test_the_helpers_make_private_whatever_the_umask(tmp_path: Path) -> None:
    """private_folder makes every missing level 0700 and tightens an existing one;
    private_file and open_private give 0600 (also to a file that was looser)."""
    old = os.umask(0)
    try:
        deep = private_folder(tmp_path / "a" / "b" / "c")
        (tmp_path / "open").mkdir(mode=0o755)
        private_folder(tmp_path / "open")
        loose_file = tmp_path / "a" / "loose"
        loose_file.write_text("x")
        os.chmod(loose_file, 0o644)
        private_file(loose_file)
        os.close(open_private(tmp_path / "a" / "made"))
        os.chmod(tmp_path / "a" / "made", 0o666)
        with os.fdopen(open_private(tmp_path / "a" / "made"), "w") as out:
            out.write("again")
    finally:
        os.umask(old)
    assert deep.is_dir()
    assert loose(tmp_path / "a") == {}
    assert stat.S_IMODE((tmp_path / "open").stat().st_mode) == 0o700
    assert (tmp_path / "a" / "made").read_text() == "again"


def test_commands_leave_only_private_files(tmp_path: Path) -> None:
    """sync (reports, kept upload, outbox mail, snapshot cache, database), a dry run's
    previews, people import, resync (the spool copy) and classes clear, each under umask
    000: every folder of the state folder 0700, every file 0600."""
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    (tmp_path / "ann.csv").write_text("email_address,first_name,last_name,role\n"
                                      "ann@t.example,Ann,Smith,staff\n")
    for args in (("people", "import", "ann.csv"), ("sync", "u.zip"),
                 ("sync", "u.zip", "--dry-run"), ("resync",), ("classes", "clear")):
        done = rosterdrop(tmp_path, *args)
        assert done.returncode == 0, (args, done.stderr)
    state = tmp_path / "state"
    written = {p.relative_to(state).parts[0] for p in state.rglob("*") if p.is_file()}
    assert {"rosterdrop.db", "outbox", "tenants", "cache", "spool"} <= written, written
    reports = list((state / "tenants" / "t" / "reports").rglob("*.csv"))
    assert reports and list((state / "tenants" / "t" / "uploads").glob("*.zip"))
    assert loose(state) == {}


def test_an_older_installs_loose_files_are_tightened(tmp_path: Path) -> None:
    """A state folder an older version left 0755 with a 0644 database and 0644 kept
    uploads: the next command makes them private."""
    (tmp_path / "rd.toml").write_text(
        'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\n')
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    assert rosterdrop(tmp_path, "sync", "u.zip").returncode == 0
    state = tmp_path / "state"
    os.chmod(state, 0o755)
    os.chmod(state / "rosterdrop.db", 0o644)
    assert loose(state) != {}
    assert rosterdrop(tmp_path, "history").returncode == 0
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "rosterdrop.db").stat().st_mode) == 0o600


def test_the_daemon_leaves_only_private_files(tmp_path: Path) -> None:
    """serve under umask 000: host keys, the generated password, the serve record, an
    SFTP upload (incoming, spool, kept), its reports and mail: all 0700/0600."""
    daemon = Daemon(tmp_path, {"alpha": {"username": "alpha"}})
    log = daemon.log_path.open("ab")
    daemon.process = subprocess.Popen(
        [sys.executable, "-m", "rosterdrop", "-c", str(daemon.config), "serve"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, umask=0,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    try:
        daemon.wait_event("daemon_started")
        password = (daemon.state / "alpha-password").read_text().strip()
        transport = paramiko.Transport(("127.0.0.1", daemon.port))
        try:
            transport.connect(username="alpha", password=password)
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None
            with sftp.open("/dropbox/u.zip", "wb") as upload:
                upload.write(make_zip(dict(asm_files())))
        finally:
            transport.close()
        daemon.wait_event("run_finished", tenant="alpha")
        wait_until(lambda: len(daemon.outbox()) == 1)
        assert loose(daemon.state) == {}
        assert (daemon.state / "serve.pid").is_file()
        assert list((daemon.state / "host_keys").iterdir())
    finally:
        assert daemon.stop() == 0
    assert loose(daemon.state) == {}


def test_a_pull_leaves_only_private_files(tmp_path: Path) -> None:
    """rosterdrop pull under umask 000: the pull state, its lock and the pulled bundle
    (queued in the spool) are private."""
    export = tmp_path / "export.zip"
    write_sample(export, layout="oneroster-1.1", students=20, seed=3)
    with serving(OneRosterServer(load_dataset(export, "1.1"))) as api:
        source = "".join(f"{k} = {json.dumps(v)}\n" for k, v in api.source().items())
        (tmp_path / "rd.toml").write_text(
            f'state_dir = "state"\n[tenants.t]\nreport_to = ["a@t.example"]\n'
            f"[tenants.t.source]\n{source}")
        pulled = rosterdrop(tmp_path, "pull", env={"RD_TEST_SECRET": api.secret})
        assert pulled.returncode == 0, pulled.stderr
    state = tmp_path / "state"
    assert list((state / "pulls").glob("t.json")) and list((state / "spool").rglob("*.zip"))
    assert loose(state) == {}


def test_the_service_unit_and_image_keep_the_state_folder_private() -> None:
    """systemd makes /var/lib/rosterdrop 0700 with a 0077 umask (it used to be 0750 and
    0027: group-readable), and the image creates its state volume 0700."""
    from test_deploy import DEPLOY, UNIT, dockerfile, unit_keys

    service = {key: values[-1] for key, values in unit_keys(UNIT)["Service"].items()}
    assert (service["StateDirectoryMode"], service["UMask"]) == ("0700", "0077")
    assert (DEPLOY / "Dockerfile").is_file()
    runs = " ".join(args for word, args in dockerfile() if word == "RUN")
    assert "install -d -o rosterdrop -g rosterdrop -m 0700 /var/lib/rosterdrop" in runs
