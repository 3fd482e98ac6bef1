"""Shared helpers for the SFTP tests (no tests here).

``running_server`` starts a real ``DropboxServer`` on 127.0.0.1 port 0 in a
background event-loop thread, so the clients (paramiko, OpenSSH ``sftp``,
lftp, rclone) run as they do in real life: synchronously, in other threads
or processes. Uploads reported through ``on_upload`` and the server's log
events are recorded and can be awaited with a deadline.

The server's loop is its own on purpose, not the test's (pytest-asyncio's):
a synchronous client blocks the thread that calls it, and on a shared loop it
would block the server it is talking to. So synchronous tests drive the server
directly, and ``@pytest.mark.asyncio`` tests may await asyncssh clients on their
own loop and still call the blocking helpers here (``Running.run``,
``wait_uploads``, ``logs.wait``): those wait on the server's thread, never on the
test's loop. (A blocking helper called while the test's loop has a client
mid-conversation stalls that client, not the server.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import paramiko
import structlog

from rosterdrop.config import parse_settings
from rosterdrop.passwords import hash_password
from rosterdrop.paths import StatePaths
from rosterdrop.sftp import DropboxServer

T = TypeVar("T")

PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "other tenant's secret"
WAIT_SECONDS = 15


@functools.cache
def password_hash(password: str) -> str:
    return hash_password(password)


class FakeClock:
    """A monotonic clock the test moves by hand (bans, linger)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LogWatch:
    """Collects structlog events (as ``structlog.testing.capture_logs``) and lets
    a test wait for one."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def __call__(self, logger: object, method: str, event_dict: dict[str, Any]) -> Any:
        with self._changed:
            # the level as the JSON lines name it: structlog 26 passes "exception" as
            # the method where older releases passed "error"
            level = structlog.stdlib.add_log_level(logger, method, {})["level"]
            self.events.append({**event_dict, "log_level": level})
            self._changed.notify_all()
        raise structlog.DropEvent

    def named(self, event: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self.events if e["event"] == event]

    def wait(self, event: str, timeout: float = WAIT_SECONDS, **match: Any) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for e in self.events:
                if e["event"] == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            return None

        with self._changed:
            result = self._changed.wait_for(found, timeout)
        assert result is not None, f"no {event} {match} within {timeout}s: {self.events}"
        return result


@contextlib.contextmanager
def watch_logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    processors = structlog.get_config()["processors"]
    saved = processors.copy()
    try:
        processors.clear()
        processors.append(watch)
        structlog.configure(processors=processors)
        yield watch
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


@dataclass(frozen=True)
class Reported:
    tenant: str
    path: Path
    data: bytes


@dataclass
class Running:
    """A started server and what it reported."""

    server: DropboxServer
    paths: StatePaths
    keys: dict[str, Path]
    """username → OpenSSH private key file."""
    clock: FakeClock
    logs: LogWatch
    spool: Path
    _loop: asyncio.AbstractEventLoop
    uploads: list[Reported] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def port(self) -> int:
        return self.server.port

    def dropbox(self, tenant: str = "acme") -> Path:
        return self.paths.dropbox(tenant)

    def incoming(self, tenant: str = "acme") -> Path:
        """Where this server writes the tenant's uploads in progress."""
        return self.paths.incoming(tenant, self.paths.instance_file.read_text().strip())

    def in_progress(self, tenant: str = "acme") -> list[Path]:
        folder = self.incoming(tenant)
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop; blocks the calling thread until it ends."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(WAIT_SECONDS)

    def call(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self.run(call())

    def is_uploading(self, path: Path) -> bool:
        return self.call(lambda: self.server.is_uploading(path))

    def wait_uploads(self, count: int, timeout: float = WAIT_SECONDS) -> list[Reported]:
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.uploads) >= count, timeout)
            assert ok, f"expected {count} uploads within {timeout}s, got {self.uploads}"
            return list(self.uploads)

    def record(self, tenant: str, path: Path, move: bool) -> None:
        data = path.read_bytes()
        if move:  # what the daemon's watcher does, as early as it can
            shutil.move(path, self.spool / f"{len(self.uploads)}-{path.name}")
        with self._changed:
            self.uploads.append(Reported(tenant, path, data))
            self._changed.notify_all()


def make_key(folder: Path, name: str, algorithm: str = "ssh-ed25519") -> tuple[Path, str]:
    """Write an OpenSSH private key file (0600); return it and its public line."""
    key = asyncssh.generate_private_key(algorithm, comment=name)
    path = folder / name
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return path, key.export_public_key().decode("ascii").strip()


@contextlib.contextmanager
def running_server(
    tmp_path: Path,
    *,
    sftp: dict[str, Any] | None = None,
    move_uploads: bool = False,
    linger_seconds: float = 5.0,
    extra_keys: Sequence[str] = (),
    passwords: dict[str, str] | None = None,
) -> Iterator[Running]:
    """Tenants ``acme`` (accounts ``acme``: password + ed25519 key, and
    ``acme-sis``: key only) and ``other`` (account ``other``: password)."""
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    acme_key, acme_pub = make_key(keys_dir, "acme")
    sis_key, sis_pub = make_key(keys_dir, "acme-sis")
    settings = parse_settings(
        {
            "state_dir": str(tmp_path / "state"),
            "sftp": {"listen": "127.0.0.1:0", **(sftp or {})},
            "tenants": {
                "acme": {
                    "accounts": [
                        {
                            "username": "acme",
                            "password_hash": password_hash(PASSWORD),
                            "authorized_keys": [acme_pub, *extra_keys],
                        },
                        {"username": "acme-sis", "authorized_keys": [sis_pub]},
                    ]
                },
                "other": {
                    "accounts": [
                        {"username": "other", "password_hash": password_hash(OTHER_PASSWORD)}
                    ]
                },
            },
        }
    )
    paths = StatePaths(tmp_path / "state")
    spool = tmp_path / "spool"
    spool.mkdir()
    clock = FakeClock()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sftp-server", daemon=True)
    thread.start()
    with watch_logs() as logs:
        running: Running | None = None

        def on_upload(tenant: str, path: Path) -> None:
            assert running is not None
            running.record(tenant, path, move_uploads)

        server = DropboxServer(
            settings, paths, on_upload, clock=clock, linger_seconds=linger_seconds,
            passwords=passwords,
        )
        running = Running(
            server=server,
            paths=paths,
            keys={"acme": acme_key, "acme-sis": sis_key},
            clock=clock,
            logs=logs,
            spool=spool,
            _loop=loop,
        )
        try:
            running.run(server.start())
            yield running
        finally:
            running.run(server.close())
            running.run(_no_tasks_left())
            running.run(loop.shutdown_default_executor())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT_SECONDS)
            loop.close()


async def _no_tasks_left() -> None:
    leftover = asyncio.all_tasks() - {asyncio.current_task()}
    assert not leftover, f"tasks left running after close(): {leftover}"


# -- clients ------------------------------------------------------------------


@contextlib.contextmanager
def paramiko_sftp(
    port: int,
    username: str,
    *,
    password: str | None = None,
    key: paramiko.PKey | Path | None = None,
    disabled_algorithms: dict[str, list[str]] | None = None,
) -> Iterator[paramiko.SFTPClient]:
    with contextlib.ExitStack() as stack:
        transport = paramiko_transport(port, disabled_algorithms)
        stack.callback(transport.close)
        if password is not None:
            transport.auth_password(username, password)
        else:
            pkey = paramiko.Ed25519Key.from_private_key_file(str(key)) \
                if isinstance(key, Path) else key
            transport.auth_publickey(username, pkey)
        client = paramiko.SFTPClient.from_transport(transport)
        assert client is not None
        stack.callback(_quietly, client.close)  # tests may have cut the connection
        yield client


def _quietly(close: Callable[[], object]) -> None:
    with contextlib.suppress(EOFError, OSError, paramiko.SSHException):
        close()


def paramiko_transport(
    port: int, disabled_algorithms: dict[str, list[str]] | None = None
) -> paramiko.Transport:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    transport = paramiko.Transport(sock, disabled_algorithms=disabled_algorithms)
    try:
        transport.start_client(timeout=WAIT_SECONDS)
    except BaseException:
        transport.close()
        raise
    return transport


OPENSSH_OPTIONS = (
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
)


def openssh_command(port: int, username: str, key: Path, *extra: str) -> list[str]:
    sftp = shutil.which("sftp")
    assert sftp, "the OpenSSH sftp client is not installed"
    # ssh keeps the first value given for an option: ``extra`` overrides ours.
    return [sftp, "-b", "-", "-P", str(port), *extra, *OPENSSH_OPTIONS, "-i", str(key),
            f"{username}@127.0.0.1"]


def openssh_batch(
    port: int, username: str, key: Path, commands: Sequence[str], *extra: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run OpenSSH ``sftp -b -``; a command prefixed with ``-`` may fail."""
    return subprocess.run(
        openssh_command(port, username, key, *extra),
        input="\n".join(commands) + "\n",
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=WAIT_SECONDS * 2,
        check=False,
    )


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_SECONDS) -> None:
    """For outside state with no event to wait on (a file on disk, a process)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
