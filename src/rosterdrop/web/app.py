"""The console's ASGI app: security headers, sign-in, health routes, and the pages of
``pages``, ``people``, ``upload`` and ``tenants`` (docs/console.md, docs/security.md).

Sign-in: ``POST /login`` (``username``, ``password``, ``csrf_token``). The form's
token is a random value also set in a short-lived cookie (double submit: another
site can neither read it nor, SameSite=Strict, send it). Passwords are checked
with argon2 in a thread, at most ``sftp.max_concurrent_password_checks`` at once,
an unknown user against a dummy hash (the answer time tells no usernames), and
failures count towards the SFTP ban rules (``[sftp.ban]``, per client address).
A session is a row in the store (``store/sessions.py``); its cookie is HttpOnly,
SameSite=Strict, ``Secure`` when ``web.base_url`` is https.
"""

from __future__ import annotations

import asyncio
import time
from importlib import resources

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rosterdrop.passwords import hash_password, verify_password
from rosterdrop.sftp.bans import BanList
from rosterdrop.store.sessions import end_session, start_session
from rosterdrop.web import oneroster_api, pages, people, tenants, upload
from rosterdrop.web.console import Console
from rosterdrop.web.csrf import tokens_match
from rosterdrop.web.http import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    _visitor,
    error_page,
    render,
    unauthenticated,
)
from rosterdrop.web.oidc import CALLBACK_PATH, OidcSignIn

log = structlog.get_logger("rosterdrop.web")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"server", b"rosterdrop"),
]
READY_TIMEOUT_SECONDS = 5.0
LOGIN_COOKIE_SECONDS = 3600


class SecurityHeaders:
    """Every answer carries the headers above; pages are never cached (student data)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"server"]
                headers += SECURITY_HEADERS
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class SignIn:
    def __init__(self, console: Console) -> None:
        self.console = console
        ban = console.settings.sftp.ban
        self.bans = BanList(ban.failures, ban.window_seconds, ban.duration_seconds,
                            time.monotonic)
        self.checks = asyncio.Semaphore(console.settings.sftp.max_concurrent_password_checks)
        self.dummy = hash_password("rosterdrop: no such admin")

    def secure(self) -> bool:
        return self.console.settings.web.base_url.startswith("https://")

    async def page(self, request: Request) -> Response:
        if await asyncio.to_thread(_visitor, self.console, request) is not None:
            return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
        return self._form(request, "", 200)

    def _form(self, request: Request, message: str, status: int, username: str = "") -> Response:
        import secrets

        token = secrets.token_urlsafe(32)
        response = render(self.console, "login.html", status=status, title="Sign in",
                          login_token=token, message=message, username=username,
                          oidc_name=oidc.display_name if (oidc := self.console.settings.web.oidc)
                          else "",
                          next=_next(request.query_params.get("next")))
        response.set_cookie(LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_SECONDS, path="/login",
                            httponly=True, samesite="strict", secure=self.secure())
        return response

    async def submit(self, request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=10)
        except Exception:
            return error_page(self.console, 400, "the sign-in form could not be read")
        username = str(form.get("username") or "")[:200]
        password = str(form.get("password") or "")[:1024]
        if not tokens_match(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf_token") or "")):
            return error_page(self.console, 403, "the sign-in form is out of date (its CSRF "
                              "token is missing or wrong): reload the page and sign in again")
        address = request.client.host if request.client else "unknown"
        if self.bans.is_banned(address):
            log.warning("web_login_refused_banned", address=address, username=username)
            wait = int(self.bans.banned_for(address)) + 1
            response = self._form(request, f"Too many failed sign-ins from this address: try "
                                  f"again in {wait} seconds.", 429, username)
            response.headers["Retry-After"] = str(wait)
            return response
        # An admin without a password hash signs in only by single sign-on.
        admin = next((a for a in self.console.admins
                      if a.username == username and a.password_hash), None)
        async with self.checks:
            ok = await asyncio.to_thread(verify_password,
                                         admin.password_hash if admin else self.dummy, password)
        if admin is None or not ok:
            banned = self.bans.record_failure(address)
            log.warning("web_login_failed", address=address, username=username, banned=banned)
            return self._form(request, "Wrong username or password.", 401, username)
        token, _ = await asyncio.to_thread(start_session, self.console.store, admin.username,
                                           self.console.clock(),
                                           self.console.settings.web.session_minutes)
        log.info("web_login", address=address, username=admin.username, role=admin.role)
        response = RedirectResponse(_next(str(form.get("next") or "")), status_code=303)
        response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="strict",
                            secure=self.secure())
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: Request) -> Response:
        found = await asyncio.to_thread(_visitor, self.console, request)
        if found is None:
            return unauthenticated(request)
        form = await request.form(max_files=0, max_fields=10)
        if not tokens_match(found[1].csrf_token, str(form.get("csrf_token") or "")):
            return error_page(self.console, 403, "the sign-out form is out of date: reload "
                              "the page")
        await asyncio.to_thread(end_session, self.console.store,
                                request.cookies.get(SESSION_COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def _next(target: str | None) -> str:
    """Only a path of this site (never ``//evil`` or a URL)."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target[:500]
    return "/"


def build_app(console: Console) -> Starlette:
    sign_in = SignIn(console)
    oidc = console.settings.web.oidc
    sign_on = [] if oidc is None else [
        Route("/login/oidc", (flow := OidcSignIn(console, oidc)).start, methods=["GET"]),
        Route(CALLBACK_PATH, flow.callback, methods=["GET"])]
    css = resources.files("rosterdrop").joinpath("templates/web/console.css").read_bytes()
    script = resources.files("rosterdrop").joinpath("templates/web/console.js").read_bytes()

    async def healthz(request: Request) -> Response:
        # Answered on the daemon's event loop: that it answers is the liveness.
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        try:
            reasons = await asyncio.wait_for(asyncio.to_thread(console.ready),
                                             READY_TIMEOUT_SECONDS)
        except TimeoutError:
            reasons = [f"no answer within {READY_TIMEOUT_SECONDS:g} s"]
        if reasons:
            return PlainTextResponse("\n".join(reasons) + "\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def metrics(request: Request) -> Response:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        body = await asyncio.to_thread(console.scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def stylesheet(request: Request) -> Response:
        return Response(css, media_type="text/css; charset=utf-8",
                        headers={"cache-control": "max-age=3600"})

    async def javascript(request: Request) -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8",
                        headers={"cache-control": "max-age=3600"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_page(console, 404, f"no page {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_page(console, 405, f"{request.method} is not allowed on {request.url.path}")

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/console.css", stylesheet, methods=["GET"]),
        Route("/console.js", javascript, methods=["GET"]),
        Route("/login", sign_in.page, methods=["GET"]),
        Route("/login", sign_in.submit, methods=["POST"]),
        Route("/logout", sign_in.logout, methods=["POST"]),
        *sign_on,
        *pages.routes(console),
        *people.routes(console),
        *upload.routes(console),
        *tenants.routes(console),
        *oneroster_api.routes(console),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    app.add_middleware(SecurityHeaders)
    return app
