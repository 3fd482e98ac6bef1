"""`rosterdrop doctor`: every check passes on a good setup and fails with a fix; it runs
the very checks serve makes at start (rosterdrop.startup.start_checks), tells this state
folder's running serve from another rosterdrop or program on a port, and the shipped
config.example.toml passes it and starts as it is."""

from __future__ import annotations

import json
import os
import re
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
import paramiko
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from daemon_harness import Daemon, free_port, wait_until
from oneroster_server import OneRosterServer, serving
from test_mail import Recorder, _self_signed, smtp_server  # noqa: F401  (fixture)

from rosterdrop import startup
from rosterdrop.config import load_settings, parse_settings
from rosterdrop.sftp.hostkey import HOST_KEY_NAME, load_or_create_host_key
from rosterdrop.store.engine import open_store
from rosterdrop.store.tables import SCHEMA_VERSION
from rosterdrop.tools.doctor import (
    FAIL,
    OK,
    WARN,
    Check,
    check_free_space,
    check_host_key,
    check_smtp,
    check_source,
    check_store,
    run_checks,
)

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


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


def rosterdrop(config: Path, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rosterdrop", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def doctor(config: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return rosterdrop(config, "doctor", *args, env=env)


def row(result: subprocess.CompletedProcess[str], name: str) -> str:
    """``STATUS detail`` of check ``name`` in the table, and ``fix: …`` below it if any."""
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(name + "  "))
    status, detail = lines[at][len(name):].split(None, 1)
    fix = lines[at + 1].strip() if at + 1 < len(lines) and "fix:" in lines[at + 1] else ""
    return f"{status} {detail}" + ("\n" + fix if fix else "")


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
    """A config with an unknown key: one FAIL row naming it, its near miss and the value,
    exit 1; a TOML syntax error names line and column and is told to fix the syntax
    (it used to be told to "correct the key named above")."""
    config = tmp_path / "bad.toml"
    config.write_text("[sftp]\nlisen = \"0.0.0.0:22\"\n")
    result = doctor(config)
    assert result.returncode == 1
    assert "config" in result.stdout and "FAIL" in result.stdout
    assert ("sftp.lisen: unknown key, did you mean 'listen'? (given \"0.0.0.0:22\")"
            in result.stdout) and "Traceback" not in result.stderr
    assert "fix: correct the key named above" in result.stdout
    config.write_text("[sftp]\nlisen \"0.0.0.0:22\"\n")
    syntax = doctor(config)
    assert syntax.returncode == 1
    assert ("is not valid TOML: line 2, column 7: Expected '=' after a key in a key/value "
            "pair; the line reads: lisen \"0.0.0.0:22\"") in syntax.stdout
    assert "fix: fix the TOML syntax at the line shown" in syntax.stdout
    assert "the key named above" not in syntax.stdout


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


def test_a_port_another_program_holds_fails_doctor_and_stops_serve(tmp_path: Path) -> None:
    """A port something else listens on: doctor FAILs the row ("another program") and
    serve, with the same words, refuses to start before binding anything."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = write_config(tmp_path)
        config.write_text(re.sub(r'listen = "127.0.0.1:\d+"', f'listen = "127.0.0.1:{port}"',
                                 config.read_text()))
        result = doctor(config)
        assert result.returncode == 1
        assert row(result, "sftp.listen") == (
            f"FAIL 127.0.0.1:{port} is used by another program (an SSH "
            f"server?)\nfix: stop it, or choose another port (sftp.listen)")
        served = rosterdrop(config, "serve")
    assert served.returncode == 2
    assert served.stderr == (f"rosterdrop: sftp.listen: 127.0.0.1:{port} is used by another "
                             f"program (an SSH server?) — stop it, or choose another port "
                             f"(sftp.listen)\n")


def test_this_state_folders_serve_is_told_from_another_rosterdrop(tmp_path: Path) -> None:
    """With the config of a running serve, doctor says its SFTP and metrics ports are
    served by this state folder's rosterdrop and names its pid. With another config (its
    own state folder) on the same ports, doctor FAILs them as served by another
    rosterdrop, and that config's serve stops at start with the same words (doctor used
    to call this "a running rosterdrop serves it", and serve then failed with "Address
    already in use"). A second serve of the first config is refused, naming the pid."""
    metrics = free_port()
    (tmp_path / "a").mkdir()
    daemon = Daemon(tmp_path / "a", {"alpha": {"username": "alpha"}},
                    extra=f'[metrics]\nlisten = "127.0.0.1:{metrics}"\n').start()
    try:
        assert daemon.process is not None
        pid = daemon.process.pid
        rows = {r["name"]: r for r in json.loads(doctor(daemon.config, "--json").stdout)}
        assert rows["sftp.listen"]["status"] == OK
        assert rows["sftp.listen"]["detail"] == (
            f"127.0.0.1:{daemon.port}: served by this state folder's rosterdrop (pid {pid}, "
            f"{daemon.state})")
        assert rows["metrics.listen"]["detail"] == (
            f"127.0.0.1:{metrics}: served by this state folder's rosterdrop (pid {pid}, "
            f"{daemon.state})")
        record = daemon.state / "serve.pid"
        assert record.stat().st_mode & 0o777 == 0o600

        other = tmp_path / "b.toml"
        other.write_text(f'state_dir = "{tmp_path / "b"}"\n[sftp]\n'
                         f'listen = "127.0.0.1:{daemon.port}"\n[metrics]\n'
                         f'listen = "127.0.0.1:{metrics}"\n')
        result = doctor(other)
        assert result.returncode == 1
        assert row(result, "sftp.listen") == (
            f"FAIL 127.0.0.1:{daemon.port} is served by another "
            f"rosterdrop, not the one of this state folder (no serve runs on this state "
            f"folder)\nfix: stop that rosterdrop, or give this one another port "
            f"(sftp.listen); two state folders never share a port")
        assert row(result, "metrics.listen").startswith(
            f"FAIL 127.0.0.1:{metrics} is served by another rosterdrop")
        refused = rosterdrop(other, "serve")
        assert refused.returncode == 2
        assert refused.stderr.startswith(
            f"rosterdrop: sftp.listen: 127.0.0.1:{daemon.port} is served by another "
            f"rosterdrop, not the one of this state folder")
        assert f"; metrics.listen: 127.0.0.1:{metrics} is served by another" in refused.stderr
        assert "Address already in use" not in refused.stderr

        again = rosterdrop(daemon.config, "serve")
        assert again.returncode == 2
        assert again.stderr == (f"rosterdrop: rosterdrop serve already runs on state folder "
                                f"{daemon.state} (pid {pid}); stop it first, or give this "
                                f"one a state_dir of its own\n")
    finally:
        assert daemon.stop() == 0
    rows = {r["name"]: r for r in json.loads(doctor(daemon.config, "--json").stdout)}
    assert rows["sftp.listen"]["detail"] == f"127.0.0.1:{daemon.port} is free"


def test_serve_and_doctor_run_one_list_of_start_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve and doctor call the same start_checks: a check of that list that fails is a
    FAIL row of doctor and stops serve at start with its words; nothing is left locked."""
    from rosterdrop.daemon import serve as serve_module
    from rosterdrop.tools import doctor as doctor_module

    assert serve_module.start_checks is doctor_module.start_checks is startup.start_checks
    config = write_config(tmp_path)
    failing = startup.HostKeyCheck("host key", FAIL, "a key that is not one", "restore it")
    monkeypatch.setattr(startup, "check_host_key", lambda settings: failing)
    assert failing in run_checks(str(config))
    for _ in range(2):  # the lock of the refused start is released
        with pytest.raises(Exception, match=r"^host key: a key that is not one — restore it$"):
            serve_module.Daemon(load_settings(config))


def test_an_api_tenant_without_its_secret_fails_doctor_as_it_stops_serve(
        tmp_path: Path) -> None:
    """An API tenant whose secret is not in the environment: doctor FAILs its row with the
    variable's name and what to do, and serve refuses to start with the same words (doctor
    used to say "all checks passed"). With the secret, doctor checks that the SIS
    answers, sending it nothing; a SIS that does not answer FAILs."""
    with serving(OneRosterServer({})) as api:
        config = write_config(tmp_path, "")
        source = "".join(f"{k} = {json.dumps(v)}\n" for k, v in api.source().items())
        config.write_text(config.read_text() + f"[tenants.a.source]\n{source}")
        missing = doctor(config)
        assert missing.returncode == 1
        assert row(missing, "tenants.a.source") == (
            "FAIL client_secret_env: environment variable "
            "RD_TEST_SECRET is not set or empty\nfix: put RD_TEST_SECRET=… in the service's "
            "environment (/etc/rosterdrop/env); or leave out [tenants.a.source] for an "
            "upload-only tenant")
        refused = rosterdrop(config, "serve")
        assert refused.returncode == 2
        assert refused.stderr == (
            "rosterdrop: tenants.a.source: client_secret_env: environment variable "
            "RD_TEST_SECRET is not set or empty — put RD_TEST_SECRET=… in the service's "
            "environment (/etc/rosterdrop/env); or leave out [tenants.a.source] for an "
            "upload-only tenant\n")
        ready = doctor(config, env={"RD_TEST_SECRET": api.secret})
        assert ready.returncode == 0, ready.stdout
        assert ("client secret set ($RD_TEST_SECRET); pulls daily from "
                f"{api.base_url}") in row(ready, "tenants.a.source")
        assert f"127.0.0.1:{api.port} answers (nothing sent)" in row(ready, "SIS a")
        assert api.requests == []
    settings = parse_settings({"tenants": {"a": {"source": api.source()}}})
    source_settings = settings.tenant("a").source
    assert source_settings is not None
    down = check_source("a", source_settings)
    assert down.status == FAIL and "Connection refused" in down.detail
    assert "every scheduled pull fails (SOURCE_UNREACHABLE, mailed)" in down.fix
    nowhere = source_settings.model_copy(update={
        "base_url": "https://sis.invalid/ims/oneroster/v1p1"})
    assert check_source("a", nowhere).detail == "sis.invalid:443: 'sis.invalid' does not resolve"


def test_the_example_config_passes_doctor_and_serve_starts_as_shipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.toml, copied as deploy/README.md says with only its state folder
    (and, for the test, its port) changed: doctor passes (one warning: the SFTP account's
    password is generated), serve starts, and the SIS logs in with that password. Its
    API table, switched on, is a config doctor checks: the secret is missing."""
    from test_config import uncommented

    text, count = re.subn(r'(?m)^state_dir = "\./rosterdrop-data"',
                          f'state_dir = "{tmp_path / "state"}"', EXAMPLE.read_text())
    port = free_port()
    text, listens = re.subn(r'(?m)^listen = "127\.0\.0\.1:2222"',
                            f'listen = "127.0.0.1:{port}"', text)
    assert count == listens == 1
    config = tmp_path / "rosterdrop.toml"
    config.write_text(text)
    checked = doctor(config)
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.rstrip().endswith("all checks passed (1 warning(s))")
    assert "no credentials for springfield" in row(checked, "config")
    assert "source" not in checked.stdout and "SIS" not in checked.stdout

    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "rosterdrop", "serve", "-c",
                                    str(config)], stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: '"daemon_started"' in log.read_text() or process.poll() is not None)
        assert process.poll() is None, log.read_text()
        password = (tmp_path / "state" / "springfield-password").read_text().strip()
        transport = paramiko.Transport(("127.0.0.1", port))
        try:
            transport.connect(username="springfield", password=password)
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None and "dropbox" in sftp.listdir("/")
        finally:
            transport.close()
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, log.read_text()[-2000:]

    config.write_text(uncommented(text))
    monkeypatch.delenv("SPRINGFIELD_SIS_SECRET", raising=False)
    checks = startup.start_checks(load_settings(config), create=False)
    assert [c for c in checks if c.status == FAIL] == [Check(
        "tenants.springfield.source", FAIL, "client_secret_env: environment variable "
        "SPRINGFIELD_SIS_SECRET is not set or empty", "put SPRINGFIELD_SIS_SECRET=… in the "
        "service's environment (/etc/rosterdrop/env); or leave out [tenants.springfield."
        "source] for an upload-only tenant")]


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
