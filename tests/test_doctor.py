"""`rosterdrop doctor`: every check passes on a good setup and fails with a fix."""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from test_mail import Recorder, _self_signed, smtp_server  # noqa: F401  (fixture)
from test_sftp_support import running_server

from rosterdrop.config import parse_settings
from rosterdrop.sftp.hostkey import HOST_KEY_NAME, load_or_create_host_key
from rosterdrop.store.engine import open_store
from rosterdrop.store.tables import SCHEMA_VERSION
from rosterdrop.tools.doctor import (
    FAIL,
    OK,
    WARN,
    check_free_space,
    check_host_key,
    check_listen,
    check_smtp,
    check_store,
    metrics_is_ours,
    run_checks,
    sftp_is_ours,
)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def write_config(tmp_path: Path, body: str = "") -> Path:
    config = tmp_path / "rd.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n{body}\n'
                      f'[sftp]\nlisten = "127.0.0.1:{closed_port()}"\n'
                      '[tenants.a]\n[[tenants.a.accounts]]\nusername = "a"\n'
                      'authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 k"]\n')
    return config


def doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rosterdrop", "-c", str(config), "doctor",
                           *args], capture_output=True, text=True, timeout=60)


def statuses(checks: list[Any]) -> dict[str, str]:
    return {c.name: c.status for c in checks}


def test_good_setup_passes_with_starttls_and_auth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        smtp_server: Callable[..., tuple[Controller, Recorder]]) -> None:  # noqa: F811
    """A current SQLite store, free ports and an SMTP server with STARTTLS and AUTH:
    every check ok, exit 0, and no mail was sent."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                      data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        return AuthResult(success=data.password == b"pw")

    controller, recorder = smtp_server(tls_context=server_tls, require_starttls=True,
                                       authenticator=authenticator, auth_required=True)
    config = write_config(tmp_path, f'[metrics]\nlisten = "127.0.0.1:{closed_port()}"\n'
                                    f'[mail]\nsmtp_host = "127.0.0.1"\n'
                                    f'smtp_port = {controller.port}\nusername = "mailer"\n')
    (tmp_path / "state").mkdir()
    open_store(f"sqlite:///{tmp_path}/state/rosterdrop.db").close()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setenv("ROSTERDROP_SMTP_PASSWORD", "pw")
    result = doctor(config)
    assert result.returncode == 0, result.stdout
    assert "all checks passed" in result.stdout
    assert f"schema version {SCHEMA_VERSION} (current)" in result.stdout
    assert "connect + EHLO + STARTTLS + AUTH ok (no mail sent)" in result.stdout
    assert recorder.envelopes == []
    rows = json.loads(doctor(config, "--json").stdout)
    assert {r["name"]: r["status"] for r in rows} == {
        "config": OK, "state folder": OK, "free space": OK, "store": OK,
        "sftp.listen": OK, "host key": OK, "metrics.listen": OK, "smtp": OK}


def test_bad_config_fails_with_the_key(tmp_path: Path) -> None:
    """A config with an unknown key: one FAIL row naming it, exit 1."""
    config = tmp_path / "bad.toml"
    config.write_text("[sftp]\nlisen = \"0.0.0.0:22\"\n")
    result = doctor(config)
    assert result.returncode == 1
    assert "config" in result.stdout and "FAIL" in result.stdout
    assert "sftp.lisen: unknown key" in result.stdout and "Traceback" not in result.stderr


def test_unwritable_state_folder_and_low_space_fail(tmp_path: Path) -> None:
    """A state folder that cannot be created, and less free space than needed: FAIL."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "rd.toml"
    config.write_text(f'state_dir = "{blocker}/state"\n'
                      f'[sftp]\nlisten = "127.0.0.1:{closed_port()}"\n')
    checks = run_checks(str(config))
    state = next(c for c in checks if c.name == "state folder")
    assert state.status == FAIL and "mkdir -p" in state.fix
    low = check_free_space([tmp_path], min_free=1 << 60)
    assert low.status == FAIL and "free at least" in low.fix
    assert check_free_space([tmp_path], min_free=1, upload_bytes=1 << 60).status == WARN


def test_store_unreachable_or_newer_schema_fails(tmp_path: Path) -> None:
    """PostgreSQL that does not answer, and a database written by a newer rosterdrop."""
    settings = parse_settings({"store": {
        "url": f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/none"}})
    down = check_store(settings)
    assert down.status == FAIL and "unreachable" in down.detail and "pg_hba" in down.fix

    database = tmp_path / "state" / "rosterdrop.db"
    open_store(f"sqlite:///{database}").close()
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    newer = check_store(parse_settings({"state_dir": str(tmp_path / "state")}))
    assert newer.status == FAIL and "newer than this rosterdrop" in newer.detail
    # The same file named by store.url: read without SQLAlchemy, and through it when
    # the URL carries options.
    for url in (f"sqlite:///{database}", f"sqlite:///{database}?timeout=5"):
        named = check_store(parse_settings({"store": {"url": url}}))
        assert named.status == FAIL and str(database) in named.detail, url
    fresh = check_store(parse_settings({"state_dir": str(tmp_path / "none")}))
    assert fresh.status == OK and not (tmp_path / "none").exists()


def test_listen_address_taken_by_another_program_or_by_rosterdrop(tmp_path: Path) -> None:
    """A port held by something else fails; one served by a running rosterdrop is ok."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        taken = check_listen("sftp.listen", f"127.0.0.1:{port}", sftp_is_ours)
    assert taken.status == FAIL and "another program" in taken.detail
    with running_server(tmp_path) as running:
        ours = check_listen("sftp.listen", f"127.0.0.1:{running.port}", sftp_is_ours)
        assert ours.status == OK and "running rosterdrop" in ours.detail
        wrong_kind = check_listen("metrics.listen", f"127.0.0.1:{running.port}",
                                  metrics_is_ours)
        assert wrong_kind.status == FAIL


def test_smtp_failures_say_what_to_fix(
        tmp_path: Path, smtp_server: Callable[..., tuple[Controller, Recorder]]) -> None:  # noqa: F811
    """Nothing listening, no STARTTLS offered, an untrusted certificate, a missing
    password: each FAIL says what to change."""
    def mail(**options: Any) -> Any:
        return parse_settings({"state_dir": str(tmp_path / "state"), "mail": {
            "smtp_host": "127.0.0.1", "timeout_seconds": 5, **options}})

    nothing = check_smtp(mail(smtp_port=closed_port()))
    assert nothing.status == FAIL and "firewall" in nothing.fix

    plain, _ = smtp_server()
    no_tls = check_smtp(mail(smtp_port=plain.port))
    assert no_tls.status == FAIL and "does not offer STARTTLS" in no_tls.detail
    assert check_smtp(mail(smtp_port=plain.port, starttls=False)).status == OK

    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    secured, _ = smtp_server(tls_context=server_tls, require_starttls=True)
    untrusted = check_smtp(mail(smtp_port=secured.port))
    assert untrusted.status == FAIL and "not trusted" in untrusted.detail

    no_password = check_smtp(mail(smtp_port=plain.port, starttls=False, username="u"))
    assert no_password.status == FAIL and "ROSTERDROP_SMTP_PASSWORD" in no_password.detail


def test_host_key_fingerprint_is_shown_as_clients_see_it(tmp_path: Path) -> None:
    """With a host key in the state folder, doctor prints its type and SHA256
    fingerprint (table and --json), the string asyncssh and OpenSSH give for it."""
    config = write_config(tmp_path)
    folder = tmp_path / "state" / "host_keys"
    load_or_create_host_key(folder)
    key_file = folder / HOST_KEY_NAME
    expected = asyncssh.read_private_key(key_file).get_fingerprint()
    assert expected.startswith("SHA256:")
    before = key_file.read_bytes()

    result = doctor(config)
    row = next(line for line in result.stdout.splitlines() if line.startswith("host key"))
    assert "ok" in row and f"ssh-ed25519 {expected}" in row, result.stdout
    rows = {r["name"]: r for r in json.loads(doctor(config, "--json").stdout)}
    assert rows["host key"]["status"] == OK
    assert rows["host key"]["host_key_fingerprint"] == expected
    assert rows["host key"]["key_type"] == "ssh-ed25519"
    assert "host_key_fingerprint" not in rows["config"]
    assert key_file.read_bytes() == before

    if shutil.which("ssh-keygen"):  # what OpenSSH prints at the unknown-host prompt
        listed = subprocess.run(["ssh-keygen", "-lf", f"{key_file}.pub"], check=True,
                                capture_output=True, text=True).stdout
        assert listed.split()[1] == expected and listed.rstrip().endswith("(ED25519)")


def test_missing_host_key_is_not_created(tmp_path: Path) -> None:
    """Before the first serve there is no key: doctor says serve makes it, passes,
    and writes nothing (no key, no host_keys folder, no state folder)."""
    config = write_config(tmp_path)
    result = doctor(config)
    assert result.returncode == 0, result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("host key"))
    assert "no host key yet" in row and "first rosterdrop serve creates" in row
    assert "doctor then shows its fingerprint" in row
    rows = {r["name"]: r for r in json.loads(doctor(config, "--json").stdout)}
    assert rows["host key"]["status"] == OK
    assert rows["host key"]["host_key_fingerprint"] is None
    assert rows["host key"]["key_type"] is None
    assert not (tmp_path / "state").exists()

    (tmp_path / "state").mkdir()  # a state folder without host_keys/ yet
    assert check_host_key(parse_settings({"state_dir": str(tmp_path / "state")})).status == OK
    assert list((tmp_path / "state").iterdir()) == []


def test_doctor_looks_for_the_host_key_file_serve_makes() -> None:
    """doctor keeps its own copy of the file name (sftp.hostkey loads asyncssh)."""
    from rosterdrop.tools import doctor as doctor_module

    assert doctor_module.HOST_KEY_NAME == HOST_KEY_NAME


def test_unreadable_or_invalid_host_key_fails(tmp_path: Path) -> None:
    """A host-key file that is not a key, or a folder in its place: FAIL with a fix."""
    settings = parse_settings({"state_dir": str(tmp_path / "state")})
    key_file = tmp_path / "state" / "host_keys" / HOST_KEY_NAME
    key_file.parent.mkdir(parents=True)
    key_file.write_text("not a key\n")
    invalid = check_host_key(settings)
    assert invalid.status == FAIL and "not a valid private key" in invalid.detail
    assert "new fingerprint" in invalid.fix and invalid.host_key_fingerprint is None
    key_file.unlink()
    key_file.mkdir()
    unreadable = check_host_key(settings)
    assert unreadable.status == FAIL and "cannot read" in unreadable.detail
