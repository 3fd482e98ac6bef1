"""`rosterdrop serve` with an alert: the outlets' task delivers a failed run's signed
webhook, and a delivery still failing when the daemon stops is delivered by the next
start, once (docs/daemon.md, "Deliveries to outlets")."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import test_outlets_alerts
from daemon_harness import Daemon
from test_outlets_alerts import SECRET, Receiver, verify

from uploads import make_zip

pytestmark = pytest.mark.slow
receiver = test_outlets_alerts.receiver  # the loopback receiver fixture


def test_a_failing_alert_is_delivered_after_a_restart(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTERDROP_TEST_HOOK_URL", receiver.url("/hooks/rosterdrop"))
    monkeypatch.setenv("ROSTERDROP_TEST_HOOK_SECRET", SECRET)
    receiver.script = [500] * 1000  # down until the test says otherwise
    daemon = Daemon(tmp_path, {"alpha": {"username": "alpha"}}, extra="\n".join([
        "[[tenants.alpha.alerts]]", 'type = "webhook"', 'name = "ops"',
        'url_env = "ROSTERDROP_TEST_HOOK_URL"', 'secret_env = "ROSTERDROP_TEST_HOOK_SECRET"',
        "retries = 20", "retry_seconds = 0.5"]))
    daemon.start()
    try:
        daemon.dropbox("alpha").mkdir(parents=True, exist_ok=True)
        (daemon.dropbox("alpha") / "broken.zip").write_bytes(
            make_zip({"students.csv": "not,an,export\n"}))
        (finished,) = daemon.wait_event("run_finished", status="failed")
        daemon.wait_event("delivery_failed", outlet="ops")
    finally:
        assert daemon.stop() == 0
    refused = len(receiver.requests)
    assert refused >= 1
    receiver.script = []  # the receiver is back

    daemon.start()
    try:
        (delivered,) = daemon.wait_event("delivered", outlet="ops")
        time.sleep(1.5)  # three more retry periods: nothing else is sent
    finally:
        assert daemon.stop() == 0
    assert len(receiver.requests) == refused + 1
    assert delivered["run_id"] == finished["run_id"] and delivered["detail"] == "HTTP 200"
    last = receiver.requests[-1]
    payload = verify(last, SECRET, now=time.time())
    assert payload["type"] == "run.failed" and payload["data"]["run_id"] == finished["run_id"]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {last.headers["webhook-id"]}
    with sqlite3.connect(daemon.state / "rosterdrop.db") as db:
        rows = db.execute("SELECT outlet, status, attempts FROM deliveries").fetchall()
    assert rows == [("ops", "delivered", refused)]
    assert payload["data"]["status"] == "failed"
