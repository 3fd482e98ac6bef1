"""Single sign-on with OpenID Connect: [web.oidc], the start-up check of its secret, and
the authorization-code flow against a small identity provider started in the test."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio
import uvicorn
from browser_harness import CHROMIUM, needs_chromium
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from structlog.testing import capture_logs
from test_run_lifecycle import Sent
from test_web_console import (  # noqa: F401 (fixtures)
    Clock,
    clock_fixture,
    console_fixture,
    make_settings,
    runner_fixture,
    store_fixture,
    token_in,
)

from rosterdrop.config import Settings, parse_settings
from rosterdrop.errors import ConfigError
from rosterdrop.runs.runner import Runner
from rosterdrop.startup import refuse_failures, start_checks
from rosterdrop.store.engine import open_store
from rosterdrop.web.app import build_app
from rosterdrop.web.console import Console

SECRET_ENV = "ROSTERDROP_TEST_OIDC_SECRET"


def oidc_config(issuer: str = "https://login.microsoftonline.com/dir-1/v2.0",
                **values: Any) -> dict[str, Any]:
    return {"issuer": issuer, "client_id": "console-client", "client_secret_env": SECRET_ENV,
            **values}


def web(**oidc: Any) -> dict[str, Any]:
    return {"base_url": "https://rosterdrop.example.org", "oidc": oidc_config(**oidc)}


def test_oidc_settings_are_read_and_checked() -> None:
    """[web.oidc] needs base_url (with the console on), an https issuer (http only on loopback) and the openid
    scope; an SSO-only admin needs no password hash; an identity maps to one admin only."""
    settings = parse_settings({"web": web(), "admins": [
        {"username": "ana", "oidc_subject": "sub-ana", "role": "administrator"}]})
    oidc = settings.web.oidc
    assert oidc is not None and oidc.scopes == "openid email profile"
    assert oidc.display_name == "Microsoft"
    assert settings.admins[0].password_hash == ""
    google = parse_settings({"web": web(issuer="https://accounts.google.com")}).web.oidc
    assert google is not None and google.display_name == "Google"
    cases = [
        ({"web": {"listen": "127.0.0.1:0", "oidc": oidc_config()}},
         r"web: \[web\.oidc\] needs web\.base_url \(the provider redirects to "
         r"\{base_url\}/login/oidc/callback\)"),
        ({"web": web(issuer="http://idp.example.org")},
         r"web\.oidc\.issuer: expected the provider's https:// issuer URL, "
         r"got 'http://idp\.example\.org'"),
        ({"web": web(scopes="email profile")},
         r"web\.oidc\.scopes: must include 'openid', got 'email profile'"),
        ({"web": web(client_secret_env="not a name")}, r"web\.oidc\.client_secret_env"),
        ({"admins": [{"username": "ana", "oidc_subject": "s", "role": "administrator"}]},
         r"admins: the admin 'ana' sets oidc_subject or email but \[web\.oidc\] is not "
         r"configured"),
        ({"web": web(), "admins": [
            {"username": "ana", "email": "Ana@d.example", "role": "administrator"},
            {"username": "bo", "email": "ana@d.example", "role": "administrator"}]},
         r"admins: email 'ana@d\.example' is used by two admins"),
        ({"web": web(), "admins": [{"username": "ana", "role": "administrator"}]},
         r"admins\.0\.password_hash: is empty: make one with `rosterdrop hash-password`"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_settings(data)


def test_start_checks_refuse_a_missing_client_secret(tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Like an API tenant's secret: serve (and doctor) check the variable is set, when
    the console is on."""
    settings = parse_settings({"state_dir": str(tmp_path),
                               "web": {"listen": "127.0.0.1:0", **web()}})
    monkeypatch.delenv(SECRET_ENV, raising=False)
    rows = {c.name: c for c in start_checks(settings, create=False)}
    assert (rows["web.oidc"].status, rows["web.oidc"].detail) == (
        "FAIL", f"client_secret_env: ${SECRET_ENV} is not set or empty")
    with pytest.raises(ConfigError, match=rf"web\.oidc: client_secret_env: \${SECRET_ENV} is "
                       rf"not set or empty — put {SECRET_ENV}=… in the service's environment"):
        refuse_failures([rows["web.oidc"]])
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    rows = {c.name: c for c in start_checks(settings, create=False)}
    assert (rows["web.oidc"].status, rows["web.oidc"].detail) == (
        "ok", f"client secret set (${SECRET_ENV}); sign-in with Microsoft "
        f"(https://login.microsoftonline.com/dir-1/v2.0)")
    off = parse_settings({"state_dir": str(tmp_path), "web": web()})
    assert "web.oidc" not in {c.name for c in start_checks(off, create=False)}


# --- the flow, against a small identity provider on loopback --------------------------


class IdentityProvider:
    """A real HTTP OpenID provider on 127.0.0.1: discovery, JWKS, an authorize endpoint
    that signs the user in at once and redirects back with a code, and a token endpoint
    that checks the client's secret, the code (once), the redirect URI and PKCE, and
    issues an RS256 ID token. ``claims`` and ``sign_with`` change the next token;
    ``interactive`` makes the authorize endpoint a page with a link to click, as a real
    provider's sign-in page is (the way back is then a navigation the provider began)."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "idp-1", "use": "sig"})
        self.sign_with = self.key
        self.user: dict[str, Any] = {"sub": "sub-ana", "email": "ana@district.example",
                                     "email_verified": True}
        self.claims: dict[str, Any] = {}
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, str]] = []
        self.interactive = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> IdentityProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                "code_challenge_methods_supported": ["S256"]}

    def id_token(self, request: dict[str, str]) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": request["nonce"], **self.user, **self.claims}
        return jwt.encode({"alg": "RS256", "kid": "idp-1"},
                          {k: v for k, v in claims.items() if v is not None}, self.sign_with)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/.well-known/openid-configuration":
                    self._json(200, idp.discovery())
                elif url.path == "/jwks":
                    self._json(200, KeySet([idp.key]).as_dict(private=False))
                elif url.path == "/authorize":
                    query = dict(parse_qsl(url.query))
                    code = secrets.token_urlsafe(16)
                    idp.codes[code] = query
                    back = f"{query['redirect_uri']}?" + urlencode(
                        {"code": code, "state": query["state"]})
                    if idp.interactive:  # the user clicks through a page of the provider's
                        page = f'<a id="consent" href="{html.escape(back)}">Continue</a>'
                        self.send_response(200)
                        self.send_header("content-type", "text/html")
                        self.send_header("content-length", str(len(page)))
                        self.end_headers()
                        self.wfile.write(page.encode())
                        return
                    self.send_response(302)
                    self.send_header("location", back)
                    self.send_header("content-length", "0")
                    self.end_headers()
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                idp.token_requests.append(form)
                # RFC 6749 §2.3.1: id and secret form-encoded, then base64.
                basic = self.headers.get("authorization", "").removeprefix("Basic ")
                pair = base64.b64decode(basic.encode()).decode().split(":", 1)
                if [unquote_plus(part) for part in pair] != [CLIENT_ID, SECRET]:
                    return self._json(401, {"error": "invalid_client"})
                request = idp.codes.pop(form.get("code", ""), None)
                if request is None or form.get("redirect_uri") != request["redirect_uri"]:
                    return self._json(400, {"error": "invalid_grant"})
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                if base64.urlsafe_b64encode(digest).decode().rstrip("=") != \
                        request["code_challenge"] or request["code_challenge_method"] != "S256":
                    return self._json(400, {"error": "invalid_grant",
                                            "error_description": "PKCE"})
                self._json(200, {"access_token": "at", "token_type": "Bearer",
                                 "expires_in": 300, "id_token": idp.id_token(request)})

        return Handler


CLIENT_ID = "console-client"
SECRET = "s3cret~with+odd/chars"
BASE_URL = "https://console.test"


@pytest.fixture(name="idp")
def idp_fixture() -> Iterator[IdentityProvider]:
    with IdentityProvider() as idp:
        yield idp


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path, backend_url: str, idp: IdentityProvider,
                     monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = make_settings(tmp_path, backend_url)
    admins = [a.model_dump() for a in settings.admins]
    admins[0] |= {"oidc_subject": "sub-ana"}                      # ana, administrator
    admins[1] |= {"email": "Sam@District.example", "password_hash": ""}  # sam, site manager
    return make_settings(tmp_path, backend_url, admins=admins, web={
        "listen": "127.0.0.1:0", "session_minutes": 30, "base_url": BASE_URL,
        "oidc": {"issuer": idp.issuer, "client_id": CLIENT_ID, "client_secret_env": SECRET_ENV,
                 "name": "Test District"}})


@pytest_asyncio.fixture(name="client")
async def client_fixture(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(console))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        yield c


async def provider_reply(client: httpx.AsyncClient, next_path: str = "") -> str:
    """Start a sign-in at the console and let the IdP (over real HTTP) answer: the
    callback URL (path and query) the browser is sent back to."""
    start = await client.get("/login/oidc" + (f"?next={next_path}" if next_path else ""))
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    async with httpx.AsyncClient() as browser:
        back = await browser.get(authorize)
    assert back.status_code == 302, back.text
    location = back.headers["location"]
    assert location.startswith(f"{BASE_URL}/login/oidc/callback?")
    return location.removeprefix(BASE_URL)


def message_of(page: httpx.Response) -> str:
    found = re.search(r'<p class="error" role="alert" id="error">(.*?)</p>', page.text, re.S)
    assert found, page.text
    return html.unescape(found.group(1))


@pytest.mark.asyncio
async def test_login_page_links_to_the_provider(client: httpx.AsyncClient) -> None:
    """With [web.oidc] the sign-in page offers "Sign in with <name>" next to the form."""
    page = await client.get("/login")
    assert '<a href="/login/oidc" id="sign-in-oidc">Sign in with Test District</a>' in page.text
    page = await client.get("/login?next=/runs")
    assert 'href="/login/oidc?next=%2Fruns" id="sign-in-oidc"' in page.text


@pytest.mark.asyncio
async def test_sign_in_by_subject_starts_a_session_with_the_mapped_role(
        client: httpx.AsyncClient, idp: IdentityProvider) -> None:
    """The authorization request carries PKCE S256, state and nonce; the code is
    exchanged with the client secret; the ID token's sub maps to ana (Administrator):
    the session is the one a password sign-in makes, logged with method=oidc."""
    start = await client.get("/login/oidc?next=/runs")
    query = dict(parse_qsl(urlsplit(start.headers["location"]).query))
    assert {k: query[k] for k in ("response_type", "client_id", "redirect_uri", "scope",
                                  "code_challenge_method")} == {
        "response_type": "code", "client_id": CLIENT_ID,
        "redirect_uri": f"{BASE_URL}/login/oidc/callback", "scope": "openid email profile",
        "code_challenge_method": "S256"}
    assert len(query["state"]) >= 40 and len(query["nonce"]) >= 40
    pending = client.cookies.get("rd_oidc")
    assert pending is not None
    with capture_logs() as logs:
        callback = await provider_reply(client, "/runs")
        done = await client.get(callback)
    assert done.status_code == 200
    assert '<meta http-equiv="refresh" content="0;url=/runs">' in done.text
    assert "Signed in as ana." in done.text
    cookie = done.headers["set-cookie"]
    assert "rd_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" in cookie
    assert idp.token_requests[-1]["grant_type"] == "authorization_code"
    assert len(idp.token_requests[-1]["code_verifier"]) >= 43
    dashboard = await client.get("/")
    assert dashboard.status_code == 200
    assert '<span class="who">ana (Administrator)</span>' in dashboard.text
    login = [e for e in logs if e["event"] == "web_login"]
    assert [(e["username"], e["role"], e["method"], e["subject"]) for e in login] == [
        ("ana", "administrator", "oidc", "sub-ana")]


@pytest.mark.asyncio
async def test_a_verified_email_maps_to_its_admin(client: httpx.AsyncClient,
                                                  idp: IdentityProvider) -> None:
    """sam's entry names his email (any case); a verified email signs him in as a Site
    Manager of his tenant only; he has no password, so the form refuses him."""
    idp.user = {"sub": "google-123", "email": "sam@district.example", "email_verified": True}
    await client.get(await provider_reply(client))
    dashboard = await client.get("/")
    assert '<span class="who">sam (Site Manager)</span>' in dashboard.text
    assert (await client.get("/tenants/shelbyville")).status_code == 404
    client.cookies.clear()
    page = await client.get("/login")
    refused = await client.post("/login", data={"username": "sam", "password": "",
                                                "csrf_token": token_in(page.text)})
    assert refused.status_code == 401 and "Wrong username or password." in refused.text


@pytest.mark.asyncio
async def test_an_unmapped_or_unverified_user_is_refused_by_name(
        client: httpx.AsyncClient, idp: IdentityProvider) -> None:
    """Nobody's subject, or sam's email unverified: refused (403) with what to add to the
    config; no session."""
    idp.user = {"sub": "sub-stranger", "email": "eve@district.example",
                "email_verified": True}
    with capture_logs() as logs:
        page = await client.get(await provider_reply(client))
    assert page.status_code == 403
    assert message_of(page) == (
        "No console admin is set up for this Test District account (eve@district.example, "
        "subject sub-stranger). Ask an administrator to add oidc_subject = \"sub-stranger\" "
        "to your [[admins]] entry.")
    assert [e["subject"] for e in logs if e["event"] == "web_oidc_unmapped"] == ["sub-stranger"]
    idp.user = {"sub": "sub-sam", "email": "sam@district.example", "email_verified": False}
    page = await client.get(await provider_reply(client))
    assert page.status_code == 403 and "subject sub-sam" in message_of(page)
    assert "rd_session" not in client.cookies
    assert (await client.get("/")).status_code == 303


TOKEN_REFUSED = "The ID token from Test District was refused: {}. Nobody was signed in: " \
                "start again from the sign-in page."


@pytest.mark.asyncio
# Times are offsets from when the test runs, not from collection: a suite reaches this
# test many minutes after collecting it (an nbf "600 s ahead" at collection was past by then).
@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": "another-app"},
     "it was issued for another application (aud is not this console's client_id)"),
    ({"exp": -600, "iat": -900}, "it has expired"),
    ({"iss": "https://evil.example"},
     "it was issued by another provider (iss is not the configured issuer)"),
    ({"nonce": "not-this-one"}, "its nonce is not this sign-in's (a replayed token)"),
    ({"nbf": 600}, "it is not valid yet (nbf is in the future)"),
    ({"iat": 600}, "it is not valid yet (iat is in the future)"),
    ({"sub": None}, "it lacks the 'sub' claim"),
])
async def test_bad_id_tokens_are_refused(client: httpx.AsyncClient, idp: IdentityProvider,
                                         claims: dict[str, Any], reason: str) -> None:
    """A wrong audience, an expired token, another issuer, another nonce, a token not
    yet valid: 401 with the reason, logged, no session."""
    now = int(time.time())
    idp.claims = {name: now + value if name in ("exp", "iat", "nbf") else value
                  for name, value in claims.items()}
    with capture_logs() as logs:
        page = await client.get(await provider_reply(client))
    assert page.status_code == 401
    assert message_of(page) == TOKEN_REFUSED.format(reason)
    assert [e["detail"] for e in logs if e["event"] == "web_oidc_refused"] == [reason]
    assert "rd_session" not in client.cookies


@pytest.mark.asyncio
async def test_a_bad_signature_is_refused(client: httpx.AsyncClient,
                                          idp: IdentityProvider) -> None:
    """A token signed by a key the provider does not publish (same kid): refused, after
    the console re-read the JWKS once in case the provider rolled its keys."""
    idp.sign_with = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
    page = await client.get(await provider_reply(client))
    assert page.status_code == 401
    assert message_of(page) == TOKEN_REFUSED.format(
        "its signature does not verify against the provider's published keys")
    assert "rd_session" not in client.cookies


@pytest.mark.asyncio
async def test_missing_wrong_or_replayed_state_is_refused(client: httpx.AsyncClient) -> None:
    """No pending sign-in in this browser, a state that is not this browser's, and the
    same reply twice: each refused (400) before any code is exchanged."""
    callback = await provider_reply(client)
    pending = client.cookies.get("rd_oidc")
    assert pending is not None
    wrong = re.sub(r"state=[^&]+", "state=forged", callback)
    page = await client.get(wrong)
    assert page.status_code == 400
    assert message_of(page) == ("The sign-in reply does not match the sign-in this browser "
                                "began (its state differs): start again from the sign-in "
                                "page.")
    client.cookies.clear()
    page = await client.get(callback)
    assert page.status_code == 400
    assert message_of(page) == ("This browser has no sign-in waiting for this reply (it "
                                "expired, was already used, or began in another browser): "
                                "start again from the sign-in page.")
    callback = await provider_reply(client)
    pending = client.cookies.get("rd_oidc")
    assert (await client.get(callback)).status_code == 200
    client.cookies.clear()
    client.cookies.set("rd_oidc", pending or "", domain="console.test", path="/login/oidc")
    page = await client.get(callback)
    assert page.status_code == 400
    assert message_of(page) == ("This sign-in reply was already used: start again from the "
                                "sign-in page.")
    assert "rd_session" not in client.cookies


@pytest.mark.asyncio
async def test_a_provider_that_cannot_be_reached_gets_a_clear_page(
        console: Console, idp: IdentityProvider) -> None:
    """The issuer down: /login/oidc answers 502 with a sentence, never a traceback."""
    idp.server.shutdown()
    idp.server.server_close()
    transport = httpx.ASGITransport(app=build_app(console))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        page = await client.get("/login/oidc")
    assert page.status_code == 502
    assert message_of(page).startswith("Test District could not be asked for the sign-in "
                                       "settings (ConnectError: ")
    assert message_of(page).endswith("): try again in a minute, or sign in with a password")


@needs_chromium
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_in_a_real_browser_the_strict_session_cookie_survives_the_provider_redirect(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's chromium, the console on 127.0.0.1 under uvicorn and the IdP on
    localhost (another site): the provider's redirect back is cross-site, which would not
    carry the SameSite=Strict session cookie; the callback's page moves on by itself,
    and the browser lands on the page it asked for, signed in."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv(SECRET_ENV, SECRET)
    with IdentityProvider() as idp, socket.socket() as probe:
        idp.issuer = idp.issuer.replace("127.0.0.1", "localhost")
        idp.interactive = True
        probe.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{probe.getsockname()[1]}"
        probe.close()
        url = f"sqlite:///{tmp_path / 'console.db'}"
        admins = [a.model_dump() for a in make_settings(tmp_path, url).admins]
        admins[0] |= {"oidc_subject": "sub-ana"}
        settings = make_settings(tmp_path, url, admins=admins, web={
            "listen": "127.0.0.1:0", "base_url": base,
            "oidc": {"issuer": idp.issuer, "client_id": CLIENT_ID,
                     "client_secret_env": SECRET_ENV}})
        settings.state_dir.mkdir(parents=True)
        with open_store(settings.database_url) as store:
            clock = Clock()
            console = Console(settings=settings, store=store,
                              runner=Runner(settings, store, clock=clock, mailer=Sent()),
                              admins=list(settings.admins), clock=clock,
                              take=lambda *args: None)
            server = uvicorn.Server(uvicorn.Config(build_app(console), host="127.0.0.1",
                                                   port=int(base.rsplit(":", 1)[1]),
                                                   log_level="warning"))
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 10
                while not server.started and time.monotonic() < deadline:
                    time.sleep(0.05)
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
                    page = browser.new_page()
                    page.goto(f"{base}/login?next=/runs")
                    page.click("#sign-in-oidc")
                    page.click("#consent")
                    page.wait_for_url(f"{base}/runs", timeout=10_000)
                    assert page.locator(".who").inner_text() == "ana (Administrator)"
                    browser.close()
            finally:
                server.should_exit = True
                thread.join(10)


@pytest.mark.asyncio
async def test_a_refusal_at_the_provider_is_shown_in_its_words(
        client: httpx.AsyncClient, idp: IdentityProvider) -> None:
    """The provider answers the browser with ``error`` (the user cancelled, or is not
    assigned to the app): 401 with its error and description, and no code is exchanged."""
    start = await client.get("/login/oidc")
    state = dict(parse_qsl(urlsplit(start.headers["location"]).query))["state"]
    page = await client.get("/login/oidc/callback?" + urlencode({
        "state": state, "error": "access_denied",
        "error_description": "AADSTS50105: the user is not assigned to a role"}))
    assert page.status_code == 401
    assert message_of(page) == ("Test District did not sign you in (access_denied: AADSTS50105: "
                                "the user is not assigned to a role): start again from the "
                                "sign-in page.")
    assert idp.token_requests == []


@pytest.mark.asyncio
async def test_a_discovery_document_of_another_issuer_is_refused(
        client: httpx.AsyncClient, idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    """Discovery's issuer must be the configured one (OpenID Connect Discovery §4.3), as
    Entra's multi-tenant "common" document (issuer with {tenantid}) is not."""
    common = "https://login.microsoftonline.com/{tenantid}/v2.0"
    monkeypatch.setattr(idp, "discovery", lambda: {
        **IdentityProvider.discovery(idp), "issuer": common})
    page = await client.get("/login/oidc")
    assert page.status_code == 502
    assert message_of(page) == (
        f"Test District could not be asked for the sign-in settings (its issuer is "
        f"'{common}', not the configured '{idp.issuer}'): try again in a minute, or sign in "
        f"with a password")


@pytest.mark.asyncio
async def test_an_internal_failure_is_a_page_not_a_traceback(
        client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store failing as the session starts: 500 with a sentence and the log line."""
    import rosterdrop.web.oidc as oidc

    def broken(*args: object) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(oidc, "start_session", broken)
    with capture_logs() as logs:
        page = await client.get(await provider_reply(client))
    assert page.status_code == 500
    assert message_of(page) == ("The sign-in could not be completed (an internal error, "
                                "logged as web_oidc_failed): start again from the sign-in "
                                "page.")
    assert [e["error"] for e in logs if e["event"] == "web_oidc_failed"] == [
        "database is locked"]
