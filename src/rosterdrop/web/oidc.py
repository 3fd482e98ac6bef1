"""Single sign-on with OpenID Connect (``[web.oidc]``; docs/console.md, "Single sign-on").

The authorization-code flow with PKCE (S256), ``state`` and ``nonce``:

- ``GET /login/oidc`` reads the provider's discovery document (cached), keeps a fresh
  state, nonce and code verifier in a short-lived HttpOnly cookie bound to this browser,
  and redirects to the provider's authorization endpoint;
- ``GET /login/oidc/callback`` checks the reply's state against that cookie (and that
  it was not used before in this process), exchanges the code at the token endpoint,
  verifies the ID token (signature against the provider's JWKS, ``iss``, ``aud`` ==
  ``client_id``, ``exp``/``iat``/``nbf`` with a minute's leeway, ``nonce``), and finds
  the ``[[admins]]`` entry whose ``oidc_subject`` is the token's ``sub`` — or whose
  ``email`` is the token's, only when the token says ``email_verified``. Anyone else is
  refused by name. Then the same session as a password sign-in starts.

The pending cookie (not a server table) lets the callback reach any process that
shares the store; the provider's one-use codes stop a replay in another process.
Every failure is an error page and a log line, never a traceback. The pending
cookie is SameSite=Lax: the provider's redirect back is a cross-site navigation,
which would not carry a Strict cookie. For the same reason the callback answers
with a page that moves on to the console itself, so the Strict session cookie is
sent on a same-site navigation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import structlog
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from rosterdrop.config import AdminAccount, OidcSettings
from rosterdrop.store.sessions import start_session
from rosterdrop.web.console import Console
from rosterdrop.web.http import SESSION_COOKIE, error_page

log = structlog.get_logger("rosterdrop.web")

PENDING_COOKIE = "rd_oidc"
PENDING_SECONDS = 600
LEEWAY_SECONDS = 60
DISCOVERY_SECONDS = 3600.0
HTTP_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
CALLBACK_PATH = "/login/oidc/callback"
START_AGAIN = "start again from the sign-in page"
GOOGLE = "https://accounts.google.com"


class OidcRefusal(Exception):
    """Answer with an error page of ``status`` and this message (already logged)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Provider:
    """What the discovery document says (the parts the flow uses)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    basic_auth: bool
    fetched: float


@dataclass(frozen=True)
class Pending:
    state: str
    nonce: str
    verifier: str
    next: str
    started: float

    def encode(self) -> str:
        raw = json.dumps([self.state, self.nonce, self.verifier, self.next, self.started])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str | None) -> Pending | None:
        if not value or len(value) > 2000:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            state, nonce, verifier, target, started = json.loads(raw)
        except (ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (state, nonce, verifier, target)) or \
                not isinstance(started, (int, float)):
            return None
        return cls(state, nonce, verifier, target, float(started))


def challenge(verifier: str) -> str:
    """PKCE's S256 code challenge of ``verifier`` (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def find_admin(admins: list[AdminAccount], claims: dict[str, Any]) -> AdminAccount | None:
    """The admin an ID token's claims sign in as (pure): ``sub`` against ``oidc_subject``,
    else a verified ``email`` against ``email`` (case-insensitive); None: nobody."""
    subject = claims.get("sub")
    if isinstance(subject, str) and subject:
        found = next((a for a in admins if a.oidc_subject and a.oidc_subject == subject), None)
        if found is not None:
            return found
    email = claims.get("email")
    verified = claims.get("email_verified") in (True, "true")
    if isinstance(email, str) and email and verified:
        return next((a for a in admins if a.email and a.email.lower() == email.lower()), None)
    return None


def _reason(exc: JoseError) -> str:
    """Why an ID token was refused, in words (the claim named where there is one)."""
    if isinstance(exc, InvalidKeyIdError):
        return "it is signed with a key the provider does not publish"
    if isinstance(exc, BadSignatureError):
        return "its signature does not verify against the provider's published keys"
    if isinstance(exc, ExpiredTokenError):
        return "it has expired"
    claim = getattr(exc, "claim", "")
    if isinstance(exc, InvalidClaimError):
        words = {"aud": "it was issued for another application (aud is not this console's "
                        "client_id)",
                 "iss": "it was issued by another provider (iss is not the configured issuer)",
                 "nonce": "its nonce is not this sign-in's (a replayed token)",
                 "azp": "it was issued to another application (azp)",
                 "nbf": "it is not valid yet (nbf is in the future)",
                 "iat": "it is not valid yet (iat is in the future)"}
        return words.get(claim, f"its {claim!r} claim is wrong")
    if isinstance(exc, MissingClaimError):
        return f"it lacks the {claim!r} claim" if claim else "it lacks a required claim"
    return f"it could not be read ({exc.error})"


class OidcSignIn:
    """The two routes; one per app, with the discovery and JWKS caches."""

    def __init__(self, console: Console, oidc: OidcSettings) -> None:
        self.console = console
        self.oidc = oidc
        self.provider: Provider | None = None
        self.keys: KeySet | None = None
        self.used: dict[str, float] = {}
        self.lock = asyncio.Lock()

    @property
    def redirect_uri(self) -> str:
        return self.console.settings.web.base_url + CALLBACK_PATH

    def secure(self) -> bool:
        return self.console.settings.web.base_url.startswith("https://")

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False)

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self._client() as client:
                answer = await client.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise self._unreachable(what, f"{type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise self._unreachable(what, f"HTTP {answer.status_code}")
        try:
            data = answer.json()
        except ValueError as exc:
            raise self._unreachable(what, "not JSON") from exc
        if not isinstance(data, dict):
            raise self._unreachable(what, "not a JSON object")
        return data

    def _unreachable(self, what: str, why: str) -> OidcRefusal:
        log.error("web_oidc_provider_failed", what=what, issuer=self.oidc.issuer, error=why)
        return OidcRefusal(502, f"{self.oidc.display_name} could not be asked for the "
                           f"{what} ({why}): try again in a minute, or sign in with a password")

    async def discover(self) -> Provider:
        cached = self.provider
        if cached is not None and time.monotonic() - cached.fetched < DISCOVERY_SECONDS:
            return cached
        url = self.oidc.issuer + "/.well-known/openid-configuration"
        data = await self._get_json(url, "sign-in settings")
        fields = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        if not all(isinstance(data.get(f), str) and data.get(f) for f in fields):
            raise self._unreachable("sign-in settings", "the discovery document lacks "
                                    "issuer, authorization_endpoint, token_endpoint or jwks_uri")
        if data["issuer"].rstrip("/") != self.oidc.issuer:
            # OpenID Connect Discovery §4.3: a mismatch means the wrong document.
            raise self._unreachable("sign-in settings", f"its issuer is {data['issuer']!r}, "
                                    f"not the configured {self.oidc.issuer!r}")
        methods = data.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        provider = Provider(data["issuer"], data["authorization_endpoint"],
                            data["token_endpoint"], data["jwks_uri"],
                            "client_secret_basic" in methods or "client_secret_post"
                            not in methods, time.monotonic())
        self.provider = provider
        return provider

    async def key_set(self, provider: Provider, *, fresh: bool = False) -> KeySet:
        if self.keys is not None and not fresh:
            return self.keys
        data = await self._get_json(provider.jwks_uri, "signing keys")
        try:
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise self._unreachable("signing keys", f"unreadable JWKS: {exc}") from exc
        self.keys = keys
        return keys

    # --- routes -------------------------------------------------------------------

    async def start(self, request: Request) -> Response:
        from rosterdrop.web.app import _next

        try:
            provider = await self.discover()
        except OidcRefusal as refused:
            return error_page(self.console, refused.status, refused.message)
        pending = Pending(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          secrets.token_urlsafe(48), _next(request.query_params.get("next")),
                          time.time())
        query = urlencode({"response_type": "code", "client_id": self.oidc.client_id,
                           "redirect_uri": self.redirect_uri, "scope": self.oidc.scopes,
                           "state": pending.state, "nonce": pending.nonce,
                           "code_challenge": challenge(pending.verifier),
                           "code_challenge_method": "S256"})
        joiner = "&" if "?" in provider.authorization_endpoint else "?"
        response = RedirectResponse(f"{provider.authorization_endpoint}{joiner}{query}",
                                    status_code=303)
        response.set_cookie(PENDING_COOKIE, pending.encode(), max_age=PENDING_SECONDS,
                            path="/login/oidc", httponly=True, samesite="lax",
                            secure=self.secure())
        return response

    async def callback(self, request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        try:
            admin, claims, target = await self._verify(request, address)
            token, _ = await asyncio.to_thread(start_session, self.console.store,
                                               admin.username, self.console.clock(),
                                               self.console.settings.web.session_minutes)
        except OidcRefusal as refused:
            response = error_page(self.console, refused.status, refused.message)
            response.delete_cookie(PENDING_COOKIE, path="/login/oidc")
            return response
        except Exception as exc:  # a page and a log line, never a traceback to the browser
            log.exception("web_oidc_failed", address=address, error=str(exc)[:200])
            response = error_page(self.console, 500, f"The sign-in could not be completed "
                                  f"(an internal error, logged as web_oidc_failed): "
                                  f"{START_AGAIN}.")
            response.delete_cookie(PENDING_COOKIE, path="/login/oidc")
            return response
        log.info("web_login", address=address, username=admin.username, role=admin.role,
                 method="oidc", issuer=self.oidc.issuer, subject=claims.get("sub"))
        # A same-site hop: the Strict session cookie is not sent on the provider's
        # cross-site redirect chain, so the browser moves on from this page itself.
        link = escape(target, quote=True)
        html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<meta http-equiv="refresh" content="0;url={link}">'
                f"<title>Signed in · rosterdrop</title></head><body><main>"
                f"<p>Signed in as {escape(admin.username)}. "
                f'<a href="{link}">Continue to the console</a></p></main></body></html>')
        response = HTMLResponse(html)
        response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="strict",
                            secure=self.secure())
        response.delete_cookie(PENDING_COOKIE, path="/login/oidc")
        return response

    async def _verify(self, request: Request,
                      address: str) -> tuple[AdminAccount, dict[str, Any], str]:
        name = self.oidc.display_name
        pending = Pending.decode(request.cookies.get(PENDING_COOKIE))
        state = request.query_params.get("state", "")
        if pending is None or time.time() - pending.started > PENDING_SECONDS:
            log.warning("web_oidc_refused", address=address, reason="no pending sign-in")
            raise OidcRefusal(400, f"This browser has no sign-in waiting for this reply (it "
                              f"expired, was already used, or began in another browser): "
                              f"{START_AGAIN}.")
        if not state or not secrets.compare_digest(state.encode(), pending.state.encode()):
            log.warning("web_oidc_refused", address=address, reason="state mismatch")
            raise OidcRefusal(400, f"The sign-in reply does not match the sign-in this "
                              f"browser began (its state differs): {START_AGAIN}.")
        async with self.lock:
            now = time.time()
            self.used = {s: t for s, t in self.used.items() if now - t < PENDING_SECONDS}
            if pending.state in self.used:
                log.warning("web_oidc_refused", address=address, reason="state replayed")
                raise OidcRefusal(400, f"This sign-in reply was already used: {START_AGAIN}.")
            self.used[pending.state] = now
        error = request.query_params.get("error")
        if error:
            detail = request.query_params.get("error_description", "")[:300]
            log.warning("web_oidc_refused", address=address, reason="provider error",
                        error=error[:100], description=detail)
            raise OidcRefusal(401, f"{name} did not sign you in ({error[:100]}"
                              f"{': ' + detail if detail else ''}): {START_AGAIN}.")
        code = request.query_params.get("code", "")
        if not code or len(code) > 4096:
            log.warning("web_oidc_refused", address=address, reason="no code")
            raise OidcRefusal(400, f"The sign-in reply from {name} has no code: {START_AGAIN}.")
        provider = await self.discover()
        id_token = await self._exchange(provider, code, pending.verifier)
        claims = await self._claims(provider, id_token, pending.nonce, address)
        admin = find_admin(self.console.admins, claims)
        if admin is None:
            email = claims.get("email") if isinstance(claims.get("email"), str) else ""
            subject = str(claims.get("sub"))
            log.warning("web_oidc_unmapped", address=address, subject=subject, email=email)
            who = f"{email}, subject {subject}" if email else f"subject {subject}"
            raise OidcRefusal(403, f"No console admin is set up for this {name} account "
                              f"({who}). Ask an administrator to add "
                              f"oidc_subject = \"{subject}\" to your [[admins]] entry.")
        return admin, claims, pending.next

    async def _exchange(self, provider: Provider, code: str, verifier: str) -> str:
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri, "code_verifier": verifier}
        headers = {"accept": "application/json"}
        if provider.basic_auth:
            # RFC 6749 §2.3.1: each part form-encoded before base64 (secrets hold ~ or +).
            pair = f"{quote(self.oidc.client_id)}:{quote(self.oidc.client_secret)}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.oidc.client_id,
                     "client_secret": self.oidc.client_secret}
        try:
            async with self._client() as client:
                answer = await client.post(provider.token_endpoint, data=form,
                                           headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable("token", f"{type(exc).__name__}: {exc}") from exc
        try:
            data = answer.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if answer.status_code != 200:
            why = str(data.get("error") or "")[:100]
            raise self._unreachable("token", f"HTTP {answer.status_code}"
                                    f"{': ' + why if why else ''}")
        id_token = data.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise self._unreachable("token", "its answer has no id_token")
        return id_token

    def _issuers(self) -> list[str]:
        # Google documents both spellings of its iss (OpenID Connect, "Validating an ID token").
        if self.oidc.issuer == GOOGLE:
            return [GOOGLE, GOOGLE.removeprefix("https://")]
        return [self.oidc.issuer]

    async def _claims(self, provider: Provider, id_token: str, nonce: str,
                      address: str) -> dict[str, Any]:
        keys = await self.key_set(provider)
        try:
            try:
                token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            except (BadSignatureError, InvalidKeyIdError, ValueError):
                # The provider may have rolled its keys since they were cached.
                keys = await self.key_set(provider, fresh=True)
                token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            claims = dict(token.claims)
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "values": self._issuers()},
                aud={"essential": True, "value": self.oidc.client_id},
                sub={"essential": True}, exp={"essential": True}, iat={"essential": True},
                nonce={"essential": True, "value": nonce})
            registry.validate(claims)
            audience = claims.get("aud")
            if isinstance(audience, list) and len(audience) > 1 and \
                    claims.get("azp") != self.oidc.client_id:
                raise InvalidClaimError("azp")
        except JoseError as exc:
            reason = _reason(exc)
            log.warning("web_oidc_refused", address=address, reason="id token refused",
                        error=exc.error, detail=reason)
            raise OidcRefusal(401, f"The ID token from {self.oidc.display_name} was refused: "
                              f"{reason}. Nobody was signed in: {START_AGAIN}.") from exc
        except ValueError as exc:  # not a JWT at all, or a key that does not fit
            log.warning("web_oidc_refused", address=address, reason="id token unreadable",
                        error=str(exc)[:200])
            raise OidcRefusal(401, f"The ID token from {self.oidc.display_name} could not be "
                              f"read. Nobody was signed in: {START_AGAIN}.") from exc
        return claims
