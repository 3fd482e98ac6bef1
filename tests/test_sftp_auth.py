"""Logins: passwords, keys, attempts, bans, session limits and algorithms."""

from __future__ import annotations

import socket
import stat
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest
from test_sftp_support import (
    PASSWORD,
    WAIT_SECONDS,
    make_key,
    openssh_batch,
    paramiko_sftp,
    paramiko_transport,
    password_hash,
    running_server,
)

from rosterdrop.config import parse_settings
from rosterdrop.errors import SftpError
from rosterdrop.paths import StatePaths
from rosterdrop.sftp import DropboxServer


def login(port: int, username: str, **credentials: Any) -> None:
    """Log in, open an SFTP session and leave."""
    with paramiko_sftp(port, username, **credentials):
        pass


def test_wrong_password_wrong_key_and_unknown_user_are_refused(tmp_path: Path) -> None:
    """Bad credentials fail the login and are logged as login_failed."""
    stranger, _ = make_key(tmp_path, "stranger")
    with running_server(tmp_path) as srv:
        for username in ("acme", "nobody"):
            with pytest.raises(paramiko.AuthenticationException):
                login(srv.port, username, password="wrong")
        with pytest.raises(paramiko.AuthenticationException):
            login(srv.port, "acme", key=stranger)
        with pytest.raises(paramiko.AuthenticationException):  # a key-only account
            login(srv.port, "acme-sis", password=PASSWORD)
        result = openssh_batch(srv.port, "acme", stranger, ["pwd"], cwd=tmp_path)
        assert result.returncode != 0 and "Permission denied" in result.stderr
        failed = srv.logs.named("login_failed")
        assert {(e["username"], e["method"]) for e in failed} >= {
            ("acme", "password"), ("nobody", "password"), ("acme", "publickey"),
        }
        assert all("wrong" not in repr(e) for e in srv.logs.events), "a password was logged"
        assert srv.logs.named("login_ok") == []


def test_password_override_for_an_account_without_hash(tmp_path: Path) -> None:
    """An account with no password hash cannot log in with a password (not even
    an empty one) until the daemon supplies a hash through ``passwords``."""
    with running_server(tmp_path) as srv:
        for password in ("", PASSWORD):
            with pytest.raises(paramiko.AuthenticationException):
                login(srv.port, "acme-sis", password=password)
    again = tmp_path / "again"
    again.mkdir()
    with running_server(again, passwords={"acme-sis": password_hash("generated")}) as srv:
        login(srv.port, "acme-sis", password="generated")
        login(srv.port, "acme-sis", key=srv.keys["acme-sis"])


def test_auth_attempts_per_connection(tmp_path: Path) -> None:
    """After ``auth_attempts`` wrong passwords the connection is closed."""
    with running_server(tmp_path, sftp={"auth_attempts": 2}) as srv:
        transport = paramiko_transport(srv.port)
        try:
            with pytest.raises(paramiko.AuthenticationException):
                transport.auth_password("acme", "wrong 1")
            with pytest.raises((paramiko.AuthenticationException, paramiko.SSHException)):
                transport.auth_password("acme", "wrong 2")
            with pytest.raises((paramiko.SSHException, EOFError, OSError)):
                transport.auth_password("acme", PASSWORD)
        finally:
            transport.close()


def test_ban_after_repeated_failures_then_release(tmp_path: Path) -> None:
    """``ban.failures`` failed logins within the window ban the address: even a
    correct login is refused before authentication until the ban ends."""
    ban = {"failures": 2, "window_seconds": 60, "duration_seconds": 30}
    with running_server(tmp_path, sftp={"ban": ban}) as srv:
        for _ in range(2):
            with pytest.raises(paramiko.AuthenticationException):
                login(srv.port, "acme", password="guess")
        banned = srv.logs.wait("login_banned")
        assert banned["peer"] == "127.0.0.1" and banned["duration_seconds"] == 30
        srv.logs.wait("connection_dropped", reason="banned", username="acme")

        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            login(srv.port, "acme", password=PASSWORD)
        assert len(srv.logs.named("login_banned")) == 2
        assert srv.logs.named("login_ok") == []
        dropped = srv.logs.wait("connection_dropped", reason="banned", username=None)
        assert dropped["log_level"] == "warning" and dropped["peer"] == "127.0.0.1"

        srv.clock.advance(31)
        with paramiko_sftp(srv.port, "acme", password=PASSWORD) as sftp:
            assert sftp.normalize(".") == "/", "the login folder is /"
            sftp.chdir("dropbox")
            assert sftp.getcwd() == "/dropbox"
            assert sftp.normalize(".") == "/dropbox"
        srv.logs.wait("login_ok", username="acme")


def test_rejected_keys_count_once_per_connection_towards_a_ban(tmp_path: Path) -> None:
    """Offering unknown keys is not password guessing, but a connection that ends
    unauthenticated after rejected keys still counts as one failed login."""
    stranger, _ = make_key(tmp_path, "stranger")
    ban = {"failures": 1, "window_seconds": 60, "duration_seconds": 30}
    with running_server(tmp_path, sftp={"ban": ban}) as srv:
        for _ in range(2):
            result = openssh_batch(srv.port, "acme", stranger, ["pwd"], cwd=tmp_path)
            assert result.returncode != 0
        srv.logs.wait("login_banned")
        result = openssh_batch(srv.port, "acme", srv.keys["acme"], ["pwd"], cwd=tmp_path)
        assert result.returncode != 0, "a banned address logged in"


def test_sessions_per_account(tmp_path: Path) -> None:
    """At most ``sessions_per_account`` SFTP sessions per username at a time; the
    limit is per account, and a closed session frees its place."""
    with running_server(tmp_path, sftp={"sessions_per_account": 2}) as srv:
        transport = paramiko_transport(srv.port)
        try:
            transport.auth_password("acme", PASSWORD)
            first = paramiko.SFTPClient.from_transport(transport)
            second = paramiko.SFTPClient.from_transport(transport)
            assert first is not None and second is not None
            refused_sftp = paramiko.SFTPClient.from_transport(transport)
            assert refused_sftp is not None
            with pytest.raises(PermissionError, match="too many sessions for acme"):
                refused_sftp.listdir("/dropbox")
            refused_sftp.close()
            refused = srv.logs.wait("session_refused", username="acme")
            assert refused["limit"] == 2 and refused["reason"] == "sessions_per_account"
            result = openssh_batch(srv.port, "acme", srv.keys["acme"], ["pwd"],
                                   "-o", "LogLevel=INFO", cwd=tmp_path)
            assert result.returncode != 0
            assert "too many sessions for acme: at most 2 at a time" in result.stderr
            assert "sftp.sessions_per_account" in result.stderr
            with paramiko_sftp(srv.port, "acme-sis", key=srv.keys["acme-sis"]) as other:
                other.listdir("/dropbox")
            first.close()
            srv.logs.wait("session_closed", username="acme", sessions=1)
            third = paramiko.SFTPClient.from_transport(transport)
            assert third is not None
            third.listdir("/dropbox")
        finally:
            transport.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["Ciphers=aes128-cbc,aes256-cbc,3des-cbc"], "no matching cipher"),
        (["KexAlgorithms=diffie-hellman-group14-sha1,diffie-hellman-group1-sha1"],
         "no matching key exchange"),
        (["Ciphers=aes128-ctr", "MACs=hmac-sha1,hmac-sha1-etm@openssh.com"],
         "no matching MAC"),
        (["HostKeyAlgorithms=ssh-rsa,ssh-dss"], "no matching host key"),
    ],
)
def test_openssh_with_only_weak_algorithms_is_refused(
    tmp_path: Path, options: list[str], message: str
) -> None:
    """CBC ciphers, SHA-1 kex and MACs and ssh-rsa/DSA host keys are not offered."""
    with running_server(tmp_path) as srv:
        extra = [arg for option in [*options, "LogLevel=INFO"] for arg in ("-o", option)]
        result = openssh_batch(srv.port, "acme", srv.keys["acme"], ["pwd"], *extra,
                               cwd=tmp_path)
        assert result.returncode != 0
        assert message in result.stderr


def test_paramiko_with_only_cbc_ciphers_is_refused(tmp_path: Path) -> None:
    """A client that can only speak CBC cannot connect."""
    modern = ["aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-gcm@openssh.com",
              "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"]
    with running_server(tmp_path) as srv, pytest.raises(paramiko.SSHException, match="cipher"):
        paramiko_transport(srv.port, {"ciphers": modern}).close()


@pytest.mark.asyncio
async def test_rsa_keys_must_sign_with_sha2(tmp_path: Path) -> None:
    """An authorized RSA key logs in with rsa-sha2-256 but not with a SHA-1
    ``ssh-rsa`` signature (asyncssh would accept it by default)."""
    rsa_path, rsa_pub = make_key(tmp_path, "rsa", "ssh-rsa")
    with running_server(tmp_path, extra_keys=[rsa_pub]) as srv:

        async def connect(signature: str) -> None:
            async with asyncssh.connect(
                "127.0.0.1", srv.port, username="acme", client_keys=[str(rsa_path)],
                known_hosts=None, signature_algs=[signature], preferred_auth="publickey",
                config=None,
            ) as conn, conn.start_sftp_client() as sftp:
                assert await sftp.getcwd() == "/"

        await connect("rsa-sha2-256")
        with pytest.raises(asyncssh.PermissionDenied):
            await connect("ssh-rsa")


def test_login_timeout(tmp_path: Path) -> None:
    """A client that connects and never authenticates is disconnected after
    ``login_timeout_seconds``, and the drop is logged with its reason."""
    with running_server(tmp_path, sftp={"login_timeout_seconds": 0.5}) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_SECONDS) as sock:
            sock.sendall(b"SSH-2.0-idle\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"SSH-2.0-rosterdrop")
        dropped = srv.logs.wait("connection_dropped", reason="login_timeout")
        assert dropped["peer"] == "127.0.0.1" and dropped["log_level"] == "warning"


def test_host_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    """The ed25519 host key is generated on first start (mode 0600, fingerprint
    logged) and reused on the next start."""
    with running_server(tmp_path) as srv:
        first = srv.logs.wait("sftp_listening")["fingerprint"]
        key_file = srv.paths.host_keys / "ssh_host_ed25519_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert asyncssh.read_private_key(key_file).get_algorithm() == "ssh-ed25519"
        settings = parse_settings({"state_dir": str(tmp_path / "state"),
                                   "sftp": {"listen": "127.0.0.1:0"}})
        again = DropboxServer(settings, srv.paths, ignore)
        srv.run(again.start())
        srv.run(again.close())
        second = srv.logs.named("sftp_listening")[-1]["fingerprint"]
        assert first == second and first.startswith("SHA256:")


def test_startup_failures_raise_sftp_error(tmp_path: Path) -> None:
    """A port in use, an unusable host key folder and a bad key line stop the
    start with a one-line ``SftpError``."""
    with running_server(tmp_path) as srv:
        busy = parse_settings({"state_dir": str(tmp_path / "b"),
                               "sftp": {"listen": f"127.0.0.1:{srv.port}"}})
        with pytest.raises(SftpError, match=f"cannot listen on 127.0.0.1:{srv.port}"):
            srv.run(DropboxServer(busy, StatePaths(tmp_path / "b"), ignore).start())

        blocked = StatePaths(tmp_path / "c")
        blocked.root.mkdir()
        blocked.host_keys.write_text("not a folder")
        settings = parse_settings({"state_dir": str(blocked.root),
                                   "sftp": {"listen": "127.0.0.1:0"}})
        with pytest.raises(SftpError, match="cannot use host key"):
            srv.run(DropboxServer(settings, blocked, ignore).start())

        bad_key = parse_settings({
            "state_dir": str(tmp_path / "d"), "sftp": {"listen": "127.0.0.1:0"},
            "tenants": {"t": {"accounts": [{"username": "t",
                                            "authorized_keys": ["ssh-ed25519 nonsense"]}]}},
        })
        with pytest.raises(SftpError, match=r"tenants\.t\.accounts\[0\]\.authorized_keys\[0\]"):
            srv.run(DropboxServer(bad_key, StatePaths(tmp_path / "d"), ignore).start())


def ignore(tenant: str, path: Path) -> None:
    """An ``on_upload`` for servers that never see an upload."""
