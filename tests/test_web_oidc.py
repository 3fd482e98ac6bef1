"""Single sign-on with OpenID Connect: [web.oidc], the start-up check of its secret, and
the authorization-code flow against a small identity provider started in the test."""

from __future__ import annotations

from typing import Any

import pytest

from rosterdrop.config import parse_settings
from rosterdrop.errors import ConfigError
from rosterdrop.startup import refuse_failures, start_checks

SECRET_ENV = "ROSTERDROP_TEST_OIDC_SECRET"


def oidc_config(issuer: str = "https://login.microsoftonline.com/dir-1/v2.0",
                **values: Any) -> dict[str, Any]:
    return {"issuer": issuer, "client_id": "console-client", "client_secret_env": SECRET_ENV,
            **values}


def web(**oidc: Any) -> dict[str, Any]:
    return {"base_url": "https://rosterdrop.example.org", "oidc": oidc_config(**oidc)}


def test_oidc_settings_are_read_and_checked() -> None:
    """[web.oidc] needs base_url (with the console on), an https issuer (http only on loopback) and the openid
    scope; an SSO-only admin needs no password hash; an identity maps to one admin only."""
    settings = parse_settings({"web": web(), "admins": [
        {"username": "ana", "oidc_subject": "sub-ana", "role": "administrator"}]})
    oidc = settings.web.oidc
    assert oidc is not None and oidc.scopes == "openid email profile"
    assert oidc.display_name == "Microsoft"
    assert settings.admins[0].password_hash == ""
    google = parse_settings({"web": web(issuer="https://accounts.google.com")}).web.oidc
    assert google is not None and google.display_name == "Google"
    cases = [
        ({"web": {"listen": "127.0.0.1:0", "oidc": oidc_config()}},
         r"web: \[web\.oidc\] needs web\.base_url \(the provider redirects to "
         r"\{base_url\}/login/oidc/callback\)"),
        ({"web": web(issuer="http://idp.example.org")},
         r"web\.oidc\.issuer: expected the provider's https:// issuer URL, "
         r"got 'http://idp\.example\.org'"),
        ({"web": web(scopes="email profile")},
         r"web\.oidc\.scopes: must include 'openid', got 'email profile'"),
        ({"web": web(client_secret_env="not a name")}, r"web\.oidc\.client_secret_env"),
        ({"admins": [{"username": "ana", "oidc_subject": "s", "role": "administrator"}]},
         r"admins: the admin 'ana' sets oidc_subject or email but \[web\.oidc\] is not "
         r"configured"),
        ({"web": web(), "admins": [
            {"username": "ana", "email": "Ana@d.example", "role": "administrator"},
            {"username": "bo", "email": "ana@d.example", "role": "administrator"}]},
         r"admins: email 'ana@d\.example' is used by two admins"),
        ({"web": web(), "admins": [{"username": "ana", "role": "administrator"}]},
         r"admins\.0\.password_hash: is empty: make one with `rosterdrop hash-password`"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError, match=message):
            parse_settings(data)


def test_start_checks_refuse_a_missing_client_secret(tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Like an API tenant's secret: serve (and doctor) check the variable is set, when
    the console is on."""
    settings = parse_settings({"state_dir": str(tmp_path),
                               "web": {"listen": "127.0.0.1:0", **web()}})
    monkeypatch.delenv(SECRET_ENV, raising=False)
    rows = {c.name: c for c in start_checks(settings, create=False)}
    assert (rows["web.oidc"].status, rows["web.oidc"].detail) == (
        "FAIL", f"client_secret_env: ${SECRET_ENV} is not set or empty")
    with pytest.raises(ConfigError, match=rf"web\.oidc: client_secret_env: \${SECRET_ENV} is "
                       rf"not set or empty — put {SECRET_ENV}=… in the service's environment"):
        refuse_failures([rows["web.oidc"]])
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    rows = {c.name: c for c in start_checks(settings, create=False)}
    assert (rows["web.oidc"].status, rows["web.oidc"].detail) == (
        "ok", f"client secret set (${SECRET_ENV}); sign-in with Microsoft "
        f"(https://login.microsoftonline.com/dir-1/v2.0)")
    off = parse_settings({"state_dir": str(tmp_path), "web": web()})
    assert "web.oidc" not in {c.name for c in start_checks(off, create=False)}
