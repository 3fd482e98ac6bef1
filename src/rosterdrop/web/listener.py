"""uvicorn on the daemon's event loop: ``WebListener`` binds ``[web] listen`` itself
(so a refused address is a ConfigError naming the key, not uvicorn's exit), serves
the app as one task the daemon tracks, and stops it when the daemon drains.

The daemon owns SIGTERM and SIGINT: uvicorn's own signal capture is switched off.
uvicorn logs through the standard library (no log config of its own), which the
daemon routes through its renderer; per-request access lines are off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from starlette.types import ASGIApp

from rosterdrop.config import parse_listen
from rosterdrop.errors import ConfigError

log = structlog.get_logger("rosterdrop.web")

START_TIMEOUT_SECONDS = 10.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon's handlers stay: its drain stops this server


class WebListener:
    def __init__(self, listen: str, app: ASGIApp, *, forwarded_allow_ips: str = "127.0.0.1",
                 graceful_seconds: float = 3.0) -> None:
        self.listen = listen
        self.app = app
        self.forwarded_allow_ips = forwarded_allow_ips
        self.graceful_seconds = graceful_seconds
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> None:
        host, port = parse_listen(self.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit it: without it every answer waited ~40 ms for the
            # client's delayed ACK (uvicorn writes headers and body apart; P11).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"web.listen: cannot listen on {self.listen}: "
                              f"{exc.strerror or exc}") from exc
        self._socket = sock

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    @property
    def address(self) -> str:
        host, _ = parse_listen(self.listen)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> asyncio.Task[None]:
        """Serve on the bound socket; returns the serving task (the daemon tracks it)."""
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, server_header=False,
            proxy_headers=True, forwarded_allow_ips=self.forwarded_allow_ips,
            lifespan="off", timeout_graceful_shutdown=int(self.graceful_seconds) or 1)
        self._server = server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[self._socket]), name="rosterdrop-web")
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while not server.started and not self._task.done():
                await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # its error, if it failed to start
        log.info("web_listening", listen=self.address)
        return self._task

    async def close(self) -> None:
        server, task = self._server, self._task
        if server is not None and task is not None and not task.done():
            server.should_exit = True
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), self.graceful_seconds + 2)
            if not task.done():
                task.cancel()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
