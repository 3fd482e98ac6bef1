"""People, upload and tenant pages over HTTP: a local edit with the validation of
`people set` and "return to SIS", an upload validated (its verdict on the page) or
queued through intake, Sync Now and pause/resume — each audited, each denied to the
roles and tenants that may not; the CLI's actions land in the same audit trail."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_sync_runner import district, upload
from test_web_console import (  # noqa: F401  (the _fixture names register fixtures)
    client_fixture,
    clock_fixture,
    console_fixture,
    csrf,
    held_run,
    runner_fixture,
    settings_fixture,
    sign_in,
    store_fixture,
)

from rosterdrop.config import Settings
from rosterdrop.runs.runner import Runner
from rosterdrop.store.audit import Target, entries_for
from rosterdrop.store.engine import Store
from rosterdrop.store.jobs import JobQueue
from rosterdrop.store.people import list_people
from rosterdrop.store.tenants import paused_since
from uploads import make_zip


def person(store: Store, person_id: str) -> dict[str, object]:
    return next(p for p in list_people(store, "springfield", None, True)
                if p["person_id"] == person_id)


@pytest.mark.asyncio
async def test_people_search_filters_and_pages(client: httpx.AsyncClient, runner: Runner,
                                               tmp_path: Path) -> None:
    """Search by name, filter by role, 50 a page; a tenant not the admin's is a 404."""
    runner.sync("springfield", upload(tmp_path, district(60)), source="sftp")
    await sign_in(client, "pam")
    page = (await client.get("/people", params={"tenant": "springfield"})).text
    assert "62 account(s), page 1 of 2." in page and 'id="people-next"' in page
    found = (await client.get("/people", params={"tenant": "springfield", "q": "last42"})).text
    assert "1 account(s)." in found and "/people/springfield/P42" in found
    staff = (await client.get("/people", params={"tenant": "springfield", "role": "staff"})).text
    assert "2 account(s)." in staff
    at = [(await client.get("/people", params={"tenant": "springfield", "location": where})).text
          for where in ("S1", "S2", "S9")]
    assert ["61 account(s), page 1 of 2." in at[0], "1 account(s)." in at[1],
            "0 account(s)." in at[2]] == [True, True, True]
    assert (await client.get("/people", params={"tenant": "shelbyville"})).status_code == 404


@pytest.mark.asyncio
async def test_a_local_edit_and_return_to_sis(client: httpx.AsyncClient, runner: Runner,
                                              tmp_path: Path, store: Store) -> None:
    """A site manager edits a person (set_person: the account turns local), a bad value
    is refused with people set's message and the form kept, then returns the person to
    the SIS (reset_person); both in the person's audit trail; a people manager sees the
    values but no form, and a forged edit is 403."""
    runner.sync("springfield", upload(tmp_path, district(5)), source="sftp")
    await sign_in(client, "sam")
    page = (await client.get("/people/springfield/P2")).text
    assert 'id="edit-person"' in page and 'name="last_name" value="Last2"' in page
    token = await csrf(client, "/people/springfield/P2")
    saved = await client.post("/people/springfield/P2", data={
        "csrf_token": token, "last_name": "Lastname-Two", "first_name": "First2",
        "grade_level": "9", "location_ids": "S1"})
    assert saved.status_code == 303
    assert person(store, "P2")["last_name"] == "Lastname-Two"
    assert person(store, "P2")["source"] == "local"
    bad = await client.post("/people/springfield/P2", data={
        "csrf_token": token, "location_ids": "NOWHERE"})
    assert bad.status_code == 400
    assert "cannot edit person 'P2'" in html.unescape(bad.text)
    assert 'value="NOWHERE"' in bad.text
    after = (await client.get(saved.headers["location"])).text
    assert 'id="return-to-sis"' in after and "<b>web:sam</b> edit: set last_name" in after
    reset = await client.post("/people/springfield/P2/reset", data={"csrf_token": token})
    assert reset.status_code == 303 and person(store, "P2")["source"] == "sis"
    trail = entries_for(store, Target.PERSON, "P2", tenant="springfield")
    assert [(e.actor, e.action.value) for e in trail] == [("web:sam", "reset"),
                                                          ("web:sam", "edit")]
    await client.post("/logout", data={"csrf_token": token})
    await sign_in(client, "pam")
    readonly = (await client.get("/people/springfield/P2")).text
    assert 'id="edit-person"' in readonly and 'name="last_name"' not in readonly
    token = await csrf(client)
    for path in ("/people/springfield/P2", "/people/springfield/P2/reset"):
        refused = await client.post(path, data={"csrf_token": token, "last_name": "X"})
        assert refused.status_code == 403, path
    assert person(store, "P2")["last_name"] == "Lastname-Two"  # until the next sync


@pytest.mark.asyncio
async def test_upload_validate_shows_the_verdict_and_keeps_nothing(
        client: httpx.AsyncClient, settings: Settings, store: Store) -> None:
    """mode=validate: the verdict of `validate --tenant` on the page (a bad upload
    FAILED with its codes), no run, no job, nothing left in the state folder."""
    await sign_in(client, "sam")
    token = await csrf(client, "/upload")
    files = district(3)
    files["students.csv"] = str(files["students.csv"]) + "P9,9,A,,B,9,a@d.example,a,,MOON\n"
    sent = await client.post("/upload", data={"csrf_token": token, "tenant": "springfield",
                                              "mode": "validate"},
                             files={"file": ("export.zip", make_zip(files), "application/zip")})
    assert sent.status_code == 200
    assert 'id="verdict-status">FAILED' in sent.text and "export.zip" in sent.text
    assert "Nothing was kept or applied." in sent.text
    good = await client.post("/upload", data={"csrf_token": token, "tenant": "springfield",
                                              "mode": "validate"},
                             files={"file": ("ok.zip", make_zip(district(3)), "application/zip")})
    assert 'id="verdict-status">OK' in good.text and "students 3" in good.text
    assert JobQueue(store).pending() == []
    assert not [p for p in settings.state_dir.iterdir() if p.name.startswith(".console-")]


@pytest.mark.asyncio
async def test_upload_sync_is_queued_like_an_sftp_upload_and_audited(
        client: httpx.AsyncClient, store: Store) -> None:
    """mode=sync: intake moves it into the spool and queues a job (source web) for the
    workers; the upload is in the audit trail; not a ZIP, no file, a wrong mode, a
    people manager or a foreign tenant are refused."""
    await sign_in(client, "sam")
    token = await csrf(client, "/upload")
    zipped = make_zip(district(3))
    sent = await client.post("/upload", data={"csrf_token": token, "tenant": "springfield",
                                              "mode": "sync"},
                             files={"file": ("nightly.zip", zipped, "application/zip")})
    assert sent.status_code == 200 and "nightly.zip is queued (job" in sent.text
    [job] = JobQueue(store).pending()
    assert (job.tenant, job.source, job.file_name) == ("springfield", "web", "nightly.zip")
    assert Path(job.path).read_bytes() == zipped
    [entry] = entries_for(store, Target.UPLOAD, "nightly.zip")
    assert entry.actor == "web:sam" and entry.detail == f"queued as job {job.id}"
    for data, name, message in (
            ({"mode": "sync"}, "notes.txt", "is not a .zip file"),
            ({"mode": "later"}, "a.zip", "mode must be validate or sync"),
            ({"mode": "sync", "tenant": "shelbyville"}, "a.zip", "no tenant")):
        refused = await client.post("/upload", data={"csrf_token": token, "tenant": "springfield",
                                                     **data},
                                    files={"file": (name, zipped, "application/zip")})
        assert refused.status_code in (400, 404) and message in html.unescape(refused.text)
    assert (await client.post("/upload", data={"csrf_token": token, "tenant": "springfield",
                                               "mode": "sync"})).status_code == 400
    await client.post("/logout", data={"csrf_token": token})
    await sign_in(client, "pam")
    assert (await client.get("/upload")).status_code == 403
    refused = await client.post("/upload", data={"csrf_token": await csrf(client),
                                                 "tenant": "springfield", "mode": "sync"},
                                files={"file": ("x.zip", zipped, "application/zip")})
    assert refused.status_code == 403 and len(JobQueue(store).pending()) == 1


@pytest.mark.asyncio
async def test_tenant_page_sync_now_and_pause_resume(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path, store: Store) -> None:
    """The tenant page shows its settings, SFTP account and host-key fingerprint; Sync
    Now queues the last upload again (the resync path); pause and resume switch the
    tenant in the store; each in the tenant's audit trail. A people manager may not
    see the page; a site manager of another tenant gets 404."""
    runner.sync("springfield", upload(tmp_path, district(5)), source="sftp")
    await sign_in(client, "sam")
    page = (await client.get("/tenants/springfield")).text
    assert "SHA256:test-fingerprint" in page and "sis-spring: generated password" in page
    assert "hold a run that deactivates or removes more than 20.0%" in page
    token = await csrf(client, "/tenants/springfield")
    synced = await client.post("/tenants/springfield/sync-now", data={"csrf_token": token})
    assert synced.status_code == 303
    [job] = JobQueue(store).pending()
    assert (job.source, job.file_name) == ("resync", "u.zip")
    paused = await client.post("/tenants/springfield/pause", data={"csrf_token": token})
    assert paused.status_code == 303 and paused_since(store, "springfield") is not None
    page = (await client.get(paused.headers["location"])).text
    assert "Paused: uploads are kept and queued" in page and 'id="resume"' in page
    await client.post("/tenants/springfield/resume", data={"csrf_token": token})
    assert paused_since(store, "springfield") is None
    trail = entries_for(store, Target.TENANT, "springfield", tenant="springfield")
    assert [e.action.value for e in trail] == ["resume", "pause", "sync_now"]
    assert trail[2].detail == f"Queued u.zip again (job {job.id})."
    assert (await client.get("/tenants/shelbyville")).status_code == 404
    await client.post("/logout", data={"csrf_token": token})
    await sign_in(client, "pam")
    assert (await client.get("/tenants/springfield")).status_code == 403
    token = await csrf(client)
    for action in ("sync-now", "pause", "resume"):
        refused = await client.post(f"/tenants/springfield/{action}", data={"csrf_token": token})
        assert refused.status_code == 403, action
    assert paused_since(store, "springfield") is None and len(JobQueue(store).pending()) == 1


def test_cli_actions_are_audited_as_cli_user(settings: Settings, runner: Runner,
                                             tmp_path: Path, store: Store) -> None:
    """`rosterdrop discard`, `people set`, `people reset` and `tenant pause` record
    cli:<os user> in the same trail the console shows."""
    import getpass

    run_id = held_run(runner, tmp_path)
    config = tmp_path / "rd.toml"
    config.write_text(f'state_dir = "{settings.state_dir}"\n[store]\nurl = '
                      f'"{settings.store.url}"\n[tenants.springfield]\n[tenants.shelbyville]\n')

    def cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "rosterdrop", "-c", str(config), *args],
                              capture_output=True, text=True, env={**os.environ})
        assert done.returncode == 0, done.stderr

    cli("discard", run_id)
    cli("people", "set", "P1", "last_name=Edited", "--tenant", "springfield")
    cli("people", "reset", "P1", "--tenant", "springfield")
    cli("tenant", "pause", "springfield")
    me = f"cli:{getpass.getuser()}"
    [discarded] = entries_for(store, Target.RUN, run_id)
    assert (discarded.actor, discarded.action.value, discarded.detail) == (
        me, "discard", "now discarded")
    person_trail = entries_for(store, Target.PERSON, "P1", tenant="springfield")
    assert [(e.actor, e.action.value, e.detail) for e in person_trail] == [
        (me, "reset", "returned to the SIS"), (me, "edit", "set last_name")]
    [paused] = entries_for(store, Target.TENANT, "springfield")
    assert (paused.actor, paused.action.value) == (me, "pause")
