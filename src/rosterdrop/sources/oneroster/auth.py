"""How a pull proves who it is: OAuth 2 client credentials or OAuth 1 request signing.

OneRoster 1.2 servers use OAuth 2 client credentials (a bearer token from a
token endpoint, cached here until shortly before it expires); OneRoster 1.1
servers commonly require OAuth 1.0a one-legged signing with HMAC-SHA1 (RFC
5849: a consumer key and secret, no token). The signing functions are pure
and written out here with ``hmac``/``hashlib``; the token request is sent
through the client's session, so it gets the same retries and error
translation as every other request.

Neither the secret nor a token is ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from rosterdrop.config import OneRosterSource
from rosterdrop.errors import ConfigError, SourceError


def read_secret(source: OneRosterSource, tenant: str,
                environ: Mapping[str, str] = os.environ) -> str:
    """The client secret, from the environment variable or the file the config names."""
    where = f"tenants.{tenant}.source"
    if source.client_secret_env:
        value = environ.get(source.client_secret_env, "").strip()
        if not value:
            raise ConfigError(f"{where}.client_secret_env: environment variable "
                              f"{source.client_secret_env} is not set or empty")
        return value
    path = Path(source.client_secret_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{where}.client_secret_file: cannot read {path}: {detail}") from exc
    value = lines[0].strip() if lines else ""
    if not value:
        raise ConfigError(f"{where}.client_secret_file: {path} is empty")
    return value


class Authenticator(Protocol):
    """Adds credentials to one request; ``renew`` after a 401 says whether to try again."""

    def headers(self, method: str, url: str) -> dict[str, str]: ...

    def renew(self) -> bool: ...


# --- OAuth 1.0a, one-legged, HMAC-SHA1 (RFC 5849) -----------------------------------------


def percent_encode(value: str) -> str:
    """RFC 5849 3.6: UTF-8, then every byte but ALPHA / DIGIT / "-" / "." / "_" / "~" as %XX."""
    return quote(value.encode("utf-8"), safe="-._~")


def base_string_uri(url: str) -> str:
    """RFC 5849 3.4.1.2: lower-case scheme and host, default port dropped, no query."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def signature_base_string(method: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: METHOD & encoded URI & encoded, sorted, encoded parameters.

    ``params`` are the oauth_* protocol parameters (without oauth_signature);
    the query parameters of ``url`` are added here.
    """
    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in [*query, *params])
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    return "&".join(percent_encode(part) for part in (method.upper(), base_string_uri(url),
                                                      normalized))


def hmac_sha1_signature(base_string: str, consumer_secret: str, token_secret: str = "") -> str:
    """RFC 5849 3.4.2: base64(HMAC-SHA1(key = secret & token secret, base string))."""
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}"
    digest = hmac.new(key.encode("utf-8"), base_string.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def oauth1_authorization(method: str, url: str, *, client_id: str, client_secret: str,
                         nonce: str, timestamp: int) -> str:
    """The ``Authorization: OAuth …`` header value for one request."""
    params = [
        ("oauth_consumer_key", client_id),
        ("oauth_nonce", nonce),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", str(timestamp)),
        ("oauth_version", "1.0"),
    ]
    signature = hmac_sha1_signature(signature_base_string(method, url, params), client_secret)
    fields = [*params, ("oauth_signature", signature)]
    return "OAuth " + ", ".join(f'{k}="{percent_encode(v)}"' for k, v in fields)


class OAuth1Signer:
    """Signs every request afresh (new nonce and timestamp); there is nothing to renew."""

    def __init__(self, client_id: str, client_secret: str, *,
                 clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: secrets.token_hex(16)) -> None:
        self._client_id = client_id
        self._secret = client_secret
        self._clock = clock
        self._nonce = nonce

    def headers(self, method: str, url: str) -> dict[str, str]:
        value = oauth1_authorization(method, url, client_id=self._client_id,
                                     client_secret=self._secret, nonce=self._nonce(),
                                     timestamp=int(self._clock()))
        return {"Authorization": value}

    def renew(self) -> bool:
        return False


# --- OAuth 2 client credentials (RFC 6749 4.4) --------------------------------------------

TokenPoster = Callable[[str, dict[str, str], tuple[str, str]], httpx.Response]
"""``post(token_url, form, (client_id, secret))`` → the response (sent with retries)."""


class OAuth2ClientCredentials:
    """A bearer token from the token endpoint, reused until shortly before it expires."""

    DEFAULT_LIFETIME = 3600.0

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str,
                 post: TokenPoster, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._secret = client_secret
        self._scope = scope
        self._post = post
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self.requests = 0
        """Token requests sent (for logs and tests)."""

    def headers(self, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._current()}"}

    def renew(self) -> bool:
        """Forget the token after a 401 (expired or revoked early); True if one was held."""
        held = self._token is not None
        self._token = None
        return held

    def _current(self) -> str:
        if self._token is None or self._clock() >= self._renew_at:
            self._token, lifetime = self._request()
            # Renew a little early, so a token never expires between check and use.
            self._renew_at = self._clock() + lifetime - min(30.0, lifetime * 0.1)
        return self._token

    def _request(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        self.requests += 1
        response = self._post(self.token_url, form, (self._client_id, self._secret))
        where = f"token request to {self.token_url}"
        if response.status_code != 200:
            error = _oauth_error(response)
            hint = ("check client_id and the client secret"
                    if response.status_code in (400, 401, 403) else "check token_url")
            raise SourceError(f"{where}: HTTP {response.status_code}{error}; {hint}",
                              reason="refused")
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"{where}: the answer is not JSON", reason="invalid") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceError(f"{where}: the answer has no access_token", reason="invalid")
        token_type = str(body.get("token_type", "bearer")).lower()
        if token_type != "bearer":
            raise SourceError(f"{where}: token_type {token_type!r} is not bearer",
                              reason="invalid")
        lifetime = body.get("expires_in", self.DEFAULT_LIFETIME)
        try:
            seconds = float(lifetime)
        except (TypeError, ValueError):
            seconds = self.DEFAULT_LIFETIME
        return token, max(1.0, seconds)


def _oauth_error(response: httpx.Response) -> str:
    """The OAuth ``error`` code of a refusal (``invalid_client``), never its other fields."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str) and error.replace("_", "").isalnum() and len(error) <= 40:
        return f" ({error})"
    return ""
