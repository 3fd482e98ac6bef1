"""Start `rosterdrop serve` as a real process for end-to-end tests (no tests here)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAIT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


class Daemon:
    """One `rosterdrop serve` process with its config, state folder and JSON log."""

    def __init__(self, root: Path, tenants: dict[str, dict[str, Any]], *, workers: int = 2,
                 extra: str = "", top: str = "", port: int | None = None) -> None:
        """``top``: top-level TOML keys; ``extra``: whole sections after the defaults."""
        self.root = root
        self.port = port or free_port()
        self.state = root / "state"
        self.log_path = root / f"serve-{self.port}.log"
        self.config = root / "rd.toml"
        lines = [
            f'state_dir = "{self.state}"', f"workers = {workers}", top,
            "[sftp]", f'listen = "127.0.0.1:{self.port}"', "settle_seconds = 0.3",
            "rescan_seconds = 1", "[log]", 'format = "json"', extra,
        ]
        for key, tenant in tenants.items():
            lines += [f"[tenants.{key}]", f'name = "{tenant.get("name", key)}"',
                      f'report_to = ["admin@{key}.example"]']
            lines += [f"[tenants.{key}.guard]", "max_deactivate_percent = 0"]
            lines += [f"[[tenants.{key}.accounts]]", f'username = "{tenant["username"]}"',
                      f'password_hash = "{tenant.get("password_hash", "")}"',
                      f"authorized_keys = {toml_list(tenant.get('keys', []))}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, wait: bool = True, timeout: float = WAIT) -> Daemon:
        """Start the process; with ``wait``, until it logs ``daemon_started`` (within
        ``timeout`` seconds)."""
        started = len(self.named("daemon_started"))
        log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rosterdrop", "-c", str(self.config), "serve"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if wait:
            self.wait_event("daemon_started", count=started + 1, timeout=timeout)
        return self

    def events(self, since_start: bool = False) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        raw = self.log_path.read_bytes()
        if since_start:
            raw = raw[self._log_offset:]
        events = []
        for line in raw.decode("utf-8", "replace").splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def lines(self) -> list[str]:
        return self.log_path.read_text("utf-8", "replace").splitlines()

    def named(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name
                and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, name: str, count: int = 1, timeout: float = WAIT,
                   **match: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.named(name, **match)
            if len(found) >= count:
                return found
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) waiting for "
                                     f"{name}:\n" + "\n".join(self.lines()[-30:]))
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count}× {name} {match} in {timeout}s:\n"
                                     + "\n".join(self.lines()[-30:]))
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def outbox(self) -> list[Path]:
        return sorted((self.state / "outbox").glob("*.eml"))

    def dropbox(self, tenant: str) -> Path:
        return self.state / "tenants" / tenant / "dropbox"


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
