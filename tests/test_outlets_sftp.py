"""SFTP push destinations (issue 19): real applied runs pushed by the dispatcher into
rosterdrop's own server (``DropboxServer`` in-process) and into OpenSSH's
``sftp-server`` behind a throwaway ``sshd`` on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import polars as pl
import pytest
from test_sftp_support import PASSWORD, make_key, running_server

from rosterdrop.codes import Code
from rosterdrop.config import LimitSettings, Settings, TenantSettings, parse_settings
from rosterdrop.errors import DeliveryError
from rosterdrop.outlets.dispatch import Delivery, Outlets
from rosterdrop.outlets.export import asm_model
from rosterdrop.outlets.sftp_push import SftpPush, partial_name, remote_name
from rosterdrop.paths import StatePaths
from rosterdrop.pipeline.check import check_upload
from rosterdrop.runs.runner import Runner
from rosterdrop.sftp.hostkey import load_or_create_host_key
from rosterdrop.store import deliveries as ledger
from rosterdrop.store.deliveries import DeliveryRecord, DeliveryState
from rosterdrop.store.directory import load_snapshot
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import RunRecord
from uploads import asm_files, make_zip

PASSWORD_ENV = "ROSTERDROP_TEST_PUSH_PASSWORD"
STUDENT = "P{n},10{n},First{n},,Last{n},9,first{n}.last{n}@d.example,fl{n},,S1\n"
SSHD = Path("/usr/sbin/sshd")
SFTP_SERVERS = (Path("/usr/lib/openssh/sftp-server"), Path("/usr/libexec/openssh/sftp-server"),
                Path("/usr/libexec/sftp-server"))


def district(students: int = 8) -> dict[str, str | bytes]:
    """An ASM district: ``students`` students in one class at S1, two staff."""
    files: dict[str, str | bytes] = dict(asm_files())
    header = str(files["students.csv"]).splitlines()[0]
    files["students.csv"] = header + "\n" + "".join(
        STUDENT.format(n=n) for n in range(1, students + 1))
    files["rosters.csv"] = "roster_id,class_id,student_id\n" + "".join(
        f"R{n},K1,P{n}\n" for n in range(1, students + 1))
    return files


class Clock:
    """Moves one second per reading; ``advance`` jumps (a retry falls due at once)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Rig:
    """A tenant ``t`` whose applied runs go to one SFTP destination."""

    settings: Settings
    store: Store
    clock: Clock
    runner: Runner
    outlets: Outlets
    tmp: Path

    def sync(self, files: dict[str, str | bytes] | None = None, name: str = "u.zip") -> RunRecord:
        path = self.tmp / name
        path.write_bytes(make_zip(files or district()))
        run = self.runner.sync("t", path, source="cli")
        assert run.applied, run
        return run

    def deliveries(self, run: RunRecord) -> list[DeliveryRecord]:
        return ledger.of_run(self.store, run.run_id)

    def new_outlets(self, **senders: Any) -> Outlets:
        """Another process on the same store (a restart)."""
        return Outlets(self.settings, self.store, clock=self.clock, senders=senders or None)


@contextlib.contextmanager
def rig(tmp_path: Path, destination: dict[str, Any]) -> Iterator[Rig]:
    state = tmp_path / "rd"
    settings = parse_settings({
        "state_dir": str(state),
        "tenants": {"t": {"name": "Test District", "account_domain": "t.example",
                          "destinations": [{"type": "sftp", "name": "asm", "retries": 3,
                                            "retry_seconds": 5, "timeout_seconds": 20,
                                            **destination}]}},
    })
    state.mkdir(parents=True)
    with open_store(settings.database_url) as store:
        clock = Clock()
        outlets = Outlets(settings, store, clock=clock)
        runner = Runner(settings, store, clock=clock, outlets=outlets)
        yield Rig(settings, store, clock, runner, outlets, tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def own_fingerprint(tmp_path: Path) -> str:
    """The host key ``running_server(tmp_path)`` serves (made now if it is not yet)."""
    key = load_or_create_host_key(StatePaths(tmp_path / "state").host_keys)
    return str(key.get_fingerprint("sha256"))


OTHER_FINGERPRINT = str(asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256"))


def own(port: int, fingerprint: str, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "username": "acme", "password_env": PASSWORD_ENV,
            "host_key_fingerprint": fingerprint, **extra}


@pytest.fixture(autouse=True)
def push_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def check_asm(data: bytes, students: int) -> pl.DataFrame:
    """``data`` passes rosterdrop's own validation as an ASM upload; its people."""
    checked = check_upload(data, tenant=TenantSettings(), limits=LimitSettings(),
                           today=date(2026, 11, 23), name="pushed.zip")
    assert checked.model is not None and not checked.issues.has_errors(), checked.issues
    people = checked.model.people
    assert int((people["role"] == "student").sum()) == students
    return people


# --- the export --------------------------------------------------------------------------------


def test_asm_export_holds_active_people_with_their_account_names(tmp_path: Path) -> None:
    """Deactivated people, their roster entries and class places are left out; each
    sis_username is the managed account's local part; the bytes are deterministic."""
    with rig(tmp_path, own(22, OTHER_FINGERPRINT)) as r:
        r.sync(district(8))
        r.sync(district(7), name="u2.zip")  # P8 deactivated
        snapshot = load_snapshot(r.store, "t")
        model = asm_model(snapshot)
        buffer = io.BytesIO()
        from rosterdrop.pipeline.asm_writer import write_asm_zip
        write_asm_zip(model, buffer)
        again = io.BytesIO()
        write_asm_zip(asm_model(load_snapshot(r.store, "t", use_cache=False)), again)
        assert buffer.getvalue() == again.getvalue()
        people = check_asm(buffer.getvalue(), 7)
        accounts = dict(snapshot.people.select("person_id", "account").iter_rows())
        assert "P8" not in people["person_id"].to_list()
        for person_id, sis_username in people.select("person_id", "sis_username").iter_rows():
            assert accounts[person_id] == f"{sis_username}@t.example"
        with zipfile.ZipFile(buffer) as archive:
            rosters = archive.read("rosters.csv").decode()
        assert "P8" not in rosters and rosters.count("\n") == 8


# --- rosterdrop's own server -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_push_into_rosterdrop_delivered_once_per_run(tmp_path: Path) -> None:
    """Each applied run is pushed once, under its own name, renamed into the drop folder
    from a temporary name (the server reports the .zip alone); a second round sends
    nothing; the ZIP validates as an ASM upload with the active people."""
    fingerprint = own_fingerprint(tmp_path)
    with running_server(tmp_path) as srv, rig(tmp_path, own(srv.port, fingerprint)) as r:
        first = r.sync(district(8))
        assert await r.outlets.deliver_due() == 1
        await r.outlets.idle()
        [record] = r.deliveries(first)
        assert record.status is DeliveryState.DELIVERED, record
        name = remote_name("t", first.run_id)
        assert record.detail is not None and record.detail.startswith(name)
        [upload] = srv.wait_uploads(1)
        assert upload.path == srv.dropbox() / name
        check_asm(upload.data, 8)
        assert await r.outlets.deliver_due() == 0  # delivered: nothing is due

        second = r.sync(district(6), name="u2.zip")
        await r.outlets.deliver_due()
        await r.outlets.idle()
        assert r.deliveries(second)[0].status is DeliveryState.DELIVERED
        uploads = srv.wait_uploads(2)
        assert uploads[1].path.name == remote_name("t", second.run_id)
        check_asm(uploads[1].data, 6)
        assert sorted(p.name for p in srv.dropbox().iterdir()) == sorted(
            [name, remote_name("t", second.run_id)])
    assert len(srv.uploads) == 2


@pytest.mark.asyncio
async def test_wrong_fingerprint_refused_before_login(tmp_path: Path) -> None:
    """A host key other than the pinned one: DELIVERY_HOST_KEY_MISMATCH in the ledger,
    both fingerprints in the message, no file, and no login (the right password was
    configured: had it been sent, the server would have logged login_ok)."""
    with running_server(tmp_path) as srv, rig(tmp_path, own(srv.port, OTHER_FINGERPRINT)) as r:
        run = r.sync()
        await r.outlets.deliver_due()
        await r.outlets.idle()
        [record] = r.deliveries(run)
        assert record.status is DeliveryState.FAILED and record.next_attempt_at is not None
        assert record.last_error is not None
        assert record.last_error.startswith(f"{Code.DELIVERY_HOST_KEY_MISMATCH}: ")
        assert own_fingerprint(tmp_path).rstrip("=") in record.last_error
        assert OTHER_FINGERPRINT in record.last_error and "nothing was sent" in record.last_error
        assert list(srv.dropbox().iterdir()) == [] if srv.dropbox().exists() else True
        assert srv.uploads == []
        events = {e["event"] for e in srv.logs.events}
        assert "login_ok" not in events and "login_failed" not in events


@pytest.mark.asyncio
async def test_wrong_password_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong password: DELIVERY_REFUSED, the password in no message."""
    monkeypatch.setenv(PASSWORD_ENV, "not the password 12345")
    fingerprint = own_fingerprint(tmp_path)
    with running_server(tmp_path) as srv, rig(tmp_path, own(srv.port, fingerprint)) as r:
        run = r.sync()
        await r.outlets.deliver_due()
        await r.outlets.idle()
        [record] = r.deliveries(run)
        assert record.last_error is not None
        assert record.last_error.startswith(f"{Code.DELIVERY_REFUSED}: "), record.last_error
        assert "not the password" not in record.last_error
        assert srv.uploads == []


@pytest.mark.asyncio
async def test_missing_password_variable_refused_without_connecting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    with rig(tmp_path, own(free_port(), OTHER_FINGERPRINT)) as r:
        run = r.sync()
        await r.outlets.deliver_due()
        await r.outlets.idle()
        [record] = r.deliveries(run)
        assert record.last_error == (
            f"{Code.DELIVERY_REFUSED}: the password of acme@127.0.0.1 is not set: put "
            f"{PASSWORD_ENV}=… in the service's environment")


@pytest.mark.asyncio
async def test_destination_down_then_up_delivered_after_the_retry(tmp_path: Path) -> None:
    """Nothing listens: DELIVERY_UNREACHABLE and a retry retry_seconds later; once the
    server is up and the retry is due, the run is delivered (attempts counted)."""
    port = free_port()
    fingerprint = own_fingerprint(tmp_path)
    with rig(tmp_path, own(port, fingerprint)) as r:
        run = r.sync()
        await r.outlets.deliver_due()
        await r.outlets.idle()
        [record] = r.deliveries(run)
        assert record.last_error is not None
        assert record.last_error.startswith(f"{Code.DELIVERY_UNREACHABLE}: "), record.last_error
        assert record.next_attempt_at is not None
        # retry_seconds after the failure (the test clock ticks a second per reading)
        wait = record.next_attempt_at - record.updated_at
        assert timedelta(seconds=3) <= wait <= timedelta(seconds=5)
        assert await r.outlets.deliver_due() == 0  # not due yet
        with running_server(tmp_path, sftp={"listen": f"127.0.0.1:{port}"}) as srv:
            r.clock.advance(5)
            assert await r.outlets.deliver_due() == 1
            await r.outlets.idle()
            [record] = r.deliveries(run)
            assert record.status is DeliveryState.DELIVERED and record.attempts == 1
            [upload] = srv.wait_uploads(1)
            assert upload.path.name == remote_name("t", run.run_id)


@pytest.mark.asyncio
async def test_restart_after_the_rename_delivers_once_into_rosterdrop(tmp_path: Path) -> None:
    """The attempt is cut off after the file was renamed into place but before the
    ledger heard of it (the process died); another process on the same store attempts
    again once the lease has run out and finds the file: one upload, delivered."""
    fingerprint = own_fingerprint(tmp_path)
    with running_server(tmp_path) as srv, \
            rig(tmp_path, own(srv.port, fingerprint, remote_path="/dropbox/")) as r:
        run = r.sync()
        await crash_after_send(r)
        [record] = r.deliveries(run)
        assert record.status is DeliveryState.PENDING and record.attempts == 0
        srv.wait_uploads(1)

        restarted = r.new_outlets()
        assert await restarted.deliver_due() == 0  # still leased to the dead attempt
        r.clock.advance(60)
        assert await restarted.deliver_due() == 1
        await restarted.idle()
        [record] = r.deliveries(run)
        assert record.status is DeliveryState.DELIVERED
        assert record.detail == (f"/dropbox/{remote_name('t', run.run_id)} "
                                 f"({len(srv.uploads[0].data)} bytes, already there)")
    assert len(srv.uploads) == 1


async def crash_after_send(r: Rig) -> None:
    """One attempt whose process 'dies' right after the push returned."""
    push = SftpPush(r.settings, r.store)

    async def send_then_die(delivery: Delivery) -> str:
        await push.send(delivery)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)
        raise AssertionError("not reached")

    dying = r.new_outlets(sftp=send_then_die)
    assert await dying.deliver_due() == 1
    await dying.idle()


# --- OpenSSH's sftp-server ---------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    sink: Path
    fingerprint: str
    """The ED25519 host key's."""
    key: Path
    user: str
    rsa_fingerprint: str = ""


@contextlib.contextmanager
def openssh(tmp_path: Path, *, rsa: bool = False) -> Iterator[Sshd]:
    """A throwaway ``sshd`` on 127.0.0.1 (key login only) serving OpenSSH's sftp-server;
    an ED25519 host key, and an RSA one too with ``rsa``."""
    sftp_server = next((p for p in SFTP_SERVERS if p.exists()), None)
    if not SSHD.exists() or sftp_server is None:
        pytest.skip("OpenSSH's sshd and sftp-server are not installed")
    if os.geteuid() != 0:
        pytest.skip("a throwaway sshd needs root here (it changes user)")
    root = tmp_path / "sshd"
    root.mkdir()
    sink = root / "sink"
    sink.mkdir()
    host_key = root / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True, capture_output=True)
    fingerprint = str(asyncssh.read_public_key(f"{host_key}.pub").get_fingerprint("sha256"))
    host_keys = [f"HostKey {host_key}"]
    rsa_fingerprint = ""
    if rsa:
        rsa_key = root / "ssh_host_rsa_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f",
                        str(rsa_key)], check=True, capture_output=True)
        rsa_fingerprint = str(
            asyncssh.read_public_key(f"{rsa_key}.pub").get_fingerprint("sha256"))
        host_keys.append(f"HostKey {rsa_key}")
    key, public = make_key(root, "client")
    (root / "authorized_keys").write_text(public + "\n")
    port = free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", *host_keys,
        f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin prohibit-password",
        "StrictModes no", "LogLevel ERROR", f"Subsystem sftp {sftp_server}",
    ]) + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with (root / "sshd.log").open("ab") as errors:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=errors)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (root / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not listen"
                time.sleep(0.05)
        yield Sshd(port, sink, fingerprint, key, "root", rsa_fingerprint)
    finally:
        process.terminate()
        process.wait(10)


def openssh_destination(sshd: Sshd, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user,
            "key_file": str(sshd.key), "host_key_fingerprint": sshd.fingerprint,
            "remote_path": str(sshd.sink), **extra}


@pytest.mark.asyncio
async def test_push_into_openssh_once_and_again_after_a_restart(tmp_path: Path) -> None:
    """With a key, into OpenSSH's sftp-server (posix-rename): the file is there under
    the run's name and no temporary is left; an attempt cut off after the rename is
    taken as delivered by the next process, which sends nothing again."""
    with openssh(tmp_path) as sshd, rig(tmp_path, openssh_destination(sshd)) as r:
        first = r.sync(district(8))
        await r.outlets.deliver_due()
        await r.outlets.idle()
        [record] = r.deliveries(first)
        assert record.status is DeliveryState.DELIVERED, record
        name = remote_name("t", first.run_id)
        target = sshd.sink / name
        assert record.detail == f"{target} ({target.stat().st_size} bytes)"
        assert sorted(os.listdir(sshd.sink)) == [name]
        check_asm(target.read_bytes(), 8)

        second = r.sync(district(5), name="u2.zip")
        await crash_after_send(r)
        placed = sshd.sink / remote_name("t", second.run_id)
        stamp = placed.stat().st_mtime_ns
        r.clock.advance(60)
        restarted = r.new_outlets()
        assert await restarted.deliver_due() == 1
        await restarted.idle()
        [record] = r.deliveries(second)
        assert record.status is DeliveryState.DELIVERED
        assert record.detail is not None and "already there" in record.detail
        assert placed.stat().st_mtime_ns == stamp  # not written again
        assert sorted(os.listdir(sshd.sink)) == sorted([name, placed.name])
        check_asm(placed.read_bytes(), 5)


@pytest.mark.asyncio
async def test_openssh_wrong_fingerprint_and_missing_folder(tmp_path: Path) -> None:
    """A server with an ED25519 and an RSA host key, pinned to another: refused, both
    its keys named, nothing in the sink; a remote_path that does not exist:
    DELIVERY_FAILED naming it."""
    with openssh(tmp_path, rsa=True) as sshd:
        with rig(tmp_path, openssh_destination(sshd, host_key_fingerprint=OTHER_FINGERPRINT)
                 ) as r:
            run = r.sync()
            await r.outlets.deliver_due()
            await r.outlets.idle()
            error = r.deliveries(run)[0].last_error
            assert error is not None
            assert error.startswith(f"{Code.DELIVERY_HOST_KEY_MISMATCH}: "), error
            assert f"{sshd.fingerprint} (ssh-ed25519)" in error
            assert f"{sshd.rsa_fingerprint} (ssh-rsa)" in error
            assert os.listdir(sshd.sink) == []
        shutil.rmtree(tmp_path / "rd")
        missing = str(sshd.sink / "nowhere")
        with rig(tmp_path, openssh_destination(sshd, remote_path=missing)) as r:
            run = r.sync()
            await r.outlets.deliver_due()
            await r.outlets.idle()
            error = r.deliveries(run)[0].last_error
            assert error is not None and error.startswith(f"{Code.DELIVERY_FAILED}: ")
            assert missing in error
            assert os.listdir(sshd.sink) == []


@pytest.mark.asyncio
async def test_openssh_pinned_rsa_key_of_a_server_that_prefers_ed25519(tmp_path: Path) -> None:
    """The pin may be any of the server's keys: pinned to its RSA key, the attempt is
    shown the ED25519 one first, connects again without that type, and delivers."""
    with openssh(tmp_path, rsa=True) as sshd, \
            rig(tmp_path, openssh_destination(sshd, host_key_fingerprint=sshd.rsa_fingerprint)
                ) as r:
        run = r.sync()
        await r.outlets.deliver_due()
        await r.outlets.idle()
        [record] = r.deliveries(run)
        assert record.status is DeliveryState.DELIVERED, record
        assert os.listdir(sshd.sink) == [remote_name("t", run.run_id)]


# --- the sender alone ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_send_leaves_no_export_behind(tmp_path: Path) -> None:
    """The attempt's private export folder is gone after a failed attempt too."""
    with rig(tmp_path, own(free_port(), OTHER_FINGERPRINT)) as r:
        run = r.sync()
        push = SftpPush(r.settings, r.store)
        [record] = r.deliveries(run)
        tenant = r.settings.tenant("t")
        delivery = Delivery(record, run, "t", tenant, tenant.destinations[0], r.settings)
        with pytest.raises(DeliveryError) as caught:
            await push.send(delivery)
        assert caught.value.code == Code.DELIVERY_UNREACHABLE
        exports = r.settings.state_dir / "outlets"
        assert exports.is_dir() and list(exports.iterdir()) == []
        assert oct(exports.stat().st_mode & 0o777) == "0o700"
        assert partial_name("x.zip") == ".x.zip.partial"


@pytest.mark.asyncio
@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_oneroster_push_reads_back_as_the_directory(tmp_path: Path, version: str) -> None:
    """format = oneroster-1.x: the pushed bundle passes rosterdrop's own validation as a
    OneRoster upload of that version, with the active people only (a deactivated student
    is not in it), each username the managed account name."""
    fingerprint = own_fingerprint(tmp_path)
    destination = own(0, fingerprint, format=f"oneroster-{version}")
    with running_server(tmp_path) as srv, \
            rig(tmp_path, {**destination, "port": srv.port}) as r:
        r.sync(district(8))
        run = r.sync(district(7), name="u2.zip")  # P8 deactivated
        await r.outlets.deliver_due()
        await r.outlets.idle()
        assert [d.status for d in r.deliveries(run)] == [DeliveryState.DELIVERED]
        upload = next(u for u in srv.wait_uploads(2)
                      if u.path.name == remote_name("t", run.run_id))
        checked = check_upload(upload.data, tenant=TenantSettings(), limits=LimitSettings(),
                               today=date(2026, 11, 23), name="pushed.zip")
        assert checked.model is not None and not checked.issues.has_errors(), checked.issues
        with zipfile.ZipFile(io.BytesIO(upload.data)) as archive:
            manifest = archive.read("manifest.csv").decode()
        assert f"oneroster.version,{version}" in manifest
        people = checked.model.people
        students = people.filter(pl.col("role") == "student")["person_id"].to_list()
        assert sorted(students) == [f"P{n}" for n in range(1, 8)]
        accounts = dict(load_snapshot(r.store, "t").people
                        .select("person_id", "account").iter_rows())
        pushed = dict(people.select("person_id", "sis_username").iter_rows())
        assert pushed == {p: accounts[p] for p in pushed}
        assert checked.model.rosters.height == 7
