"""The OneRoster REST client against a loopback server: paging, both auth styles, faults."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from oneroster_server import TOKEN_PATH, OneRosterServer, load_dataset, serving

from rosterdrop.config import OneRosterSource, parse_settings
from rosterdrop.errors import SourceError
from rosterdrop.sources.oneroster.auth import (
    hmac_sha1_signature,
    oauth1_authorization,
    signature_base_string,
)
from rosterdrop.sources.oneroster.client import OneRosterClient, next_link, retry_after
from rosterdrop.tools.sample import write_sample


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    path = tmp_path_factory.mktemp("api") / "s.zip"
    write_sample(path, layout="oneroster-1.1", students=150, seed=4)
    return load_dataset(path, "1.1")


def source_of(api: OneRosterServer, **overrides: Any) -> OneRosterSource:
    table = api.source(**overrides)
    source = parse_settings({"tenants": {"t": {"source": table}}}).tenants["t"].source
    assert source is not None
    return source


class Sleeps:
    """An injected sleep: records the pauses instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client_of(api: OneRosterServer, sleeps: Sleeps | None = None, secret: str | None = None,
              **overrides: Any) -> OneRosterClient:
    return OneRosterClient(source_of(api, **overrides), secret or api.secret, tenant="t",
                           sleep=sleeps or Sleeps(), backoff=0.01)


@pytest.fixture
def api(dataset: dict[str, list[dict[str, Any]]]) -> Iterator[OneRosterServer]:
    with serving(OneRosterServer(dataset, max_limit=40)) as server:
        yield server
    assert server.methods() <= {"GET", "POST"}
    assert all(seen.path == TOKEN_PATH for seen in server.requests if seen.method == "POST")


def test_oauth2_pages_through_capped_pages_with_one_token(api: OneRosterServer) -> None:
    """Pages capped by the server (40 < page_size) are all read; one token serves them all."""
    with client_of(api, page_size=100) as client:
        users = list(client.records("users"))
        enrollments = list(client.records("enrollments"))
    assert [u["sourcedId"] for u in users] == [u["sourcedId"] for u in api.data["users"]]
    assert len(enrollments) == len(api.data["enrollments"])
    assert sum(1 for s in api.requests if s.method == "POST") == 1
    pages = [s for s in api.requests if s.path.endswith("/users")]
    assert len(pages) == -(-len(users) // 40)
    assert all(s.headers["Authorization"].startswith("Bearer ") for s in pages)


@pytest.mark.parametrize(("total", "link"), [(True, False), (False, True), (False, False)])
def test_paging_with_or_without_hints(dataset: dict[str, list[dict[str, Any]]], total: bool,
                                      link: bool) -> None:
    """X-Total-Count alone, Link alone, or neither (read until an empty page): all records."""
    with serving(OneRosterServer(dataset, max_limit=30, send_total=total,
                                 send_link=link)) as api, client_of(api, page_size=50) as client:
        users = list(client.records("users"))
    assert len(users) == len(dataset["users"])
    assert len({u["sourcedId"] for u in users}) == len(users)
    pages = [s for s in api.requests if s.path.endswith("/users")]
    expected = -(-len(users) // 30) + (0 if total or link else 1)
    assert len(pages) == expected


def test_oauth1_signatures_verified_by_the_server(dataset: dict[str, list[dict[str, Any]]]
                                                  ) -> None:
    """OAuth 1 HMAC-SHA1: every request carries a fresh, valid signature; no POST at all."""
    with serving(OneRosterServer(dataset, auth="oauth1", max_limit=60)) as api:
        with client_of(api, page_size=60) as client:
            classes = list(client.records("classes"))
        assert len(classes) == len(dataset["classes"])
        assert api.auth_failures == []
        assert api.methods() == {"GET"}
        assert len(api.nonces) == len(api.requests)
        with client_of(api, secret="wrong") as client, \
                pytest.raises(SourceError, match=r"GET /ims/oneroster/v1p1/orgs\?limit=1000&"
                              r"offset=0: HTTP 401; check client_id") as caught:
            list(client.records("orgs"))
        assert caught.value.reason == "refused"
        assert api.auth_failures == ["bad signature"]


def test_oauth1_signature_matches_rfc5849_example() -> None:
    """The signing functions reproduce the worked example of RFC 5849 section 1.2."""
    params = [("oauth_consumer_key", "dpf43f3p2l4k3l03"), ("oauth_token", "nnch734d00sl2jdk"),
              ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "137131202"),
              ("oauth_nonce", "chapoH")]
    base = signature_base_string(
        "GET", "http://photos.example.net/photos?file=vacation.jpg&size=original", params)
    assert base.startswith("GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg")
    assert hmac_sha1_signature(base, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00") == \
        "MdpQcU8iPSUjWoN/UDMsK2sui9I="
    header = oauth1_authorization("GET", "https://SIS.example:443/x?a=1 2", client_id="c k",
                                  client_secret="s", nonce="n", timestamp=1)
    assert header.startswith('OAuth oauth_consumer_key="c%20k", oauth_nonce="n"')


def test_429_waits_retry_after_then_succeeds(api: OneRosterServer) -> None:
    """A 429 with Retry-After: 2 is retried after exactly 2 s; the data is complete."""
    api.fail("/courses", 429, retry_after="2")
    sleeps = Sleeps()
    with client_of(api, sleeps) as client:
        courses = list(client.records("courses"))
    assert len(courses) == len(api.data["courses"])
    assert sleeps.calls == [2.0]


def test_500s_retried_with_growing_backoff(api: OneRosterServer) -> None:
    """Two 500s on a page are retried with exponential backoff, then the page is read."""
    api.fail("/orgs", 500, times=2)
    sleeps = Sleeps()
    with client_of(api, sleeps) as client:
        assert len(list(client.records("orgs"))) == len(api.data["orgs"])
    assert len(sleeps.calls) == 2 and sleeps.calls[1] > sleeps.calls[0]


def test_slow_response_times_out_and_is_retried(api: OneRosterServer) -> None:
    """An answer slower than timeout_seconds is abandoned and the request sent again."""
    api.fail("/academicSessions", 200, delay=1.0)
    sleeps = Sleeps()
    with client_of(api, sleeps, timeout_seconds=0.25) as client:
        sessions = list(client.records("academicSessions"))
    assert len(sessions) == len(api.data["academicSessions"])
    assert len(sleeps.calls) == 1
    assert sum(1 for s in api.requests if s.path.endswith("/academicSessions")) == 2


def test_expired_token_is_renewed_once(api: OneRosterServer) -> None:
    """A token the server expires mid-pull gives a 401; the client gets a new one and goes on."""
    with client_of(api) as client:
        records = client.records("users")
        first = [next(records) for _ in range(5)]
        api.expire_tokens()
        rest = list(records)
    assert len(first) + len(rest) == len(api.data["users"])
    assert sum(1 for s in api.requests if s.method == "POST") == 2
    assert api.auth_failures == ["token"]


def test_refusals_name_the_endpoint_and_status(api: OneRosterServer) -> None:
    """401 at the token endpoint, 403 and 404 on a collection: one clear SourceError each."""
    with client_of(api, secret="wrong") as client, pytest.raises(
            SourceError, match=rf"token request to {api.token_url}: HTTP 401 \(invalid_client\); "
                               r"check client_id and the client secret"):
        list(client.records("orgs"))
    api.fail("/classes", 403)
    with client_of(api) as client, pytest.raises(
            SourceError, match=r"GET /ims/oneroster/v1p1/classes\?limit=1000&offset=0: HTTP 403; "
                               r"the API client may not read"):
        list(client.records("classes"))
    with client_of(api) as client, pytest.raises(SourceError, match=r"HTTP 404; check base_url"):
        list(client.records("demographics"))


def test_unreachable_server_fails_after_retries(api: OneRosterServer) -> None:
    """Nothing listening: the configured retries, then 'cannot connect' naming the endpoint."""
    source = source_of(api, retries=2)
    port = api.port
    api.port = 1  # nothing listens there
    sleeps = Sleeps()
    closed = source.model_copy(update={"token_url": api.token_url})
    with OneRosterClient(closed, api.secret, sleep=sleeps, backoff=0.01) as client, \
            pytest.raises(SourceError, match=r"POST /oauth/token: cannot connect "
                                             r"\(ConnectError\) \(3 attempts\)") as caught:
        list(client.records("orgs"))
    api.port = port
    assert caught.value.reason == "unreachable" and len(sleeps.calls) == 2
    assert source.retries == 2


def test_not_json_and_redirects_are_clear_errors(api: OneRosterServer) -> None:
    """An HTML page instead of JSON, or a redirect (never followed): SourceError, no retries."""
    api.fail("/orgs", 200, body=b"<html>login</html>")
    with client_of(api) as client, pytest.raises(SourceError, match="the answer is not JSON"):
        list(client.records("orgs"))
    api.fail("/orgs", 302, headers={"Location": "https://elsewhere.example/"})
    with client_of(api) as client, pytest.raises(
            SourceError, match=re.escape("redirects to https://elsewhere.example/; set base_url")):
        list(client.records("orgs"))
    assert not any("elsewhere" in s.path for s in api.requests)


def test_next_link_to_another_host_is_refused(api: OneRosterServer) -> None:
    """A Link: rel="next" to another server is not followed (credentials stay home)."""
    api.link_root = "http://collector.example:8080"
    with client_of(api) as client, pytest.raises(
            SourceError, match=r"next-page link points to another server \(collector.example\)"):
        list(client.records("users"))
    assert len([s for s in api.requests if s.method == "GET"]) == 1


def test_only_reads_leave_the_client(api: OneRosterServer) -> None:
    """Any method but GET (and POST to the token URL) is refused before it is sent."""
    with client_of(api) as client:
        for method, url in (("DELETE", client.endpoint("users")),
                            ("PUT", client.endpoint("users")),
                            ("POST", client.endpoint("users"))):
            with pytest.raises(SourceError, match=f"refused to send {method}"):
                client.session.send(method, url, what="x")
    assert api.requests == []


def test_no_secret_or_token_in_logs_or_errors(api: OneRosterServer) -> None:
    """Logs and errors of a pull with retries and a refusal never hold the secret or a token."""
    api.fail("/users", 500)
    with structlog.testing.capture_logs() as logs:
        with client_of(api) as client:
            list(client.records("users"))
        with client_of(api, secret="another-secret") as client, \
                pytest.raises(SourceError) as caught:
            list(client.records("orgs"))
    text = repr(logs) + str(caught.value)
    tokens = list(api.tokens)
    assert tokens and not any(token in text for token in tokens)
    assert api.secret not in text and "another-secret" not in text
    events = [e["event"] for e in logs]
    assert events.count("api_collection_fetched") == 1 and "api_retry" in events
    fetched = next(e for e in logs if e["event"] == "api_collection_fetched")
    assert set(fetched) == {"event", "log_level", "tenant", "collection", "records", "pages",
                            "duration_ms"}


def test_header_helpers() -> None:
    """Retry-After as seconds or an HTTP date; the next target of a Link header."""
    assert retry_after("7") == 7.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after("soon") is None and retry_after(None) is None
    link = '<https://x/users?offset=0>; rel="first", <https://x/users?offset=9>; rel="next"'
    assert next_link(link) == "https://x/users?offset=9"
    assert next_link('<https://x/a>; rel="last"') is None
