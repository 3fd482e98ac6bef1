"""A run's deliveries on its console page, and "Deliver again" (audited, for the roles
that may act on the tenant)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from test_sync_runner import district, upload
from test_web_console import (  # noqa: F401  (the _fixture names register fixtures)
    client_fixture,
    clock_fixture,
    console_fixture,
    csrf,
    make_settings,
    runner_fixture,
    sign_in,
    store_fixture,
)

from rosterdrop.codes import Code
from rosterdrop.config import Settings
from rosterdrop.runs.runner import Runner
from rosterdrop.store import deliveries as ledger
from rosterdrop.store.audit import Target, entries_for
from rosterdrop.store.engine import Store

DOWN = {"type": "sftp", "name": "asm", "host": "127.0.0.1", "port": 1, "username": "u",
        "password_env": "ROSTERDROP_TEST_UNUSED", "timeout_seconds": 5,
        "host_key_fingerprint": "SHA256:" + "B" * 43}


@pytest.fixture(name="settings")
def settings_fixture(tmp_path: Path, backend_url: str) -> Settings:
    plain = make_settings(tmp_path, backend_url)
    data = plain.model_dump(mode="python", by_alias=True)
    data["tenants"]["springfield"]["destinations"] = [DOWN]
    return type(plain).model_validate(data, strict=False)


@pytest.mark.asyncio
async def test_the_run_page_shows_deliveries_and_delivers_again(
        client: httpx.AsyncClient, runner: Runner, store: Store, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTERDROP_TEST_UNUSED", "pw")
    run = runner.sync("springfield", upload(tmp_path, district(6)), source="sftp")
    await runner.outlets.deliver_run(run.run_id)  # nothing listens on port 1
    (record,) = ledger.of_run(store, run.run_id)
    assert record.status == "failed" and record.attempts == 1

    await sign_in(client, "pam")  # a people manager sees, may not act
    page = (await client.get(f"/runs/{run.run_id}")).text
    assert 'id="deliveries"' in page and "asm" in page and Code.DELIVERY_UNREACHABLE in page
    assert "failed, retrying" in page and 'id="redeliver"' not in page
    token = await csrf(client, f"/runs/{run.run_id}")
    refused = await client.post(f"/runs/{run.run_id}/redeliver", data={"csrf_token": token})
    assert refused.status_code == 403
    assert ledger.of_run(store, run.run_id)[0].attempts == 1

    await client.post("/logout", data={"csrf_token": token})
    await sign_in(client, "sam")
    page = (await client.get(f"/runs/{run.run_id}")).text
    assert 'id="redeliver"' in page
    token = await csrf(client, f"/runs/{run.run_id}")
    again = await client.post(f"/runs/{run.run_id}/redeliver", data={"csrf_token": token})
    assert again.status_code == 303
    (record,) = ledger.of_run(store, run.run_id)
    assert (record.status, record.attempts, record.last_error) == ("pending", 0, None)
    (entry,) = [e for e in entries_for(store, Target.RUN, run.run_id)
                if e.action == "redeliver"]
    assert entry.actor == "web:sam" and entry.detail == "asm"
