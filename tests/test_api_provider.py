"""The OneRoster provider: rosterdrop's own puller reads tenant A from it into tenant B
(1.1 and 1.2, over a real loopback listener) and the directories are equal; paging,
filters, sort, fields, nested routes, tokens, scopes and refusals, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select

from rosterdrop.config import ONEROSTER_SCOPES, Settings, parse_settings
from rosterdrop.outlets.oneroster.records import COLLECTIONS, all_records
from rosterdrop.passwords import hash_password
from rosterdrop.runs.runner import Runner
from rosterdrop.sources.oneroster.bundle import BundleWriter
from rosterdrop.sources.oneroster.puller import fetch_bundle
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.tables import DIRECTORY_TABLES
from rosterdrop.tools.sample import write_sample
from rosterdrop.web.app import build_app
from rosterdrop.web.console import Console
from rosterdrop.web.listener import WebListener

SECRET = "s3cret-of-the-lms"
CORE_11 = ONEROSTER_SCOPES["1.1"] + "roster-core.readonly"
CORE_12 = ONEROSTER_SCOPES["1.2"] + "roster-core.readonly"
PATHS = {"1.1": "ims/oneroster/v1p1", "1.2": "ims/oneroster/rostering/v1p2"}
STUDENTS = 120
IGNORED = {"tenant", "account_id", "created_at", "updated_at", "deactivated_at"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class World:
    settings: Settings
    store: Store
    runner: Runner
    clock: Clock
    app: Any
    tmp: Path


def make_settings(tmp_path: Path, backend_url: str) -> Settings:
    hashed = hash_password(SECRET)
    clients = [
        {"client_id": "lms", "secret_hash": hashed, "token_minutes": 5},
        {"client_id": "only11", "secret_hash": hashed, "scopes": [CORE_11]},
        {"client_id": "all", "secret_hash": hashed, "scopes": [
            ONEROSTER_SCOPES["1.2"] + "roster.readonly",
            ONEROSTER_SCOPES["1.1"] + "roster-demographics.readonly"]},
    ]
    tenant = {"account_domain": "d.example", "report_to": []}
    return parse_settings({
        "state_dir": str(tmp_path / "state"), "store": {"url": backend_url},
        "web": {"listen": "127.0.0.1:0"},
        "tenants": {"a": {**tenant, "api_clients": clients},
                    "b": {**tenant, "api_clients": [
                        {"client_id": "other", "secret_hash": hashed}]}},
    })


@pytest.fixture
def world(tmp_path: Path, backend_url: str) -> Iterator[World]:
    settings = make_settings(tmp_path, backend_url)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as store:
        clock = Clock()
        runner = Runner(settings, store, clock=clock)
        export = tmp_path / "export.zip"
        write_sample(export, layout="oneroster-1.1", students=STUDENTS, seed=5)
        run = runner.sync("a", export, source="cli")
        assert run.applied
        console = Console(settings, store, runner, [], clock, lambda *args: None)
        yield World(settings, store, runner, clock, build_app(console), tmp_path)


def directory(store: Store, tenant: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    with store.read() as conn:
        for kind, table in DIRECTORY_TABLES.items():
            columns = [c for c in table.c if c.name not in IGNORED]
            rows = conn.execute(select(*columns).where(table.c.tenant == tenant)).mappings()
            out[kind] = sorted((dict(r) for r in rows), key=repr)
    return out


def assert_same_directory(store: Store) -> None:
    a, b = directory(store, "a"), directory(store, "b")
    # The managed account name is the API's username, which the puller reads as the
    # SIS username: B's sis_username is A's account; every other column is equal.
    accounts = {p["person_id"]: p["account"] for p in a["people"]}
    assert all(p["sis_username"] == accounts[p["person_id"]] for p in b["people"])
    # B makes its own account names by the same rule; which of two namesakes gets the
    # ".1" follows the order each upload lists them in (A's export, B's sorted pull).
    assert sorted(accounts.values()) == sorted(p["account"] for p in b["people"])
    for side in (a, b):
        for person in side["people"]:
            person.pop("sis_username")
            person["account"] = re.sub(r"\.\d+@", "@", person["account"])
    assert len(a["people"]) == STUDENTS + len([p for p in a["people"] if p["role"] == "staff"])
    for kind in a:
        assert len(a[kind]) == len(b[kind]), kind
        for mine, theirs in zip(a[kind], b[kind], strict=True):
            assert mine == theirs, kind


async def get_token(http: httpx.AsyncClient, *, tenant: str = "a", client_id: str = "lms",
                    secret: str = SECRET, basic: bool = True, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", **form}
    if basic:
        auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return await http.post(f"/t/{tenant}/oauth/token", data=data,
                               headers={"Authorization": f"Basic {auth}"})
    return await http.post(f"/t/{tenant}/oauth/token",
                           data={**data, "client_id": client_id, "client_secret": secret})


@pytest_asyncio.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as client:
        answer = await get_token(client)
        assert answer.status_code == 200, answer.text
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def source_of(base: str, version: str, secret_file: Path, page_size: int) -> Any:
    settings = parse_settings({"tenants": {"b": {"source": {
        "type": "oneroster-api", "base_url": f"{base}/t/a/{PATHS[version]}",
        "token_url": f"{base}/t/a/oauth/token", "client_id": "lms",
        "client_secret_file": str(secret_file), "page_size": page_size,
        "rate_limit_per_second": 0, "retries": 0,
        "scope": CORE_11 if version == "1.1" else CORE_12}}}})
    return settings.tenants["b"].source


# --- the round trip ---------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("version", ["1.1", "1.2"])
async def test_puller_reads_a_into_b_and_the_directories_are_equal(
        world: World, version: str) -> None:
    """Tenant A (a real upload, applied by the Runner) served over a loopback listener,
    pulled by rosterdrop's own puller in pages of 50 and synced into tenant B: B's
    directory is A's (only the SIS username becomes A's managed account name)."""
    listener = WebListener("127.0.0.1:0", world.app)
    await listener.start()
    try:
        secret_file = world.tmp / "secret"
        secret_file.write_text(SECRET + "\n")
        source = source_of(f"http://{listener.address}", version, secret_file, 50)
        pulled = await asyncio.to_thread(
            fetch_bundle, "b", source, SECRET, world.tmp / f"pulled-{version}.zip")
    finally:
        await listener.close()
    assert pulled.records["users"] > STUDENTS
    assert pulled.notes == []
    run = world.runner.sync("b", pulled.path, source="oneroster-api")
    assert run.applied and run.counts["students"] == STUDENTS
    assert_same_directory(world.store)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_all_records_make_a_bundle_the_pipeline_reads_back(world: World, version: str) -> None:
    """The shared producer: all_records fed to BundleWriter makes a bundle that syncs
    tenant B into A's directory (the CSV push reuses exactly this)."""
    writer = BundleWriter(world.tmp / f"parts-{version}", version)
    for collection in COLLECTIONS:
        for batch in all_records(world.store, "a", collection, version, batch=37):
            assert len(batch) <= 37
            writer.add(collection, batch)
    bundle = world.tmp / f"bundle-{version}.zip"
    writer.write_zip(bundle, system_name="rosterdrop", system_code="a")
    assert world.runner.sync("b", bundle, source="cli").applied
    assert_same_directory(world.store)


# --- paging, filters, sort, fields, nested ---------------------------------------------------


def base(version: str = "1.1") -> str:
    return f"/t/a/{PATHS[version]}"


@pytest.mark.asyncio
async def test_paging_has_total_and_links_and_covers_every_record_once(
        http: httpx.AsyncClient) -> None:
    """limit/offset pages: X-Total-Count, Link next/prev/first/last; following next
    yields every enrollment exactly once."""
    first = await http.get(f"{base()}/enrollments", params={"limit": 100})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["cache-control"] == "no-store"
    total = int(first.headers["X-Total-Count"])
    assert total > 300
    links = httpx.Response(200, headers={"Link": first.headers["Link"]}).links
    assert set(links) == {"next", "first", "last"}
    assert "offset=100" in links["next"]["url"]
    last_offset = (total - 1) // 100 * 100
    assert f"offset={last_offset}" in links["last"]["url"]
    seen: list[str] = []
    url: str | None = f"{base()}/enrollments?limit=100"
    while url:
        page = await http.get(url)
        seen += [r["sourcedId"] for r in page.json()["enrollments"]]
        url = httpx.Response(200, headers={"Link": page.headers["Link"]}).links.get(
            "next", {}).get("url")
    assert len(seen) == total == len(set(seen))
    middle = await http.get(f"{base()}/enrollments", params={"limit": 100, "offset": 100})
    assert "prev" in middle.links
    assert [r["sourcedId"] for r in middle.json()["enrollments"]] == seen[100:200]
    # A query never seen before: the page is an OFFSET into the index, the same rows.
    jumped = await http.get(f"{base()}/enrollments", params={
        "limit": 100, "offset": total - 150, "filter": "status='active'"})
    assert [r["sourcedId"] for r in jumped.json()["enrollments"]] == seen[total - 150:][:100]
    beyond = await http.get(f"{base()}/enrollments", params={"offset": total + 5})
    assert beyond.json() == {"enrollments": []}


def quoted(value: str) -> str:
    return value.replace("'", "''")


@pytest.mark.asyncio
async def test_filters_and_or_and_date_last_modified(http: httpx.AsyncClient,
                                                     world: World) -> None:
    """=, !=, ~, AND, OR and dateLastModified> filter in SQL; the total is the filtered one."""
    users = (await http.get(f"{base()}/users", params={"limit": 1000})).json()["users"]
    one = next(u for u in users if "'" in u["familyName"] + u["givenName"])  # O'Brien
    got = await http.get(f"{base()}/users", params={
        "filter": f"familyName='{quoted(one['familyName'])}' AND "
                  f"givenName='{quoted(one['givenName'])}'"})
    assert [u["sourcedId"] for u in got.json()["users"]] == [
        u["sourcedId"] for u in users
        if (u["familyName"], u["givenName"]) == (one["familyName"], one["givenName"])]
    either = await http.get(f"{base()}/users", params={
        "filter": f"sourcedId='{users[0]['sourcedId']}' OR sourcedId='{users[5]['sourcedId']}'"})
    assert int(either.headers["X-Total-Count"]) == 2
    teachers = await http.get(f"{base()}/users", params={"filter": "role!='student'",
                                                          "limit": 1000})
    assert {u["role"] for u in teachers.json()["users"]} == {"teacher"}
    assert int(teachers.headers["X-Total-Count"]) == len(users) - STUDENTS
    contains = await http.get(f"{base()}/users", params={"filter": "username~'@D.EXAMPLE'"})
    assert int(contains.headers["X-Total-Count"]) == len(users)
    modified = max(u["dateLastModified"] for u in users)
    newer = await http.get(f"{base()}/users",
                           params={"filter": f"dateLastModified>'{modified}'"})
    assert newer.json()["users"] == []
    older = await http.get(f"{base()}/classes",
                           params={"filter": "dateLastModified>='2000-01-01'"})
    assert int(older.headers["X-Total-Count"]) > 0


@pytest.mark.asyncio
async def test_sort_fields_and_one_record(http: httpx.AsyncClient) -> None:
    """sort/orderBy order by the field; fields selects; GET /users/{id} answers one user
    with the managed account as username and a rosterdrop userIds entry."""
    answer = await http.get(f"{base('1.2')}/users", params={
        "sort": "familyName", "orderBy": "desc", "fields": "sourcedId,familyName,username",
        "limit": 1000})
    users = answer.json()["users"]
    names = [u["familyName"] for u in users]
    assert names == sorted(names, reverse=True)
    assert all(set(u) == {"sourcedId", "familyName", "username"} for u in users)
    sorted_enrollments = await http.get(f"{base()}/enrollments",
                                        params={"sort": "sourcedId", "limit": 1000})
    ids = [e["sourcedId"] for e in sorted_enrollments.json()["enrollments"]]
    assert ids == sorted(ids)
    one = (await http.get(f"{base('1.2')}/users/{users[0]['sourcedId']}")).json()["user"]
    assert one["username"] == users[0]["username"]
    assert {"type": "rosterdrop", "identifier": one["username"]} in one["userIds"]
    assert one["roles"][0]["roleType"] == "primary"
    missing = await http.get(f"{base('1.2')}/users/nobody")
    assert missing.status_code == 404
    assert missing.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0][
        "imsx_codeMinorFieldValue"] == "unknownobject"


@pytest.mark.asyncio
async def test_nested_routes(http: httpx.AsyncClient) -> None:
    """Classes of a school and a term, students and teachers of a class, a student's
    classes, a school's students; an unknown parent is 404."""
    classes = (await http.get(f"{base()}/classes", params={"limit": 1000})).json()["classes"]
    enrollments = (await http.get(f"{base()}/enrollments",
                                  params={"limit": 5000})).json()["enrollments"]
    klass = classes[0]
    school = klass["school"]["sourcedId"]
    at_school = (await http.get(f"{base()}/schools/{school}/classes",
                                params={"limit": 1000})).json()["classes"]
    assert {c["sourcedId"] for c in at_school} == {
        c["sourcedId"] for c in classes if c["school"]["sourcedId"] == school}
    term = klass["terms"][0]["sourcedId"]
    in_term = (await http.get(f"{base()}/terms/{term}/classes", params={"limit": 1000}))
    assert klass["sourcedId"] in {c["sourcedId"] for c in in_term.json()["classes"]}
    students = (await http.get(f"{base()}/classes/{klass['sourcedId']}/students")).json()
    assert {u["sourcedId"] for u in students["users"]} == {
        e["user"]["sourcedId"] for e in enrollments
        if e["class"]["sourcedId"] == klass["sourcedId"] and e["role"] == "student"}
    teachers = (await http.get(f"{base()}/classes/{klass['sourcedId']}/teachers")).json()
    assert teachers["users"] and {u["role"] for u in teachers["users"]} == {"teacher"}
    student = students["users"][0]["sourcedId"]
    theirs = (await http.get(f"{base()}/students/{student}/classes")).json()["classes"]
    assert klass["sourcedId"] in {c["sourcedId"] for c in theirs}
    pupils = await http.get(f"{base()}/schools/{school}/students", params={"limit": 1000})
    assert all(u["role"] == "student" and school in {o["sourcedId"] for o in u["orgs"]}
               for u in pupils.json()["users"])
    assert int(pupils.headers["X-Total-Count"]) > 0
    of_class = await http.get(f"{base()}/classes/{klass['sourcedId']}/enrollments")
    assert int(of_class.headers["X-Total-Count"]) == len(
        [e for e in enrollments if e["class"]["sourcedId"] == klass["sourcedId"]])
    assert (await http.get(f"{base()}/schools/nowhere/classes")).status_code == 404
    sessions = (await http.get(f"{base()}/academicSessions")).json()["academicSessions"]
    assert {s["type"] for s in sessions} == {"schoolYear", "term"}
    demographics = await http.get(f"{base()}/demographics")
    assert demographics.status_code == 403  # the lms client has the core scope only


# --- refusals ----------------------------------------------------------------------------------


def minor(answer: httpx.Response, version: str = "1.1") -> str:
    body = answer.json()
    info = body["statusInfoSet"][0] if version == "1.1" else body
    assert info["imsx_codeMajor"] == "failure"
    return str(info["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"])


@pytest.mark.asyncio
async def test_bad_queries_are_status_info_400(http: httpx.AsyncClient) -> None:
    """An unknown or malformed filter, selection or sort is a 400 with the binding's
    envelope (1.1 statusInfoSet, 1.2 one object)."""
    cases = [
        ({"filter": "shoeSize='9'"}, "invalid_filter_field"),
        ({"filter": "familyName=Smith"}, "invalid_filter_field"),
        ({"filter": "familyName='Smith' XOR givenName='a'"}, "invalid_filter_field"),
        ({"filter": "dateLastModified>'yesterday'"}, "invalid_filter_field"),
        ({"fields": "sourcedId,shoeSize"}, "invalid_selection_field"),
        ({"sort": "shoeSize"}, "invalid_sort_field"),
        ({"limit": "-1"}, "invaliddata"),
    ]
    for params, code in cases:
        for version in ("1.1", "1.2"):
            answer = await http.get(f"{base(version)}/users", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert minor(answer, version) == code, params
    assert (await http.get(f"{base()}/shoes")).status_code == 404


@pytest.mark.asyncio
async def test_tokens_scopes_and_tenants(http: httpx.AsyncClient, world: World) -> None:
    """Wrong secret and unknown client: 401 invalid_client; a token for A is refused on
    B; a token without the 1.2 scope is 403 on 1.2 and fine on 1.1; no token and an
    expired token are 401; form credentials work like Basic."""
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as bare:
        wrong = await get_token(bare, secret="guess")
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        assert (await get_token(bare, client_id="nobody")).status_code == 401
        assert (await get_token(bare, tenant="b")).status_code == 401  # lms is A's client
        bad_scope = await get_token(bare, scope=ONEROSTER_SCOPES["1.2"] + "roster.readonly")
        assert bad_scope.json()["error"] == "invalid_scope"
        narrow = await get_token(bare, client_id="only11", basic=False)
        assert narrow.status_code == 200 and narrow.json()["scope"] == CORE_11
        headers = {"Authorization": f"Bearer {narrow.json()['access_token']}"}
        assert (await bare.get(f"{base('1.1')}/orgs", headers=headers)).status_code == 200
        refused = await bare.get(f"{base('1.2')}/orgs", headers=headers)
        assert refused.status_code == 403 and minor(refused, "1.2") == "forbidden"
        none = await bare.get(f"{base()}/orgs")
        assert none.status_code == 401 and minor(none) == "unauthorisedrequest"
        assert none.headers["www-authenticate"].startswith("Bearer")
    on_b = await http.get("/t/b/ims/oneroster/v1p1/orgs")
    assert on_b.status_code == 401 and minor(on_b) == "unauthorisedrequest"
    assert (await http.get(f"{base()}/orgs")).status_code == 200
    world.clock.now += timedelta(minutes=6)  # lms tokens last 5 minutes
    expired = await http.get(f"{base()}/orgs")
    assert expired.status_code == 401 and minor(expired) == "unauthorisedrequest"


@pytest.mark.asyncio
async def test_deactivated_people_and_demographics(world: World) -> None:
    """A deactivated person is listed as tobedeleted (enabledUser false) and left out by
    status='active'; demographics, with its scope, is an empty list and 404 per id;
    roster.readonly covers the core collections of its version."""
    from sqlalchemy import update

    from rosterdrop.store.tables import PEOPLE

    with world.store.write() as conn:
        person = conn.execute(select(PEOPLE.c.person_id).where(
            PEOPLE.c.tenant == "a", PEOPLE.c.role == "student").limit(1)).scalar_one()
        conn.execute(update(PEOPLE).where(PEOPLE.c.tenant == "a",
                                          PEOPLE.c.person_id == person)
                     .values(status="inactive"))
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as http:
        answer = await get_token(http, client_id="all")
        http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        gone = (await http.get(f"{base('1.2')}/users/{person}")).json()["user"]
        assert (gone["status"], gone["enabledUser"]) == ("tobedeleted", False)
        active = await http.get(f"{base('1.2')}/students", params={
            "filter": "status='active'", "limit": 1000})
        assert int(active.headers["X-Total-Count"]) == STUDENTS - 1
        assert person not in {u["sourcedId"] for u in active.json()["users"]}
        empty = await http.get(f"{base('1.1')}/demographics")
        assert empty.status_code == 200 and empty.json() == {"demographics": []}
        assert empty.headers["X-Total-Count"] == "0"
        assert (await http.get(f"{base('1.1')}/demographics/{person}")).status_code == 404
        assert (await http.get(f"{base('1.1')}/users")).status_code == 403  # no 1.1 core


@pytest.mark.asyncio
async def test_wrong_secrets_ban_the_address(world: World) -> None:
    """Wrong client secrets count by the [sftp.ban] rules: after `failures` of them the
    address is refused for a while (429, Retry-After), the right secret included."""
    failures = world.settings.sftp.ban.failures
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://provider") as bare:
        for _ in range(failures):
            assert (await get_token(bare, secret="guess")).status_code == 401
        banned = await get_token(bare)
        assert banned.status_code == 429 and int(banned.headers["retry-after"]) > 0
        assert banned.json()["error"] == "temporarily_unavailable"


@pytest.mark.asyncio
async def test_every_request_is_logged_with_its_client(http: httpx.AsyncClient) -> None:
    """One api_request line per request, naming the client, the status and the records
    sent; a refused request is logged too, with no client to name."""
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        await http.get(f"{base()}/schools")
        await http.get(f"{base()}/users", params={"filter": "nonsense"})
        await http.get(f"{base()}/users", headers={"Authorization": "Bearer wrong"})
    requests = [e for e in logs if e["event"] == "api_request"]
    assert [(e["client_id"], e["status"]) for e in requests] == [
        ("lms", 200), ("lms", 400), ("", 401)]
    assert requests[0]["records"] > 0 and requests[0]["tenant"] == "a"
    assert all(e["path"].startswith("/t/a/ims/oneroster/") for e in requests)
