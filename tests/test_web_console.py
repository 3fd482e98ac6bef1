"""The console over HTTP (httpx's ASGI transport, a real Runner on a real store):
sign-in, sessions and their expiry, CSRF, roles, security headers, health routes.
Fixtures here are shared by the other test_web_* files."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from test_run_lifecycle import Sent
from test_sync_runner import district, upload

from rosterdrop.config import Settings, parse_settings
from rosterdrop.daemon.intake import Intake
from rosterdrop.daemon.resync import queue_last_upload
from rosterdrop.passwords import hash_password
from rosterdrop.paths import StatePaths
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.jobs import JobQueue
from rosterdrop.web.app import CSP, build_app
from rosterdrop.web.console import Console, console_admins
from rosterdrop.web.roles import GRANTS, Permission, may, visible

PASSWORD = "correct horse battery"
ROLES = {"ana": ("administrator", []), "sam": ("site_manager", ["springfield"]),
         "pam": ("people_manager", ["springfield"]), "bob": ("site_manager", ["shelbyville"])}


class Clock:
    """The console's and the runner's time: ticks a second a call, can jump."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def make_settings(tmp_path: Path, backend_url: str, **top: Any) -> Settings:
    hashed = hash_password(PASSWORD)
    tenant = {"report_to": ["admin@x.example"], "account_domain": "x.example",
              "guard": {"max_deactivate_percent": 20, "min_population": 5}}
    return parse_settings({
        "state_dir": str(tmp_path / "state"), "store": {"url": backend_url},
        "web": {"listen": "127.0.0.1:0", "session_minutes": 30},
        "sftp": {"ban": {"failures": 3, "window_seconds": 60, "duration_seconds": 600}},
        "tenants": {"springfield": {"name": "Springfield", **tenant,
                                    "accounts": [{"username": "sis-spring"}]},
                    "shelbyville": {"name": "Shelbyville", **tenant}},
        "admins": [{"username": name, "password_hash": hashed, "role": role,
                    "tenants": tenants} for name, (role, tenants) in ROLES.items()],
        **top,
    })


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path, backend_url: str) -> Settings:
    return make_settings(tmp_path, backend_url)


@pytest.fixture(name="store")
def store_fixture(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened


@pytest.fixture(name="clock")
def clock_fixture() -> Clock:
    return Clock()


@pytest.fixture(name="runner")
def runner_fixture(settings: Settings, store: Store, clock: Clock) -> Runner:
    return Runner(settings, store, clock=clock, mailer=Sent())


@pytest.fixture(name="console")
def console_fixture(settings: Settings, store: Store, runner: Runner, clock: Clock) -> Console:
    paths = StatePaths.of(settings)
    intake = Intake(paths, JobQueue(store), list(settings.tenants), clock)

    def sync_now(tenant: str) -> str:
        job, name = queue_last_upload(settings, store, tenant)
        return f"Queued {name} again (job {job})."

    return Console(settings=settings, store=store, runner=runner,
                   admins=console_admins(settings, paths), clock=clock, take=intake.take,
                   sync_now=sync_now, ready=lambda: [], scrape=lambda: b"# metrics\n",
                   host_key_fingerprint=lambda: "SHA256:test-fingerprint")


@pytest_asyncio.fixture(name="client")
async def client_fixture(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(console))
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as c:
        yield c


def token_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, username: str,
                  password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/login")
    return await client.post("/login", data={"username": username, "password": password,
                                             "csrf_token": token_in(page.text)})


async def csrf(client: httpx.AsyncClient, path: str = "/") -> str:
    """The session's CSRF token, read off a page as a browser's form has it."""
    return token_in((await client.get(path)).text)


def held_run(runner: Runner, tmp_path: Path, tenant: str = "springfield") -> str:
    """A run the change threshold held: 10 students applied, then an upload of 4."""
    runner.sync(tenant, upload(tmp_path, district(10), f"{tenant}-full.zip"), source="sftp")
    held = runner.sync(tenant, upload(tmp_path, district(4), f"{tenant}-small.zip"),
                       source="sftp")
    assert held.status.value == "held"
    return held.run_id


# --- pure parts -------------------------------------------------------------------------

def test_the_permission_table(settings: Settings) -> None:
    """Administrator and site manager act; a people manager only reads; nobody sees a
    tenant that is not theirs; an empty tenant list is every tenant."""
    admins = {a.username: a for a in settings.admins}
    assert GRANTS["people_manager"] == {Permission.READ}
    assert may(admins["ana"], Permission.ACT, "shelbyville")
    assert may(admins["sam"], Permission.ACT, "springfield")
    assert may(admins["sam"], Permission.SETTINGS, "springfield")
    assert not may(admins["sam"], Permission.READ, "shelbyville")
    assert may(admins["pam"], Permission.READ, "springfield")
    assert not may(admins["pam"], Permission.ACT, "springfield")
    assert not may(admins["pam"], Permission.SETTINGS, "springfield")
    assert visible(admins["bob"], settings.tenants) == ["shelbyville"]
    assert visible(admins["ana"], settings.tenants) == ["springfield", "shelbyville"]


def test_csrf_tokens_and_paging_maths() -> None:
    """Tokens match only when equal and non-empty; pages clamp; cursors round-trip and
    junk is the first page."""
    from rosterdrop.web.csrf import tokens_match
    from rosterdrop.web.paging import Page, RunKey, decode_cursor, encode_cursor

    assert tokens_match("abc", "abc") and not tokens_match("abc", "abd")
    assert not tokens_match("", "") and not tokens_match("abc", None)
    page = Page.of("3", 50, 1_000_000)
    assert (page.offset, page.pages, page.previous, page.next) == (100, 20_000, 2, 4)
    assert Page.of("999999", 50, 120).number == 3 and Page.of("x", 50, 120).number == 1
    assert Page.of(None, 50, 0).pages == 1 and Page.of("-4", 50, 10).number == 1
    key = RunKey(datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC), "20261123-020005-ab12cd34")
    assert decode_cursor(encode_cursor(key)) == key
    assert decode_cursor("not-a-cursor") is None and decode_cursor("") is None


# --- sign-in and sessions ---------------------------------------------------------------

@pytest.mark.asyncio
async def test_pages_redirect_to_sign_in_and_other_requests_get_401(
        client: httpx.AsyncClient) -> None:
    """No session: a page is a 303 to /login (keeping where it was going); a POST is 401."""
    for path in ("/", "/runs?tenant=springfield", "/people", "/upload", "/tenants/springfield",
                 "/runs/x"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=%2F")
    for path in ("/runs/x/approve", "/runs/x/discard", "/upload", "/tenants/springfield/sync-now",
                 "/logout"):
        assert (await client.post(path, data={"csrf_token": "x"})).status_code == 401, path


@pytest.mark.asyncio
async def test_sign_in_sets_a_strict_httponly_session_and_sign_out_ends_it(
        client: httpx.AsyncClient) -> None:
    """A good password: 303 to where the admin was going, a session cookie HttpOnly and
    SameSite=Strict (not Secure on http); sign-out deletes the session on the server."""
    page = await client.get("/login?next=/runs")
    response = await client.post("/login", data={
        "username": "ana", "password": PASSWORD, "csrf_token": token_in(page.text),
        "next": "/runs"})
    assert response.status_code == 303 and response.headers["location"] == "/runs"
    cookie = next(v for k, v in response.headers.multi_items()
                  if k == "set-cookie" and v.startswith("rd_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    stolen = client.cookies["rd_session"]
    home = await client.get("/")
    assert home.status_code == 200 and "ana (Administrator)" in home.text
    out = await client.post("/logout", data={"csrf_token": token_in(home.text)})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    client.cookies.set("rd_session", stolen)  # the old cookie, replayed
    assert (await client.get("/")).status_code == 303


@pytest.mark.asyncio
async def test_https_base_url_makes_the_cookie_secure(
        tmp_path: Path, backend_url: str, store: Store, clock: Clock) -> None:
    """With web.base_url https://…, the session cookie is also Secure."""
    settings = make_settings(tmp_path, backend_url,
                             web={"listen": "127.0.0.1:0", "base_url": "https://rd.example"})
    console = Console(settings=settings, store=store, runner=Runner(settings, store),
                      admins=list(settings.admins), clock=clock, take=lambda *a: None)
    transport = httpx.ASGITransport(app=build_app(console))
    async with httpx.AsyncClient(transport=transport, base_url="https://rd.example") as c:
        response = await sign_in(c, "ana")
    cookie = next(v for k, v in response.headers.multi_items()
                  if k == "set-cookie" and v.startswith("rd_session="))
    assert "Secure" in cookie


@pytest.mark.asyncio
async def test_a_session_ends_after_session_minutes(client: httpx.AsyncClient,
                                                    clock: Clock) -> None:
    """The server decides: 29 minutes on, the session holds; past 30, it is gone."""
    await sign_in(client, "sam")
    clock.now += timedelta(minutes=29)
    assert (await client.get("/")).status_code == 200
    clock.now += timedelta(minutes=2)
    response = await client.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=%2F"
    assert (await client.post("/tenants/springfield/pause",
                              data={"csrf_token": "x"})).status_code == 401


@pytest.mark.asyncio
async def test_sign_in_without_its_csrf_token_is_refused(client: httpx.AsyncClient) -> None:
    """A sign-in form posted from elsewhere (no token, or not the cookie's) is a 403."""
    assert (await client.post("/login", data={"username": "ana",
                                              "password": PASSWORD})).status_code == 403
    await client.get("/login")
    refused = await client.post("/login", data={"username": "ana", "password": PASSWORD,
                                                "csrf_token": "forged"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert "rd_session" not in client.cookies


@pytest.mark.asyncio
async def test_failed_sign_ins_ban_the_address_like_sftp_logins(
        client: httpx.AsyncClient) -> None:
    """Wrong passwords are 401 with one message for a wrong user or password alike; the
    third failure in the window ([sftp.ban] failures = 3) bans the address: even the
    right password is then refused (429, Retry-After) without being checked."""
    first = await sign_in(client, "ana", "wrong")
    assert first.status_code == 401 and "Wrong username or password." in first.text
    unknown = await sign_in(client, "nobody", "wrong")
    assert unknown.status_code == 401 and "Wrong username or password." in unknown.text
    assert (await sign_in(client, "ana", "wrong")).status_code == 401
    banned = await sign_in(client, "ana")
    assert banned.status_code == 429
    assert "Too many failed sign-ins from this address" in banned.text
    assert int(banned.headers["retry-after"]) > 500
    assert "rd_session" not in client.cookies


@pytest.mark.asyncio
async def test_state_changes_without_the_session_csrf_token_are_403(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path) -> None:
    """Signed in, but the form lacks the session's token (or has another): 403 and
    nothing happens; with it, the same request works."""
    run_id = held_run(runner, tmp_path)
    await sign_in(client, "ana")
    for data in ({}, {"csrf_token": "forged"}):
        for path in (f"/runs/{run_id}/discard", "/tenants/springfield/pause",
                     "/people/springfield/P1/reset", "/logout"):
            response = await client.post(path, data=data)
            assert response.status_code == 403, (path, data)
            assert "CSRF token is missing or out of date" in response.text or path == "/logout"
    assert (await client.get(f"/runs/{run_id}")).text.count('id="run-status" class="status-held"')
    token = await csrf(client)
    assert (await client.post("/tenants/springfield/pause",
                              data={"csrf_token": token})).status_code == 303


@pytest.mark.asyncio
async def test_security_headers_on_every_answer(client: httpx.AsyncClient) -> None:
    """A strict CSP (self only, no inline script), no framing, no sniffing, a referrer
    policy, pages never cached; the one stylesheet is our own."""
    for path in ("/login", "/healthz", "/nope"):
        response = await client.get(path)
        assert response.headers["content-security-policy"] == CSP, path
        assert "default-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert "unsafe-inline" not in CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["server"] == "rosterdrop"
    login = await client.get("/login")
    assert login.headers["cache-control"] == "no-store"
    # Scripts only from the console itself, never inline (the CSP would refuse those).
    assert re.findall(r"<script[^>]*>", login.text) == ['<script src="/console.js" defer>']
    assert 'href="/console.css"' in login.text
    css = await client.get("/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    missing = await client.get("/nope")
    assert missing.status_code == 404 and "no page /nope" in missing.text


@pytest.mark.asyncio
async def test_health_routes_need_no_session(client: httpx.AsyncClient) -> None:
    """/healthz, /readyz and /metrics answer without signing in."""
    assert (await client.get("/healthz")).text == "ok\n"
    assert (await client.get("/readyz")).text == "ready\n"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and metrics.text == "# metrics\n"


def test_first_admin_password_is_generated_once_0600(tmp_path: Path) -> None:
    """No [[admins]]: one administrator 'admin' whose password is made once in
    state_dir/admin-password (0600) and kept; configured admins replace it."""
    from rosterdrop.passwords import verify_password

    settings = parse_settings({"state_dir": str(tmp_path / "state"),
                               "tenants": {"demo": {}}})
    paths = StatePaths.of(settings)
    paths.root.mkdir(parents=True)
    [first] = console_admins(settings, paths)
    file = paths.root / "admin-password"
    assert (first.username, first.role, first.tenants) == ("admin", "administrator", [])
    assert file.stat().st_mode & 0o777 == 0o600
    password = file.read_text().strip()
    assert len(password) >= 20 and verify_password(first.password_hash, password)
    [again] = console_admins(settings, paths)
    assert verify_password(again.password_hash, password)
    configured = make_settings(tmp_path, "sqlite://")
    assert [a.username for a in console_admins(configured, paths)] == list(ROLES)
