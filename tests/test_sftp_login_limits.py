"""Logins under pressure: bounded password checks, fair across addresses, the ban
counted exactly, unauthenticated connections capped, every drop logged.

Real clients (paramiko, asyncssh) against the real server on loopback; other
client addresses are 127.0.0.2 and up (Linux routes all of 127/8 to lo). The
asyncssh clients run on the test's event loop (pytest-asyncio), the server on
``running_server``'s own loop thread.
``verify_password`` is wrapped to count the hash checks running at once.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import paramiko
import pytest
from argon2 import PasswordHasher
from test_sftp_support import (
    OPENSSH_OPTIONS,
    PASSWORD,
    WAIT_SECONDS,
    Running,
    make_key,
    openssh_batch,
    running_server,
    wait_until,
)

import rosterdrop.sftp.server as server_module
from rosterdrop.passwords import verify_password

ATTACKER = "127.0.0.2"
HONEST = "127.0.0.1"


@functools.cache
def cheap_hash(password: str) -> str:
    """An argon2id hash that checks in a millisecond (the tests add their own delay)."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)


class HashChecks:
    """Wraps ``verify_password``: counts checks running at once, per password too."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self._lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_total = 0
        self.calls: Counter[str] = Counter()
        self.started = threading.Event()

    def __call__(self, hash: str, password: str) -> bool:
        with self._lock:
            self.calls[password] += 1
            self.running[password] += 1
            self.most[password] = max(self.most[password], self.running[password])
            self.most_total = max(self.most_total, sum(self.running.values()))
        self.started.set()
        try:
            time.sleep(self.hold)
            return verify_password(hash, password)
        finally:
            with self._lock:
                self.running[password] -= 1


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[HashChecks]:
    counter = HashChecks()
    monkeypatch.setattr(server_module, "verify_password", counter)
    yield counter


def transport_from(port: int, source: str = HONEST) -> paramiko.Transport:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS,
                                    source_address=(source, 0))
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=WAIT_SECONDS)
    except BaseException:
        transport.close()
        raise
    return transport


def password_login(port: int, password: str, source: str = HONEST,
                   username: str = "acme", *, session: bool = True) -> bool:
    """Log in with a password and list the root (unless not ``session``); False
    when refused or dropped."""
    try:
        transport = transport_from(port, source)
    except (paramiko.SSHException, EOFError, OSError):
        return False
    try:
        transport.auth_password(username, password)
        if not session:
            return transport.is_authenticated()
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        assert "dropbox" in sftp.listdir("/")
        sftp.close()
        return True
    except (paramiko.SSHException, EOFError, OSError):
        return False
    finally:
        transport.close()


async def _attempt(port: int, source: str, password: str) -> bool:
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, local_addr=(source, 0), username="acme", password=password,
            known_hosts=None, client_keys=None, preferred_auth="password", config=None,
            connect_timeout=WAIT_SECONDS,
        ):
            return True
    except (asyncssh.Error, OSError):
        return False


async def attack(port: int, sources: list[str], per_source: int,
                 password: str = "wrong") -> list[bool]:
    """``per_source`` concurrent asyncssh logins from each source address at once."""
    return await asyncio.gather(*(
        _attempt(port, source, password) for source in sources for _ in range(per_source)
    ))


class _Guesser(asyncssh.SSHClient):
    """Offers one password after the other on the same connection."""

    def __init__(self, passwords: list[str]) -> None:
        self._passwords = iter(passwords)

    def password_auth_requested(self) -> str | None:
        return next(self._passwords, None)


async def _guesses(port: int, username: str, passwords: list[str]) -> None:
    async with asyncssh.connect(
        "127.0.0.1", port, username=username, known_hosts=None, client_keys=None,
        preferred_auth="password", config=None, connect_timeout=WAIT_SECONDS,
        client_factory=lambda: _Guesser(passwords),
    ):
        pass


def in_thread(fn: Callable[[], bool]) -> Callable[[], bool]:
    """Start ``fn`` in a thread; the returned function waits for its result."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return lambda: future.result(WAIT_SECONDS * 2)


def dropped(srv: Running, **match: object) -> list[dict[str, object]]:
    return [e for e in srv.logs.named("connection_dropped")
            if all(e.get(k) == v for k, v in match.items())]


@pytest.mark.asyncio
async def test_wrong_passwords_from_one_address_hash_one_at_a_time_until_the_ban(
    tmp_path: Path, checks: HashChecks
) -> None:
    """40 concurrent wrong-password logins from one address: its checks run one
    at a time, exactly ``ban.failures`` are hashed (the 10th bans, the rest are
    refused unhashed), and an honest login from another address meanwhile
    succeeds at once: the attacker never holds more than one of the two slots."""
    checks.hold = 0.1
    sftp = {"max_unauthenticated_per_address": 40, "login_timeout_seconds": 20}
    with running_server(tmp_path, sftp=sftp, passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        def honest() -> bool:
            assert checks.started.wait(WAIT_SECONDS)
            began = time.monotonic()
            ok = password_login(srv.port, PASSWORD)
            return ok and time.monotonic() - began < 10

        honest_result = in_thread(honest)
        results = await attack(srv.port, [ATTACKER], 40)
        assert honest_result(), "the honest login failed or took 10 s during the attack"
        assert not any(results)
        assert checks.most["wrong"] == 1, "one address hashed two passwords at once"
        assert checks.calls["wrong"] == 10, "more than ban.failures checks were hashed"
        assert checks.most_total <= 2
        (banned,) = [e for e in srv.logs.named("login_banned") if "seconds_left" not in e]
        assert banned["peer"] == ATTACKER and banned["failures"] == 10
        srv.logs.wait("login_ok", username="acme", method="password")
        wait_until(lambda: len(dropped(srv, peer=ATTACKER)) >= 40)  # the server may log last
        assert len(dropped(srv, peer=ATTACKER)) == 40, "a connection left no drop line"
        assert len(dropped(srv, peer=ATTACKER, reason="banned")) >= 40 - 10
        assert not password_login(srv.port, PASSWORD, ATTACKER)


@pytest.mark.parametrize("slots", [1, 2, 3])
@pytest.mark.asyncio
async def test_password_checks_at_once_are_bounded_process_wide(
    tmp_path: Path, checks: HashChecks, slots: int
) -> None:
    """Wrong passwords from five addresses at once: never more than
    ``max_concurrent_password_checks`` hashes at a time."""
    checks.hold = 0.05
    sftp = {"max_concurrent_password_checks": slots, "auth_attempts": 1}
    with running_server(tmp_path, sftp=sftp, passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        sources = [f"127.0.0.{n}" for n in range(2, 7)]
        assert not any(await attack(srv.port, sources, 4))
        assert 1 <= checks.most_total <= slots
        assert checks.calls["wrong"] == 20
        assert srv.logs.named("login_banned") == []


def test_many_simultaneous_honest_logins_succeed(tmp_path: Path, checks: HashChecks) -> None:
    """60 paramiko clients log in with the right (real argon2id) password at
    once from one address with a 10 s login timeout: all succeed, and the
    password is hashed once (the others are answered from the recent logins).
    (They log in only: ``sessions_per_account`` would refuse most sessions.)"""
    sftp = {"login_timeout_seconds": 10, "max_unauthenticated_per_address": 100}
    with running_server(tmp_path, sftp=sftp) as srv:
        start = threading.Barrier(60)

        def one() -> bool:
            start.wait(WAIT_SECONDS)
            return password_login(srv.port, PASSWORD, session=False)

        with ThreadPoolExecutor(60) as pool:
            results = list(pool.map(lambda _: one(), range(60)))
        assert all(results), f"{results.count(False)} of 60 honest logins failed"
        assert checks.calls[PASSWORD] == 1
        wait_until(lambda: len(srv.logs.named("login_ok")) >= 60)  # the server may log last
        assert len(srv.logs.named("login_ok")) == 60
        assert dropped(srv) == []


def test_a_wrong_password_is_always_hashed(tmp_path: Path, checks: HashChecks) -> None:
    """After a successful login the right password is answered without a hash;
    a wrong one, before or after, always goes to the hash (and fails)."""
    with running_server(tmp_path, passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        assert not password_login(srv.port, "wrong")
        assert password_login(srv.port, PASSWORD)
        assert password_login(srv.port, PASSWORD)
        for _ in range(2):
            assert not password_login(srv.port, "wrong")
            assert not password_login(srv.port, PASSWORD + " ")
        assert checks.calls == {"wrong": 3, PASSWORD: 1, PASSWORD + " ": 2}
        assert not password_login(srv.port, PASSWORD, username="other")
        assert checks.calls[PASSWORD] == 2, "a success for acme answered for another user"


def test_a_password_cache_of_0_seconds_hashes_every_login(
    tmp_path: Path, checks: HashChecks
) -> None:
    sftp = {"password_cache_seconds": 0}
    with running_server(tmp_path, sftp=sftp, passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        for _ in range(3):
            assert password_login(srv.port, PASSWORD)
        assert checks.calls[PASSWORD] == 3


def test_the_ban_starts_at_exactly_the_10th_failure(tmp_path: Path) -> None:
    """Default ``ban.failures = 10``: nine wrong passwords from one address are
    not a ban; the tenth is, and the next connection is dropped as banned."""
    sftp = {"auth_attempts": 1}
    with running_server(tmp_path, sftp=sftp, passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        for _ in range(9):
            assert not password_login(srv.port, "wrong")
        srv.logs.wait("login_failed", attempt=1)
        assert len(srv.logs.named("login_failed")) == 9
        assert srv.logs.named("login_banned") == []
        transport = transport_from(srv.port)
        try:
            with pytest.raises(paramiko.SSHException):
                transport.auth_password("acme", "wrong")
        finally:
            transport.close()
        banned = srv.logs.wait("login_banned")
        assert banned["failures"] == 10 and banned["peer"] == HONEST
        assert len(srv.logs.named("login_failed")) == 10
        srv.logs.wait("connection_dropped", reason="banned", username="acme")
        assert not password_login(srv.port, PASSWORD)
        refused = srv.logs.wait("login_banned", seconds_left=900)
        assert refused["peer"] == HONEST
        srv.logs.wait("connection_dropped", reason="banned", username=None)
        assert srv.logs.named("login_ok") == []


def test_unauthenticated_connections_over_the_cap_are_dropped(tmp_path: Path) -> None:
    """With ``max_unauthenticated_per_address = 3``, a fourth connection from an
    address whose three are still logging in is dropped at once and logged;
    another address is not affected; one that logs in or leaves frees a place."""
    sftp = {"max_unauthenticated_per_address": 3}
    with running_server(tmp_path, sftp=sftp, passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        waiting = [transport_from(srv.port) for _ in range(3)]
        try:
            with pytest.raises((paramiko.SSHException, EOFError, OSError)):
                transport_from(srv.port).close()
            drop = srv.logs.wait("connection_dropped", reason="too_many_unauthenticated")
            assert drop["peer"] == HONEST and drop["limit"] == 3
            assert drop["log_level"] == "warning"
            assert password_login(srv.port, PASSWORD, "127.0.0.3")
            waiting[0].auth_password("acme", PASSWORD)  # logged in: no longer counted
            assert password_login(srv.port, PASSWORD)
            waiting[1].close()
            srv.logs.wait("connection_dropped", reason="closed_before_login")
            assert password_login(srv.port, PASSWORD)
        finally:
            for transport in waiting:
                transport.close()
        assert len(dropped(srv, reason="too_many_unauthenticated")) == 1


def test_login_timeout_is_logged_with_the_username_tried(tmp_path: Path) -> None:
    """A connection that never finishes logging in is dropped after
    ``login_timeout_seconds`` with ``connection_dropped reason=login_timeout``,
    naming the username it tried; one that tried none names none."""
    with running_server(tmp_path, sftp={"login_timeout_seconds": 0.5}) as srv:
        transport = transport_from(srv.port)
        idle = socket.create_connection(("127.0.0.1", srv.port), source_address=(ATTACKER, 0))
        try:
            with pytest.raises(paramiko.BadAuthenticationType):
                transport.auth_none("acme")
            drop = srv.logs.wait("connection_dropped", reason="login_timeout", peer=HONEST)
            assert drop["username"] == "acme" and drop["seconds"] == 0.5
            drop = srv.logs.wait("connection_dropped", reason="login_timeout", peer=ATTACKER)
            assert "username" not in drop
            wait_until(lambda: not transport.is_active())  # the server closed it
        finally:
            transport.close()
            idle.close()
        assert len(srv.logs.named("connection_dropped")) == 2


@pytest.mark.asyncio
async def test_every_other_drop_before_login_is_logged(tmp_path: Path) -> None:
    """A client that leaves after a wrong password, one that leaves at once, and
    one that used up ``auth_attempts`` each leave one line with their reason; a
    connection that logged in leaves none."""
    with running_server(tmp_path, sftp={"auth_attempts": 2},
                        passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        assert not password_login(srv.port, "wrong")
        srv.logs.wait("connection_dropped", reason="closed_before_login", username="acme")
        socket.create_connection(("127.0.0.1", srv.port)).close()
        srv.logs.wait("connection_dropped", reason="closed_before_login", username=None)
        with pytest.raises(asyncssh.PermissionDenied):
            await _guesses(srv.port, "other", ["wrong 1", "wrong 2", PASSWORD])
        srv.logs.wait("connection_dropped", reason="auth_attempts", username="other")
        assert password_login(srv.port, PASSWORD)
        srv.logs.wait("login_ok")
    assert len(srv.logs.named("connection_dropped")) == 3


def _openssh_password_logins(tmp_path: Path, port: int, prompts: int,
                             source: str = HONEST) -> tuple[int, str, int]:
    """One OpenSSH ``ssh -s sftp`` connection answering each password prompt (keyboard-
    interactive, as OpenSSH asks first) with a wrong password through SSH_ASKPASS, at most
    ``prompts`` times: (exit status, stderr, prompts answered so far in ``tmp_path``)."""
    asked = tmp_path / "asked"
    askpass = tmp_path / "askpass"
    if not askpass.exists():
        askpass.write_text(f"#!/bin/sh\necho x >> {asked}\necho wrong\n")
        askpass.chmod(0o700)
    pairs = zip(OPENSSH_OPTIONS[::2], OPENSSH_OPTIONS[1::2], strict=True)
    options = [part for pair in pairs if pair[1] != "BatchMode=yes" for part in pair]
    ssh = shutil.which("ssh")
    assert ssh, "the OpenSSH client is not installed"
    done = subprocess.run(
        [ssh, "-p", str(port), "-b", source, *options, "-o", "PubkeyAuthentication=no",
         "-o", f"NumberOfPasswordPrompts={prompts}", "-s", "acme@127.0.0.1", "sftp"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=WAIT_SECONDS * 2,
        env={"PATH": "/usr/bin:/bin", "SSH_ASKPASS": str(askpass),
             "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0", "HOME": str(tmp_path)})
    return done.returncode, done.stderr, len(asked.read_text().splitlines()) \
        if asked.exists() else 0


def test_the_ban_starts_after_exactly_ban_failures_wrong_passwords_from_openssh(
    tmp_path: Path, checks: HashChecks
) -> None:
    """OpenSSH, three password prompts a connection, ``ban.failures = 4``: the first
    connection's three wrong passwords (its ``auth_attempts``) are forgiven; the second connection's
    first wrong password is the fourth failure and starts the ban at once (OpenSSH is
    told "too many failed logins from your address" and asks no more); the next
    connection is dropped before its password is asked or hashed. Exactly four hashes."""
    ban = {"failures": 4, "window_seconds": 60, "duration_seconds": 60}
    with running_server(tmp_path, sftp={"ban": ban},
                        passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        status, said, asked = _openssh_password_logins(tmp_path, srv.port, prompts=3)
        assert status == 255 and asked == 3, said
        srv.logs.wait("connection_dropped", reason="auth_attempts", username="acme")
        assert [e["attempt"] for e in srv.logs.named("login_failed")] == [1, 2, 3]
        assert srv.logs.named("login_banned") == []

        status, said, asked = _openssh_password_logins(tmp_path, srv.port, prompts=3)
        assert status == 255 and asked == 4, said
        assert "too many failed logins from your address" in said
        (banned,) = srv.logs.named("login_banned")
        assert banned["failures"] == 4 and banned["peer"] == HONEST
        assert len(srv.logs.named("login_failed")) == 4

        status, said, asked = _openssh_password_logins(tmp_path, srv.port, prompts=3)
        assert status == 255 and asked == 4, said
        srv.logs.wait("login_banned", seconds_left=60)
        assert checks.calls["wrong"] == 4
        assert _openssh_password_logins(tmp_path, srv.port, 1, "127.0.0.3")[2] == 5


def test_rejected_keys_then_wrong_passwords_ban_at_exactly_ban_failures(
    tmp_path: Path, checks: HashChecks
) -> None:
    """``ban.failures = 3``: a connection that only offered an unknown key counts one
    failure when it ends, two wrong passwords (paramiko) make three: the ban starts with
    the third, not after it; the address's next login is refused unhashed."""
    stranger, _ = make_key(tmp_path, "stranger")
    ban = {"failures": 3, "window_seconds": 60, "duration_seconds": 60}
    with running_server(tmp_path, sftp={"ban": ban, "auth_attempts": 1},
                        passwords={"acme": cheap_hash(PASSWORD)}) as srv:
        assert openssh_batch(srv.port, "acme", stranger, ["pwd"], cwd=tmp_path).returncode
        srv.logs.wait("connection_dropped", reason="closed_before_login")
        assert not password_login(srv.port, "wrong")
        srv.logs.wait("login_failed", method="password", attempt=1)
        assert srv.logs.named("login_banned") == []
        assert not password_login(srv.port, "wrong")
        banned = srv.logs.wait("login_banned", failures=3)
        assert banned["peer"] == HONEST and len(srv.logs.named("login_banned")) == 1
        assert not password_login(srv.port, PASSWORD)
        assert checks.calls == {"wrong": 2}
