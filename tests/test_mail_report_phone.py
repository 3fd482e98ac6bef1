"""Report emails as a district admin reads them on a phone (issue 17, part 5): what the
admin can do (no server command addressed to them), every place once, no zero counts,
counts that agree for an unchanged upload, codes linked to their page, both parts
narrow and consistent, nothing from the upload able to break out of its place."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_run_lifecycle import Sent, make_settings
from test_sync_runner import Clock, district, upload

from rosterdrop.config import MailSettings, Settings, TenantSettings, parse_settings
from rosterdrop.documents import RunDocument, RunStatus
from rosterdrop.errors import ConfigError
from rosterdrop.mail import build_report_email
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import Store, open_store

DOCS = "https://git.example/rosterdrop/blob/main/docs/errors.md"
CONSOLE = "https://rosterdrop.springfield.example"
OPERATOR_LABEL = "For whoever runs rosterdrop:"
ASK = "ask the person who runs rosterdrop for your district"
ZERO_ROW = re.compile(r"^\s*[A-Z]\w*:?\s+0\s*$", re.M)
"""A count row of zero, in any layout (``Created: 0``, ``Created        0``)."""


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if k == "href"]

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _parts(message: EmailMessage) -> tuple[str, str, list[str]]:
    """(plain text, the HTML part's visible text, the HTML part's links)."""
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    parser = _Text()
    parser.feed(str(html.get_content()))
    return str(plain.get_content()), " ".join("".join(parser.parts).split()), parser.hrefs


def _flat(text: str) -> str:
    return " ".join(text.split())


def _admin_part(body: str) -> str:
    """The email up to the operator's line: everything addressed to the admin."""
    return body.split(OPERATOR_LABEL)[0]


@pytest.fixture
def settings(tmp_path: Path, backend_url: str) -> Settings:
    return make_settings(tmp_path, backend_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as opened:
        yield opened


def _held(settings: Settings, store: Store, tmp_path: Path) -> tuple[str, EmailMessage]:
    """A district of 10 students, then an export with 4: held (6 of 10 deactivated)."""
    sent = Sent()
    runner = Runner(settings, store, clock=Clock(), mailer=sent)
    runner.sync("t", upload(tmp_path, district(10)), source="sftp")
    held = runner.sync("t", upload(tmp_path, district(4), "small.zip"), source="sftp")
    assert held.status is RunStatus.HELD
    return held.run_id, sent.messages[-1]


def test_a_held_run_tells_the_admin_what_they_can_do_not_a_server_command(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    """No console: the admin is told to check the changes and ask whoever runs
    rosterdrop (naming the run), or to upload a corrected export; the approve and
    discard commands appear once, on the line labelled for whoever runs rosterdrop."""
    run_id, message = _held(settings, store, tmp_path)
    text, html, hrefs = _parts(message)
    for body in (_flat(text), html):
        admin = _admin_part(body)
        assert "rosterdrop approve" not in admin and "rosterdrop discard" not in admin
        assert f"If they are expected, {ASK} to approve run {run_id}" in admin
        assert "upload it again: a newer upload discards this held run" in admin
        # the guard's message is shown, without the commands it carries for the CLI
        assert "so nothing was applied and the run is held." in admin
        assert body.count("rosterdrop approve") == 1 and body.count("rosterdrop discard") == 1
        operator = body.split(OPERATOR_LABEL)[1]
        assert f"rosterdrop approve {run_id} applies the held run" in operator
        assert f"rosterdrop discard {run_id} drops it" in operator
    assert not any("/runs/" in href for href in hrefs)


def test_with_a_console_the_held_email_links_to_the_run_page(
        tmp_path: Path, backend_url: str) -> None:
    """[web] base_url set: a button (and in the text a link) to {base_url}/runs/{run_id};
    the admin approves or discards there."""
    settings = make_settings(tmp_path, backend_url, web={"base_url": CONSOLE + "/"})
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open_store(settings.database_url) as store:
        run_id, message = _held(settings, store, tmp_path)
    text, html, hrefs = _parts(message)
    assert f"{CONSOLE}/runs/{run_id}" in hrefs
    assert f"Approve or discard this run: {CONSOLE}/runs/{run_id}" in text
    for body in (_flat(text), html):
        admin = _admin_part(body)
        assert "approve the run on its page in the rosterdrop console" in admin
        assert "rosterdrop approve" not in admin


def test_a_failed_run_shows_no_zero_counts(settings: Settings, store: Store,
                                           tmp_path: Path) -> None:
    """A rejected upload: the records it held, and "No changes" once, not eight zeros."""
    runner = Runner(settings, store, clock=Clock(), mailer=(sent := Sent()))
    files = district(3)
    files["students.csv"] = str(files["students.csv"]).replace("First1,", ",")
    run = runner.sync("t", upload(tmp_path, files, "bad.zip"), source="sftp")
    assert run.status is RunStatus.FAILED
    text, html, _ = _parts(sent.messages[-1])
    assert not ZERO_ROW.search(text), text
    for body in (text, html):
        assert body.count("No changes") == 1
        for label in ("Created", "Updated", "Deactivated", "Removed", "Unchanged",
                      "Filtered", "Patched"):
            assert label not in body, label
    assert run.document is not None and sum(run.document.counts.values()) == 14
    assert "Received: 14" in text
    # the blank first name: its place once, above the message
    assert text.count("students.csv, line 2, column first_name") == 1
    assert "students.csv line 2" not in text


def test_an_unchanged_upload_says_so_and_its_counts_agree(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    """The same bytes again: the email says they are byte-identical to the last applied
    upload, shows what that upload held, and no "Unchanged 0" beside it."""
    runner = Runner(settings, store, clock=Clock(), mailer=(sent := Sent()))
    path = upload(tmp_path, district(5))
    first = runner.sync("t", path, source="sftp")
    again = runner.sync("t", path, source="sftp")
    assert again.status is RunStatus.UNCHANGED and first.document is not None
    received = sum(first.document.counts.values())
    text, html, _ = _parts(sent.messages[-1])
    for body in (_flat(text), html):
        assert "byte-identical to the last applied upload" in body
        assert f"Received: {received:,}" in body
        assert "No changes: byte-identical to the last applied upload" in body
        for label in ("Unchanged", "Created", "Updated", "not recognised"):
            assert label not in body, label
    assert not ZERO_ROW.search(text)


# --- built from a document ----------------------------------------------------------


TENANT = TenantSettings(name="Springfield Public Schools", report_to=["it@springfield.example"])
RUN_ID = "20261123-114349-7f3a"


def _document(status: str = "failed", **overrides: Any) -> RunDocument:
    run: dict[str, Any] = {
        "run_id": RUN_ID, "tenant": "springfield", "status": status, "file": "district.zip",
        "sha256": "ab" * 32, "layout": "oneroster-1.1", "counts": {"students": 1200},
        "issue_counts": {"EMAIL_INVALID": 1},
        "errors": [{"code": "EMAIL_INVALID", "severity": "error", "file": "users.csv",
                    "line": 1012, "column": "email", "value": "bob@@x.org",
                    "message": "users.csv line 1012: email 'bob@@x.org' is not a valid "
                               "email address."}],
    }
    run.update(overrides)
    return RunDocument.from_json(run)


def _email(document: RunDocument, tenant: TenantSettings = TENANT, **mail: Any) -> EmailMessage:
    return build_report_email(document, tenant, MailSettings(**mail), {},
                              f"reports/{RUN_ID}/")


def test_each_issue_s_place_is_shown_once() -> None:
    """``users.csv, line 1,012, column email`` above the message, and the message
    without its own ``users.csv line 1012:`` prefix."""
    text, html, _ = _parts(_email(_document()))
    for body in (text, html):
        assert body.count("users.csv, line 1,012, column email") == 1
        assert "line 1012" not in body
        assert body.count("users.csv") == 1
        assert "email 'bob@@x.org' is not a valid email address." in body


def test_each_code_links_to_its_section_of_the_issue_code_page() -> None:
    """mail.docs_url set: the code links to docs_url#code (the anchor GitHub makes of the
    heading ``### `EMAIL_INVALID```), and the footer to the page."""
    message = _email(_document(), docs_url=DOCS)
    text, _, hrefs = _parts(message)
    assert f"{DOCS}#email_invalid" in hrefs and DOCS in hrefs
    html = message.get_body(("html",))
    assert html is not None
    assert re.search(rf'<a href="{re.escape(DOCS)}#email_invalid"[^>]*>EMAIL_INVALID</a>',
                     str(html.get_content()))
    assert f"About this code: {DOCS}#email_invalid" in text
    assert f"What each code means: {DOCS}" in text
    headings = re.findall(r"^### `([A-Z_]+)`", Path("docs/errors.md").read_text(), re.M)
    assert "EMAIL_INVALID" in headings


def test_without_docs_url_no_link_is_made_up() -> None:
    """No docs_url (the default): no link to a guessed address; the page is named."""
    text, html, hrefs = _parts(_email(_document()))
    assert hrefs == []
    for body in (text, html):
        assert "explained in the rosterdrop documentation (docs/errors.md)" in body


@pytest.mark.parametrize(("key", "value"), [
    ("mail.docs_url", "javascript:alert(1)"),
    ("mail.docs_url", f'{DOCS}" onclick="x'),
    ("mail.docs_url", f"{DOCS}#email_invalid"),
    ("web.base_url", "ftp://rosterdrop.example"),
    ("web.base_url", f"{CONSOLE}/?next=x"),
])
def test_link_settings_take_only_plain_http_urls(key: str, value: str) -> None:
    """A link that is not http(s), or could leave its attribute, is refused at start."""
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=re.escape(key)):
        parse_settings({section: {name: value}})


def test_values_cannot_leave_their_place() -> None:
    """A tenant name with a line break cannot add a header; HTML in a value or message is
    text; the run id in the console link is percent-encoded."""
    tenant = TenantSettings(name="Springfield\r\nBcc: evil@x.example", report_to=["a@x.example"])
    document = _document(errors=[{
        "code": "EMAIL_INVALID", "severity": "error", "file": "<b>users.csv</b>", "line": 3,
        "column": "email", "value": "<img src=x onerror=alert(1)>",
        "message": "<b>users.csv</b> line 3: <script>alert(1)</script>"}])
    message = _email(document, tenant)
    assert message["Bcc"] is None and "\n" not in str(message["Subject"]).strip()
    html = message.get_body(("html",))
    assert html is not None
    raw = str(html.get_content())
    assert "<script" not in raw and "<img" not in raw and "<b>" not in raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    odd = build_report_email(_document(run_id="a/b?c"), TENANT, MailSettings(), {}, "",
                             web=parse_settings({"web": {"base_url": CONSOLE}}).web)
    assert f"{CONSOLE}/runs/a%2Fb%3Fc" in _parts(odd)[2]


@pytest.mark.parametrize("status", ["completed", "failed", "held", "unchanged"])
def test_both_parts_are_narrow_and_say_the_same(status: str) -> None:
    """No table and nothing aligned in columns (a phone reflows each line); the next
    steps and the counts read the same in the text and the HTML part."""
    message = _email(_document(status, changes={"created": {"students": 3}}))
    text, html, _ = _parts(message)
    part = message.get_body(("html",))
    assert part is not None
    assert "<table" not in str(part.get_content())
    assert not re.search(r"\S {3,}\S", text), "columns padded with spaces"
    steps = text.split("What to do next\n---------------\n")[1].split("\n\n")[0]
    for line in steps.splitlines():
        if line.startswith("- ") and "http" not in line:
            assert _flat(unescape(line[2:])) in html, line
    for row in re.findall(r"^(\w+: [\d,]+)$", text, re.M):
        assert row in html, row


def test_a_superseded_upload_is_not_called_identical() -> None:
    """An upload skipped for a newer one (status unchanged, UPLOAD_SUPERSEDED) says so."""
    document = _document("unchanged", counts={}, errors=[], issue_counts={
        "UPLOAD_SUPERSEDED": 1}, warnings=[{
            "code": "UPLOAD_SUPERSEDED", "severity": "warning", "file": "old.zip",
            "line": None, "column": None, "value": None,
            "message": "'old.zip' was not processed because a newer full upload arrived."}])
    message = _email(document)
    text, html, _ = _parts(message)
    assert str(message["Subject"]).strip().endswith("upload skipped for a newer one")
    for body in (text, html):
        assert "byte-identical" not in body
        assert "was skipped: a newer upload arrived before its turn" in body
