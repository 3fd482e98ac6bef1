"""The front door: every upload convention real SIS jobs use works first time.

One ``rosterdrop serve`` process for the module, real clients (OpenSSH ``sftp``
and ``scp``, paramiko, rclone, lftp), one upload per convention, each under a
name of its own. Each test asserts the upload became exactly one run: one
job queued under its name, that job finished, and nothing of it left in the
drop folder or the in-progress folder (so no second take is possible).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from daemon_harness import Daemon, wait_until
from test_sftp_support import OPENSSH_OPTIONS, make_key, paramiko_sftp, password_hash

from rosterdrop.tools.sample import write_sample

PASSWORD = "front door password"
TENANT = "district"
TIMEOUT = 60


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "export.zip"
    write_sample(path, layout="oneroster-1.1", students=60, seed=7)
    return path


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_key(tmp_path_factory.mktemp("keys"), "sis")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, key: tuple[Path, str]) -> Iterator[Daemon]:
    running = Daemon(tmp_path_factory.mktemp("daemon"), {
        TENANT: {"username": TENANT, "password_hash": password_hash(PASSWORD),
                 "keys": [key[1]]},
    }).start()
    yield running
    if running.process is not None:
        running.stop(signal.SIGKILL)


@pytest.fixture
def upload(tmp_path: Path, sample: Path, request: pytest.FixtureRequest) -> Path:
    """The sample under a name of this test's own (the run is found by it)."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name).strip("-")[:80]
    path = tmp_path / f"{name}.zip"
    shutil.copyfile(sample, path)
    return path


def one_run(daemon: Daemon, name: str) -> None:
    """``name`` was queued exactly once and its job finished; nothing of it is left."""
    [queued] = daemon.wait_event("job_queued", file=name, timeout=TIMEOUT)
    daemon.wait_event("job_finished", job_id=queued["job_id"], timeout=TIMEOUT)
    assert len(daemon.named("job_queued", file=name)) == 1
    assert not (daemon.dropbox(TENANT) / name).exists()
    assert sorted(p.name for p in daemon.dropbox(TENANT).iterdir()) == []
    incoming = daemon.state / "tenants" / TENANT / "incoming"
    assert [p for p in incoming.rglob("*") if p.is_file()] == []


def openssh(tool: str, daemon: Daemon, key: Path, *args: str) -> list[str]:
    port_flag = "-P"
    return [tool, port_flag, str(daemon.port), *OPENSSH_OPTIONS, "-i", str(key), *args]


def sftp_batch(daemon: Daemon, key: Path, commands: list[str], *extra: str,
               cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*openssh("sftp", daemon, key, "-b", "-", *extra), f"{TENANT}@127.0.0.1"],
        input="\n".join(commands) + "\n", capture_output=True, text=True, cwd=cwd,
        timeout=TIMEOUT, check=False,
    )


# -- OpenSSH sftp --------------------------------------------------------------

SFTP_CONVENTIONS = {
    "relative": ["put {name} dropbox/{name}"],
    "dot-relative": ["put {name} ./dropbox/{name}"],
    "cd-then-put": ["cd dropbox", "put {name}"],
    "into-the-folder": ["put {name} dropbox"],
    "absolute": ["put {name} /dropbox/{name}"],
    "at-the-root": ["put {name}"],
}


@pytest.mark.parametrize("requests", [(), ("-B", "32768")], ids=["default", "B32768"])
@pytest.mark.parametrize("convention", sorted(SFTP_CONVENTIONS))
def test_openssh_sftp(daemon: Daemon, key: tuple[Path, str], upload: Path, convention: str,
                      requests: tuple[str, ...]) -> None:
    """OpenSSH ``sftp -b``: each path convention uploads, with default and 32 KiB requests."""
    commands = [c.format(name=upload.name) for c in SFTP_CONVENTIONS[convention]]
    result = sftp_batch(daemon, key[0], commands, *requests, cwd=upload.parent)
    assert result.returncode == 0, result.stderr
    one_run(daemon, upload.name)


# -- WinSCP's sequence ------------------------------------------------------------

@pytest.mark.parametrize("folder", ["/dropbox/", "/"])
def test_winscp_sequence(daemon: Daemon, upload: Path, folder: str) -> None:
    """WinSCP's defaults: write ``x.zip.filepart``, close, remove an old ``x.zip``,
    rename, then setstat the times: twice, so the second removes the lingering first."""
    data = upload.read_bytes()
    target = folder + upload.name
    with paramiko_sftp(daemon.port, TENANT, password=PASSWORD) as sftp:
        for attempt in range(2):
            with sftp.open(target + ".filepart", "wb") as remote:
                remote.write(data)
            if attempt:
                sftp.stat(target)  # the first upload, still shown to this session
                sftp.remove(target)
            sftp.rename(target + ".filepart", target)
            sftp.utime(target, (1_700_000_000, 1_700_000_000))
            if not attempt:
                [queued] = daemon.wait_event("job_queued", file=upload.name, timeout=TIMEOUT)
                daemon.wait_event("job_finished", job_id=queued["job_id"], timeout=TIMEOUT)
    queued_twice = daemon.wait_event("job_queued", count=2, file=upload.name, timeout=TIMEOUT)
    for job in queued_twice:
        daemon.wait_event("job_finished", job_id=job["job_id"], timeout=TIMEOUT)
    assert len(daemon.named("job_queued", file=upload.name)) == 2  # one per upload
    assert not any(p.name.endswith(".filepart") for p in daemon.dropbox(TENANT).iterdir())


# -- paramiko ------------------------------------------------------------------------

@pytest.mark.parametrize("confirm", [True, False], ids=["confirm", "no-confirm"])
@pytest.mark.parametrize("folder", ["dropbox/", "/"])
def test_paramiko_put(daemon: Daemon, upload: Path, folder: str, confirm: bool) -> None:
    """paramiko ``put()`` (which stats the file after closing it) and ``put(confirm=False)``."""
    with paramiko_sftp(daemon.port, TENANT, password=PASSWORD) as sftp:
        attrs = sftp.put(str(upload), folder + upload.name, confirm=confirm)
        if confirm:
            assert attrs.st_size == upload.stat().st_size
    one_run(daemon, upload.name)


# -- scp -------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [("-O",), ()], ids=["legacy", "sftp-mode"])
@pytest.mark.parametrize("target", ["dropbox/", "dropbox/{name}"])
def test_scp(daemon: Daemon, key: tuple[Path, str], upload: Path, target: str,
             protocol: tuple[str, ...]) -> None:
    """``scp x.zip host:dropbox/`` and ``host:dropbox/x.zip``, legacy SCP (``-O``, as PHP's
    ssh2_scp_send) and OpenSSH 9's SFTP mode."""
    destination = f"{TENANT}@127.0.0.1:" + target.format(name=upload.name)
    result = subprocess.run(
        [*openssh("scp", daemon, key[0], *protocol), str(upload), destination],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr
    one_run(daemon, upload.name)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("../{name}", "'..' is not allowed"),
        ("/etc/{name}", "files go directly into /dropbox"),
        ("reports/{name}", "/reports is read-only"),
        ("dropbox/roster.csv", "only .zip files can be uploaded"),
    ],
)
def test_legacy_scp_is_confined(daemon: Daemon, key: tuple[Path, str], upload: Path,
                                target: str, message: str) -> None:
    """Legacy SCP obeys the SFTP rules: no ``..``, no host paths, no writes outside
    /dropbox, only ``.zip`` names; the refusal is printed by ``scp``."""
    destination = f"{TENANT}@127.0.0.1:" + target.format(name=upload.name)
    result = subprocess.run(
        [*openssh("scp", daemon, key[0], "-O"), str(upload), destination],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "Uncaught" not in result.stderr
    assert daemon.named("job_queued", file=upload.name) == []
    assert daemon.named("job_queued", file="roster.csv") == []


def test_legacy_scp_of_a_folder_is_refused(daemon: Daemon, key: tuple[Path, str],
                                          tmp_path: Path, sample: Path) -> None:
    """``scp -r folder host:dropbox/`` makes no folder and uploads nothing."""
    folder = tmp_path / "exports"
    folder.mkdir()
    shutil.copyfile(sample, folder / "folder-upload.zip")
    result = subprocess.run(
        [*openssh("scp", daemon, key[0], "-O", "-r"), str(folder),
         f"{TENANT}@127.0.0.1:dropbox/"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode != 0
    assert "folders cannot be created" in result.stderr
    assert daemon.named("job_queued", file="folder-upload.zip") == []


def test_shell_and_other_commands_are_refused(daemon: Daemon, key: tuple[Path, str]) -> None:
    """No shell and no command but scp: ``ssh host ls`` fails."""
    result = subprocess.run(
        ["ssh", "-p", str(daemon.port), *OPENSSH_OPTIONS, "-i", str(key[0]),
         f"{TENANT}@127.0.0.1", "ls", "/"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode != 0
    assert result.stdout == ""


# -- rclone and lftp -----------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed "
                    "(apt-get install rclone)")
def test_rclone_copyto(daemon: Daemon, key: tuple[Path, str], upload: Path) -> None:
    """``rclone copyto x.zip remote:dropbox/x.zip``: its mkdir of the existing folder
    and its padded WRITE requests (pkg/sftp) both work."""
    remote = (f":sftp,host=127.0.0.1,port={daemon.port},user={TENANT},"
              f"key_file={key[0]}:dropbox/{upload.name}")
    result = subprocess.run(
        ["rclone", "copyto", str(upload), remote, "--retries", "1", "--low-level-retries", "1",
         "--config", str(upload.parent / "rclone.conf")],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr
    one_run(daemon, upload.name)


@pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed "
                    "(apt-get install lftp)")
def test_lftp_put_to_the_drop_folder(daemon: Daemon, key: tuple[Path, str], upload: Path) -> None:
    """``lftp put -o dropbox/x.zip``."""
    ssh = ("ssh -a -x -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
           f" -o IdentitiesOnly=yes -o BatchMode=yes -i {key[0]}")
    script = (f"set sftp:connect-program '{ssh}'; set net:max-retries 1; set net:timeout 10; "
              f"put {upload.name} -o dropbox/{upload.name}; bye")
    result = subprocess.run(
        ["lftp", "-u", f"{TENANT},", "-e", script, f"sftp://127.0.0.1:{daemon.port}"],
        capture_output=True, text=True, cwd=upload.parent, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr
    one_run(daemon, upload.name)


# -- what an attacker found ----------------------------------------------------------------

def test_a_name_too_long_to_keep_is_refused_at_open(daemon: Daemon, tmp_path: Path,
                                                   sample: Path) -> None:
    """A 240-byte name is refused when opened, with the limit in the message, instead
    of being accepted and then never processed."""
    name = "n" * 236 + ".zip"
    with (paramiko_sftp(daemon.port, TENANT, password=PASSWORD) as sftp,
          pytest.raises(OSError, match="at most 200 bytes")):
        sftp.put(str(sample), "dropbox/" + name)
    assert daemon.named("job_queued", file=name) == []
    assert daemon.named("upload_refused", reason="name_too_long")
    assert list(daemon.dropbox(TENANT).iterdir()) == []


def test_the_longest_name_accepted_is_processed(daemon: Daemon, tmp_path: Path,
                                               sample: Path) -> None:
    """A 200-byte name, the longest accepted, goes through the spool to one run."""
    name = "l" * 196 + ".zip"
    with paramiko_sftp(daemon.port, TENANT, password=PASSWORD) as sftp:
        sftp.put(str(sample), "dropbox/" + name)
    one_run(daemon, name)


def test_a_report_can_be_downloaded_by_an_asyncssh_client(daemon: Daemon,
                                                          tmp_path: Path) -> None:
    """asyncssh's ``get()`` of a report works (it asks for sparse ranges first)."""
    import asyncio

    import asyncssh

    wait_until(lambda: any(daemon.state.glob(f"tenants/{TENANT}/reports/*/report.json"))
               or _upload_one(daemon, tmp_path), TIMEOUT)
    report = next(daemon.state.glob(f"tenants/{TENANT}/reports/*/report.json"))
    remote = f"/reports/{report.parent.name}/report.json"

    async def get() -> None:
        async with asyncssh.connect("127.0.0.1", daemon.port, username=TENANT,
                                    password=PASSWORD, known_hosts=None, client_keys=None,
                                    config=None) as conn, conn.start_sftp_client() as sftp:
            await sftp.get(remote, str(tmp_path / "report.json"))

    asyncio.run(get())
    assert (tmp_path / "report.json").read_bytes() == report.read_bytes()


def _upload_one(daemon: Daemon, tmp_path: Path) -> bool:
    """Make sure at least one run has reports (when this test runs alone)."""
    if not daemon.named("job_finished"):
        local = tmp_path / "for-a-report.zip"
        write_sample(local, layout="oneroster-1.1", students=20, seed=3)
        with paramiko_sftp(daemon.port, TENANT, password=PASSWORD) as sftp:
            sftp.put(str(local), "dropbox/for-a-report.zip")
        one_run(daemon, local.name)
    return False


def test_errors_never_show_internals(daemon: Daemon) -> None:
    """Odd requests get a clear refusal, never 'Uncaught exception' or a Python name."""
    with paramiko_sftp(daemon.port, TENANT, password=PASSWORD) as sftp:
        for attempt in (
            lambda: sftp.open("reports/nothing-here.json").read(),
            lambda: sftp.mkdir("dropbox/sub"),
            lambda: sftp.symlink("a.zip", "dropbox/b.zip"),
            lambda: sftp.readlink("dropbox/x.zip"),
            lambda: sftp.listdir("dropbox/x.zip"),
            lambda: sftp.rename("dropbox/missing.zip", "dropbox/other.zip"),
        ):
            with pytest.raises((OSError, paramiko.SFTPError)) as refused:
                attempt()
            text = str(refused.value)
            assert "Uncaught" not in text and "object has no attribute" not in text


def test_daemon_killed_during_an_upload_queues_nothing_on_restart(
        tmp_path: Path, key: tuple[Path, str]) -> None:
    """SIGKILL while a client uploads: the partial file was only ever under an
    in-progress name, so the restart deletes it (logged) and queues no run, sends
    no email; the client's retry then makes exactly one run."""
    running = Daemon(tmp_path, {TENANT: {"username": TENANT, "keys": [key[1]]}}).start()
    big = tmp_path / "interrupted.zip"
    write_sample(big, layout="oneroster-1.1", students=20, seed=5)
    with big.open("ab") as grow:  # past the end of the ZIP: makes the upload take a while
        grow.write(b"\0" * 30_000_000)
    client = subprocess.Popen(
        [*openssh("sftp", running, key[0], "-b", "-", "-l", "8000"), f"{TENANT}@127.0.0.1"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=tmp_path, text=True,
    )
    try:
        assert client.stdin is not None
        client.stdin.write(f"put {big.name} dropbox/\n")
        client.stdin.close()
        running.wait_event("upload_started", file=big.name)
        incoming = running.state / "tenants" / TENANT / "incoming"
        wait_until(lambda: any(p.stat().st_size > 0 for p in incoming.rglob("*") if p.is_file()))
        running.stop(signal.SIGKILL)
    finally:
        client.kill()
        client.wait(TIMEOUT)
    assert list(running.dropbox(TENANT).iterdir()) == []  # nothing a rescan could take
    running.start()
    try:
        removed = running.wait_event("upload_aborted", reason="the server stopped during the upload")
        assert removed[0]["tenant"] == TENANT and removed[0]["bytes"] > 0
        assert [p for p in incoming.rglob("*") if p.is_file()] == []
        big.write_bytes(big.read_bytes()[:-30_000_000])
        result = sftp_batch(running, key[0], [f"put {big.name} dropbox/"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        [queued] = running.wait_event("job_queued", file=big.name, timeout=TIMEOUT)
        running.wait_event("job_finished", job_id=queued["job_id"], timeout=TIMEOUT)
        assert len(running.named("job_queued")) == 1
        assert len(running.outbox()) == 1
    finally:
        running.stop(signal.SIGKILL)


def test_a_long_name_copied_in_by_other_means_is_processed_once(daemon: Daemon,
                                                                sample: Path) -> None:
    """A file an admin copies into the drop folder with a 250-byte name (too long to
    keep behind the spool's prefix) is queued once under a shortened name that keeps
    its start and ``.zip``, not retried with a traceback on every rescan."""
    name = "c" * 246 + ".zip"
    staging = daemon.root / name
    shutil.copyfile(sample, staging)
    staging.rename(daemon.dropbox(TENANT) / name)
    kept = name[:255 - 34 - len(".zip")] + ".zip"  # a uuid and "__" come first
    [queued] = daemon.wait_event("job_queued", file=kept, timeout=TIMEOUT)
    daemon.wait_event("job_finished", job_id=queued["job_id"], timeout=TIMEOUT)
    assert list(daemon.dropbox(TENANT).iterdir()) == []
    assert daemon.named("intake_failed") == [] and daemon.named("watcher_error") == []


@pytest.mark.parametrize("name", ["x.zip", "é" * 120 + ".zip", "a" * 255])
def test_spool_names_fit_the_file_system(name: str) -> None:
    """The spool's unique name stays within 255 bytes, whole UTF-8 characters, ``.zip``
    kept when the name had to be shortened."""
    from rosterdrop.daemon.intake import SEPARATOR, spool_name

    spooled = spool_name(name)
    kept = spooled.split(SEPARATOR, 1)[1]
    assert len(spooled.encode()) <= 255
    assert kept == name or (kept.endswith(".zip") and name.startswith(kept[:-4]))
