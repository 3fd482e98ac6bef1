"""Settings: TOML loading, defaults, and refusals with the key's path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import UnionType
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from rosterdrop.config import (
    Settings,
    TenantSettings,
    embedded_defaults,
    load_settings,
    parse_settings,
)
from rosterdrop.errors import ConfigError, NotFound

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        annotation = info.annotation
        present = [a for a in get_args(annotation) if a is not type(None)]
        if isinstance(annotation, UnionType) and len(present) == 1:
            annotation = present[0]  # an optional section (``source: OneRosterSource | None``)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _keys(annotation, key + ".")
        else:
            keys.add(key)
    return keys


def _flatten(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict):
            keys |= _flatten(value, prefix + key + ".")
        else:
            keys.add(prefix + key)
    return keys


def uncommented(text: str) -> str:
    """config.example.toml with its commented-out tables (``# [tenants.x.source]`` and
    the ``# key = …`` lines up to the next non-comment line) switched on."""
    out, on = [], False
    for line in text.splitlines():
        on = (on and line.startswith("#")) or line.startswith("# [")
        out.append(line[2:] if on and line.startswith("# ") else line)
    return "\n".join(out) + "\n"


def test_example_config_documents_every_key() -> None:
    """config.example.toml loads and names every settings key (tenant keys included),
    the source keys in its commented-out API table, which loads once switched on."""
    shipped = load_settings(EXAMPLE)
    assert shipped.tenant("springfield").source is None, "the example must start as shipped"
    data = tomllib.loads(uncommented(EXAMPLE.read_text()))
    settings = parse_settings(tomllib.loads(uncommented(EXAMPLE.read_text())))
    assert "springfield" in settings.tenants
    source = settings.tenant("springfield").source
    assert source is not None and source.client_secret_env == "SPRINGFIELD_SIS_SECRET"
    tenant = data.pop("tenants")["springfield"]
    accounts = tenant.pop("accounts")
    top = _keys(Settings) - {"tenants"}
    assert _flatten(data) == top
    assert _flatten(tenant) == _keys(TenantSettings) - {"accounts"}
    assert set(accounts[0]) == {"username", "password_hash", "authorized_keys"}


def test_unknown_key_refused_with_path(tmp_path: Path) -> None:
    """An unknown key is refused and the message gives its dotted path."""
    path = tmp_path / "c.toml"
    path.write_text('[tenants.a.guard]\nmax_deactivate_pct = 5\n')
    with pytest.raises(ConfigError, match=r"tenants\.a\.guard\.max_deactivate_pct: unknown key"):
        load_settings(path)


def test_wrong_type_refused_with_path() -> None:
    """A string where a number belongs is refused with the key's path."""
    with pytest.raises(ConfigError, match=r"sftp\.ban\.failures"):
        parse_settings({"sftp": {"ban": {"failures": "ten"}}})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    """Unreadable or invalid TOML is a ConfigError naming the file."""
    bad = tmp_path / "bad.toml"
    bad.write_text("state_dir = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "absent.toml")


def test_embedded_defaults_have_demo_tenant(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """With no file anywhere, one demo tenant with an SFTP account demo applies."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROSTERDROP_CONFIG", raising=False)
    settings = load_settings(None)
    assert settings == embedded_defaults()
    assert [a.username for a in settings.tenant("demo").accounts] == ["demo"]
    assert settings.database_url.endswith("rosterdrop-data/rosterdrop.db")


def test_unknown_tenant_and_bad_values() -> None:
    """Unknown tenants, bad tenant keys, shared usernames and bad formats are refused."""
    with pytest.raises(NotFound, match="unknown tenant 'x'"):
        embedded_defaults().tenant("x")
    with pytest.raises(ConfigError, match="tenant key"):
        parse_settings({"tenants": {"Bad Key": {}}})
    with pytest.raises(ConfigError, match="used by tenants"):
        parse_settings({"tenants": {"a": {"accounts": [{"username": "u"}]},
                                    "b": {"accounts": [{"username": "u"}]}}})
    with pytest.raises(ConfigError, match="unknown field"):
        parse_settings({"tenants": {"a": {"account_format": "{nickname}"}}})
    with pytest.raises(ConfigError, match="listen"):
        parse_settings({"sftp": {"listen": "nowhere"}})


def test_accounts_by_role_fall_back_to_the_tenant() -> None:
    """A role's account_format / account_domain apply to that role only; an unset key
    (or the other role) takes the tenant's value."""
    settings = parse_settings({"tenants": {"a": {
        "account_format": "{first_name}.{last_name}", "account_domain": "example",
        "accounts_by_role": {"student": {"account_format": "{first_initial}{last_name}",
                                         "account_domain": "students.example"},
                             "staff": {"account_domain": "staff.example"}}}}})
    tenant = settings.tenant("a")
    assert tenant.role_account("student") == ("{first_initial}{last_name}", "students.example")
    assert tenant.role_account("staff") == ("{first_name}.{last_name}", "staff.example")
    assert TenantSettings().role_account("staff") == TenantSettings().role_account("student") == (
        "{first_name}.{last_name}", "appleid.example")


def test_a_role_format_is_checked_like_the_tenants() -> None:
    """A per-role format naming an unknown field is refused with its path, as the
    tenant's is; so is a role other than student and staff."""
    with pytest.raises(ConfigError, match=r"accounts_by_role\.staff\.account_format: .*"
                                          r"unknown field\(s\) nickname"):
        parse_settings({"tenants": {"a": {"accounts_by_role": {
            "staff": {"account_format": "{nickname}.{last_name}"}}}}})
    with pytest.raises(ConfigError, match=r"accounts_by_role\.teacher: unknown key"):
        parse_settings({"tenants": {"a": {"accounts_by_role": {"teacher": {}}}}})


def _refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    return str(refused.value)


def test_an_unknown_key_names_its_near_miss_and_shows_the_value(tmp_path: Path) -> None:
    """A typo of a key is answered with the key it may be (edit distance against the
    keys of that table) and the value given; a key put one table too high is sent to
    its table; a key like nothing known gets neither."""
    message = _refusal(tmp_path, '[tenants.t]\nacount_domain = "x"\n')
    assert message == (f"{tmp_path / 'rd.toml'}: tenants.t.acount_domain: unknown key, "
                       "did you mean 'account_domain'? (given \"x\")")
    assert "did you mean 'listen'? (given \"0.0.0.0:22\")" in _refusal(
        tmp_path, '[sftp]\nlisen = "0.0.0.0:22"\n')
    assert "tenants.t.source.clientid: unknown key, did you mean 'client_id'?" in _refusal(
        tmp_path, '[tenants.t.source]\ntype = "oneroster-api"\nclientid = "c"\n')
    assert "sftp.failures: unknown key, it belongs in [sftp.ban] (given 3)" in _refusal(
        tmp_path, "[sftp]\nfailures = 3\n")
    unlike = _refusal(tmp_path, "[limits]\ncolour = 1\n")
    assert unlike.endswith("limits.colour: unknown key (given 1)"), unlike


def test_a_wrong_value_is_shown_cut_short_but_never_a_secret(tmp_path: Path) -> None:
    """The value of a refused key is shown as TOML spells it, cut to 40 characters;
    a password hash, the store URL (it may carry the database password) and an
    unknown key named like a secret are not shown at all."""
    assert "sftp.ban.failures: Input should be a valid integer (given \"ten\")" in _refusal(
        tmp_path, '[sftp.ban]\nfailures = "ten"\n')
    long = _refusal(tmp_path, f'[tenants.t]\nreport_to = "{"a" * 100}"\n')
    assert f'(given "{"a" * 38}…)' in long and "a" * 40 not in long
    for text in ('[[tenants.t.accounts]]\nusername = "t"\npassword_hash = 12345\n',
                 '[store]\nurl = ["postgresql://u:hunter2@db/rd"]\n',
                 '[mail]\nsmtp_password = "hunter2"\n'):
        secret = _refusal(tmp_path, text)
        assert "(value not shown: it may be secret)" in secret, secret
        assert "12345" not in secret and "hunter2" not in secret


def test_a_toml_syntax_error_names_the_line_and_column_and_shows_it(tmp_path: Path) -> None:
    """A syntax error says where (line and column) and what that line reads, and
    suggests fixing the syntax (not "the key named above"); a secret on the line
    is not shown."""
    path = tmp_path / "rd.toml"
    path.write_text('state_dir = "state"\n[sftp]\nlisen "0.0.0.0:22"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert str(refused.value) == (
        f"config {path} is not valid TOML: line 3, column 7: Expected '=' after a key in "
        "a key/value pair; the line reads: lisen \"0.0.0.0:22\"")
    assert "fix the TOML syntax at the line shown" in refused.value.__notes__[0]
    secret = _refusal(tmp_path, '[store]\nurl = "postgresql://u:hunter2@db/rd\n')
    assert "line 2, column" in secret and "hunter2" not in secret
    assert "postgresql://u:…@db/rd" in secret
    hashed = _refusal(tmp_path, "[[tenants.t.accounts]]\npassword_hash = $argon2id$x\n")
    assert "line 2, column 17" in hashed and "$argon2id" not in hashed
    path.write_bytes(b'state_dir = "x"\nname = "\xff"\n')
    with pytest.raises(ConfigError, match=r"is not valid TOML: line 2: not UTF-8"):
        load_settings(path)


def test_edit_distance_counts_a_swap_as_one() -> None:
    from rosterdrop.config import edit_distance

    assert edit_distance("acount_domain", "account_domain") == 1
    assert edit_distance("lsiten", "listen") == 1
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    assert edit_distance("kitten", "sitting") == 3
