"""The report email: its content, delivery over a real SMTP server or the outbox (one
attempt per call), and the mail ledger's retries of a failed report."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from structlog.testing import capture_logs

from rosterdrop.config import MailSettings, Settings, TenantSettings
from rosterdrop.documents import RunDocument
from rosterdrop.errors import MailError
from rosterdrop.mail import build_report_email, send_mail
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import open_store
from uploads import asm_files, make_zip

RUN_ID = "20261123-114349-7f3a"
TENANT = TenantSettings(
    name="Springfield Public Schools",
    report_to=["it-admin@springfield.example", "sis@springfield.example"],
)
NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


# --- run documents -----------------------------------------------------------


def _issue(code: str, severity: str, n: int, value: str | None = "x", **extra: Any) -> dict[str, Any]:
    return {
        "code": code, "severity": severity, "file": "users.csv", "line": n + 2,
        "column": "email_address", "value": value,
        "message": f"users.csv line {n + 2}: problem {code} number {n}.", **extra,
    }


def _run(status: str = "completed_with_warnings", **overrides: Any) -> dict[str, Any]:
    run: dict[str, Any] = {
        "run_id": RUN_ID, "tenant": "springfield", "status": status, "dry_run": False,
        "file": "district.zip", "sha256": "ab" * 32, "layout": "oneroster-1.1",
        "counts": {"locations": 12, "students": 4821, "staff": 312, "courses": 90,
                   "classes": 2100, "rosters": 38500},
        "filtered": {"classes": 14}, "patched": {"rosters": 33},
        "changes": {
            "created": {"students": 120, "classes": 40},
            "updated": {"students": 300},
            "deactivated": {"students": 25, "staff": 3},
            "removed": {"classes": 10},
            "unchanged": {"students": 4376},
        },
        "issue_counts": {"EMAIL_INVALID": 2, "PATCHED_REFERENCE": 33},
        "errors": [],
        "warnings": [
            _issue("EMAIL_INVALID", "warning", 0, "ann o'neil@x.org"),
            _issue("EMAIL_INVALID", "warning", 1, "bob@@x.org"),
            *(_issue("PATCHED_REFERENCE", "warning", n) for n in range(33)),
        ],
        "files_ignored": [],
    }
    run.update(overrides)
    return run


def _build(run: dict[str, Any], attachments: dict[str, Path] | None = None,
           mail: MailSettings | None = None) -> EmailMessage:
    return build_report_email(RunDocument.from_json(run), TENANT, mail or MailSettings(),
                              attachments or {},
                              f"reports/{RUN_ID}/", now=NOW)


def _subject(message: EmailMessage) -> str:
    # a folded header parses back with the folding space in front
    return str(message["Subject"]).strip()


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _html(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


# --- SMTP servers ------------------------------------------------------------


class _LoopbackController(Controller):
    """An aiosmtpd controller on 127.0.0.1, on whatever port the OS gave it."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class Recorder:
    """Accepts every message after ``fail_first`` DATA commands answered 451."""

    def __init__(self, fail_first: int = 0, reply: str = "451 4.3.0 Try again later") -> None:
        self.fail_first = fail_first
        self.reply = reply
        self.attempts = 0
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return self.reply
        self.envelopes.append(envelope)
        return "250 2.0.0 OK"

    def message(self, index: int = 0) -> EmailMessage:
        content = self.envelopes[index].original_content
        assert content is not None
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Controller, Recorder]]]:
    started: list[Controller] = []

    def start(handler: Recorder | None = None, **kwargs: Any) -> tuple[Controller, Recorder]:
        handler = handler or Recorder()
        controller = _LoopbackController(handler, hostname="127.0.0.1", port=0, **kwargs)
        controller.start()
        started.append(controller)
        return controller, handler

    yield start
    for controller in started:
        controller.stop()


def _settings(tmp_path: Path, port: int = 0, **mail: Any) -> Settings:
    options: dict[str, Any] = {"starttls": False, "timeout_seconds": 5, "retries": 3}
    options.update(mail)
    if port:
        options.update(smtp_host="127.0.0.1", smtp_port=port)
    return Settings(state_dir=tmp_path / "state", mail=MailSettings(**options),
                    tenants={"springfield": TENANT})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_file, key_file


# --- content, delivered over SMTP ---------------------------------------------


def test_report_delivered_over_smtp_with_both_parts_and_attachments(
    tmp_path: Path, smtp_server: Callable[..., tuple[Controller, Recorder]]
) -> None:
    """The mail reaches every report_to address with subject, text, HTML and CSVs."""
    controller, recorder = smtp_server()
    issues_csv = tmp_path / "issues.csv"
    issues_csv.write_text("code,severity,value\nEMAIL_INVALID,warning,josé@x\n", "utf-8")
    patch_csv = tmp_path / "patch-summary.csv"
    patch_csv.write_text("file,line,record_id\nenrollments.csv,4,e1\n")
    message = _build(_run(), {"issues.csv": issues_csv, "patch-summary.csv": patch_csv})

    where = send_mail(message, _settings(tmp_path, controller.port))

    assert where == f"127.0.0.1:{controller.port}, 2 recipient(s)"
    assert len(recorder.envelopes) == 1
    assert recorder.envelopes[0].rcpt_tos == TENANT.report_to
    received = recorder.message()
    assert _subject(received) == (
        "[rosterdrop] Springfield Public Schools: sync completed with 35 warnings")
    assert received["From"] == "rosterdrop@localhost"
    assert received["Message-ID"] and received["Date"]
    for body in (_text(received), _html(received)):
        for expected in ("Received", "45,835", "Created", "160", "Deactivated", "28",
                         "students 4,821", "EMAIL_INVALID", "An email address is invalid",
                         "2 issues", "PATCHED_REFERENCE", "33 issues",
                         "Correct the email address in the SIS.", RUN_ID,
                         f"reports/{RUN_ID}/"):
            assert expected in body, expected
    attached = {part.get_filename(): part.get_content() for part in received.iter_attachments()}
    assert attached == {"issues.csv": issues_csv.read_text(),
                        "patch-summary.csv": patch_csv.read_text()}


# --- content ------------------------------------------------------------------


NAMED = _issue("EMAIL_MISSING", "warning", 9, "Ann O'Neil")


@pytest.mark.parametrize(
    ("status", "overrides", "subject"),
    [
        ("completed", {"warnings": [], "issue_counts": {}}, "sync completed"),
        ("completed_with_warnings", {"warnings": [NAMED], "issue_counts": {"EMAIL_MISSING": 12}},
         "sync completed with 12 warnings"),
        ("failed", {"errors": [_issue("VALUE_REQUIRED", "error", n, "Ann") for n in range(3)],
                    "issue_counts": {"VALUE_REQUIRED": 3, "EMAIL_MISSING": 1},
                    "warnings": [NAMED]},
         "sync failed with 3 errors"),
        ("held", {}, "sync held for approval"),
        ("unchanged", {"warnings": [], "issue_counts": {}}, "upload unchanged"),
        ("completed", {"dry_run": True, "warnings": [], "issue_counts": {}},
         "sync completed (dry run)"),
    ],
)
def test_subject_names_the_outcome_and_nothing_from_the_upload(
    status: str, overrides: dict[str, Any], subject: str
) -> None:
    """Subject: tenant and outcome only; names, values and file names stay out."""
    message = _build(_run(status, **overrides))
    assert _subject(message) == f"[rosterdrop] Springfield Public Schools: {subject}"


def test_held_run_says_how_to_approve_or_discard() -> None:
    """A held run names `rosterdrop approve RUN_ID` and `rosterdrop discard RUN_ID`."""
    threshold = {"code": "CHANGE_THRESHOLD", "severity": "error", "file": None, "line": None,
                 "column": None, "value": None,
                 "message": "The sync would deactivate 30% of active people (threshold 20%)."}
    message = _build(_run("held", errors=[threshold],
                          issue_counts={"CHANGE_THRESHOLD": 1, "EMAIL_INVALID": 2,
                                        "PATCHED_REFERENCE": 33}))
    for body in (_text(message), _html(message)):
        assert f"rosterdrop approve {RUN_ID}" in body
        assert f"rosterdrop discard {RUN_ID}" in body
        assert "RUN_ID" not in body
        assert "would change" in body
        assert "it would deactivate 28 and remove 10 records" in body


def test_failed_run_lists_errors_before_warnings() -> None:
    """Errors come first, each group with its catalogue title, count and fix."""
    errors = [_issue("REFERENCE_MISSING", "error", n) for n in range(2)]
    message = _build(_run("failed", errors=errors,
                          issue_counts={"REFERENCE_MISSING": 2, "EMAIL_INVALID": 2,
                                        "PATCHED_REFERENCE": 33}))
    assert _subject(message).endswith("sync failed with 2 errors")
    for body in (_text(message), _html(message)):
        assert body.index("REFERENCE_MISSING") < body.index("EMAIL_INVALID")
        assert body.index("Errors (2)") < body.index("Warnings (35)")
        assert "A reference points to a record that does not exist" in body
        assert "widen the filter that removed it" in body
        assert "not applied" in body


def test_html_escapes_values_from_the_upload() -> None:
    """A `<script>` in an issue value or message reaches the HTML only as text."""
    evil = "<script>alert('x')</script>"
    warnings = [_issue("VALUE_INVALID", "warning", 0, evil, message=f"bad value {evil}"),
                _issue("VALUE_INVALID", "warning", 1, "\x1b[31mred\u202egnp.exe")]
    message = _build(_run(warnings=warnings, issue_counts={"VALUE_INVALID": 2},
                          file="<b>x</b>.zip"))
    html = _html(message)
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    assert "&lt;b&gt;x&lt;/b&gt;.zip" in html
    for body in (html, _text(message)):
        assert "\x1b" not in body and "\u202e" not in body
        assert "\\x1b[31mred\\u202egnp.exe" in body


def test_at_most_twenty_examples_per_code() -> None:
    """Of 100 listed examples (of 250 issues), the mail shows 20 and says how many more."""
    warnings = [_issue("EMAIL_MISSING", "warning", n, f"person-{n:03d}") for n in range(100)]
    message = _build(_run(warnings=warnings, issue_counts={"EMAIL_MISSING": 250}))
    for body in (_text(message), _html(message)):
        assert "person-019" in body and "person-020" not in body
        assert "250 issues, first 20 shown" in body
        assert "230 more" in body


def test_mixed_severity_code_is_split_by_the_complete_list() -> None:
    """VALUE_INVALID as 3 errors and 2 warnings counts as such, not as 5 of each."""
    message = _build(_run(
        "failed",
        errors=[_issue("VALUE_INVALID", "error", n) for n in range(3)],
        warnings=[_issue("VALUE_INVALID", "warning", n) for n in range(3, 5)],
        issue_counts={"VALUE_INVALID": 5},
    ))
    assert _subject(message).endswith("sync failed with 3 errors")
    assert "Errors (3)" in _text(message) and "Warnings (2)" in _text(message)


def test_oversized_attachment_is_replaced_by_its_path(tmp_path: Path) -> None:
    """A CSV over attach_max_bytes is named in the body instead; small ones still attach."""
    big = tmp_path / "issues.csv"
    big.write_text("code\n" + "EMAIL_MISSING\n" * 200)
    small = tmp_path / "patch-summary.csv"
    small.write_text("file,line\nusers.csv,3\n")
    message = _build(_run(), {"issues.csv": big, "patch-summary.csv": small},
                     MailSettings(attach_max_bytes=1000))
    assert [p.get_filename() for p in message.iter_attachments()] == ["patch-summary.csv"]
    for body in (_text(message), _html(message)):
        assert f"reports/{RUN_ID}/issues.csv" in body
        assert "over the 1 kB limit" in body


def test_missing_and_header_only_attachments_are_left_out(tmp_path: Path) -> None:
    """Nothing to read (absent, 0 bytes, header row only) → no attachment."""
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("file,line,record_id\r\n")
    message = _build(_run(), {"issues.csv": tmp_path / "absent.csv",
                              "patch-summary.csv": tmp_path / "header.csv",
                              "other.csv": tmp_path / "empty.csv"})
    assert list(message.iter_attachments()) == []


# --- delivery -------------------------------------------------------------------


def test_starttls_and_auth_use_the_password_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    smtp_server: Callable[..., tuple[Controller, Recorder]],
) -> None:
    """STARTTLS with a verified certificate, then AUTH; the password never reaches the logs."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts our test CA
    monkeypatch.setenv("ROSTERDROP_SMTP_PASSWORD", "s3cret-pw")
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret-pw")

    controller, recorder = smtp_server(tls_context=server_tls, require_starttls=True,
                                       authenticator=authenticator, auth_required=True)
    settings = _settings(tmp_path, controller.port, starttls=True, username="mailer")
    with capture_logs() as logs:
        send_mail(_build(_run()), settings)
    assert logins == [(b"mailer", b"s3cret-pw")]
    assert len(recorder.envelopes) == 1
    assert [e["event"] for e in logs] == ["mail_sent"]
    assert "s3cret-pw" not in repr(logs) and "springfield.example" not in repr(logs)


def test_implicit_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    smtp_server: Callable[..., tuple[Controller, Recorder]],
) -> None:
    """mail.tls talks TLS from the first byte (port 465 style)."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    controller, recorder = smtp_server(ssl_context=server_tls)
    send_mail(_build(_run()), _settings(tmp_path, controller.port, tls=True))
    assert len(recorder.envelopes) == 1


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@contextlib.contextmanager
def _ledger_run(tmp_path: Path, settings: Settings, clock: _Clock) -> Iterator[Runner]:
    """A run of an ASM upload whose report the runner mails (its first attempt) with the
    real transport; the runner is yielded for the retries."""
    upload = tmp_path / "d.zip"
    upload.write_bytes(make_zip(dict(asm_files())))
    with open_store(settings.database_url) as store:
        runner = Runner(settings, store, clock=clock)
        runner.sync("springfield", upload, source="cli")
        yield runner


def _transport_failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """mail_failed lines of the transport (one per SMTP attempt; the runner's carry no
    SMTP code)."""
    return [e for e in logs if e["event"] == "mail_failed" and "transient" in e]


def test_one_attempt_per_send_retries_come_from_the_ledger_when_due(
    tmp_path: Path, smtp_server: Callable[..., tuple[Controller, Recorder]]
) -> None:
    """Two 451 replies, then success: each send is one SMTP attempt; the ledger tries
    again only when due (after retry_seconds, then twice that), and the report is
    delivered exactly once."""
    controller, recorder = smtp_server(Recorder(fail_first=2))
    settings = _settings(tmp_path, controller.port, retries=3, retry_seconds=60)
    clock = _Clock()
    with capture_logs() as logs, _ledger_run(tmp_path, settings, clock) as runner:
        assert (recorder.attempts, len(recorder.envelopes)) == (1, 0)
        assert runner.retry_mails() == 0 and recorder.attempts == 1  # not due yet
        clock.now += dt.timedelta(seconds=60)
        assert runner.retry_mails() == 1 and recorder.attempts == 2
        clock.now += dt.timedelta(seconds=60)
        assert runner.retry_mails() == 0 and recorder.attempts == 2  # backoff doubled
        clock.now += dt.timedelta(seconds=60)
        assert runner.retry_mails() == 1
        assert recorder.attempts == 3 and len(recorder.envelopes) == 1
        clock.now += dt.timedelta(days=1)
        assert runner.retry_mails() == 0 and recorder.attempts == 3
    failed = _transport_failures(logs)
    assert [(e["smtp_code"], e["log_level"], e["transient"]) for e in failed] == [
        (451, "warning", True), (451, "warning", True)]
    assert failed[0]["error"] == "SMTPDataError" and failed[0]["recipients"] == 2
    assert [e["event"] for e in logs if e["event"] in ("mail_sent", "mail_failed")][-1] \
        == "mail_sent"
    assert recorder.message()["X-Rosterdrop-Run"] == failed[0]["run_id"]
    assert "springfield.example" not in repr(logs)


def test_nothing_listening_fails_at_once_without_waiting(tmp_path: Path) -> None:
    """A port with no server: one attempt, MailError at once (no backoff sleep)."""
    settings = _settings(tmp_path, _closed_port(), retries=3)
    started = time.monotonic()
    refused = r"via 127\.0\.0\.1:\d+: Connection refused$"
    with capture_logs() as logs, pytest.raises(MailError, match=refused) as raised:
        send_mail(_build(_run()), settings)
    assert time.monotonic() - started < 1.5  # the old in-process retries slept 2 s first
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)
    failed = _transport_failures(logs)
    assert [(e["error"], e["transient"]) for e in failed] == [("ConnectionRefusedError", True)]


def test_ledger_gives_up_after_mail_retries_further_attempts(tmp_path: Path) -> None:
    """Nothing listening: the first attempt and mail.retries = 2 retries, due after
    60 s and 120 s; then the report is given up and never attempted again."""
    settings = _settings(tmp_path, _closed_port(), retries=2, retry_seconds=60)
    clock = _Clock()
    with capture_logs() as logs, _ledger_run(tmp_path, settings, clock) as runner:
        for wait in (60, 120):
            clock.now += dt.timedelta(seconds=wait - 1)
            assert runner.retry_mails() == 0
            clock.now += dt.timedelta(seconds=1)
            assert runner.retry_mails() == 1
        clock.now += dt.timedelta(days=1)
        assert runner.retry_mails() == 0
    assert len(_transport_failures(logs)) == 3
    assert [e["event"] for e in logs].count("mail_abandoned") == 1


def test_permanent_rejection_is_not_retried(
    tmp_path: Path, smtp_server: Callable[..., tuple[Controller, Recorder]]
) -> None:
    """A 5xx reply fails at once: asking again cannot help."""
    controller, recorder = smtp_server(Recorder(fail_first=99, reply="554 5.7.1 Rejected"))
    with capture_logs() as logs, pytest.raises(MailError, match=": SMTP 554"):
        send_mail(_build(_run()), _settings(tmp_path, controller.port))
    assert recorder.attempts == 1
    assert [e["transient"] for e in _transport_failures(logs)] == [False]


def test_without_smtp_host_the_mail_lands_in_the_outbox(tmp_path: Path) -> None:
    """No smtp_host: one parseable .eml in state_dir/outbox, no temporary file left."""
    settings = _settings(tmp_path)
    message = _build(_run())
    with capture_logs() as logs:
        where = send_mail(message, settings)
    files = list((tmp_path / "state" / "outbox").iterdir())
    assert [str(f) for f in files] == [where]
    assert files[0].name.endswith(f"-{RUN_ID}.eml")
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert _subject(parsed) == _subject(message)
    assert RUN_ID in _text(parsed)
    assert [(e["event"], e["transport"]) for e in logs] == [("mail_sent", "outbox")]
