"""The read-only OneRoster REST provider on the console's listener (docs/outlets.md).

Per tenant ``T``:

* ``POST /t/T/oauth/token``: OAuth 2 client credentials (RFC 6749 4.4); the client
  authenticates with HTTP Basic or ``client_id``/``client_secret`` form fields,
  its secret checked against ``api_clients[].secret_hash`` (argon2, in a thread,
  an unknown client against a dummy hash). Answers ``access_token``, ``expires_in``
  and the ``scope`` granted (the asked scopes, all of the client's when none).
* ``GET /t/T/ims/oneroster/v1p1/…`` and ``GET /t/T/ims/oneroster/rostering/v1p2/…``:
  the collections, ``/{collection}/{id}`` and the nested routes of ``pages``,
  with a bearer token of a client of ``T`` holding the version's scope.

The console's sessions and CSRF do not apply here: a bearer token or nothing.
Refusals carry the binding's status envelope (``imsx_codeMajor`` …; 1.1 wraps
it in ``statusInfoSet``). Every answer is one ``api_request`` log line with the
client id, never a record or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Any, Final
from urllib.parse import unquote, urlencode

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rosterdrop.config import ONEROSTER_SCOPES, TenantSettings
from rosterdrop.errors import StoreError
from rosterdrop.outlets.oneroster.pages import (
    ENDPOINTS,
    NESTED,
    SINGULAR,
    Pager,
    equals,
)
from rosterdrop.outlets.oneroster.query import Minor, Query, QueryError, parse_query
from rosterdrop.outlets.oneroster.records import context
from rosterdrop.outlets.oneroster.tokens import ApiToken, find_token, issue_token
from rosterdrop.passwords import hash_password, verify_password
from rosterdrop.sftp.bans import BanList
from rosterdrop.store.engine import translate
from rosterdrop.web.console import Console

log = structlog.get_logger("rosterdrop.api")

PREFIXES: Final = {"1.1": "ims/oneroster/v1p1", "1.2": "ims/oneroster/rostering/v1p2"}
JSON: Final = "application/json"
MAX_CONCURRENT_SECRET_CHECKS: Final = 4


def status_info(version: str, minor: Minor, description: str) -> dict[str, Any]:
    """The binding's refusal: 1.2 one ``imsx_StatusInfo`` object, 1.1 a ``statusInfoSet``."""
    info = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {"imsx_codeMinorField": [
            {"imsx_codeMinorFieldName": "TargetEndSystem",
             "imsx_codeMinorFieldValue": minor.value}]},
    }
    return {"statusInfoSet": [info]} if version == "1.1" else info


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(data, status_code=status, media_type=JSON,
                    headers={"cache-control": "no-store", **(headers or {})})


def _refusal(version: str, error: QueryError) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="rosterdrop"'} if error.status == 401 else {}
    return _json(status_info(version, error.minor, error.description), error.status, headers)


def _needed_scopes(version: str, collection: str) -> set[str]:
    prefix = ONEROSTER_SCOPES[version]
    core = "roster-demographics.readonly" if collection == "demographics" else "roster-core.readonly"
    return {prefix + core, prefix + "roster.readonly"}


def _link(request: Request, query: Query, total: int) -> str:
    """``Link``: next, prev, first and last pages, the other parameters kept."""
    params = dict(request.query_params)
    limit = query.limit

    def url(offset: int) -> str:
        return f"<{request.url.replace(query=urlencode({**params, 'limit': limit, 'offset': offset}))}>"

    links = []
    if query.offset + limit < total:
        links.append(f'{url(query.offset + limit)}; rel="next"')
    if query.offset > 0:
        links.append(f'{url(max(0, query.offset - limit))}; rel="prev"')
    links.append(f'{url(0)}; rel="first"')
    links.append(f'{url(max(0, (total - 1) // limit * limit))}; rel="last"')
    return ", ".join(links)


class OneRosterApi:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.pager = Pager()
        self.checks = asyncio.Semaphore(MAX_CONCURRENT_SECRET_CHECKS)
        self.dummy = hash_password("rosterdrop: no such API client")
        ban = console.settings.sftp.ban
        # Wrong client secrets count as failed logins do on SFTP and the console: per
        # client address, by the same [sftp.ban] rules (docs/security.md).
        self.bans = BanList(ban.failures, ban.window_seconds, ban.duration_seconds,
                            time.monotonic)

    def _tenant(self, key: str) -> TenantSettings | None:
        return self.console.settings.tenants.get(key)

    # --- the token endpoint ---------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        key = request.path_params["tenant"]
        tenant = self._tenant(key)
        try:
            form = await request.form(max_files=0, max_fields=10)
        except Exception:
            return self._oauth_error(key, "", "invalid_request", "the form could not be read")
        if str(form.get("grant_type") or "") != "client_credentials":
            return self._oauth_error(key, "", "unsupported_grant_type",
                                     "grant_type must be client_credentials")
        client_id, secret = _credentials(request.headers.get("authorization", ""),
                                         str(form.get("client_id") or ""),
                                         str(form.get("client_secret") or ""))
        address = request.client.host if request.client else "unknown"
        if self.bans.is_banned(address):
            wait = int(self.bans.banned_for(address)) + 1
            log.warning("api_token_refused_banned", tenant=key, client_id=client_id[:128],
                        address=address)
            return _json({"error": "temporarily_unavailable", "error_description":
                          f"too many failed sign-ins from this address: try again in {wait} s"},
                         429, {"Retry-After": str(wait)})
        client = next((c for c in tenant.api_clients if c.client_id == client_id), None) \
            if tenant is not None and client_id else None
        async with self.checks:
            ok = await asyncio.to_thread(verify_password,
                                         client.secret_hash if client else self.dummy,
                                         secret[:1024])
        if client is None or not ok:
            banned = self.bans.record_failure(address)
            log.warning("api_token_secret_wrong", tenant=key, client_id=client_id[:128],
                        address=address, banned=banned)
            return self._oauth_error(key, client_id[:128], "invalid_client",
                                     "unknown client or wrong secret", 401)
        asked = str(form.get("scope") or "").split()
        granted = asked or list(client.scopes)
        if any(s not in client.scopes for s in granted):
            return self._oauth_error(key, client_id, "invalid_scope",
                                     "the client may not have the scope asked for")
        try:
            token, _ = await asyncio.to_thread(issue_token, self.console.store, key, client_id,
                                               granted, self.console.clock(),
                                               client.token_minutes)
        except StoreError as exc:
            log.error("api_token_failed", tenant=key, client_id=client_id, error=str(exc))
            return _json({"error": "temporarily_unavailable"}, 503)
        log.info("api_token_issued", tenant=key, client_id=client_id,
                 scopes=len(granted), minutes=client.token_minutes)
        return _json({"access_token": token, "token_type": "bearer",
                      "expires_in": client.token_minutes * 60, "scope": " ".join(granted)})

    def _oauth_error(self, tenant: str, client_id: str, error: str, description: str,
                     status: int = 400) -> Response:
        log.warning("api_token_refused", tenant=tenant, client_id=client_id, error=error)
        headers = {"WWW-Authenticate": 'Basic realm="rosterdrop"'} if status == 401 else {}
        return _json({"error": error, "error_description": description}, status, headers)

    # --- the rostering service ------------------------------------------------------------

    async def serve(self, request: Request) -> Response:
        version = "1.1" if "/v1p1/" in request.url.path + "/" else "1.2"
        key = request.path_params["tenant"]
        started = time.monotonic()
        client = ""
        records = 0
        try:
            grant = await self._authorize(request, key)
            client = grant.client_id
            response, records = await self._answer(request, key, version, grant)
        except QueryError as error:
            response = _refusal(version, error)
        except StoreError as exc:
            log.error("api_store_failed", tenant=key, client_id=client, error=str(exc))
            response = _refusal(version, QueryError(
                Minor.SERVER_BUSY, "the directory cannot be read just now; try again", 503))
        log.info("api_request", tenant=key, client_id=client, version=version,
                 path=request.url.path, status=response.status_code, records=records,
                 duration_ms=int((time.monotonic() - started) * 1000))
        return response

    async def _authorize(self, request: Request, key: str) -> ApiToken:
        tenant = self._tenant(key)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise QueryError(Minor.UNAUTHORISED, "a bearer token is required (POST "
                             f"/t/{key}/oauth/token)", 401)
        grant = await asyncio.to_thread(find_token, self.console.store, token.strip(),
                                        self.console.clock())
        if grant is None:
            raise QueryError(Minor.UNAUTHORISED, "the token is unknown or expired", 401)
        # A token names its tenant; a client removed from the config loses its tokens.
        if tenant is None or grant.tenant != key or not any(
                c.client_id == grant.client_id for c in tenant.api_clients):
            raise QueryError(Minor.UNAUTHORISED, "the token is not valid for this tenant", 401)
        return grant

    async def _answer(self, request: Request, key: str, version: str,
                      grant: ApiToken) -> tuple[Response, int]:
        parts = [unquote(p) for p in request.path_params["rest"].split("/") if p]
        query = parse_query(request.query_params)
        if len(parts) == 1 and parts[0] in ENDPOINTS:
            endpoint = ENDPOINTS[parts[0]]
            self._scope(grant, version, endpoint.collection)
            page = await self._run(key, version, request, lambda conn, ctx: self.pager.page(
                conn, ctx, endpoint.collection, query.also(*endpoint.predicates),
                scope=parts[0]))
            headers = {"X-Total-Count": str(page.total), "Link": _link(request, query,
                                                                       page.total)}
            return _json({endpoint.collection: page.records}, headers=headers), len(page.records)
        if len(parts) == 2 and parts[0] in ENDPOINTS:
            endpoint = ENDPOINTS[parts[0]]
            self._scope(grant, version, endpoint.collection)
            sourced_id = parts[1]

            def one(conn: Any, ctx: Any) -> Any:
                if not self.pager.exists(conn, ctx, endpoint, sourced_id):
                    return None
                return self.pager.one(conn, ctx, endpoint.collection, sourced_id, query)

            record = await self._run(key, version, request, one)
            if record is None:
                raise QueryError(Minor.UNKNOWN_OBJECT,
                                 f"{parts[0]} has no record {sourced_id[:100]!r}", 404)
            return _json({SINGULAR[endpoint.collection]: record}), 1
        if len(parts) == 3 and (parts[0], parts[2]) in NESTED:
            nested = NESTED[(parts[0], parts[2])]
            parent, child = ENDPOINTS[nested.parent], ENDPOINTS[nested.child]
            self._scope(grant, version, child.collection)
            parent_id = parts[1]
            scoped = query.also(*child.predicates)
            if nested.field:
                scoped = scoped.also(equals(nested.field, parent_id))

            def page_of(conn: Any, ctx: Any) -> Any:
                if not self.pager.exists(conn, ctx, parent, parent_id):
                    return None
                where = nested.where(key, parent_id) if nested.where else None
                return self.pager.page(conn, ctx, child.collection, scoped,
                                       scope=f"{parts[0]}/{parent_id}/{parts[2]}", where=where)

            page = await self._run(key, version, request, page_of)
            if page is None:
                raise QueryError(Minor.UNKNOWN_OBJECT,
                                 f"{parts[0]} has no record {parent_id[:100]!r}", 404)
            headers = {"X-Total-Count": str(page.total),
                       "Link": _link(request, query, page.total)}
            return _json({child.collection: page.records}, headers=headers), len(page.records)
        raise QueryError(Minor.UNKNOWN_OBJECT,
                         f"no OneRoster {version} endpoint /{'/'.join(parts)[:200]}", 404)

    @staticmethod
    def _scope(grant: ApiToken, version: str, collection: str) -> None:
        needed = _needed_scopes(version, collection)
        if not grant.scopes & needed:
            raise QueryError(Minor.FORBIDDEN, f"the token has no scope for {collection} "
                             f"(one of {', '.join(sorted(needed))})", 403)

    async def _run(self, key: str, version: str, request: Request, work: Any) -> Any:
        base = str(request.base_url).rstrip("/") + f"/t/{key}/{PREFIXES[version]}"
        today = self.console.clock().date()

        def in_thread() -> Any:
            with translate("reading the directory for the OneRoster API"), \
                    self.console.store.read() as conn:
                return work(conn, context(conn, key, version, today=today, base=base))

        return await asyncio.to_thread(in_thread)


def _credentials(header: str, form_id: str, form_secret: str) -> tuple[str, str]:
    """``(client_id, secret)`` from HTTP Basic (RFC 6749 2.3.1: form-encoded, then Basic)
    or the form's fields."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        user, _, password = decoded.partition(":")
        return unquote(user.replace("+", " ")), unquote(password.replace("+", " "))
    return form_id, form_secret


def routes(console: Console) -> list[Route]:
    api = OneRosterApi(console)
    return [
        Route("/t/{tenant}/oauth/token", api.token, methods=["POST"]),
        Route("/t/{tenant}/ims/oneroster/v1p1/{rest:path}", api.serve, methods=["GET"]),
        Route("/t/{tenant}/ims/oneroster/rostering/v1p2/{rest:path}", api.serve,
              methods=["GET"]),
    ]


__all__ = ["OneRosterApi", "routes", "status_info"]
