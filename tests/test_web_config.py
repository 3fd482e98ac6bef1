"""The console's settings: [web] listen and session_minutes, [[admins]], hash-password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rosterdrop.config import embedded_defaults, parse_settings
from rosterdrop.errors import ConfigError
from rosterdrop.passwords import verify_password

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g"


def admin(**values: object) -> dict[str, object]:
    return {"username": "ana", "password_hash": HASH, "role": "administrator", **values}


def test_console_is_on_in_the_embedded_defaults_and_off_in_a_config_file() -> None:
    """No config file: the console listens on 127.0.0.1:8080; a config file that does not
    set [web] listen has no console (like metrics.listen); sessions last 480 minutes."""
    assert embedded_defaults().web.listen == "127.0.0.1:8080"
    settings = parse_settings({})
    assert settings.web.listen == "" and settings.web.session_minutes == 480
    assert parse_settings({"web": {"listen": "[::1]:0"}}).web.listen == "[::1]:0"


def test_bad_web_values_are_refused_with_their_key() -> None:
    """A listen address without a port and an out-of-range session length name their key."""
    with pytest.raises(ConfigError, match=r"web\.listen: expected HOST:PORT, got '8080'"):
        parse_settings({"web": {"listen": "8080"}})
    with pytest.raises(ConfigError, match=r"web\.session_minutes: .*less than or equal to 10080"):
        parse_settings({"web": {"session_minutes": 20000}})


def test_admins_are_checked() -> None:
    """An admin needs a real hash (never a password: it is not shown), a known role, its
    tenants known, a unique username; only an administrator may have every tenant."""
    tenants = {"springfield": {}, "shelbyville": {}}
    ok = parse_settings({"tenants": tenants, "admins": [
        admin(), admin(username="sam", role="site_manager", tenants=["springfield"])]})
    assert [(a.username, a.role, a.tenants) for a in ok.admins] == [
        ("ana", "administrator", []), ("sam", "site_manager", ["springfield"])]
    cases = [
        (admin(password_hash="hunter2"), r"admins\.0\.password_hash: is not a password hash "
         r"\(expected \$argon2id\$… from `rosterdrop hash-password`, never the password "
         r"itself\) \(value not shown"),
        ({"username": "ana", "role": "administrator"},
         r"admins\.0\.password_hash: is empty: make one with `rosterdrop hash-password`"),
        (admin(role="boss"), r"admins\.0\.role: Input should be 'administrator', "
         r"'site_manager' or 'people_manager' \(given \"boss\"\)"),
        (admin(role="people_manager"), r"admins\.0: Value error, a people_manager must name "
         r"its tenants|admins\.0: a people_manager must name its tenants"),
        (admin(tenants=["capital"]), r"admins: the admin 'ana' names unknown tenant\(s\) "
         r"'capital' \(configured: shelbyville, springfield\)"),
    ]
    for entry, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_settings({"tenants": tenants, "admins": [entry]})
    with pytest.raises(ConfigError, match=r"admins: username 'ana' is used by two admins"):
        parse_settings({"tenants": tenants, "admins": [admin(), admin()]})


def test_hash_password_reads_stdin_and_prints_a_verifiable_hash(tmp_path: Path) -> None:
    """`rosterdrop hash-password` with the password piped in prints an argon2id hash the
    config accepts for an admin, and refuses an empty line (exit 2, one line)."""
    done = subprocess.run([sys.executable, "-m", "rosterdrop", "hash-password"],
                          input="correct horse\n", capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert hashed.startswith("$argon2id$") and verify_password(hashed, "correct horse")
    assert parse_settings({"admins": [admin(password_hash=hashed)]}).admins[0].password_hash
    empty = subprocess.run([sys.executable, "-m", "rosterdrop", "hash-password"],
                           input="\n", capture_output=True, text=True, cwd=tmp_path)
    assert empty.returncode == 2
    assert empty.stderr.strip() == ("rosterdrop: no password given (type it at the prompt, "
                                    "or pipe it on stdin)")


def test_the_embedded_defaults_check_the_console_port_at_start(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """With no config file, serve's start-up checks (the ones doctor shows) include the
    console's address, 127.0.0.1:8080."""
    from rosterdrop.config import load_settings
    from rosterdrop.startup import start_checks

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROSTERDROP_CONFIG", raising=False)
    rows = {c.name: c for c in start_checks(load_settings(None), create=False)}
    assert rows["web.listen"].detail.startswith("127.0.0.1:8080")
