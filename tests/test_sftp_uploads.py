"""Uploads through real SFTP clients: paramiko, OpenSSH sftp, lftp, rclone."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
from test_sftp_support import (
    PASSWORD,
    WAIT_SECONDS,
    openssh_batch,
    paramiko_sftp,
    paramiko_transport,
    random_bytes,
    running_server,
)


def test_paramiko_put_with_password_reports_once(tmp_path: Path) -> None:
    """A password login and ``put`` report one upload for the account's tenant,
    bytes intact, and log upload_completed with size and duration."""
    local = tmp_path / "roster.zip"
    local.write_bytes(random_bytes(300_000))
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            attrs = sftp.put(str(local), "roster.zip")
            assert attrs.st_size == 300_000
        [upload] = srv.wait_uploads(1)
        assert (upload.tenant, upload.path) == ("acme", srv.dropbox() / "roster.zip")
        assert upload.data == local.read_bytes()
        done = srv.logs.wait("upload_completed", file="roster.zip")
        assert done["bytes"] == 300_000 and done["username"] == "acme"
        assert done["tenant"] == "acme" and done["peer"] == "127.0.0.1"
        assert isinstance(done["duration_ms"], int)
        srv.logs.wait("login_ok", username="acme", method="password")
    assert len(srv.uploads) == 1


def test_paramiko_put_with_ed25519_key(tmp_path: Path) -> None:
    """A key-only account (``acme-sis``) uploads with its ed25519 key."""
    local = tmp_path / "export.zip"
    local.write_bytes(random_bytes(70_000))
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme-sis", key=srv.keys["acme-sis"]) as sftp:
            sftp.put(str(local), "/dropbox/export.zip")
        [upload] = srv.wait_uploads(1)
        assert upload.tenant == "acme" and upload.data == local.read_bytes()
        srv.logs.wait("login_ok", username="acme-sis", method="publickey")
    assert len(srv.uploads) == 1


def test_openssh_sftp_put(tmp_path: Path) -> None:
    """OpenSSH's ``sftp`` (default algorithms) starts in the login folder ``/`` and uploads."""
    (tmp_path / "roster.zip").write_bytes(random_bytes(1_500_000))
    with running_server(tmp_path) as srv:
        result = openssh_batch(
            srv.port, "acme", srv.keys["acme"], ["pwd", "put roster.zip", "ls -l"], cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "Remote working directory: /\n" in result.stdout
        [upload] = srv.wait_uploads(1)
        assert upload.path == srv.dropbox() / "roster.zip"
        assert upload.data == (tmp_path / "roster.zip").read_bytes()
    assert len(srv.uploads) == 1


def test_openssh_winscp_sequence(tmp_path: Path) -> None:
    """WinSCP's steps with OpenSSH: upload to x.zip.filepart, remove the old
    x.zip, rename, chmod. Only the final x.zip is reported."""
    (tmp_path / "old.zip").write_bytes(b"old" * 1000)
    (tmp_path / "new.zip").write_bytes(random_bytes(400_000))
    with running_server(tmp_path) as srv:
        first = openssh_batch(srv.port, "acme", srv.keys["acme"], ["put old.zip x.zip"],
                              cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        srv.wait_uploads(1)
        result = openssh_batch(
            srv.port, "acme", srv.keys["acme"],
            [
                "put new.zip x.zip.filepart",
                "rm x.zip",
                "rename x.zip.filepart x.zip",
                "chmod 644 x.zip",
                "ls -l",
            ],
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        uploads = srv.wait_uploads(2)
        assert [u.path.name for u in uploads] == ["x.zip", "x.zip"]
        assert uploads[1].data == (tmp_path / "new.zip").read_bytes()
        assert sorted(os.listdir(srv.dropbox())) == ["x.zip"]
    assert len(srv.uploads) == 2


def test_paramiko_winscp_sequence_after_the_daemon_took_the_file(tmp_path: Path) -> None:
    """WinSCP's exact requests (v3 RENAME, stat, remove, then setstat of times and
    permissions) succeed while the daemon moves each completed upload away."""
    with running_server(tmp_path, move_uploads=True) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            for round_ in range(2):
                content = random_bytes(200_000)
                with sftp.open("x.zip.filepart", "wb") as remote:
                    remote.write(content)
                assert len(srv.uploads) == round_, "a temporary name was reported"
                if round_:  # the first x.zip is gone to the spool but still shown
                    sftp.stat("x.zip")
                    sftp.remove("x.zip")
                sftp.rename("x.zip.filepart", "x.zip")
                srv.wait_uploads(round_ + 1)
                sftp.utime("x.zip", (1_700_000_000, 1_700_000_000))
                sftp.chmod("x.zip", 0o644)
                assert sftp.stat("x.zip").st_size == 200_000
                assert srv.uploads[round_].data == content
        assert os.listdir(srv.dropbox()) == []
    assert len(srv.uploads) == 2


def test_paramiko_put_then_stat_after_the_file_was_moved(tmp_path: Path) -> None:
    """Linger: paramiko's ``put`` stats the file after CLOSE; the daemon already
    moved it, yet stat, listdir and setstat see it until the linger expires."""
    local = tmp_path / "roster.zip"
    local.write_bytes(random_bytes(123_456))
    with running_server(tmp_path, move_uploads=True, linger_seconds=5) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            assert sftp.put(str(local), "roster.zip").st_size == 123_456
            assert not (srv.dropbox() / "roster.zip").exists()
            assert sftp.stat("roster.zip").st_size == 123_456
            assert sftp.stat("/roster.zip").st_size == 123_456
            assert "roster.zip" in sftp.listdir("/dropbox")
            sftp.chmod("roster.zip", 0o600)
            srv.clock.advance(6)
            with pytest.raises(FileNotFoundError):
                sftp.stat("roster.zip")
            assert sftp.listdir("/dropbox") == []
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp, \
                pytest.raises(FileNotFoundError):
            sftp.stat("roster.zip")
        [upload] = srv.uploads
        assert upload.data == local.read_bytes()


def test_uploads_at_the_root_land_in_the_dropbox(tmp_path: Path) -> None:
    """Clients that ignore the start folder may upload to ``/x.zip``."""
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with sftp.open("/root-upload.zip", "wb") as remote:
                remote.write(b"PK" + random_bytes(1000))
            assert "root-upload.zip" in sftp.listdir("/")
            assert {"dropbox", "reports"} <= set(sftp.listdir("/"))
        [upload] = srv.wait_uploads(1)
        assert upload.path == srv.dropbox() / "root-upload.zip"


@pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed "
                    "(apt-get install lftp)")
def test_lftp_put(tmp_path: Path) -> None:
    """lftp (through its ssh connect program) uploads a file."""
    local = tmp_path / "lftp.zip"
    local.write_bytes(random_bytes(800_000))
    with running_server(tmp_path) as srv:
        ssh = (
            "ssh -a -x -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            f" -o IdentitiesOnly=yes -o BatchMode=yes -i {srv.keys['acme']}"
        )
        script = (
            f"set sftp:connect-program '{ssh}'; set net:max-retries 1; "
            "set net:timeout 10; put lftp.zip; bye"
        )
        result = subprocess.run(
            ["lftp", "-u", "acme,", "-e", script, f"sftp://127.0.0.1:{srv.port}"],
            capture_output=True, text=True, cwd=tmp_path, timeout=WAIT_SECONDS * 2, check=False,
        )
        assert result.returncode == 0, result.stderr
        [upload] = srv.wait_uploads(1)
        assert upload.path.name == "lftp.zip" and upload.data == local.read_bytes()


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed "
                    "(apt-get install rclone)")
def test_rclone_copyto(tmp_path: Path) -> None:
    """rclone uploads (its pkg/sftp pads some WRITE requests; they are accepted)."""
    local = tmp_path / "rclone.zip"
    local.write_bytes(random_bytes(3_000_000))
    with running_server(tmp_path) as srv:
        remote = (
            f":sftp,host=127.0.0.1,port={srv.port},user=acme,"
            f"key_file={srv.keys['acme']}:/dropbox/rclone.zip"
        )
        started = time.monotonic()
        result = subprocess.run(
            ["rclone", "copyto", str(local), remote, "--retries", "1",
             "--low-level-retries", "1", "--config", str(tmp_path / "rclone.conf")],
            capture_output=True, text=True, timeout=WAIT_SECONDS * 2, check=False,
        )
        assert result.returncode == 0, result.stderr
        [upload] = srv.wait_uploads(1)
        assert upload.data == local.read_bytes()
        assert time.monotonic() - started < WAIT_SECONDS


def _sftp_packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


def _sftp_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def test_a_client_that_sends_close_and_eof_at_once_completes_its_upload(
        tmp_path: Path) -> None:
    """A pipelining client writes OPEN, WRITE and CLOSE and ends its input in the same
    breath, reading the answers afterwards: the CLOSE is the client's, so the upload is
    complete (asyncssh sees the end of input before it handles the CLOSE)."""
    data = random_bytes(50_000)
    init = _sftp_packet(1, struct.pack(">I", 3))  # SSH_FXP_INIT, version 3
    flags = 0x02 | 0x08 | 0x10  # WRITE | CREAT | TRUNC
    opened = _sftp_packet(3, struct.pack(">I", 1) + _sftp_string(b"pipelined.zip")
                          + struct.pack(">II", flags, 0))
    with running_server(tmp_path) as srv:
        transport = paramiko_transport(srv.port)
        try:
            transport.auth_password("acme", PASSWORD)
            chan = transport.open_session()
            chan.invoke_subsystem("sftp")
            chan.sendall(init)
            version = chan.recv(1024)
            assert version[4] == 2  # SSH_FXP_VERSION
            chan.sendall(opened)
            answer = chan.recv(1024)
            assert answer[4] == 102  # SSH_FXP_HANDLE
            handle = answer[13:13 + struct.unpack(">I", answer[9:13])[0]]
            write = _sftp_packet(6, struct.pack(">I", 2) + _sftp_string(handle)
                                 + struct.pack(">Q", 0) + _sftp_string(data))
            close = _sftp_packet(4, struct.pack(">I", 3) + _sftp_string(handle))
            chan.sendall(write + close)
            chan.shutdown_write()  # EOF right behind the CLOSE
            answers = b""
            while chunk := chan.recv(65536):
                answers += chunk
        finally:
            transport.close()
        assert answers.count(bytes([101])) >= 2  # two SSH_FXP_STATUS answers
        [upload] = srv.wait_uploads(1)
        assert upload.data == data
        srv.logs.wait("upload_completed", file="pipelined.zip")
        assert not srv.logs.named("upload_aborted")
