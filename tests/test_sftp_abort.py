"""Aborted uploads: a session that ends with a file open never reports it.

asyncssh closes every file a dying session left open, through the same
``SFTPServer.close`` a client's CLOSE request uses; these tests pin that only
a real CLOSE completes an upload.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from test_sftp_support import (
    PASSWORD,
    WAIT_SECONDS,
    openssh_command,
    paramiko_sftp,
    random_bytes,
    running_server,
    wait_until,
)


def test_killed_openssh_client_mid_upload(tmp_path: Path) -> None:
    """Killing ``sftp`` (and its ssh) mid-upload deletes the partial file, logs
    upload_aborted, reports nothing, and the server serves the next client."""
    (tmp_path / "big.zip").write_bytes(random_bytes(40_000_000))
    with running_server(tmp_path) as srv:
        partial = srv.dropbox() / "big.zip"
        proc = subprocess.Popen(
            # -l: 16 Mbit/s, so the upload is still running when it is killed
            openssh_command(srv.port, "acme", srv.keys["acme"], "-l", "16000"),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=tmp_path, start_new_session=True, text=True,
        )
        try:
            assert proc.stdin is not None
            proc.stdin.write("put big.zip\n")
            proc.stdin.flush()
            srv.logs.wait("upload_started", file="big.zip")
            assert srv.is_uploading(partial)
            wait_until(lambda: any(p.stat().st_size > 0 for p in srv.in_progress()))
            assert not partial.exists()  # written under an in-progress name until closed
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(WAIT_SECONDS)
            if proc.stdin is not None:
                proc.stdin.close()
        aborted = srv.logs.wait("upload_aborted", file="big.zip")
        assert 0 < aborted["bytes"] < 40_000_000
        assert not partial.exists() and srv.in_progress() == []
        assert not srv.is_uploading(partial)
        assert srv.uploads == []

        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            sftp.put(str(tmp_path / "big.zip"), "big.zip")
        [upload] = srv.wait_uploads(1)
        assert upload.data == (tmp_path / "big.zip").read_bytes()


def test_dropped_connection_with_file_open(tmp_path: Path) -> None:
    """A TCP connection that disappears while a file is open aborts the upload."""
    with running_server(tmp_path) as srv:
        partial = srv.dropbox() / "dropped.zip"
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            remote = sftp.open("dropped.zip", "wb")
            remote.write(random_bytes(300_000))
            remote.flush()
            sftp.stat("dropped.zip")  # the writes have been processed
            assert srv.is_uploading(partial)
            channel = sftp.get_channel()
            assert channel is not None
            channel.get_transport().sock.shutdown(socket.SHUT_RDWR)
        srv.logs.wait("upload_aborted", file="dropped.zip")
        assert not partial.exists() and not srv.is_uploading(partial)
        assert srv.in_progress() == []
    assert srv.uploads == []


def test_channel_closed_without_close_request(tmp_path: Path) -> None:
    """Closing the SFTP channel with a file still open (no CLOSE request) aborts
    the upload, though asyncssh calls ``close()`` on the file."""
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            remote = sftp.open("unclosed.zip", "wb")
            remote.write(random_bytes(50_000))
            sftp.stat("unclosed.zip")
            sftp.close()
            srv.logs.wait("upload_aborted", file="unclosed.zip")
            remote.close()  # too late: the channel is gone (paramiko ignores it)
        assert not (srv.dropbox() / "unclosed.zip").exists()
    assert srv.uploads == []


def test_is_uploading_only_while_open(tmp_path: Path) -> None:
    """``is_uploading`` is true from OPEN to CLOSE, for the watcher to skip the file."""
    with running_server(tmp_path) as srv:
        path = srv.dropbox() / "slow.zip"
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            assert not srv.is_uploading(path)
            with sftp.open("slow.zip", "wb") as remote:
                remote.write(b"PK")
                sftp.stat("slow.zip")
                assert srv.is_uploading(path)
            assert not srv.is_uploading(path)
        srv.wait_uploads(1)


def test_temporary_file_never_renamed_is_removed_at_session_end(tmp_path: Path) -> None:
    """A WinSCP-style ``.filepart`` closed but never renamed is deleted when the
    session ends: it can never complete, and is never reported."""
    with running_server(tmp_path) as srv:
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            with sftp.open("x.zip.filepart", "wb") as remote:
                remote.write(random_bytes(10_000))
            assert (srv.dropbox() / "x.zip.filepart").exists()
        event = srv.logs.wait("upload_aborted", file="x.zip.filepart")
        assert "never renamed" in event["reason"]
        assert not (srv.dropbox() / "x.zip.filepart").exists()
    assert srv.uploads == []


def test_close_ends_sessions_and_aborts_open_uploads(tmp_path: Path) -> None:
    """``close()`` stops listening, ends live sessions (their open uploads are
    aborted) and leaves no task behind (the harness checks after close)."""
    with running_server(tmp_path) as srv:
        port = srv.port
        with paramiko_sftp(port, "acme", password=PASSWORD) as sftp:
            remote = sftp.open("live.zip", "wb")
            remote.write(random_bytes(20_000))
            sftp.stat("live.zip")
            srv.run(srv.server.close())
            srv.logs.wait("upload_aborted", file="live.zip")
            srv.logs.wait("sftp_stopped")
        assert not (srv.dropbox() / "live.zip").exists()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS).close()
    assert srv.uploads == []
