"""The console's request plumbing: who is asking (session cookie), the checks every
route makes (sign-in, CSRF on a state change, role and tenant), rendering, errors.

No session: a page (GET) redirects to ``/login`` (303), anything else is 401. A
state-changing request without the session's CSRF token: 403. A tenant the admin
does not have: 404, as if it did not exist; a role that may not: 403.
Store and runner calls are blocking: each route's body runs in a worker thread,
never on the event loop the SFTP server shares.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import structlog
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rosterdrop.config import AdminAccount
from rosterdrop.errors import ConflictError, NotFound, RosterdropError, UsageError
from rosterdrop.store.audit import Action, AuditEntry, Target, record
from rosterdrop.store.sessions import WebSession, find_session
from rosterdrop.web.console import Console
from rosterdrop.web.csrf import tokens_match
from rosterdrop.web.roles import ROLE_NAMES, Permission, may, sees, visible

log = structlog.get_logger("rosterdrop.web")

SESSION_COOKIE = "rd_session"
LOGIN_COOKIE = "rd_login"


class Refusal(Exception):
    """Answer the request with ``status`` and this message (an error page)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Ctx:
    """One request, as a route's body sees it (in a worker thread)."""

    console: Console
    request: Request
    admin: AdminAccount
    session: WebSession
    form: FormData | None = None

    @property
    def now(self) -> datetime:
        return self.console.clock()

    @property
    def tenants(self) -> list[str]:
        """The admin's tenants, in config order."""
        return visible(self.admin, self.console.settings.tenants)

    def tenant(self, key: str | None, permission: Permission = Permission.READ) -> str:
        """A tenant the admin has (else 404) and may do ``permission`` on (else 403)."""
        if not key or key not in self.console.settings.tenants or not sees(self.admin, key):
            raise Refusal(404, f"no tenant {key!r}" if key else "name a tenant")
        if not may(self.admin, permission, key):
            role = ROLE_NAMES.get(self.admin.role, self.admin.role)
            raise Refusal(403, f"a {role} may not do this ({permission.value} on {key})")
        return key

    def may(self, permission: Permission, tenant: str) -> bool:
        return may(self.admin, permission, tenant)

    def field(self, name: str) -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""

    def audit(self, action: Action, tenant: str | None, kind: Target, target: str,
              detail: str = "") -> None:
        record(self.console.store, AuditEntry(f"web:{self.admin.username}", action, tenant,
                                              kind, target, detail, self.now))

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(self.console, template, status=status, admin=self.admin,
                      csrf_token=self.session.csrf_token, request=self.request, **values)


@functools.cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("rosterdrop", "templates/web"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = _when
    env.filters["q"] = lambda value: quote(str(value), safe="")
    env.globals["role_names"] = ROLE_NAMES
    env.globals["url"] = _url
    return env


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment is not None else "—"


def _url(path: str, **query: Any) -> str:
    kept = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def render(console: Console, template: str, *, status: int = 200,
           **values: Any) -> HTMLResponse:
    values.setdefault("admin", None)
    values.setdefault("csrf_token", "")
    values.setdefault("request", None)
    values.setdefault("title", "")
    html = environment().get_template(template).render(**values)
    return HTMLResponse(html, status_code=status)


def error_page(console: Console, status: int, message: str, ctx: Ctx | None = None) -> Response:
    if ctx is not None:
        return ctx.render("error.html", status=status, title=f"Error {status}",
                          message=message, code=status)
    return render(console, "error.html", status=status, title=f"Error {status}",
                  message=message, code=status)


def _status_of(exc: RosterdropError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, UsageError):
        return 400
    return 500


def _visitor(console: Console, request: Request) -> tuple[AdminAccount, WebSession] | None:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        return None
    session = find_session(console.store, token, console.clock())
    if session is None:
        return None
    admin = next((a for a in console.admins if a.username == session.username), None)
    return None if admin is None else (admin, session)  # an admin removed from the config


def unauthenticated(request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(_url("/login", next=target), status_code=303)
    return Response("sign in first (POST /login)\n", status_code=401,
                    media_type="text/plain; charset=utf-8")


Body = Callable[[Ctx], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def route(console: Console, body: Body, *, changes: bool = False,
          form: Callable[[Request], Awaitable[FormData]] | None = None) -> Endpoint:
    """An endpoint: signed in, CSRF-checked when it ``changes`` state, ``body`` in a
    thread; a ``Refusal`` or a rosterdrop error becomes its error page, never a
    traceback."""

    async def endpoint(request: Request) -> Response:
        found = await asyncio.to_thread(_visitor, console, request)
        if found is None:
            return unauthenticated(request)
        admin, session = found
        data: FormData | None = None
        if changes:
            try:
                data = await (form(request) if form is not None else request.form())
            except Refusal as refused:
                return error_page(console, refused.status, refused.message)
            except Exception as exc:  # a malformed body (multipart or urlencoded)
                log.info("web_form_unreadable", path=request.url.path, error=str(exc)[:200])
                return error_page(console, 400, "the form could not be read")
            given = data.get("csrf_token")
            if not tokens_match(session.csrf_token, given if isinstance(given, str) else None):
                log.warning("web_csrf_refused", path=request.url.path, username=admin.username)
                return error_page(console, 403, "the form's CSRF token is missing or out of "
                                  "date: reload the page and try again")
        ctx = Ctx(console, request, admin, session, data)
        try:
            return await asyncio.to_thread(_guarded, body, ctx)
        finally:
            if data is not None:
                await data.close()

    return endpoint


def _guarded(body: Body, ctx: Ctx) -> Response:
    try:
        return body(ctx)
    except Refusal as refused:
        return error_page(ctx.console, refused.status, refused.message, ctx)
    except RosterdropError as exc:
        status = _status_of(exc)
        if status == 500:
            log.error("web_action_failed", path=ctx.request.url.path, error=str(exc))
        return error_page(ctx.console, status, str(exc), ctx)


def redirect(path: str, **query: Any) -> RedirectResponse:
    return RedirectResponse(_url(path, **query), status_code=303)


def query_param(request: Request, name: str) -> str:
    return request.query_params.get(name, "").strip()


def flash(request: Request) -> str:
    """The one-line outcome a redirect after an action carries (``?done=…``)."""
    return query_param(request, "done")[:300]


def mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    return dict(values)
