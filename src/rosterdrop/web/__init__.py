"""The admin console: an ASGI app (Starlette) served by uvicorn inside the daemon's
event loop on ``[web] listen``, with /metrics, /healthz and /readyz (docs/console.md).

An I/O shell like the CLI: every action calls what the CLI calls (``Runner.approve``,
``set_person``, ``queue_last_upload`` …), never a copy of it. The pure parts are
small modules of their own, tested directly: ``roles`` (who may do what),
``csrf`` (token comparison), ``paging`` (keyset cursors and page maths).

- ``console``: the ports the app needs from the daemon (``Console``);
- ``app``: routes, security headers, sign-in and sessions;
- ``queries``: the console's reads (dashboard, history by keyset, issues);
- ``listener``: uvicorn on the daemon's loop (``WebListener``).
"""
