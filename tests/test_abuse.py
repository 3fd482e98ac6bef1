"""Connection abuse: idle and slow connections, failed logins from many addresses,
a client hoarding file handles, an oversized upload. The server must stay bounded,
keep serving honest clients, and refuse with clear messages."""

from __future__ import annotations

import resource
import socket
import time
from pathlib import Path

import paramiko
import pytest
from test_sftp_support import (
    PASSWORD,
    paramiko_sftp,
    paramiko_transport,
    running_server,
    wait_until,
)

from rosterdrop.sftp.filesystem import MAX_OPEN_FILES


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _closed(sock: socket.socket) -> bool:
    try:
        sock.settimeout(0.01)
        while chunk := sock.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_200_idle_connections_are_freed_by_the_login_timeout(tmp_path: Path) -> None:
    """200 connections that never log in are closed after the login timeout, memory stays
    bounded, and an honest client logs in meanwhile."""
    # all from 127.0.0.1: the per-address cap on connections logging in is raised for them
    settings = {"login_timeout_seconds": 2, "max_unauthenticated_per_address": 250}
    with running_server(tmp_path, sftp=settings) as srv:
        before = _rss_mib()
        idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(200)]
        try:
            with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
                assert "dropbox" in sftp.listdir("/")
            grown = _rss_mib() - before
            wait_until(lambda: all(_closed(s) for s in idle), timeout=30)
        finally:
            for s in idle:
                s.close()
        print(f"\nabuse: 200 idle connections held, +{grown:.1f} MiB, all closed by timeout")
        assert grown < 100


def test_slow_authentication_is_cut_off(tmp_path: Path) -> None:
    """A client that finishes the SSH handshake but never authenticates is dropped."""
    with running_server(tmp_path, sftp={"login_timeout_seconds": 1}) as srv:
        transport = paramiko_transport(srv.port)
        try:
            wait_until(lambda: not transport.is_active(), timeout=10)
        finally:
            transport.close()


def test_failed_logins_from_several_addresses_ban_each_separately(tmp_path: Path) -> None:
    """Failures from 127.0.0.2 ban that address only; 127.0.0.3 still logs in."""
    ban = {"failures": 3, "window_seconds": 60, "duration_seconds": 60}
    with running_server(tmp_path, sftp={"ban": ban, "auth_attempts": 1}) as srv:

        def attempt(source: str, password: str) -> bool:
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10,
                                            source_address=(source, 0))
            transport = paramiko.Transport(sock)
            try:
                transport.start_client(timeout=10)
                transport.auth_password("acme", password)
                return True
            except (paramiko.SSHException, EOFError, OSError):
                return False
            finally:
                transport.close()

        for _ in range(4):
            assert not attempt("127.0.0.2", "wrong")
        srv.logs.wait("login_banned")
        assert not attempt("127.0.0.2", PASSWORD)
        assert attempt("127.0.0.3", PASSWORD)
        banned = {e["peer"] for e in srv.logs.named("login_banned")}
        assert banned == {"127.0.0.2"}


def test_a_client_hoarding_handles_is_capped(tmp_path: Path) -> None:
    """Opening 1,000 files in one session: the first MAX_OPEN_FILES succeed, the rest are
    refused with a clear message, and closing frees the slots."""
    with running_server(tmp_path) as srv, paramiko_sftp(srv.port, "acme",
                                                         password=PASSWORD) as sftp:
        opened = []
        refused = 0
        message = ""
        for n in range(1000):
            try:
                opened.append(sftp.open(f"/dropbox/h{n}.zip.part", "w"))
            except OSError as exc:
                refused += 1
                message = str(exc)
        assert len(opened) == MAX_OPEN_FILES and refused == 1000 - MAX_OPEN_FILES
        assert "too many open files" in message
        for handle in opened:
            handle.close()
        with sftp.open("/dropbox/after.zip", "w") as handle:
            handle.write(b"PK")


@pytest.mark.parametrize("limit_mib", [8])
def test_oversized_upload_refused_while_writing(tmp_path: Path, limit_mib: int) -> None:
    """An upload larger than max_upload_bytes is refused as soon as it passes the limit
    (the client is stopped mid-stream, not after sending everything)."""
    limit = limit_mib * 1024 * 1024
    with running_server(tmp_path, sftp={"max_upload_bytes": limit}) as srv, \
            paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
        chunk = b"\0" * (1024 * 1024)
        sent = 0
        started = time.monotonic()
        with pytest.raises(OSError, match="limit"), sftp.open("/dropbox/huge.zip", "w") as handle:
            handle.set_pipelined(False)
            while sent < 10 * limit:
                handle.write(chunk)
                sent += len(chunk)
        assert sent <= limit + 4 * len(chunk)
        assert time.monotonic() - started < 30
        wait_until(lambda: not (srv.dropbox() / "huge.zip").exists())
        assert srv.uploads == []
