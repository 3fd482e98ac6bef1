"""When pulls run: DST-correct slots, catch-up after downtime, never two at once per tenant."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from oneroster_server import OneRosterServer, load_dataset, serving

from rosterdrop.config import OneRosterSource, parse_settings
from rosterdrop.daemon.intake import Intake
from rosterdrop.errors import ConfigError
from rosterdrop.paths import StatePaths
from rosterdrop.runs.runner import Runner
from rosterdrop.sources.oneroster.auth import read_secret
from rosterdrop.sources.oneroster.puller import (
    PullBusy,
    PullScheduler,
    PullService,
    PullState,
    PullStates,
)
from rosterdrop.sources.oneroster.schedule import Decision, Schedule, decide
from rosterdrop.store.engine import open_store
from rosterdrop.store.history import list_runs
from rosterdrop.store.jobs import JobQueue
from rosterdrop.tools.sample import write_sample

CHICAGO = ZoneInfo("America/Chicago")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_0200_chicago_across_both_dst_changes() -> None:
    """02:00 Chicago: 08:00 UTC in CST, 07:00 UTC in CDT; once on each change day."""
    daily = Schedule("daily", time(2, 0), CHICAGO)
    spring = daily.slots(utc(2026, 3, 6), utc(2026, 3, 10))
    assert spring == [utc(2026, 3, 6, 8), utc(2026, 3, 7, 8), utc(2026, 3, 8, 8),
                      utc(2026, 3, 9, 7)]
    # 2026-03-08 02:00 does not exist in Chicago: the pull runs at 03:00 CDT, once
    assert spring[2].astimezone(CHICAGO).strftime("%H:%M %Z") == "03:00 CDT"
    autumn = daily.slots(utc(2026, 10, 31), utc(2026, 11, 3))
    assert autumn == [utc(2026, 10, 31, 7), utc(2026, 11, 1, 8), utc(2026, 11, 2, 8)]
    assert {s.astimezone(CHICAGO).strftime("%H:%M") for s in spring + autumn} <= {"02:00",
                                                                                  "03:00"}
    twice = Schedule("daily", time(1, 30), CHICAGO)  # 01:30 happens twice on 2026-11-01
    assert twice.slots(utc(2026, 11, 1), utc(2026, 11, 2)) == [utc(2026, 11, 1, 6, 30)]
    assert daily.latest(utc(2026, 3, 8, 7, 59)) == utc(2026, 3, 7, 8)
    assert daily.next_after(utc(2026, 3, 8, 7, 59)) == utc(2026, 3, 8, 8)


def test_hourly_slots_follow_real_hours() -> None:
    """Hourly at :15 local: 25 pulls on the fall-back day; half-hour zones keep local :15."""
    hourly = Schedule("hourly", time(0, 15), CHICAGO)
    day = hourly.slots(utc(2026, 11, 1, 5), utc(2026, 11, 2, 6))
    assert len(day) == 25 and all(s.minute == 15 for s in day)
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(day))
    india = Schedule("hourly", time(0, 15), ZoneInfo("Asia/Kolkata"))
    slots = india.slots(utc(2026, 1, 1), utc(2026, 1, 1, 3))
    assert [s.astimezone(india.zone).minute for s in slots] == [15, 15, 15]
    assert [s.minute for s in slots] == [45, 45, 45]


def test_interval_slots_align_to_utc_midnight() -> None:
    """Every 15 minutes: :00, :15, :30, :45 whatever the zone."""
    every = Schedule("interval", time(2, 0), CHICAGO, timedelta(minutes=15))
    assert every.slots(utc(2026, 5, 1, 10, 7), utc(2026, 5, 1, 11)) == [
        utc(2026, 5, 1, 10, 15), utc(2026, 5, 1, 10, 30), utc(2026, 5, 1, 10, 45),
        utc(2026, 5, 1, 11)]


def test_catch_up_after_downtime_is_one_pull() -> None:
    """Three missed days: one pull covering the latest slot, then nothing until the next."""
    daily = Schedule("daily", time(2, 0), CHICAGO)
    now = utc(2026, 3, 12, 15)
    last = utc(2026, 3, 9, 7)
    caught = decide(daily, now, last, running=False, requested=False)
    assert caught == Decision(utc(2026, 3, 12, 7), False)
    assert decide(daily, now, caught.slot, running=False, requested=False) is None
    assert decide(daily, now, last, running=True, requested=True) is None
    assert decide(daily, now, None, running=False, requested=False) == caught  # never pulled
    assert decide(daily, now, caught.slot, running=False, requested=True) == Decision(None,
                                                                                      True)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_scheduler_never_overlaps_one_tenant(tmp_path: Path) -> None:
    """A pull outlasting its slots is not started again; afterwards one catch-up pull runs."""
    clock = FakeClock(utc(2026, 6, 1, 12, 30))
    states = PullStates(tmp_path / "pulls")
    calls: list[tuple[str, Decision]] = []
    release = threading.Event()
    active: set[str] = set()
    overlap: list[str] = []

    def pull(tenant: str, decision: Decision) -> None:
        if tenant in active:
            overlap.append(tenant)
        active.add(tenant)
        calls.append((tenant, decision))
        if tenant == "slow":
            assert release.wait(10)
        states.write(tenant, PullState(last_slot=decision.slot))
        active.discard(tenant)

    hourly = Schedule("hourly", time(0, 0), CHICAGO)
    scheduler = PullScheduler({"slow": hourly, "quick": hourly}, states, pull, clock=clock)
    assert sorted(scheduler.tick()) == ["quick", "slow"]
    for thread in scheduler.threads():
        if thread.name.endswith("quick"):
            thread.join(5)
    for hour in range(1, 4):  # three slots pass while "slow" still runs
        clock.now += timedelta(hours=1)
        assert scheduler.tick() == ["quick"]
        for thread in scheduler.threads():
            if thread.name.endswith("quick"):
                thread.join(5)
        assert scheduler.running() == {"slow"}, hour
    release.set()
    for thread in scheduler.threads():
        thread.join(5)
    assert scheduler.tick() == ["slow"]  # the missed slots: one pull
    for thread in scheduler.threads():
        thread.join(5)
    assert scheduler.tick() == []
    slow = [d.slot for t, d in calls if t == "slow"]
    assert slow == [utc(2026, 6, 1, 12), utc(2026, 6, 1, 15)]
    assert overlap == [] and len([t for t, _ in calls if t == "quick"]) == 4


def test_scheduler_thread_starts_and_stops(tmp_path: Path) -> None:
    """start() pulls a never-pulled tenant at once; stop() cancels and joins."""
    states = PullStates(tmp_path / "pulls")
    pulled = threading.Event()

    def pull(tenant: str, decision: Decision) -> None:
        states.write(tenant, PullState(last_slot=decision.slot))
        pulled.set()

    scheduler = PullScheduler({"t": Schedule("daily", time(2, 0), CHICAGO)}, states, pull,
                              clock=lambda: utc(2026, 1, 1, 12), poll_seconds=0.01)
    scheduler.start()
    assert pulled.wait(5)
    scheduler.stop(5)
    assert scheduler.cancel.is_set() and scheduler.running() == set()
    assert states.read("t").last_slot == utc(2026, 1, 1, 8)


@pytest.fixture
def service_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    export = tmp_path / "export.zip"
    write_sample(export, layout="oneroster-1.1", students=60, seed=3)
    return {"data": load_dataset(export, "1.1"), "root": tmp_path}


def test_service_queues_pulls_records_failures_and_locks(service_env: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A scheduled pull queues a job (oneroster-api), a request one (resync); a refused pull
    is one failed run with SOURCE_REFUSED and an email; a held lock refuses a second pull."""
    root: Path = service_env["root"]
    with serving(OneRosterServer(service_env["data"])) as api:
        settings = parse_settings({"state_dir": str(root / "state"), "tenants": {
            "t": {"report_to": ["a@t.example"], "source": api.source(time="06:00")}}})
        store = open_store(settings.database_url)
        runner = Runner(settings, store)
        queue = JobQueue(store)
        now = FakeClock(utc(2026, 2, 2, 12))
        intake = Intake(StatePaths.of(settings), queue, ["t"], now)
        states = PullStates.of(settings)
        service = PullService(settings, states, runner=runner, take=intake.take,
                              secrets={"t": api.secret}, clock=now)
        schedule = Schedule.of(settings.tenants["t"].source)  # type: ignore[arg-type]

        first = decide(schedule, now(), states.read("t").last_slot, running=False,
                       requested=False)
        assert first == Decision(utc(2026, 2, 2, 6), False)
        outcome = service.pull("t", decision=first)
        assert outcome.status == "queued" and outcome.pulled is not None
        assert outcome.pulled.records["users"] == len(api.data["users"])
        assert states.read("t").last_slot == first.slot
        assert decide(schedule, now(), first.slot, running=False, requested=False) is None
        assert service.pull("t", decision=first).status == "skipped"  # covered already

        states.request("t")
        again = decide(schedule, now(), first.slot, running=False, requested=True)
        assert again is not None and service.pull("t", decision=again).status == "queued"
        assert not states.requested("t")
        assert [(j.source, j.file_name) for j in queue.pending()] == [
            ("oneroster-api", "oneroster-api-20260202-120000.zip"),
            ("resync", "oneroster-api-20260202-120000.zip")]

        api.secret = "rotated"
        failed = service.pull("t")
        assert failed.status == "failed" and "HTTP 401" in (failed.error or "")
        run = list_runs(store, "t", with_document=True)[0]
        assert (run.run_id, run.status, run.source) == (failed.run_id, "failed",
                                                        "oneroster-api")
        assert run.issue_counts == {"SOURCE_REFUSED": 1}
        assert "check client_id" in run.document.to_json()["errors"][0]["message"]
        assert len(list((root / "state" / "outbox").glob("*.eml"))) == 1
        assert states.read("t").last_outcome == "failed"

        with states.lock("t"), pytest.raises(PullBusy, match="running already"):
            service.pull("t")
        store.close()


def source_table(**overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"type": "oneroster-api",
                             "base_url": "https://sis.example/ims/oneroster/v1p1",
                             "client_id": "c", "client_secret_env": "SIS_SECRET",
                             "token_url": "https://sis.example/token"}
    table.update(overrides)
    return table


@pytest.mark.parametrize(("overrides", "message"), [
    ({"timezone": "America/Chicgo"}, r"source\.timezone: .*unknown IANA time zone"),
    ({"time": "2:00"}, r"source\.time: .*expected HH:MM"),
    ({"base_url": "https://sis.example/api"}, r"source\.base_url: .*must end in"),
    ({"base_url": "sis.example/ims/oneroster/v1p1"}, r"source\.base_url: .*http\(s\)"),
    ({"client_secret_file": "/s"}, r"exactly one of client_secret_env and client_secret_file"),
    ({"token_url": ""}, r'auth = "oauth2" needs token_url'),
    ({"type": "csv"}, r"source\.type"),
    ({"frequency": "weekly"}, r"source\.frequency"),
    ({"page_size": 0}, r"source\.page_size"),
    ({"secret": "x"}, r"source\.secret: unknown key"),
])
def test_source_settings_refused_with_their_path(overrides: dict[str, Any],
                                                 message: str) -> None:
    """Every bad source setting is refused at start with its key path."""
    with pytest.raises(ConfigError, match=message):
        parse_settings({"tenants": {"a": {"source": source_table(**overrides)}}})


def test_secret_from_env_or_file(tmp_path: Path) -> None:
    """The secret comes from the named variable or file; missing or empty is a ConfigError."""
    source = OneRosterSource.model_validate(source_table())
    assert source.version == "1.1"
    assert read_secret(source, "a", {"SIS_SECRET": " s3 \n"}) == "s3"
    with pytest.raises(ConfigError, match=r"tenants\.a\.source\.client_secret_env: "
                                          r"environment variable SIS_SECRET is not set"):
        read_secret(source, "a", {})
    file = tmp_path / "secret"
    by_file = OneRosterSource.model_validate(source_table(
        client_secret_env="", client_secret_file=str(file), auth="oauth1", token_url="",
        base_url="https://sis.example/ims/oneroster/rostering/v1p2"))
    assert by_file.version == "1.2"
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(by_file, "a", {})
    file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret(by_file, "a", {})
    file.write_text("from-file\nignored\n")
    assert read_secret(by_file, "a", {}) == "from-file"
