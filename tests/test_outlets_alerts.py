"""Alerts (outlets/alerts.py) posted by the real dispatcher into a loopback HTTP receiver:
Standard Webhooks signatures checked with this file's own HMAC code, retries on 500, a
revoked webhook given up, nothing sent for a status not chosen, the Slack and Teams
message shapes, and no record of the upload in any of them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from test_sync_runner import Clock as RunnerClock
from test_sync_runner import district, upload

from rosterdrop.codes import Code
from rosterdrop.config import Settings, parse_settings
from rosterdrop.documents import RunStatus
from rosterdrop.outlets.alerts import AlertMessage, AlertPoster, signing_key, slack_payload
from rosterdrop.outlets.dispatch import Outlets
from rosterdrop.runs.runner import Runner
from rosterdrop.startup import OK, WARN, check_outlet_secrets
from rosterdrop.store import deliveries as ledger
from rosterdrop.store.deliveries import DeliveryRecord, DeliveryState
from rosterdrop.store.engine import Store, open_store
from rosterdrop.store.history import RunRecord

SECRET_BYTES = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(SECRET_BYTES).decode()
BASE_URL = "https://rosterdrop.example.org"


# --- the receiver --------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A loopback HTTP server that records every POST and answers from ``script`` (one
    status per request, then 200)."""

    port: int
    requests: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    headers: dict[int, dict[str, str]] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state.requests.append(Received(self.path, {k.lower(): v for k, v in
                                                           self.headers.items()}, body))
                status = state.script.pop(0) if state.script else 200
            answer = {200: b"ok", 401: b"invalid_token", 500: b"try later"}.get(status, b"")
            self.send_response(status)
            for name, value in state.headers.get(status, {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- settings, store, runs -----------------------------------------------------------


class Clock:
    """The dispatcher's clock: moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_settings(tmp_path: Path, alerts: list[dict[str, Any]]) -> Settings:
    return parse_settings({
        "state_dir": str(tmp_path / "state"),
        "web": {"base_url": BASE_URL},
        "tenants": {"t": {"name": "Test District", "report_to": ["admin@t.example"],
                          "account_domain": "t.example",
                          "guard": {"max_deactivate_percent": 20, "min_population": 5},
                          "alerts": alerts}},
    })


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> Receiver:
    monkeypatch.setenv("RD_TEST_SLACK_URL", receiver.url("/slack/T000/B000/XXXSECRETXXX"))
    monkeypatch.setenv("RD_TEST_TEAMS_URL", receiver.url("/teams/workflows/sig=SECRETSIG"))
    monkeypatch.setenv("RD_TEST_HOOK_URL", receiver.url("/hook"))
    monkeypatch.setenv("RD_TEST_HOOK_SECRET", SECRET)
    return receiver


def slack(**extra: Any) -> dict[str, Any]:
    return {"type": "slack", "name": "slack", "url_env": "RD_TEST_SLACK_URL", **extra}


def teams(**extra: Any) -> dict[str, Any]:
    return {"type": "teams", "name": "teams", "url_env": "RD_TEST_TEAMS_URL", **extra}


def hook(**extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "name": "hook", "url_env": "RD_TEST_HOOK_URL",
            "secret_env": "RD_TEST_HOOK_SECRET", **extra}


@dataclass
class World:
    settings: Settings
    store: Store
    clock: Clock
    outlets: Outlets
    runner: Runner
    tmp_path: Path

    def completed(self) -> RunRecord:
        run = self.runner.sync("t", upload(self.tmp_path, district(), "good.zip"),
                               source="cli")
        assert run.status is RunStatus.COMPLETED
        return run

    def failed(self) -> RunRecord:
        files = district()
        students = str(files["students.csv"])
        # A student without a first name: the run fails, and its report's examples
        # name the record. None of it may reach an alert.
        files["students.csv"] = (students.replace("First3,,Last3", ",,Okonkwo")
                                 .replace("First4,,Last4,9,first4.last4@d.example",
                                          "Adaeze,,Nwosu,Adaeze Nwosu,adaeze nwosu"))
        run = self.runner.sync("t", upload(self.tmp_path, files, "bad.zip"), source="cli")
        assert run.status is RunStatus.FAILED
        assert run.document is not None and run.document.errors
        return run

    async def deliver(self) -> int:
        started = await self.outlets.deliver_due()
        await self.outlets.idle()
        return started

    def rows(self, run: RunRecord) -> dict[str, DeliveryRecord]:
        return {r.outlet: r for r in ledger.of_run(self.store, run.run_id)}


@pytest.fixture
def world_factory(tmp_path: Path) -> Iterator[Any]:
    stores: list[Any] = []

    def make(alerts: list[dict[str, Any]], *, default_senders: bool = False) -> World:
        settings = make_settings(tmp_path, alerts)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        opened = open_store(settings.database_url)
        store = opened.__enter__()
        stores.append(opened)
        clock = Clock()
        poster = AlertPoster(settings)
        senders = None if default_senders else {
            "slack": poster.send, "teams": poster.send, "webhook": poster.send}
        outlets = Outlets(settings, store, clock=clock, senders=senders)
        runner = Runner(settings, store, clock=RunnerClock(), outlets=outlets)
        return World(settings, store, clock, outlets, runner, tmp_path)

    yield make
    for opened in stores:
        opened.__exit__(None, None, None)


# --- the receiver's own Standard Webhooks check (independent of alerts.py) ----------


def verify(request: Received, secret: str, *, now: float) -> dict[str, Any]:
    """What a receiver does: HMAC-SHA256 of ``id.timestamp.body`` under the base64 key
    after ``whsec_``, compared in constant time with each ``v1,`` signature; a timestamp
    more than five minutes off is refused."""
    message_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    assert abs(int(timestamp) - now) <= 300
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = [s.split(",", 1)[1] for s in request.headers["webhook-signature"].split()
                  if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in signatures)
    payload: dict[str, Any] = json.loads(request.body)
    return payload


# --- the tests -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_webhook_is_signed_and_retried_on_500_with_the_same_id(
        world_factory: Any, env: Receiver) -> None:
    """A 500 is DELIVERY_UNREACHABLE and retried ``retry_seconds`` later, not before;
    both attempts carry a valid Standard Webhooks signature and the same webhook-id, and
    the body says the run's type, status, sentence and console link."""
    world = world_factory([hook(retries=2, retry_seconds=30)], default_senders=True)
    env.script = [500]
    run = world.failed()
    assert await world.deliver() == 1
    row = world.rows(run)["hook"]
    assert row.status is DeliveryState.FAILED and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith(
        f"{Code.DELIVERY_UNREACHABLE}: ") and "HTTP 500" in row.last_error
    assert row.next_attempt_at == world.clock.now + timedelta(seconds=30)

    world.clock.advance(29)
    assert await world.deliver() == 0 and len(env.requests) == 1
    world.clock.advance(2)
    assert await world.deliver() == 1
    row = world.rows(run)["hook"]
    assert row.status is DeliveryState.DELIVERED and row.detail == "HTTP 200"

    first, second = env.requests
    assert first.path == second.path == "/hook"
    assert first.headers["content-type"] == "application/json"
    payloads = [verify(r, SECRET, now=time.time()) for r in (first, second)]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-id"].startswith("msg_")
    assert payloads[0] == payloads[1]
    payload = payloads[0]
    assert payload["type"] == "run.failed"
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
    data = payload["data"]
    assert data["tenant"] == "t" and data["tenant_name"] == "Test District"
    assert data["run_id"] == run.run_id and data["status"] == "failed"
    assert data["url"] == f"{BASE_URL}/runs/{run.run_id}"
    assert data["sentence"].startswith("The upload bad.zip was not applied")
    assert data["counts"]["students"] == 10
    assert set(data["changes"]) == {"created", "updated", "deactivated", "removed"}
    assert sum(data["issue_counts"].values()) >= 1


@pytest.mark.asyncio
async def test_a_tampered_body_fails_the_receivers_check(world_factory: Any,
                                                         env: Receiver) -> None:
    """The receiver's check is a real one: the signature does not cover another body, and
    another run's alert has another webhook-id."""
    world = world_factory([hook(on=["failed", "completed"])])
    world.completed()
    world.failed()
    await world.deliver()
    one, two = env.requests
    assert one.headers["webhook-id"] != two.headers["webhook-id"]
    verify(one, SECRET, now=time.time())
    forged = Received(one.path, one.headers, one.body + b" ")
    with pytest.raises(AssertionError):
        verify(forged, SECRET, now=time.time())


@pytest.mark.asyncio
async def test_nothing_is_sent_for_statuses_not_chosen(world_factory: Any,
                                                       env: Receiver) -> None:
    """``on = ["failed"]``: a completed run adds no delivery and sends nothing; a failed
    run sends one post to each alert."""
    world = world_factory([slack(on=["failed"]), hook(on=["failed"])])
    good = world.completed()
    assert world.rows(good) == {}
    assert await world.deliver() == 0
    assert env.requests == []
    bad = world.failed()
    assert await world.deliver() == 2
    assert sorted(r.path for r in env.requests) == ["/hook", "/slack/T000/B000/XXXSECRETXXX"]
    assert {k: r.status for k, r in world.rows(bad).items()} == {
        "slack": DeliveryState.DELIVERED, "hook": DeliveryState.DELIVERED}


@pytest.mark.asyncio
async def test_default_statuses_are_failed_and_held(world_factory: Any,
                                                    env: Receiver) -> None:
    """With no ``on``, a completed run sends nothing and a failed one does."""
    world = world_factory([slack()])
    world.completed()
    world.failed()
    await world.deliver()
    assert len(env.requests) == 1
    assert "sync failed" in env.requests[0].json()["text"]


@pytest.mark.asyncio
async def test_slack_and_teams_message_shapes(world_factory: Any, env: Receiver) -> None:
    """Slack gets ``text`` (the title, the sentence and the run link) and blocks whose
    sentence is plain text; Teams gets a message with one Adaptive Card whose action
    opens the run."""
    world = world_factory([slack(), teams()])
    run = world.failed()
    await world.deliver()
    by_path = {r.path.split("/")[1]: r for r in env.requests}
    link = f"{BASE_URL}/runs/{run.run_id}"
    assert run.document is not None

    message = by_path["slack"].json()
    assert "Test District: sync failed" in message["text"]
    assert "The upload bad.zip was not applied" in message["text"]
    assert f"<{link}|Open the run>" in message["text"]
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds[:2] == ["header", "section"]
    assert message["blocks"][1]["text"]["type"] == "plain_text"
    assert message["blocks"][-1]["elements"][0]["url"] == link

    card_message = by_path["teams"].json()
    assert card_message["type"] == "message"
    (attachment,) = card_message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = [i["text"] for b in card["body"] if b["type"] == "RichTextBlock"
             for i in b["inlines"]]
    assert any("sync failed" in t for t in texts)
    assert any(t.startswith("The upload bad.zip") for t in texts)
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet"
             for f in b["facts"]}
    assert facts["Run"] == run.run_id and facts["Status"] == "failed"
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open the run",
                                "url": link}]


@pytest.mark.asyncio
async def test_no_record_of_the_upload_in_any_payload(world_factory: Any,
                                                      env: Receiver) -> None:
    """The failed run's report names people (its issue examples); no alert body carries
    a name, an email address, an id of a person or an issue's example."""
    world = world_factory([slack(), teams(), hook()])
    run = world.failed()
    await world.deliver()
    assert len(env.requests) == 3
    assert run.document is not None
    examples = [*run.document.errors, *run.document.warnings]
    assert any("nwosu" in (e.value or "") for e in examples)  # the report names them
    leaks = {"Okonkwo", "Adaeze", "Nwosu", "adaeze", "nwosu", "First1", "Last1",
             "first1.last1", "@d.example", "García", "Smith", "asmith", "P10"}
    leaks |= {e.value for e in examples if e.value and len(e.value) >= 3}
    leaks |= {e.message for e in examples}
    for request in env.requests:
        text = request.body.decode()
        assert "bad.zip" in text  # the file name is the email's too: fine
        found = [leak for leak in leaks if leak in text]
        assert found == [], (request.path, found)


@pytest.mark.asyncio
async def test_a_missing_variable_is_delivery_failed_naming_it(
        world_factory: Any, env: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset URL or secret variable is DELIVERY_FAILED naming the variable, and never
    shows the URL; nothing is posted."""
    monkeypatch.delenv("RD_TEST_SLACK_URL")
    monkeypatch.setenv("RD_TEST_HOOK_SECRET", "")
    world = world_factory([slack(), hook()])
    run = world.failed()
    await world.deliver()
    rows = world.rows(run)
    assert env.requests == []
    slack_error = rows["slack"].last_error or ""
    hook_error = rows["hook"].last_error or ""
    assert slack_error.startswith(f"{Code.DELIVERY_FAILED}: ")
    assert "RD_TEST_SLACK_URL" in slack_error and "not set" in slack_error
    assert hook_error.startswith(f"{Code.DELIVERY_FAILED}: ")
    assert "RD_TEST_HOOK_SECRET" in hook_error
    assert env.url("/hook") not in hook_error and "127.0.0.1" not in hook_error
    assert rows["slack"].next_attempt_at is not None  # retried: the variable may be set


@pytest.mark.asyncio
async def test_a_revoked_webhook_is_refused_and_given_up(world_factory: Any,
                                                         env: Receiver) -> None:
    """401 on every attempt: DELIVERY_REFUSED without the URL in the message, and given
    up after ``retries``."""
    world = world_factory([slack(retries=1, retry_seconds=10)])
    env.script = [401, 401]
    run = world.failed()
    await world.deliver()
    world.clock.advance(11)
    await world.deliver()
    row = world.rows(run)["slack"]
    assert len(env.requests) == 2
    assert row.status is DeliveryState.FAILED and row.given_up and row.attempts == 2
    error = row.last_error or ""
    assert error.startswith(f"{Code.DELIVERY_REFUSED}: ")
    assert "HTTP 401" in error and "invalid_token" in error and "RD_TEST_SLACK_URL" in error
    assert "XXXSECRETXXX" not in error and "127.0.0.1" not in error
    world.clock.advance(3600)
    assert await world.deliver() == 0


@pytest.mark.asyncio
async def test_a_redirect_is_not_followed(world_factory: Any, env: Receiver) -> None:
    """A 302 is DELIVERY_FAILED and its Location is not requested."""
    world = world_factory([teams()])
    env.script = [302]
    env.headers[302] = {"Location": env.url("/elsewhere")}
    run = world.failed()
    await world.deliver()
    assert [r.path for r in env.requests] == ["/teams/workflows/sig=SECRETSIG"]
    error = world.rows(run)["teams"].last_error or ""
    assert error.startswith(f"{Code.DELIVERY_FAILED}: ") and "redirect" in error
    assert "SECRETSIG" not in error


@pytest.mark.asyncio
async def test_a_closed_port_is_unreachable(world_factory: Any, env: Receiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening: DELIVERY_UNREACHABLE, retried."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RD_TEST_SLACK_URL", f"http://127.0.0.1:{port}/x")
    world = world_factory([slack()])
    run = world.failed()
    await world.deliver()
    row = world.rows(run)["slack"]
    assert (row.last_error or "").startswith(f"{Code.DELIVERY_UNREACHABLE}: ")
    assert str(port) not in (row.last_error or "")
    assert row.next_attempt_at is not None


def test_slack_text_cannot_mention_or_link() -> None:
    """An upload named ``<!channel>`` does not ping the channel: Slack's control
    characters are escaped in the mrkdwn text; the run link stays a link."""
    message = AlertMessage(tenant="t", tenant_name="T", run_id="r1", status=RunStatus.FAILED,
                           title="T: sync failed",
                           sentence="The upload <!channel>&<https://evil.example|x>.zip was "
                           "not applied.", occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                           url="https://c.example/runs/r1")
    payload = slack_payload(message)
    assert "<!channel>" not in payload["text"] and "&lt;!channel&gt;&amp;" in payload["text"]
    assert "<https://evil" not in payload["text"]
    assert payload["text"].endswith("<https://c.example/runs/r1|Open the run>")


@pytest.mark.parametrize("secret, problem", [
    ("c2VjcmV0c2VjcmV0c2VjcmV0", "does not start with whsec_"),
    ("whsec_not base64!", "is not base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "fewer than 16"),
])
def test_signing_secrets_are_checked(secret: str, problem: str) -> None:
    """A secret not of the ``whsec_<base64>`` form, or too short, is refused."""
    with pytest.raises(ValueError, match=problem):
        signing_key(secret)
    assert signing_key(SECRET) == SECRET_BYTES


def test_start_checks_report_alert_variables(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor and serve warn of a missing URL variable and of a malformed secret, naming
    the variable (a warning: deliveries never hold up the runs), and say OK when both
    are set, never showing the URL."""
    settings = make_settings(tmp_path, [slack(), hook()])
    monkeypatch.delenv("RD_TEST_SLACK_URL", raising=False)
    monkeypatch.setenv("RD_TEST_HOOK_URL", "https://hooks.example/secret-path")
    monkeypatch.setenv("RD_TEST_HOOK_SECRET", "whsec_???")
    checks = {c.name: c for c in check_outlet_secrets(settings)}
    assert checks["tenants.t.alerts.slack"].status == WARN
    assert "RD_TEST_SLACK_URL" in checks["tenants.t.alerts.slack"].detail
    assert checks["tenants.t.alerts.hook"].status == WARN
    assert "RD_TEST_HOOK_SECRET" in checks["tenants.t.alerts.hook"].detail
    assert "base64" in checks["tenants.t.alerts.hook"].detail
    monkeypatch.setenv("RD_TEST_SLACK_URL", "https://hooks.slack.com/services/T/B/secret")
    monkeypatch.setenv("RD_TEST_HOOK_SECRET", SECRET)
    checks = {c.name: c for c in check_outlet_secrets(settings)}
    assert [c.status for c in checks.values()] == [OK, OK]
    assert all("hooks." not in c.detail and "secret-path" not in c.detail
               for c in checks.values())
