"""The one settings object, loaded from TOML and validated at start.

``load_settings(path)`` finds the file (``-c``, ``$ROSTERDROP_CONFIG``, then
``./rosterdrop.toml``); with no file at all the embedded defaults apply: one
tenant ``demo`` with an SFTP account ``demo`` whose password the daemon
generates on first start. Unknown keys and wrong types are refused with the
key's path in the message (``tenants.springfield.guard.min_population: …``), the
bad value (cut short, never a secret's) and, for an unknown key, the near miss it
may be (``did you mean 'account_domain'?``); a TOML syntax error names the line,
the column and what the line reads.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rosterdrop.errors import ConfigError

CONFIG_ENV = "ROSTERDROP_CONFIG"
DEFAULT_CONFIG_NAME = "rosterdrop.toml"
DEMO_TENANT = "demo"
CONSOLE_LISTEN = "127.0.0.1:8080"
"""The console's address in the embedded defaults (a config file switches it on itself)."""

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class StoreSettings(_Section):
    url: str = ""
    """Empty: SQLite at ``state_dir/rosterdrop.db``."""


class BanSettings(_Section):
    failures: PositiveInt = 10
    window_seconds: PositiveInt = 300
    duration_seconds: PositiveInt = 900


def _listen_address(value: str) -> str:
    if value:
        parse_listen(value)
    return value


ListenAddress = Annotated[str, AfterValidator(_listen_address)]
"""``HOST:PORT`` (``[::1]:22`` for IPv6); empty where the listener may be off."""


class SftpSettings(_Section):
    listen: ListenAddress = "127.0.0.1:2222"
    max_upload_bytes: PositiveInt = 2 * 1024**3
    settle_seconds: Annotated[float, Field(ge=0)] = 2
    rescan_seconds: Annotated[float, Field(gt=0)] = 60
    sessions_per_account: PositiveInt = 8
    login_timeout_seconds: Annotated[float, Field(gt=0)] = 30
    auth_attempts: PositiveInt = 3
    max_concurrent_password_checks: PositiveInt = 2
    max_unauthenticated_per_address: PositiveInt = 16
    password_cache_seconds: Annotated[float, Field(ge=0)] = 300
    ban: BanSettings = BanSettings()

    @field_validator("listen")
    @classmethod
    def _not_off(cls, value: str) -> str:
        if not value:
            raise ValueError(f"expected HOST:PORT, got {value!r}")  # SFTP cannot be off
        return value


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:2222"`` / ``"[::1]:22"`` → (host, port)."""
    match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", value)
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return match.group(1), int(match.group(2))


class MailSettings(_Section):
    from_: str = Field("rosterdrop@localhost", alias="from")
    smtp_host: str = ""
    """Empty: mails are written as .eml files to ``state_dir/outbox``."""
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    tls: bool = False
    """Implicit TLS (port 465 style) instead of STARTTLS."""
    username: str = ""
    timeout_seconds: Annotated[float, Field(gt=0)] = 30
    retries: NonNegativeInt = 24
    """Further attempts of a report whose first one failed, retry_seconds apart, doubling
    up to an hour (the default keeps trying for about 19 hours: an overnight outage)."""
    retry_seconds: Annotated[float, Field(gt=0)] = 60
    """After a send finally failed, the daemon tries again after this, doubling up to 1 h."""
    attach_max_bytes: PositiveInt = 5 * 1000 * 1000
    docs_url: str = ""
    """Where the issue-code page (docs/errors.md) is published: each code in a report
    email links to it, with ``#code`` appended (``#zip_unreadable``); empty: codes are
    not linked (rosterdrop has no public project page to default to)."""

    @field_validator("docs_url")
    @classmethod
    def _docs_link(cls, value: str) -> str:
        if "#" in value:
            raise ValueError("leave out the #fragment: each code's link adds its own")
        return _link_url(value)


def _link_url(value: str) -> str:
    """An http(s) URL put into emails as a link, or ``""``."""
    if value and not re.fullmatch(r"https?://[^/\s?#\"'<>]+([/?][^\s#\"'<>]*)?", value):
        raise ValueError(f"expected an http(s):// URL, got {value!r}")
    return value


class OidcSettings(_Section):
    """Single sign-on for the console: an OpenID Connect provider (Entra ID, Google)."""

    issuer: str
    """The provider's issuer URL; its ``/.well-known/openid-configuration`` is read."""
    client_id: Annotated[str, Field(min_length=1)]
    """The console's application (client) ID at the provider; ID tokens must name it."""
    client_secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    """Name of the environment variable holding the client secret (never in the file)."""
    scopes: str = "openid email profile"
    """Asked for at sign-in, space-separated; must include ``openid``."""
    name: str = ""
    """Shown as "Sign in with {name}"; empty: Microsoft, Google or the issuer's host."""

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        # Plain http only on loopback: the ID token's keys come from there.
        if not re.fullmatch(r"(https://[^/\s?#]+|http://(127\.0\.0\.1|localhost)(:\d+)?)"
                            r"(/[^\s?#]*)?", value):
            raise ValueError(f"expected the provider's https:// issuer URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: str) -> str:
        if "openid" not in value.split():
            raise ValueError(f"must include 'openid', got {value!r}")
        return value

    @property
    def client_secret(self) -> str:
        return os.environ.get(self.client_secret_env, "")

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        host = self.issuer.split("/")[2]
        if host.endswith(("microsoftonline.com", "microsoftonline.us")):
            return "Microsoft"
        return "Google" if host == "accounts.google.com" else host


class WebSettings(_Section):
    """The admin console (docs/console.md) and the health and metrics routes it serves."""

    listen: ListenAddress = ""
    """``HOST:PORT`` of the console's HTTP listener (also /metrics, /healthz, /readyz);
    empty: off. With no config file the embedded defaults set ``127.0.0.1:8080``.
    Behind a TLS proxy in production (deploy/README.md)."""
    base_url: str = ""
    """The console's address as admins reach it (``https://rosterdrop.example.org``):
    report emails link to ``{base_url}/runs/{run_id}``; empty: no links to the console.
    An ``https://`` address also marks the session cookie ``Secure``."""
    session_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 480
    """A console sign-in lasts this long (kept in the database, ended by sign-out)."""
    oidc: OidcSettings | None = None
    """Single sign-on with OpenID Connect (docs/console.md, "Single sign-on"); with the
    console on it needs ``base_url`` (the redirect URI: ``{base_url}/login/oidc/callback``)."""

    @model_validator(mode="after")
    def _oidc_needs_base_url(self) -> WebSettings:
        if self.oidc is not None and self.listen and not self.base_url:
            raise ValueError("[web.oidc] needs web.base_url (the provider redirects to "
                             "{base_url}/login/oidc/callback)")
        return self


    @field_validator("base_url")
    @classmethod
    def _console_link(cls, value: str) -> str:
        if "?" in value or "#" in value:
            raise ValueError("expected the console's address without ?query or #fragment")
        return _link_url(value).rstrip("/")


class MetricsSettings(_Section):
    listen: ListenAddress = ""
    """``HOST:PORT`` of the HTTP listener for /metrics, /healthz and /readyz; empty: off."""
    stuck_seconds: Annotated[float, Field(gt=0)] = 900
    """/readyz fails when jobs have waited this long and no worker holds a live lease."""



class LogSettings(_Section):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RetentionSettings(_Section):
    """How long files holding student data stay on disk (docs/security.md, "Retention")."""

    uploads_keep: NonNegativeInt = 10
    """Kept uploads per tenant, newest first, for approve and resync (a held run's always)."""
    uploads_days: PositiveInt = 30
    """A kept upload older than this is deleted even within uploads_keep."""
    reports_days: PositiveInt = 90
    """A run's report folder (issues.csv, modified.zip, previews: student data) is deleted
    this long after the run; its history record stays."""


class LimitSettings(_Section):
    """Limits on an uploaded ZIP; defaults fit a 1,000,000-student district."""

    max_entries: PositiveInt = 64
    max_total_bytes: PositiveInt = 8 * 1024**3
    max_ratio: PositiveInt = 200
    """Largest uncompressed/compressed ratio of one entry (CSV rarely tops 20)."""


class FilterSettings(_Section):
    schools: list[str] = []
    roles: list[Literal["student", "staff"]] = ["student", "staff"]
    active_terms: bool = False
    ahead_days: NonNegativeInt = 0
    drop_idle_staff: bool = False
    """Leave out staff who teach classes in the upload but none that the filters keep;
    staff who teach no class at all (principals, counselors, office staff) are kept."""


class PatchSettings(_Section):
    instructors: bool = True
    rosters: bool = True


MatchField = Literal["first_name", "last_name", "email_address", "person_number", "sis_username"]


class DuplicateSettings(_Section):
    prevent: bool = True
    match_on: list[MatchField] = ["first_name", "last_name", "email_address"]
    require_match: bool = False
    """Migration mode: a new person who matches no account is an error (MATCH_MISSING)."""

    @model_validator(mode="after")
    def _require_needs_prevent(self) -> DuplicateSettings:
        if self.require_match and not self.prevent:
            raise ValueError("require_match needs prevent = true (it is a kind of matching)")
        return self


class GuardSettings(_Section):
    max_deactivate_percent: Annotated[float, Field(ge=0, le=100)] = 20
    min_population: NonNegativeInt = 50


AdminRole = Literal["administrator", "site_manager", "people_manager"]


class AdminAccount(_Section):
    """One sign-in of the admin console (docs/console.md, "Roles")."""

    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
    oidc_subject: str = ""
    """Single sign-on: the ID token's ``sub`` claim that signs in as this admin."""
    email: Annotated[str, Field(pattern=r"^([^@\s]+@[^@\s]+)?$")] = ""
    """Single sign-on: the ID token's ``email``, when the provider says it is verified."""
    password_hash: str = Field("", validate_default=True)
    """From ``rosterdrop hash-password`` (argon2id; scrypt strings are accepted too);
    may be empty for an admin who signs in only by single sign-on."""
    role: AdminRole
    tenants: list[str] = []
    """The tenants this admin sees and acts on; empty: every tenant (administrators only)."""

    @field_validator("password_hash")
    @classmethod
    def _a_hash(cls, value: str, info: ValidationInfo) -> str:
        if not value and (info.data.get("oidc_subject") or info.data.get("email")):
            return value
        if not value:
            raise ValueError("is empty: make one with `rosterdrop hash-password` and paste "
                             "it here")
        if not value.startswith(("$argon2id$", "$argon2i$", "$argon2d$", "$scrypt$")):
            raise ValueError("is not a password hash (expected $argon2id$… from "
                             "`rosterdrop hash-password`, never the password itself)")
        return value

    @model_validator(mode="after")
    def _tenants_named(self) -> AdminAccount:
        if not self.tenants and self.role != "administrator":
            raise ValueError(f"a {self.role} must name its tenants (tenants = [\"…\"]); only "
                             f"an administrator may have every tenant")
        return self


class SftpAccount(_Section):
    username: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    password_hash: str = ""
    authorized_keys: list[str] = []


ONEROSTER_ENDPOINTS = {"/ims/oneroster/v1p1": "1.1", "/ims/oneroster/rostering/v1p2": "1.2"}
"""The endpoint a source's ``base_url`` ends in decides the OneRoster version."""


class OneRosterSource(_Section):
    """A tenant whose roster is pulled from its SIS's OneRoster REST API on a schedule."""

    type: Literal["oneroster-api"]
    base_url: str
    """``https://sis.example/ims/oneroster/v1p1`` (1.1) or ``…/ims/oneroster/rostering/v1p2`` (1.2)."""
    client_id: Annotated[str, Field(min_length=1)]
    client_secret_env: str = ""
    """Name of the environment variable that holds the client secret, or:"""
    client_secret_file: str = ""
    """a file holding it (first line). Exactly one of the two; the secret is never logged."""
    auth: Literal["oauth2", "oauth1"] = "oauth2"
    token_url: str = ""
    """OAuth 2 client-credentials token endpoint (required with ``auth = "oauth2"``)."""
    scope: str = ""
    """OAuth 2 scope to ask for; empty: none sent."""
    page_size: Annotated[int, Field(ge=1, le=10000)] = 1000
    timeout_seconds: Annotated[float, Field(gt=0)] = 60
    retries: Annotated[int, Field(ge=0, le=20)] = 5
    """Retries of one request after 429, 5xx, a timeout or a lost connection (with backoff)."""
    rate_limit_per_second: Annotated[float, Field(ge=0)] = 10
    """Most requests per second to the SIS; 0: no limit."""
    frequency: Literal["daily", "hourly", "interval"] = "daily"
    interval_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] = 60
    time: str = "02:00"
    """``HH:MM`` in ``timezone`` for daily pulls; hourly pulls use its minute."""
    timezone: str = "UTC"

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"expected an http(s):// URL without query, got {value!r}")
        return value.rstrip("/")

    @field_validator("base_url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not any(value.endswith(suffix) for suffix in ONEROSTER_ENDPOINTS):
            raise ValueError(
                "must end in /ims/oneroster/v1p1 (OneRoster 1.1) or "
                "/ims/oneroster/rostering/v1p2 (OneRoster 1.2)"
            )
        return value

    @field_validator("time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{2}):(\d{2})", value)
        if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            raise ValueError(f"expected HH:MM (00:00 to 23:59), got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'America/Chicago')") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OneRosterSource:
        if bool(self.client_secret_env) == bool(self.client_secret_file):
            raise ValueError("set exactly one of client_secret_env and client_secret_file")
        if self.auth == "oauth2" and not self.token_url:
            raise ValueError('auth = "oauth2" needs token_url (the SIS\'s OAuth 2 token endpoint)')
        return self

    @property
    def version(self) -> str:
        """``"1.1"`` or ``"1.2"``, from the end of ``base_url``."""
        return next(v for suffix, v in ONEROSTER_ENDPOINTS.items() if self.base_url.endswith(suffix))


ONEROSTER_SCOPES = {
    "1.1": "https://purl.imsglobal.org/spec/or/v1p1/scope/",
    "1.2": "https://purl.imsglobal.org/spec/or/v1p2/scope/",
}
"""The scope prefix of each OneRoster version; the provider knows these scope names:"""
SCOPE_NAMES = ("roster-core.readonly", "roster.readonly", "roster-demographics.readonly")
KNOWN_SCOPES = frozenset(prefix + name for prefix in ONEROSTER_SCOPES.values()
                         for name in SCOPE_NAMES)


def _hash_of_a_secret(value: str) -> str:
    if not value.startswith(("$argon2id$", "$argon2i$", "$argon2d$", "$scrypt$")):
        raise ValueError("is not a secret hash (expected $argon2id$… from "
                         "`rosterdrop hash-password`, never the secret itself)")
    return value


class ApiClient(_Section):
    """A downstream app that reads the tenant's directory from the OneRoster provider
    (docs/outlets.md, "The OneRoster API")."""

    client_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._~-]{1,128}$")]
    secret_hash: Annotated[str, AfterValidator(_hash_of_a_secret)]
    """From ``rosterdrop hash-password`` (the client secret itself is never stored)."""
    scopes: Annotated[list[str], Field(min_length=1)] = [
        ONEROSTER_SCOPES["1.2"] + "roster-core.readonly",
        ONEROSTER_SCOPES["1.1"] + "roster-core.readonly",
    ]
    """What the client may read: ``roster-core.readonly`` (orgs, sessions, courses,
    classes, users, enrollments), ``roster.readonly`` (the same, as 1.2 names it) and
    ``roster-demographics.readonly``, each with its version's prefix."""
    token_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 60

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in KNOWN_SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; the provider "
                             f"grants {', '.join(sorted(KNOWN_SCOPES))}")
        return value


SHA256_FINGERPRINT = r"^SHA256:[A-Za-z0-9+/]{43}=?$"
DestinationFormat = Literal["asm", "oneroster-1.1", "oneroster-1.2"]


class _Outlet(_Section):
    @property
    def key(self) -> str:
        """The outlet's name in the delivery ledger."""
        raise NotImplementedError

    name: Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9._:@/-]{0,127})?$")] = ""
    """How deliveries name this outlet (``rosterdrop deliveries``); empty: one is made
    from its type and address (never from a secret)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 60
    """One attempt is given up after this long."""
    retries: Annotated[int, Field(ge=0, le=50)] = 8
    """Further attempts after a failed one, ``retry_seconds`` × 2ⁿ apart (at most an
    hour), before the delivery is given up (``rosterdrop redeliver`` starts it again)."""
    retry_seconds: Annotated[float, Field(gt=0)] = 60


class SftpDestination(_Outlet):
    """Where each applied run's directory is pushed (docs/outlets.md, "Forwarding")."""

    type: Literal["sftp"]
    host: Annotated[str, Field(min_length=1, pattern=r"^[^\s/@]+$")]
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    username: Annotated[str, Field(min_length=1)]
    password_env: str = ""
    """Name of the environment variable that holds the password, or:"""
    key_file: str = ""
    """a private key file (OpenSSH format). Exactly one of the two."""
    host_key_fingerprint: Annotated[str, Field(pattern=SHA256_FINGERPRINT)]
    """``SHA256:…`` of the server's host key (``ssh-keyscan HOST | ssh-keygen -lf -``):
    any other key is refused, there is no trust on first use."""
    remote_path: str = ""
    """The folder on the server to upload into (``dropbox/``); empty: the login folder."""
    format: DestinationFormat = "asm"
    """``asm``: the Apple School Manager CSV ZIP; ``oneroster-1.1``/``1.2``: a OneRoster
    CSV bundle."""

    @model_validator(mode="after")
    def _one_credential(self) -> SftpDestination:
        if bool(self.password_env) == bool(self.key_file):
            raise ValueError("set exactly one of password_env and key_file")
        return self

    @property
    def key(self) -> str:
        if self.name:
            return self.name
        folder = self.remote_path.strip("/")
        return f"sftp:{self.username}@{self.host}:{self.port}/{folder}"


AlertStatus = Literal["completed", "completed_with_warnings", "failed", "held", "unchanged",
                      "discarded"]


class AlertSettings(_Outlet):
    """A chat post or a signed webhook when a run ends in a chosen status."""

    type: Literal["slack", "teams", "webhook"]
    url_env: Annotated[str, Field(min_length=1)]
    """Name of the environment variable that holds the incoming-webhook URL (the URL is
    the secret of a Slack or Teams webhook, so it is never written in the config)."""
    secret_env: str = ""
    """``webhook``: the variable holding the signing secret (``whsec_`` + base64, the
    Standard Webhooks form); required for ``webhook``, refused for the others."""
    on: Annotated[list[AlertStatus], Field(min_length=1)] = ["failed", "held"]
    """The run statuses that send an alert."""

    @model_validator(mode="after")
    def _secret_for_webhooks(self) -> AlertSettings:
        if (self.type == "webhook") != bool(self.secret_env):
            raise ValueError("a webhook alert needs secret_env (its signing secret); slack "
                             "and teams alerts take none" if self.type == "webhook" else
                             f"secret_env is for type = \"webhook\", not {self.type!r}")
        return self

    @property
    def key(self) -> str:
        return self.name or f"{self.type}:{self.url_env}"


ACCOUNT_FORMAT_FIELDS = (
    "first_name", "last_name", "middle_name", "first_initial",
    "person_number", "sis_username", "person_id",
)
"""The ``{field}`` names a managed account name format may use."""

AccountRole = Literal["student", "staff"]


def _check_account_format(value: str) -> str:
    """``value`` when it names only :data:`ACCOUNT_FORMAT_FIELDS`, else ValueError."""
    allowed = set(ACCOUNT_FORMAT_FIELDS)
    used = set(re.findall(r"\{([^{}]*)\}", value))
    unknown = used - allowed
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join('{' + f + '}' for f in sorted(allowed))}"
        )
    return value


class RoleAccountSettings(_Section):
    account_format: str = ""
    """This role's managed account name format (the same fields as the tenant's
    ``account_format``); empty: the tenant's ``account_format``."""
    account_domain: str = ""
    """This role's account domain; empty: the tenant's ``account_domain``."""

    @field_validator("account_format")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        return _check_account_format(value)


class AccountsByRole(_Section):
    """Managed account names per role: a key left out (or empty) takes the tenant's
    value. A name is still unique across the whole tenant, whatever the role."""

    student: RoleAccountSettings = RoleAccountSettings()
    staff: RoleAccountSettings = RoleAccountSettings()


class TenantSettings(_Section):
    name: str = ""
    report_to: list[str] = []
    account_format: str = "{first_name}.{last_name}"
    account_domain: str = "appleid.example"
    accounts_by_role: AccountsByRole = AccountsByRole()
    retention_days: NonNegativeInt = 120
    strict_headers: bool = False
    """A missing column that the sync does not read (``sms``, ``periods``) is an error
    (``HEADER_MISSING_UNUSED``), not a warning: for exports that must match the layout
    exactly."""
    filter: FilterSettings = FilterSettings()
    patch: PatchSettings = PatchSettings()
    duplicates: DuplicateSettings = DuplicateSettings()
    guard: GuardSettings = GuardSettings()
    accounts: list[SftpAccount] = []
    source: OneRosterSource | None = None
    """Pull the roster from the SIS's OneRoster REST API (uploads are still accepted)."""
    api_clients: list[ApiClient] = []
    """Downstream apps that read this tenant's directory over the OneRoster API."""
    destinations: list[SftpDestination] = []
    """Where each applied run's directory is pushed (SFTP)."""
    alerts: list[AlertSettings] = []
    """Chat posts and webhooks when a run ends in a chosen status."""

    @model_validator(mode="after")
    def _outlets_unique(self) -> TenantSettings:
        clients = [c.client_id for c in self.api_clients]
        twice = sorted({c for c in clients if clients.count(c) > 1})
        if twice:
            raise ValueError(f"api_clients: client_id {twice[0]!r} is used twice")
        keys = [o.key for o in (*self.destinations, *self.alerts)]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"two destinations or alerts are both named {twice[0]!r}: give "
                             f"one of them a name = \"…\"")
        return self

    @field_validator("account_format")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        return _check_account_format(value)

    def role_account(self, role: AccountRole) -> tuple[str, str]:
        """``(account_format, account_domain)`` for new people of ``role``: the
        role's ``accounts_by_role`` values, the tenant's where those are empty."""
        own: RoleAccountSettings = getattr(self.accounts_by_role, role)
        return own.account_format or self.account_format, own.account_domain or self.account_domain


TENANT_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Settings(_Section):
    state_dir: Path = Path("./rosterdrop-data")
    shared_dir: Path | None = None
    """Drop folders, reports, kept uploads, spool and outbox, when several processes share
    them (scale-out on PostgreSQL); empty: inside ``state_dir``."""
    workers: PositiveInt = 2
    lease_seconds: Annotated[float, Field(gt=0)] = 120
    """A job whose worker stopped renewing its lease this long ago is claimed again."""
    job_timeout_seconds: Annotated[float, Field(gt=0)] = 1800
    """A job still running after this ends failed (RUN_TIMED_OUT); one that does not
    return 30 s later is given up by its worker and tried again elsewhere."""
    drain_seconds: Annotated[float, Field(gt=0)] = 10
    """On SIGTERM, running jobs get this long to finish before they are given back."""
    store: StoreSettings = StoreSettings()
    sftp: SftpSettings = SftpSettings()
    mail: MailSettings = MailSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    web: WebSettings = WebSettings()
    limits: LimitSettings = LimitSettings()
    retention: RetentionSettings = RetentionSettings()
    tenants: dict[str, TenantSettings] = {}
    admins: list[AdminAccount] = []
    """The console's sign-ins; none: the daemon makes one administrator ``admin`` with a
    generated password in ``state_dir/admin-password`` (docs/console.md)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, populate_by_name=True
    )

    @field_validator("state_dir", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return Path(value) if isinstance(value, str) else value

    @field_validator("shared_dir", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> Any:
        if value == "":
            return None
        return Path(value) if isinstance(value, str) else value

    @field_validator("tenants")
    @classmethod
    def _tenant_keys(cls, value: dict[str, TenantSettings]) -> dict[str, TenantSettings]:
        for key in value:
            if not TENANT_KEY.match(key):
                raise ValueError(
                    f"tenant key {key!r} must be lower-case letters, digits, '-' or '_'"
                )
        seen: dict[str, str] = {}
        for key, tenant in value.items():
            for account in tenant.accounts:
                if account.username in seen:
                    raise ValueError(
                        f"SFTP username {account.username!r} is used by tenants "
                        f"{seen[account.username]!r} and {key!r}"
                    )
                seen[account.username] = key
        return value

    @field_validator("admins")
    @classmethod
    def _admins_known(cls, value: list[AdminAccount],
                      info: ValidationInfo) -> list[AdminAccount]:
        tenants = info.data.get("tenants") or {}
        seen: set[str] = set()
        for admin in value:
            if admin.username in seen:
                raise ValueError(f"username {admin.username!r} is used by two admins")
            seen.add(admin.username)
            for identity in (f"oidc_subject {admin.oidc_subject!r}" if admin.oidc_subject
                             else "", f"email {admin.email.lower()!r}" if admin.email else ""):
                if identity and identity in seen:
                    raise ValueError(f"{identity} is used by two admins")
                seen.add(identity)
            web = info.data.get("web")
            if (admin.oidc_subject or admin.email) and web is not None \
                    and web.oidc is None:
                raise ValueError(f"the admin {admin.username!r} sets oidc_subject or email "
                                 f"but [web.oidc] is not configured")
            unknown = [t for t in admin.tenants if t not in tenants]
            if unknown:
                known = ", ".join(sorted(tenants)) or "none"
                raise ValueError(f"the admin {admin.username!r} names unknown tenant(s) "
                                 f"{', '.join(map(repr, unknown))} (configured: {known})")
        return value

    def tenant(self, key: str) -> TenantSettings:
        from rosterdrop.errors import NotFound

        try:
            return self.tenants[key]
        except KeyError:
            known = ", ".join(sorted(self.tenants)) or "none"
            raise NotFound(f"unknown tenant {key!r} (configured: {known})") from None

    @property
    def smtp_password(self) -> str:
        return os.environ.get("ROSTERDROP_SMTP_PASSWORD", "")

    @property
    def database_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_dir / 'rosterdrop.db'}"


def embedded_defaults() -> Settings:
    """What runs with no config file: one ``demo`` tenant, everything local."""
    return Settings(
        tenants={
            DEMO_TENANT: TenantSettings(
                name="Demo District",
                report_to=["admin@demo.example"],
                accounts=[SftpAccount(username=DEMO_TENANT)],
            )
        },
        web=WebSettings(listen=CONSOLE_LISTEN),
    )


def find_config(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def load_settings(explicit: str | Path | None = None) -> Settings:
    path = find_config(explicit)
    if path is None:
        return embedded_defaults()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        error = ConfigError(f"cannot read config {path}: {exc.strerror or exc}")
        error.add_note("check the path (-c, $ROSTERDROP_CONFIG or ./rosterdrop.toml) and "
                       "that the user running rosterdrop may read it")
        raise error from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        error = ConfigError(f"config {path} is not valid TOML: line {line}: not UTF-8 "
                            f"(byte {raw[exc.start]:#04x})")
        error.add_note("save the file as UTF-8")
        raise error from exc
    except tomllib.TOMLDecodeError as exc:
        error = ConfigError(f"config {path} is not valid TOML: "
                            f"{_toml_problem(str(exc), raw.decode('utf-8'))}")
        error.add_note("fix the TOML syntax at the line shown (strings in double quotes, "
                       "[tables] in brackets, one key = value a line)")
        raise error from exc
    return parse_settings(data, source=str(path))


def parse_settings(data: dict[str, Any], source: str = "config") -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        error = ConfigError(f"{source}: {_describe(exc)}")
        error.add_note("correct the key named above; every key is listed in "
                       "docs/configuration.md")
        raise error from exc


# --- what a refused config is told ----------------------------------------------------

SHOWN_CHARS = 40
"""A bad value is shown up to this many characters."""
_SECRET_WORDS = ("password", "secret", "token", "passphrase")
"""A key whose name holds one of these never has its value shown (an unknown
``smtp_password`` is as secret as a known one); nor has ``store.url`` (it may carry
the database password)."""


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        path = ".".join(str(p) for p in loc)
        value = _shown(loc, error.get("input"))
        if error["type"] == "extra_forbidden":
            hint = _did_you_mean(loc)
            parts.append(f"{path}: unknown key" + (f", {hint}" if hint else "")
                         + (f" {value}" if value else ""))
            continue
        message = _message(error)
        if value and repr(error.get("input")) not in message:
            message += f" {value}"
        parts.append(f"{path}: {message}")
    return "; ".join(parts)


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "is_instance_of" and "Path" in message:
        return "expected a path (a string)"
    return message


def _shown(loc: tuple[str | int, ...], value: Any) -> str:
    """``(given "x")``: the bad value as TOML spells it, cut short; nothing for a table,
    and never a secret's value."""
    names = [str(p) for p in loc if isinstance(p, str)]
    leaf = names[-1].lower() if names else ""
    if any(word in leaf for word in _SECRET_WORDS) or names[:2] == ["store", "url"]:
        return "(value not shown: it may be secret)"
    if isinstance(value, dict) or value is None:
        return ""
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return ""
    text = _toml_value(value)
    return f"(given {text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + '…'})"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _did_you_mean(loc: tuple[str | int, ...]) -> str:
    """``did you mean 'account_domain'?`` for a near miss of a key at the same level
    (edit distance), or ``it belongs in [sftp.ban]`` for a key of a sub-table."""
    model = _model_at(loc[:-1])
    wrong = str(loc[-1])
    if model is None:
        return ""
    keys = [info.alias or name for name, info in model.model_fields.items()]
    limit = 1 if len(wrong) <= 4 else 2
    scored = sorted((edit_distance(wrong.lower(), key.lower()), key) for key in keys)
    near = [key for distance, key in scored if distance <= limit and distance == scored[0][0]]
    if near:
        return "did you mean " + " or ".join(f"'{key}'" for key in near) + "?"
    here = ".".join(str(p) for p in loc[:-1])
    for name, info in model.model_fields.items():
        inner = _model_of(info.annotation)
        if inner is not None and wrong in {i.alias or n for n, i in inner.model_fields.items()}:
            table = f"{here}.{info.alias or name}" if here else info.alias or name
            return f"it belongs in [{table}]"
    return ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if get_origin(annotation) in (Union, UnionType) and len(models) == 1 \
        else None


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The settings model of the table at ``loc`` (``("tenants", "t")`` → TenantSettings)."""
    annotation: Any = Settings
    for part in loc:
        model = _model_of(annotation)
        if model is not None:
            found = [info for name, info in model.model_fields.items()
                     if (info.alias or name) == part]
            if not found:
                return None
            annotation = found[0].annotation
        elif get_origin(annotation) in (dict, list):
            annotation = get_args(annotation)[-1]  # the key or index is this part
        else:
            return None
    return _model_of(annotation)


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    swaps of neighbours count 1 each (``acount`` → ``account`` is 1)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (char != other))
            if i > 1 and j > 1 and char == b[j - 2] and a[i - 2] == other:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _toml_problem(message: str, text: str) -> str:
    """tomllib's ``Expected '=' … (at line 2, column 7)`` as ``line 2, column 7: Expected
    '=' …; the line reads: lisen "0.0.0.0:22"`` (a secret on it is not shown)."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match is None:
        return message.replace("(at end of document)", "at the end of the file")
    number = int(match.group(1))
    lines = text.splitlines()
    line = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    key = re.match(r"[\w.\-\"']+", line)
    if key and any(word in key.group(0).lower() for word in _SECRET_WORDS):
        line = f"{key.group(0)} = … (not shown: it may be secret)"
    line = re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1…@", line)
    if len(line) > 80:
        line = line[:79] + "…"
    where = f"line {number}, column {match.group(2)}"
    return f"{where}: {message[:match.start()]}" + (f"; the line reads: {line}" if line else "")
