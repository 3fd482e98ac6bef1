"""The admin console in a real browser: Debian's chromium, driven by Playwright, against
a `rosterdrop serve` started for this module, each scenario as an admin does it —
signing in, an SFTP upload's run page, a held run approved (and refused to a People
Manager), a ZIP uploaded from the file chooser, a person edited and returned to the SIS,
a phone-width screen, the keyboard. axe-core checks every page visited: a serious or
critical violation fails the test.

One daemon and one browser for the module; each test has its own browser context (its
own cookies) and its own tenant, so the order of the tests does not matter. Every wait
is on the page's state or the daemon's log, never a sleep."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    CHROMIUM,
    PASSWORD,
    ConsoleDaemon,
    axe_script,
    needs_chromium,
    serious_violations,
)
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from test_sync_runner import district

from uploads import make_zip

pytestmark = [needs_chromium, pytest.mark.slow, pytest.mark.timeout(180)]


WAIT_MS = 20_000
"""How long a page may take to reach the state a test waits for (generous: CI's two
cores also run the daemon and its workers)."""
PHONE = {"width": 375, "height": 812}
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleDaemon]:
    running = ConsoleDaemon(tmp_path_factory.mktemp("console")).start()
    try:
        yield running
    finally:
        assert running.stop() == 0, "\n".join(running.lines()[-30:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def axe() -> Path | None:
    """axe-core's script, or None where npm cannot fetch it (then
    test_axe_core_is_at_hand says so as a skip; the scenarios still run)."""
    try:
        return axe_script()
    except pytest.skip.Exception:
        return None


def test_axe_core_is_at_hand(axe: Path | None, open_page: Opener) -> None:
    """The accessibility checks of the scenarios need axe-core from the npm registry,
    and they fail where they should: an unnamed button and an image without alt text
    are critical, a page without title or language serious."""
    if axe is None:
        axe_script()  # skips, with npm's reason
    assert axe is not None
    page = open_page()
    page.set_content("<html><body><main><button></button><img src='x.png'></main></body>"
                     "</html>")
    found = {line.split(":")[0] for line in serious_violations(page, axe)}
    assert found == {"critical button-name", "critical image-alt", "serious document-title",
                     "serious html-has-lang"}


Opener = Callable[..., Page]


@pytest.fixture(scope="module")
def sessions() -> dict[str, Any]:
    """Each admin's signed-in cookies, kept after their first sign-in in this module:
    signing in is its own scenario, and argon2 costs a second a time on a busy CI."""
    return {}


@pytest.fixture
def open_page(browser: Browser, daemon: ConsoleDaemon,
              sessions: dict[str, Any]) -> Iterator[Opener]:
    """A new page in a context of its own (its own cookies), signed in as ``admin``
    when one is named."""
    contexts: list[BrowserContext] = []

    def opener(admin: str = "", *, viewport: dict[str, int] | None = None,
               bypass_csp: bool = True) -> Page:
        # bypass_csp: the console's Content-Security-Policy (script-src 'self') rightly
        # refuses the inline <script> page.add_script_tag makes for axe-core; it is
        # lifted for that alone. test_sign_in_with_the_keyboard keeps the CSP on and
        # checks that the console works under it.
        context = browser.new_context(base_url=daemon.base_url, bypass_csp=bypass_csp,
                                      viewport=viewport or {"width": 1280, "height": 900},
                                      storage_state=sessions.get(admin))
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        if admin:
            if admin in sessions:
                page.goto("/")
            else:
                sign_in(page, admin)
                sessions[admin] = context.storage_state()
            expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
        return page

    yield opener
    for context in contexts:
        context.close()


@pytest.fixture
def a11y(axe: Path | None) -> Callable[[Page], None]:
    def check(page: Page) -> None:
        if axe is None:
            return
        found = serious_violations(page, axe)
        assert not found, f"accessibility on {page.url}:\n" + "\n".join(found)

    return check


def sign_in(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard", timeout=WAIT_MS)


def counts(page: Page) -> dict[str, dict[str, str]]:
    """The run page's counts table: row label → kind → the number shown."""
    table = page.evaluate("""() => {
      const t = document.querySelector('#changes');
      const kinds = [...t.tHead.rows[0].cells].slice(1).map(c => c.textContent.trim());
      return [...t.tBodies[0].rows].map(r => [r.cells[0].textContent.trim(),
        Object.fromEntries([...r.cells].slice(1).map((c, i) => [kinds[i], c.textContent.trim()]))]);
    }""")
    return dict(table)


@pytest.fixture(scope="module")
def held_runs(daemon: ConsoleDaemon) -> Callable[[str], str]:
    """A held run in ``tenant`` (made once per tenant): 10 students applied by a first
    SFTP upload, then an upload of 4 that would deactivate 6 of 12 people (50%, over
    the guard's 20%)."""
    made: dict[str, str] = {}

    def held(tenant: str) -> str:
        if tenant not in made:
            first = daemon.sftp_sync(tenant, district(10), f"{tenant}-full.zip")
            assert first["status"] == "completed", first
            small = daemon.sftp_sync(tenant, district(4), f"{tenant}-small.zip")
            assert small["status"] == "held", small
            made[tenant] = str(small["run_id"])
        return made[tenant]

    return held


def test_sign_in_and_a_wrong_password_refused(open_page: Opener,
                                              a11y: Callable[[Page], None]) -> None:
    """A page asked for without a session goes to the sign-in form; a wrong password is
    refused there (401) with a message and the username kept; the right one opens the
    dashboard as the admin's role; signing out ends the session."""
    page = open_page()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
    a11y(page)
    page.get_by_label("Username").fill("sam")
    page.get_by_label("Password").fill("not the password")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value("sam")
    expect(page.get_by_label("Password")).to_have_value("")
    a11y(page)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator(".who")).to_have_text("sam (Site Manager)")
    a11y(page)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.goto("/runs")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fruns$"))


def test_an_sftp_upload_and_its_run_page(daemon: ConsoleDaemon, open_page: Opener,
                                         a11y: Callable[[Page], None]) -> None:
    """The SIS puts a ZIP over SFTP (paramiko); the administrator finds its run on the
    dashboard, opens it, and reads its status and counts; the tenant's page gives the
    SFTP account and host-key fingerprint to pass to the SIS vendor."""
    finished = daemon.sftp_sync("springfield", district(10), "springfield.zip")
    assert finished["status"] == "completed", finished
    run_id = str(finished["run_id"])
    page = open_page("ana")
    a11y(page)
    card = page.locator("#tenant-springfield")
    expect(card).to_contain_text("Last run: completed")
    card.get_by_role("link", name="completed").click()
    expect(page).to_have_url(re.compile(f"/runs/{run_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Run {run_id}")
    expect(page.locator("#run-status")).to_have_text("completed")
    assert "sftp" in page.locator(".meta").inner_text()
    table = counts(page)
    assert table["in the upload"] == {"locations": "2", "students": "10", "staff": "2",
                                      "courses": "2", "classes": "2", "rosters": "10"}
    assert table["created"]["students"] == "10" and table["created"]["staff"] == "2"
    expect(page.locator("#files")).to_contain_text("report.json")
    a11y(page)
    page.get_by_role("link", name="Dashboard").click()
    page.locator("#tenant-springfield").get_by_role("link", name="Springfield").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Springfield")
    expect(page.locator("#accounts")).to_contain_text("sis-springfield: password")
    expect(page.locator("#fingerprint")).to_contain_text("SHA256:")
    a11y(page)


def test_a_held_run_approved_by_a_site_manager(daemon: ConsoleDaemon, open_page: Opener,
                                               held_runs: Callable[[str], str],
                                               a11y: Callable[[Page], None]) -> None:
    """A run the guard held waits on the dashboard; the Site Manager opens it, reads what
    it would change, approves it through the confirmation, and sees it applied: the run
    completed with the approval in its audit trail, the 6 students left out of the
    upload now inactive."""
    run_id = held_runs("shelbyville")
    page = open_page("sam")
    waiting = page.locator("section[aria-labelledby=held-heading]")
    waiting.get_by_role("link", name=run_id).click()
    expect(page.locator("#run-status")).to_have_text("held")
    held = page.locator("section.held")
    expect(held).to_contain_text("Nothing of this upload was applied.")
    assert counts(page)["deactivated"]["students"] == "6"
    a11y(page)
    held.get_by_role("link", name="Approve…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Approve run {run_id}?")
    expect(page.locator("#would-change")).to_contain_text("deactivated: 6")
    a11y(page)
    page.get_by_role("button", name=f"Approve run {run_id}").click()
    expect(page).to_have_url(re.compile(f"/runs/{run_id}\\?done="))
    expect(page.get_by_role("status")).to_have_text("Approved: the run is completed.")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("section.held")).to_have_count(0)
    expect(page.locator("#audit")).to_contain_text("web:sam approve: now completed")
    a11y(page)
    page.get_by_role("link", name="People").click()
    page.get_by_label("Tenant").select_option("shelbyville")
    page.get_by_label("Status").select_option("inactive")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#people-total")).to_have_text("6 account(s).")
    a11y(page)
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("section[aria-labelledby=held-heading]")
           .get_by_role("link", name=run_id)).to_have_count(0)


def test_a_people_manager_may_not_approve(daemon: ConsoleDaemon, open_page: Opener,
                                          held_runs: Callable[[str], str],
                                          a11y: Callable[[Page], None]) -> None:
    """A People Manager finds the held run in the history and reads it, but is offered no
    Approve or Discard, and the server answers the same requests sent anyway (with the
    session's own CSRF token) with 403; the run stays held."""
    run_id = held_runs("ogdenville")
    page = open_page("pam")
    page.get_by_role("link", name="History").click()
    page.get_by_label("Tenant").select_option("ogdenville")
    page.get_by_label("Status").select_option("held")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    a11y(page)
    page.get_by_role("link", name=run_id).click()
    expect(page.locator("#run-status")).to_have_text("held")
    expect(page.locator("section.held")).to_contain_text(
        "Your role may not approve or discard runs.")
    expect(page.get_by_role("link", name="Approve…")).to_have_count(0)
    expect(page.get_by_role("link", name="Discard…")).to_have_count(0)
    a11y(page)
    token = page.locator("input[name=csrf_token]").first.input_value()
    for action in ("approve", "discard"):
        refused = page.request.post(f"/runs/{run_id}/{action}",
                                    form={"csrf_token": token}, max_redirects=0)
        assert refused.status == 403, (action, refused.status, refused.text()[:300])
        assert "a People Manager may not do this" in refused.text()
    confirm = page.goto(f"/runs/{run_id}/approve")
    assert confirm is not None and confirm.status == 403
    expect(page.get_by_role("alert")).to_contain_text("a People Manager may not do this")
    a11y(page)
    page.goto(f"/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("held")
    expect(page.locator("#audit-empty")).to_be_visible()


def test_upload_a_zip_in_the_browser_to_validate(daemon: ConsoleDaemon, open_page: Opener,
                                                 tmp_path: Path,
                                                 a11y: Callable[[Page], None]) -> None:
    """The Site Manager picks a ZIP in the file chooser, validate only: a broken export
    is FAILED with its code, a good one OK; neither leaves a run."""
    files = district(3)
    files["students.csv"] = str(files["students.csv"]) + "P9,9,A,,B,9,a@d.example,a,,MOON\n"
    broken = tmp_path / "broken-export.zip"
    broken.write_bytes(make_zip(files))
    good = tmp_path / "good-export.zip"
    good.write_bytes(make_zip(district(3)))
    page = open_page("sam")
    page.get_by_role("link", name="Upload").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Upload")
    a11y(page)
    for path, verdict in ((broken, "FAILED"), (good, "OK")):
        page.get_by_label("Tenant").select_option("northhaverbrook")
        with page.expect_file_chooser() as chooser:
            page.get_by_label("ZIP file").click()
        chooser.value.set_files(str(path))
        expect(page.get_by_label("Validate only: check it, apply nothing")).to_be_checked()
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#verdict-heading")).to_have_text(f"{path.name}: {verdict}")
        expect(page.locator("#verdict")).to_contain_text("Nothing was kept or applied.")
        if verdict == "FAILED":
            expect(page.locator("#verdict-codes")).to_contain_text("REFERENCE_MISSING: 1")
        a11y(page)
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#tenant-northhaverbrook")).to_contain_text("No runs yet.")
    assert daemon.named("run_finished", tenant="northhaverbrook") == []


def test_drop_a_zip_on_the_upload_page(daemon: ConsoleDaemon, open_page: Opener,
                                       a11y: Callable[[Page], None]) -> None:
    """The Site Manager drags an export from a folder window onto the drop zone: it
    becomes the form's file (named on the page), and validating it gives its verdict.
    The drop is dispatched in the page with a real File, as a browser's drop carries
    one; the page's own CSP stays on (console.js is served by the console itself)."""
    files = district(3)
    files["students.csv"] = str(files["students.csv"]) + "P9,9,A,,B,9,a@d.example,a,,MOON\n"
    data = make_zip(files)
    page = open_page("sam")
    page.goto("/upload")
    page.get_by_label("Tenant").select_option("northhaverbrook")
    page.evaluate(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name,
                                        {type: "application/zip"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer,
                                                          bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true,
                                                      cancelable: true}));
        }""",
        ["dropped-export.zip", list(data)])
    expect(page.locator("#dropzone-chosen")).to_have_text("Chosen: dropped-export.zip")
    a11y(page)
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#verdict-heading")).to_have_text("dropped-export.zip: FAILED")
    expect(page.locator("#verdict-codes")).to_contain_text("REFERENCE_MISSING: 1")
    assert daemon.named("run_finished", tenant="northhaverbrook") == []


def test_edit_a_person_and_return_them_to_the_sis(daemon: ConsoleDaemon, open_page: Opener,
                                                  a11y: Callable[[Page], None]) -> None:
    """The Site Manager finds a student, corrects the last name (the account turns
    local), is refused an unknown location with people set's message, then returns the
    student to the SIS: the next SFTP sync brings back the SIS's value."""
    first = daemon.sftp_sync("capital", district(5), "capital.zip")
    assert first["status"] == "completed", first
    page = open_page("sam")
    page.get_by_role("link", name="People").click()
    page.get_by_label("Tenant").select_option("capital")
    page.get_by_label("Search").fill("Last3")
    page.get_by_role("button", name="Find").click()
    expect(page.locator("#people-total")).to_have_text("1 account(s).")
    a11y(page)
    page.get_by_role("link", name="P3").click()
    expect(page.locator("#person-source")).to_have_text("sis")
    expect(page.get_by_role("button", name="Return to SIS")).to_have_count(0)
    a11y(page)
    page.get_by_label("Last name").fill("Lastname-Three")
    page.get_by_role("button", name="Save local edit").click()
    expect(page.locator("#person-source")).to_have_text("local")
    expect(page.get_by_label("Last name")).to_have_value("Lastname-Three")
    expect(page.locator("#audit")).to_contain_text("web:sam edit: set last_name")
    a11y(page)
    page.get_by_label("Locations").fill("NOWHERE")
    page.get_by_role("button", name="Save local edit").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot edit person 'P3'")
    expect(page.get_by_label("Locations")).to_have_value("NOWHERE")
    a11y(page)
    page.get_by_role("button", name="Return to SIS").click()
    expect(page.locator("#person-source")).to_have_text("sis")
    expect(page.get_by_role("button", name="Return to SIS")).to_have_count(0)
    expect(page.locator("#audit")).to_contain_text("web:sam reset")
    again = daemon.sftp_sync("capital", district(6), "capital-again.zip")
    assert again["status"] == "completed", again
    page.reload()
    expect(page.get_by_label("Last name")).to_have_value("Last3")
    expect(page.get_by_label("Locations")).to_have_value("S1")


def test_phone_width_dashboard_and_run_page(daemon: ConsoleDaemon, open_page: Opener,
                                            held_runs: Callable[[str], str], tmp_path: Path,
                                            a11y: Callable[[Page], None]) -> None:
    """At 375×812 the dashboard and a held run's page fit the screen's width (wide tables
    scroll in their own box) and the Approve button is on screen; screenshots kept in the
    test's tmp folder."""
    run_id = held_runs("ogdenville")
    page = open_page("sam", viewport=PHONE)
    for name, path in (("dashboard", "/"), ("run", f"/runs/{run_id}")):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        widths = page.evaluate("() => [document.documentElement.scrollWidth, "
                               "window.innerWidth]")
        assert widths[1] == PHONE["width"]
        assert widths[0] <= widths[1], f"{name} page overflows: {widths[0]} px wide"
        # No word is broken across lines: a cell's unspaced text ("Code", "locations",
        # a run id) lies on one line; a wide table scrolls in its box instead.
        broken = page.evaluate("""() => [...document.querySelectorAll('th, td')]
            .filter(cell => cell.textContent.trim() && !/\\s/.test(cell.textContent.trim()))
            .filter(cell => { const range = document.createRange();
                              range.selectNodeContents(cell);
                              return new Set([...range.getClientRects()].filter(r => r.width)
                                             .map(r => Math.round(r.top))).size > 1; })
            .map(cell => cell.textContent.trim())""")
        assert broken == [], f"{name} page breaks words: {broken[:5]}"
        shot = tmp_path / f"phone-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 5_000
        a11y(page)
    approve = page.get_by_role("link", name="Approve…").bounding_box()
    assert approve is not None and approve["x"] >= 0
    assert approve["x"] + approve["width"] <= PHONE["width"]


def test_sign_in_with_the_keyboard(open_page: Opener) -> None:
    """Tab to the username, type, Tab to the password, type, Enter: signed in. The focus
    is visible on the way. The page runs under its own Content-Security-Policy here (no
    bypass) and the browser refuses nothing on it and meets no script error."""
    page = open_page(bypass_csp=False)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: refused.append(str(e)))
    page.goto("/login")
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "username":
            break
    assert page.evaluate("document.activeElement.id") == "username"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "no visible focus on the username field"
    page.keyboard.type("pam")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator(".who")).to_have_text("pam (People Manager)")
    assert refused == []
