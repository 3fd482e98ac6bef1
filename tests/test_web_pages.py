"""The console's pages over HTTP on a real store with a real Runner: dashboard,
history, a run's page (the email's sentence, issues paged by the database, files),
approve and discard of a held run with its confirmation and audit trail, and the
denials of every role and tenant."""

from __future__ import annotations

import html
import re
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

from rosterdrop.runs.runner import Runner
from rosterdrop.store.directory import list_people
from rosterdrop.store.engine import Store
from rosterdrop.store.history import get_run


def failed_run(runner: Runner, tmp_path: Path, tenant: str = "springfield") -> str:
    files = district(10)
    files["students.csv"] = str(files["students.csv"]) + "".join(  # unknown schools
        f"P{n},{n},First{n},,Last{n},9,f{n}@d.example,f{n},,NOWHERE{n}\n"
        for n in range(100, 175))
    return runner.sync(tenant, upload(tmp_path, files, "bad.zip"), source="sftp").run_id


@pytest.mark.asyncio
async def test_dashboard_shows_each_tenant_held_runs_and_failures(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path) -> None:
    """Each of the admin's tenants with its last run; the held run waiting; the
    failure of the week; a site manager of Springfield sees nothing of Shelbyville."""
    held = held_run(runner, tmp_path)
    failed = failed_run(runner, tmp_path, "shelbyville")
    await sign_in(client, "ana")
    page = (await client.get("/")).text
    assert 'id="tenant-springfield"' in page and 'id="tenant-shelbyville"' in page
    held_section = page.split('id="held-heading"')[1].split('id="failed-heading"')[0]
    assert f"/runs/{held}" in held_section
    failures = page.split('id="failed-heading"')[1]
    assert "Failures in the last 7 days (1)" in page and f"/runs/{failed}" in failures
    await client.post("/logout", data={"csrf_token": await csrf(client)})
    await sign_in(client, "sam")
    page = (await client.get("/")).text
    assert 'id="tenant-springfield"' in page and "shelbyville" not in page.lower()
    assert failed not in page and 'id="no-failures"' in page


@pytest.mark.asyncio
async def test_history_filters_and_pages_by_keyset(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path) -> None:
    """Filters by tenant, status, source and date; 50 a page, the next page starts after
    the last run shown; junk filters are a 400 with what is allowed; another admin's
    tenant is a 404."""
    ids = [runner.sync("springfield", upload(tmp_path, district(3 + n % 2), f"u{n}.zip"),
                       source="sftp").run_id for n in range(53)]
    await sign_in(client, "sam")
    first = (await client.get("/runs?tenant=springfield")).text
    shown = re.findall(r'<a href="/runs/([^"]+)">', first)
    assert shown == ids[::-1][:50]
    cursor = re.search(r'id="next-page" href="([^"]+)"', first)
    assert cursor is not None
    second = (await client.get(cursor.group(1).replace("&amp;", "&"))).text
    assert re.findall(r'<a href="/runs/([^"]+)">', second) == ids[::-1][50:]
    assert 'id="next-page"' not in second
    unchanged = (await client.get("/runs?status=unchanged&source=sftp")).text
    assert 'id="no-runs"' in unchanged
    day = (await client.get("/runs?date=2026-11-23&status=completed")).text
    assert len(re.findall(r'<a href="/runs/', day)) == 50
    assert 'id="no-runs"' in (await client.get("/runs?date=2026-11-24")).text
    bad = await client.get("/runs?status=great")
    assert bad.status_code == 400
    assert "unknown status 'great' (one of running" in html.unescape(bad.text)
    assert (await client.get("/runs?date=yesterday")).status_code == 400
    assert (await client.get("/runs?tenant=shelbyville")).status_code == 404


@pytest.mark.asyncio
async def test_run_page_shows_the_sentence_counts_and_pages_issues_in_the_database(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path, store: Store) -> None:
    """A failed run's page: the email's sentence, issues grouped by code, searched and
    paged 50 at a time from issues.csv, the files to download (only the run's own)."""
    run_id = failed_run(runner, tmp_path)
    run = get_run(store, run_id)
    await sign_in(client, "pam")
    page = await client.get(f"/runs/{run_id}")
    assert page.status_code == 200
    assert "The upload bad.zip was not applied because of" in page.text
    assert 'id="issue-codes"' in page.text
    total = sum(run.issue_counts.values())
    assert total > 50
    assert f"{total:,} matching, page 1 of {-(-total // 50)}." in page.text
    assert page.text.count("<tr><td>") == 50
    code, n = max(run.issue_counts.items(), key=lambda item: item[1])
    coded = (await client.get(f"/runs/{run_id}", params={"code": code})).text
    assert f"{n:,} matching" in coded
    found = (await client.get(f"/runs/{run_id}", params={"q": "nowhere174"})).text
    assert re.search(r"[1-9]\d* matching", found) and "NOWHERE174" in found
    last = (await client.get(f"/runs/{run_id}", params={"page": 99})).text
    assert f"page {-(-total // 50)} of {-(-total // 50)}" in last
    download = await client.get(f"/runs/{run_id}/files/issues.csv")
    assert download.status_code == 200 and download.text.startswith("code,severity")
    assert "attachment" in download.headers["content-disposition"]
    assert (await client.get(f"/runs/{run_id}/files/..%2Fsecret")).status_code == 404
    assert (await client.get("/runs/nope")).status_code == 404


@pytest.mark.asyncio
async def test_a_held_run_approved_in_the_console_is_applied_and_audited(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path, store: Store) -> None:
    """A site manager opens the held run (what would change, preview.csv), confirms,
    and the run is applied by Runner.approve: people deactivated, the run completed,
    the approval in the audit trail on the run page."""
    run_id = held_run(runner, tmp_path)
    await sign_in(client, "sam")
    page = (await client.get(f"/runs/{run_id}")).text
    assert "was held and not applied: it would deactivate 6" in page
    assert 'id="approve"' in page and 'id="preview"' in page
    confirm = await client.get(f"/runs/{run_id}/approve")
    assert confirm.status_code == 200 and "deactivated: 6" in confirm.text
    done = await client.post(f"/runs/{run_id}/approve", data={"csrf_token": await csrf(client)})
    assert done.status_code == 303
    assert get_run(store, run_id).status.value == "completed"
    students = [p for p in list_people(store, "springfield", None, False)
                if p["role"] == "student"]
    assert len(students) == 4
    after = (await client.get(done.headers["location"])).text
    assert "Approved: the run is completed." in after
    assert re.search(r"<b>web:sam</b> approve: now completed", after)
    again = await client.post(f"/runs/{run_id}/approve", data={"csrf_token": await csrf(client)})
    assert again.status_code == 400 and "not held" in again.text


@pytest.mark.asyncio
async def test_discard_drops_the_held_run(client: httpx.AsyncClient, runner: Runner,
                                          tmp_path: Path, store: Store) -> None:
    """Discard (after its confirmation page) applies nothing and is audited."""
    run_id = held_run(runner, tmp_path)
    await sign_in(client, "ana")
    assert "nothing of it is applied" in (await client.get(f"/runs/{run_id}/discard")).text
    done = await client.post(f"/runs/{run_id}/discard", data={"csrf_token": await csrf(client)})
    assert done.status_code == 303
    assert get_run(store, run_id).status.value == "discarded"
    assert len([p for p in list_people(store, "springfield", None, False)
                if p["role"] == "student"]) == 10
    assert "<b>web:ana</b> discard" in (await client.get(f"/runs/{run_id}")).text


@pytest.mark.asyncio
async def test_roles_and_tenants_are_enforced_on_the_server(
        client: httpx.AsyncClient, runner: Runner, tmp_path: Path, store: Store) -> None:
    """A people manager sees the held run but no buttons, and a forged approve or
    discard is 403; a site manager of Shelbyville gets 404 for Springfield's run, its
    files and its actions; nothing moved."""
    run_id = held_run(runner, tmp_path)
    await sign_in(client, "pam")
    page = (await client.get(f"/runs/{run_id}")).text
    assert 'id="approve"' not in page and "Your role may not approve" in page
    token = await csrf(client)
    for action in ("approve", "discard"):
        refused = await client.post(f"/runs/{run_id}/{action}", data={"csrf_token": token})
        assert refused.status_code == 403, action
        assert "a People Manager may not do this (act on springfield)" in refused.text
        assert (await client.get(f"/runs/{run_id}/{action}")).status_code == 403
    await client.post("/logout", data={"csrf_token": token})
    await sign_in(client, "bob")
    token = await csrf(client)
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/files/report.json",
                 f"/runs/{run_id}/approve"):
        assert (await client.get(path)).status_code == 404, path
    refused = await client.post(f"/runs/{run_id}/approve", data={"csrf_token": token})
    assert refused.status_code == 404 and f"no run '{run_id}'" in html.unescape(refused.text)
    assert get_run(store, run_id).status.value == "held"
