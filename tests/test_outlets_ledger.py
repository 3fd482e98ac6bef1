"""The delivery ledger and the dispatcher: which runs go where, attempts, backoff, leases,
redelivery and the CLI (docs/outlets.md). The senders here are the test's own
recorders; the real ones are tested against real servers in test_outlets_sftp.py
and test_outlets_alerts.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_sync_runner import district, upload

from rosterdrop.cli import main
from rosterdrop.codes import Code
from rosterdrop.config import Settings, parse_settings
from rosterdrop.errors import DeliveryError, NotFound, UsageError
from rosterdrop.outlets.dispatch import Delivery, Outlets, wanted_by
from rosterdrop.runs.runner import Runner
from rosterdrop.store import deliveries as ledger
from rosterdrop.store.deliveries import DeliveryState
from rosterdrop.store.engine import Store, open_store

FINGERPRINT = "SHA256:" + "A" * 43


class Clock:
    """Moves only when told to (the dispatcher's backoff is read off it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def tenant_config(**extra: object) -> dict[str, object]:
    return {
        "name": "Test District", "report_to": ["admin@t.example"],
        "account_domain": "t.example",
        "destinations": [{"type": "sftp", "name": "asm", "host": "127.0.0.1", "port": 1,
                          "username": "u", "password_env": "NOT_USED",
                          "host_key_fingerprint": FINGERPRINT, "retries": 2,
                          "retry_seconds": 10}],
        "alerts": [{"type": "slack", "url_env": "SLACK_URL", "on": ["failed"],
                    "retries": 0}],
        **extra,
    }


@pytest.fixture
def settings(tmp_path: Path, backend_url: str) -> Settings:
    return parse_settings({"state_dir": str(tmp_path / "state"), "store": {"url": backend_url},
                           "tenants": {"t": tenant_config()}})


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened


class Recorder:
    """A sender that fails ``failures`` times with ``code``, then delivers."""

    def __init__(self, failures: int = 0, code: str = Code.DELIVERY_UNREACHABLE) -> None:
        self.failures = failures
        self.code = code
        self.calls: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> str:
        self.calls.append(delivery)
        if len(self.calls) <= self.failures:
            raise DeliveryError("connection refused", code=self.code)
        return f"sent {delivery.run.run_id}"


def outlets(settings: Settings, store: Store, clock: Clock, sender: Recorder) -> Outlets:
    return Outlets(settings, store, clock=clock,
                   senders={"sftp": sender, "slack": sender})


def applied_run(settings: Settings, store: Store, clock: Clock, tmp_path: Path,
                sender: Recorder) -> tuple[Runner, str]:
    runner = Runner(settings, store, clock=clock, outlets=outlets(settings, store, clock, sender))
    run = runner.sync("t", upload(tmp_path, district()), source="cli")
    assert run.status == "completed" and run.applied
    return runner, run.run_id


def test_which_runs_each_outlet_takes(settings: Settings, store: Store, tmp_path: Path) -> None:
    """An applied run goes to the destinations, not to an alert set for failures; a failed
    run only to that alert; a dry run to nothing."""
    clock, sender = Clock(), Recorder()
    runner, run_id = applied_run(settings, store, clock, tmp_path, sender)
    assert [(r.outlet, r.kind, r.status) for r in ledger.of_run(store, run_id)] == [
        ("asm", "sftp", DeliveryState.PENDING)]
    failed = runner.sync("t", upload(tmp_path, {"students.csv": "x"}, "bad.zip"), source="cli")
    assert failed.status == "failed"
    assert [r.outlet for r in ledger.of_run(store, failed.run_id)] == ["slack:SLACK_URL"]
    preview = runner.sync("t", upload(tmp_path, district(12), "dry.zip"), source="cli",
                          dry_run=True)
    assert ledger.of_run(store, preview.run_id) == []
    assert wanted_by(settings.tenant("t"), preview) == []
    assert sender.calls == []  # recording sends nothing: the run is done without them


def test_the_email_names_the_destinations_a_run_is_forwarded_to(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    """An applied run's report says where the directory is being sent (and where to see
    the outcome); a failed run's report, which no destination takes, does not."""
    from email import message_from_bytes, policy

    clock, sender = Clock(), Recorder()
    runner, run_id = applied_run(settings, store, clock, tmp_path, sender)
    failed = runner.sync("t", upload(tmp_path, {"students.csv": "x"}, "bad.zip"), source="cli")

    def report(of: str) -> str:
        (eml,) = (settings.state_dir / "outbox").glob(f"*-{of}.eml")
        message = message_from_bytes(eml.read_bytes(), policy=policy.default)
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())

    applied = report(run_id)
    assert "Forwarded to" in applied and "asm" in applied
    assert "rosterdrop deliveries" in applied
    assert "Forwarded to" not in report(failed.run_id)


def test_failed_attempts_back_off_then_deliver(settings: Settings, store: Store,
                                               tmp_path: Path) -> None:
    """Two failures (retry_seconds 10, then 20 later), then delivered; nothing is attempted
    before it is due."""
    clock, sender = Clock(), Recorder(failures=2)
    runner, run_id = applied_run(settings, store, clock, tmp_path, sender)

    async def rounds() -> list[str]:
        seen = []
        for advance in (0, 5, 5, 19, 1):
            clock.advance(advance)
            await runner.outlets.deliver_due()
            await runner.outlets.idle()
            (record,) = ledger.of_run(store, run_id)
            seen.append(f"{record.status}/{record.attempts}")
        return seen

    assert asyncio.run(rounds()) == ["failed/1", "failed/1", "failed/2", "failed/2",
                                     "delivered/2"]
    (record,) = ledger.of_run(store, run_id)
    assert record.detail == f"sent {run_id}" and record.last_error is None
    assert len(sender.calls) == 3


def test_given_up_after_the_retries_and_redelivered_on_request(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    """retries = 2: the third failure gives up (no next attempt); redeliver starts again."""
    clock, sender = Clock(), Recorder(failures=3, code=Code.DELIVERY_REFUSED)
    runner, run_id = applied_run(settings, store, clock, tmp_path, sender)

    async def until_given_up() -> None:
        for _ in range(6):
            await runner.outlets.deliver_due()
            await runner.outlets.idle()
            clock.advance(3600)

    asyncio.run(until_given_up())
    (record,) = ledger.of_run(store, run_id)
    assert record.given_up and record.attempts == 3 and len(sender.calls) == 3
    assert record.last_error == f"{Code.DELIVERY_REFUSED}: connection refused"
    reopened = runner.outlets.redeliver(run_id)
    assert [(r.status, r.attempts) for r in reopened] == [(DeliveryState.PENDING, 0)]
    done = asyncio.run(runner.outlets.deliver_run(run_id))
    assert [r.status for r in done] == [DeliveryState.DELIVERED]
    with pytest.raises(NotFound):
        runner.outlets.redeliver("20261207-000000-nosuch")


def test_one_attempt_per_due_row_across_processes(settings: Settings, store: Store,
                                                  tmp_path: Path) -> None:
    """Two dispatchers on one store (two daemons scaled out) claim a due row once."""
    clock, sender = Clock(), Recorder()
    _, run_id = applied_run(settings, store, clock, tmp_path, sender)
    other = outlets(settings, store, clock, sender)
    first = outlets(settings, store, clock, sender)

    async def both() -> None:
        await asyncio.gather(first.deliver_due(), other.deliver_due())
        await first.idle()
        await other.idle()

    asyncio.run(both())
    assert len(sender.calls) == 1
    assert [r.status for r in ledger.of_run(store, run_id)] == [DeliveryState.DELIVERED]


def test_an_attempt_cut_short_is_due_again_after_its_lease(settings: Settings, store: Store,
                                                            tmp_path: Path) -> None:
    """A daemon stopped mid-attempt leaves the row claimed; once the lease (timeout + 30 s)
    has passed, the next daemon attempts it and it is delivered."""
    clock = Clock()
    stuck = asyncio.Event()

    async def hangs(delivery: Delivery) -> str:
        stuck.set()
        await asyncio.sleep(3600)
        return "never"

    runner = Runner(settings, store, clock=clock,
                    outlets=Outlets(settings, store, clock=clock, senders={"sftp": hangs}))
    run_id = runner.sync("t", upload(tmp_path, district()), source="cli").run_id

    async def cut_short() -> None:
        await runner.outlets.deliver_due()
        await stuck.wait()
        for task in list(runner.outlets._running):
            task.cancel()
        await runner.outlets.idle()

    asyncio.run(cut_short())
    (record,) = ledger.of_run(store, run_id)
    assert record.status is DeliveryState.PENDING and record.attempts == 0
    later, sender = outlets(settings, store, clock, Recorder()), None
    assert asyncio.run(later.deliver_due()) == 0  # still leased
    clock.advance(60 + 30 + 1)
    sender = later.senders()["sftp"]

    async def again() -> None:
        await later.deliver_due()
        await later.idle()

    asyncio.run(again())
    assert [r.status for r in ledger.of_run(store, run_id)] == [DeliveryState.DELIVERED]
    assert isinstance(sender, Recorder) and len(sender.calls) == 1


def test_a_sender_bug_is_recorded_not_raised(settings: Settings, store: Store,
                                              tmp_path: Path) -> None:
    clock = Clock()

    async def broken(delivery: Delivery) -> str:
        raise RuntimeError("bug")

    runner = Runner(settings, store, clock=clock,
                    outlets=Outlets(settings, store, clock=clock, senders={"sftp": broken}))
    run_id = runner.sync("t", upload(tmp_path, district()), source="cli").run_id
    (record,) = asyncio.run(runner.outlets.deliver_run(run_id))
    assert record.status is DeliveryState.FAILED
    assert record.last_error == f"{Code.DELIVERY_FAILED}: internal error (RuntimeError)"


def test_an_outlet_removed_from_the_config_is_given_up(settings: Settings, store: Store,
                                                       tmp_path: Path) -> None:
    clock = Clock()
    _, run_id = applied_run(settings, store, clock, tmp_path, Recorder(failures=9))
    without = parse_settings({**settings.model_dump(mode="json", exclude_defaults=True),
                              "tenants": {"t": tenant_config(destinations=[])}})
    assert ledger.give_up_removed(store, "t", [], clock()) == 1
    (record,) = ledger.of_run(store, run_id)
    assert record.given_up and "no longer in the configuration" in (record.last_error or "")
    with pytest.raises(UsageError, match="nothing to deliver"):
        Outlets(without, store, clock=clock).redeliver(
            Runner(without, store, clock=clock).sync(
                "t", upload(tmp_path, district(11), "b.zip"), source="cli").run_id)


CONFIG = """
state_dir = "{state}"
[store]
url = "{url}"
[tenants.t]
account_domain = "t.example"
[[tenants.t.destinations]]
type = "sftp"
name = "asm"
host = "127.0.0.1"
port = 1
username = "u"
password_env = "NOT_USED"
host_key_fingerprint = "{fingerprint}"
timeout_seconds = 5
[[tenants.t.alerts]]
type = "slack"
url_env = "SLACK_URL"
on = ["failed"]
"""


def cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``rosterdrop`` in this process: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit) as ended:
        main(["-c", str(config), *args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(ended.value.code or 0), out.out + out.err


def test_cli_lists_and_redelivers(settings: Settings, store: Store, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`deliveries --json`, `show --json` and `history --json` carry the ledger's rows;
    `redeliver` of a run whose destination is down says so and exits 1; an unknown run
    exits 2 with one line."""
    clock = Clock()
    _, run_id = applied_run(settings, store, clock, tmp_path, Recorder())
    capsys.readouterr()  # the run's own log lines
    config = tmp_path / "rosterdrop.toml"
    config.write_text(CONFIG.format(state=settings.state_dir, url=settings.database_url,
                                    fingerprint=FINGERPRINT))
    monkeypatch.setenv("NOT_USED", "pw")
    code, out = cli(config, "deliveries", "--json", capsys=capsys)
    assert code == 0, out
    (row,) = json.loads(out)
    assert (row["run_id"], row["outlet"], row["status"]) == (run_id, "asm", "pending")
    code, out = cli(config, "show", run_id, "--json", capsys=capsys)
    assert [d["outlet"] for d in json.loads(out)["deliveries"]] == ["asm"]
    code, out = cli(config, "history", "--json", capsys=capsys)
    assert [d["outlet"] for d in json.loads(out)[0]["deliveries"]] == ["asm"]
    # The destination is 127.0.0.1:1: nothing listens there, and the real sender says so.
    code, out = cli(config, "redeliver", run_id, capsys=capsys)
    assert code == 1, out
    assert "asm" in out and Code.DELIVERY_UNREACHABLE in out
    code, out = cli(config, "redeliver", "nosuch", capsys=capsys)
    assert code == 2 and out.startswith("rosterdrop: ") and "nosuch" in out
