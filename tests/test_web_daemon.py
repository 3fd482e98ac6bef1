"""The console inside a real `rosterdrop serve`: on its own port over real HTTP, its
first admin's generated password, part of the start-up checks doctor runs, stopped
with the daemon's drain."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import httpx
import pytest
from daemon_harness import Daemon, free_port

from rosterdrop.config import load_settings
from rosterdrop.startup import FAIL, OK, start_checks


def test_serve_runs_the_console_and_its_health_routes(tmp_path: Path) -> None:
    """serve listens on web.listen: /healthz, /readyz, /metrics answer; / sends a browser
    to sign in; the generated admin password (state_dir/admin-password, 0600, logged
    where) signs in and shows the dashboard; doctor's checks see the port held by this
    serve; SIGTERM stops it all."""
    port = free_port()
    daemon = Daemon(tmp_path, {"springfield": {"username": "sis"}},
                    extra=f'[web]\nlisten = "127.0.0.1:{port}"\n').start()
    try:
        base = f"http://127.0.0.1:{port}"
        [started] = daemon.named("daemon_started")
        assert started["console"] == f"http://127.0.0.1:{port}/"
        [made] = daemon.named("console_password_generated")
        secret = Path(made["password_file"])
        assert secret == daemon.state / "admin-password"
        assert secret.stat().st_mode & 0o777 == 0o600
        with httpx.Client(base_url=base, timeout=10) as http:
            health = http.get("/healthz")
            assert health.status_code == 200 and health.text == "ok\n"
            assert health.headers["server"] == "rosterdrop"
            assert http.get("/readyz").text == "ready\n"
            assert "rosterdrop_queue_depth" in http.get("/metrics").text
            home = http.get("/")
            assert home.status_code == 303 and home.headers["location"] == "/login?next=%2F"
            login = http.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
            assert token is not None
            signed = http.post("/login", data={
                "username": "admin", "password": secret.read_text().strip(),
                "csrf_token": token.group(1)})
            assert signed.status_code == 303
            dashboard = http.get("/")
            assert dashboard.status_code == 200
            assert "admin (Administrator)" in dashboard.text and "springfield" in dashboard.text
        rows = {c.name: c for c in start_checks(load_settings(daemon.config), create=False)}
        assert rows["web.listen"].status == OK
        assert "served by this state folder's rosterdrop" in rows["web.listen"].detail
    finally:
        assert daemon.stop(signal.SIGTERM) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_web_port_in_use_is_refused_at_start_naming_web_listen(tmp_path: Path) -> None:
    """Another program on web.listen: doctor's check and serve both name web.listen."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        daemon = Daemon(tmp_path, {"springfield": {"username": "sis"}},
                        extra=f'[web]\nlisten = "127.0.0.1:{port}"\n')
        rows = {c.name: c for c in start_checks(load_settings(daemon.config), create=False)}
        assert rows["web.listen"].status == FAIL
        assert rows["web.listen"].detail == f"127.0.0.1:{port} is used by another program"
        daemon.start(wait=False)
        assert daemon.process is not None
        assert daemon.process.wait(timeout=30) == 2
        assert f"web.listen: 127.0.0.1:{port} is used by another program" in \
            daemon.log_path.read_text()
