"""A read-only client for the OneRoster REST API (1.1 and 1.2), on httpx.

``OneRosterClient.records(collection)`` yields a collection's records page by
page (``limit``/``offset``; ``X-Total-Count`` and ``Link: rel="next"`` are
followed when the server sends them). Every request goes through
``Session.send``, which:

* sends only GET, and POST to the configured token URL: any other request is
  refused before it leaves (a request hook checks every request httpx sends);
* keeps to ``rate_limit_per_second``;
* retries 429 (waiting ``Retry-After``), 5xx, timeouts and connection errors
  with exponential backoff;
* renews an OAuth 2 token once after a 401 (an expired or revoked token);
* turns everything else into one ``SourceError`` naming the endpoint and the
  HTTP status (401/403/404 say what to check), never a foreign exception.

Redirects are not followed (credentials must not travel to another address).
Logs carry endpoints, statuses and counts only: never the secret, a token,
or a record.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from rosterdrop.config import OneRosterSource
from rosterdrop.errors import SourceError
from rosterdrop.sources.oneroster.auth import Authenticator, OAuth1Signer, OAuth2ClientCredentials

log = structlog.get_logger("rosterdrop.api")

COLLECTIONS = ("orgs", "academicSessions", "courses", "classes", "users", "enrollments")
"""What a pull reads, in this order (1.2 roles come inside users)."""

MAX_ATTEMPTS = 6
BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
MAX_RETRY_AFTER_SECONDS = 300.0
"""A server asking for a longer pause than this fails the pull instead (the next one retries)."""

_REFUSALS = {
    401: "check client_id and the client secret",
    403: "the API client may not read this collection; check its permissions in the SIS",
    404: "check base_url (it must end in the OneRoster endpoint)",
}


class PullCancelled(Exception):
    """The daemon is stopping: a pull in progress gives up quietly (it runs again at start)."""


class Session:
    """Rate-limited, retrying, read-only HTTP for one pull."""

    def __init__(self, *, timeout: float, rate_limit: float, token_url: str = "",
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 cancel: threading.Event | None = None,
                 max_attempts: int = MAX_ATTEMPTS, backoff: float = BACKOFF_SECONDS) -> None:
        self.timeout = timeout
        self.token_url = token_url
        self._interval = 1.0 / rate_limit if rate_limit > 0 else 0.0
        self._sleep = sleep
        self._clock = clock
        self._cancel = cancel
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._next_slot = 0.0
        self.requests = 0
        self.retries = 0
        self.http = httpx.Client(
            timeout=timeout, transport=transport, follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": "rosterdrop"},
            event_hooks={"request": [self._only_reads]},
        )

    def close(self) -> None:
        self.http.close()

    def _only_reads(self, request: httpx.Request) -> None:
        """The one place that guarantees a pull never writes to the SIS."""
        if request.method == "GET":
            return
        if request.method == "POST" and self.token_url and request.url == httpx.URL(self.token_url):
            return
        raise SourceError(f"refused to send {request.method} {request.url.path}: a pull only "
                          f"reads (GET, and POST to the token URL)", reason="refused")

    def _pause(self, seconds: float) -> None:
        if self._cancel is not None:
            if self._cancel.wait(seconds):
                raise PullCancelled()
        elif seconds > 0:
            self._sleep(seconds)

    def _throttle(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise PullCancelled()
        if self._interval:
            now = self._clock()
            if now < self._next_slot:
                self._pause(self._next_slot - now)
                now = self._next_slot
            self._next_slot = now + self._interval

    def send(self, method: str, url: str, *, what: str,
             auth: Authenticator | None = None, form: dict[str, str] | None = None,
             basic: tuple[str, str] | None = None) -> httpx.Response:
        """One request with retries; answers other than 429/5xx are returned to the caller."""
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            self._throttle()
            headers = auth.headers(method, url) if auth is not None else {}
            problem: str
            wait: float | None = None
            try:
                self.requests += 1
                response = self.http.request(method, url, headers=headers, data=form,
                                             auth=httpx.BasicAuth(*basic) if basic else None)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"cannot connect ({type(exc).__name__})"
            else:
                status = response.status_code
                if status == 401 and auth is not None and not renewed and auth.renew():
                    renewed = True
                    log.info("api_token_renewed", endpoint=what)
                    attempt -= 1
                    continue
                if status != 429 and status < 500:
                    return response
                problem = f"HTTP {status}"
                wait = retry_after(response.headers.get("Retry-After"))
                if wait is not None and wait > MAX_RETRY_AFTER_SECONDS:
                    raise SourceError(f"{method} {what}: HTTP {status}, the server asks to wait "
                                      f"{wait:.0f} s; the next pull tries again")
                response.close()
            if attempt >= self._max_attempts:
                raise SourceError(f"{method} {what}: {problem} ({attempt} attempts)")
            if wait is None:
                wait = min(MAX_BACKOFF_SECONDS, self._backoff * 2 ** (attempt - 1))
                wait *= 1 + random.random() / 4  # keep tenants sharing one SIS out of step
            self.retries += 1
            log.warning("api_retry", endpoint=what, problem=problem, attempt=attempt,
                        wait_seconds=round(wait, 2))
            self._pause(wait)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def next_link(header: str | None) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, if any."""
    if not header:
        return None
    for part in header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if not (target.startswith("<") and target.endswith(">")):
            continue
        rels = [p.strip() for p in params.split(";")]
        if any(r.replace(" ", "") in ('rel="next"', "rel=next") for r in rels):
            return target[1:-1]
    return None


class OneRosterClient:
    """Reads a tenant's SIS: ``records("users")`` and friends. A context manager."""

    def __init__(self, source: OneRosterSource, secret: str, *, tenant: str = "",
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 cancel: threading.Event | None = None,
                 backoff: float = BACKOFF_SECONDS) -> None:
        self.source = source
        self.tenant = tenant
        self.base_url = source.base_url
        self.session = Session(
            timeout=source.timeout_seconds, rate_limit=source.rate_limit_per_second,
            token_url=source.token_url if source.auth == "oauth2" else "",
            transport=transport, sleep=sleep, clock=clock, cancel=cancel, backoff=backoff,
            max_attempts=source.retries + 1,
        )
        self.auth: Authenticator
        if source.auth == "oauth2":
            self.auth = OAuth2ClientCredentials(
                source.token_url, source.client_id, secret, source.scope, self._post_token,
                clock=clock)
        else:
            self.auth = OAuth1Signer(source.client_id, secret)
        self.notes: list[str] = []
        """Things worth telling the admin that are not errors (counts that disagree, …)."""

    def __enter__(self) -> OneRosterClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def _post_token(self, url: str, form: dict[str, str],
                    basic: tuple[str, str]) -> httpx.Response:
        return self.session.send("POST", url, what=_path(url), form=form, basic=basic)

    def endpoint(self, collection: str) -> str:
        return f"{self.base_url}/{collection}"

    def records(self, collection: str) -> Iterator[dict[str, Any]]:
        """Every record of one collection, in the server's order, fetched page by page."""
        limit = self.source.page_size
        url: str | None = self.endpoint(collection)
        offset = 0
        total: int | None = None
        pages = 0
        started = time.monotonic()
        first_ids: set[str] = set()
        while url is not None:
            page_url = url if "?" in url else _with_page(url, limit, offset)
            what = _path(page_url)
            response = self.session.send("GET", page_url, what=what, auth=self.auth)
            records = self._page(collection, response, what)
            pages += 1
            total = _total(response, total)
            link_header = response.headers.get("Link")
            link = next_link(link_header)
            if records:
                first = records[0].get("sourcedId")
                if isinstance(first, str) and first in first_ids:
                    raise SourceError(f"GET {what}: the server sent the same page again; it "
                                      f"seems to ignore offset", reason="invalid")
                if isinstance(first, str):
                    first_ids.add(first)
            yield from records
            offset += len(records)
            if link is not None:
                url = self._same_origin(link, what)
            elif link_header is not None or not records:
                url = None  # a Link header without next: the last page
            elif total is not None:
                url = None if offset >= total else self.endpoint(collection)
            else:
                url = self.endpoint(collection)  # no hints: read until an empty page
        if total is not None and total != offset:
            self.notes.append(f"{collection}: the server announced {total:,} records "
                              f"(X-Total-Count) but sent {offset:,}")
        log.info("api_collection_fetched", tenant=self.tenant, collection=collection,
                 records=offset, pages=pages,
                 duration_ms=int((time.monotonic() - started) * 1000))

    def _page(self, collection: str, response: httpx.Response,
              what: str) -> list[dict[str, Any]]:
        status = response.status_code
        if status != 200:
            hint = _REFUSALS.get(status)
            if 300 <= status < 400:
                hint = (f"the server redirects to {response.headers.get('Location', '?')}; "
                        f"set base_url to the final address")
            raise SourceError(f"GET {what}: HTTP {status}" + (f"; {hint}" if hint else ""),
                              reason="refused")
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"GET {what}: the answer is not JSON "
                              f"({response.headers.get('Content-Type', 'no content type')})",
                              reason="invalid") from None
        records = body.get(collection) if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise SourceError(f"GET {what}: the answer has no {collection!r} list",
                              reason="invalid")
        # A record that is not a JSON object becomes an empty one: validation reports it.
        return [r if isinstance(r, dict) else {} for r in records]

    def _same_origin(self, link: str, what: str) -> str:
        target = httpx.URL(self.base_url).join(link)
        base = httpx.URL(self.base_url)
        if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
            raise SourceError(f"GET {what}: the next-page link points to another server "
                              f"({target.host}); refusing to send credentials there",
                              reason="refused")
        return str(target)


def _with_page(url: str, limit: int, offset: int) -> str:
    return str(httpx.URL(url, params={"limit": limit, "offset": offset}))


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _total(response: httpx.Response, previous: int | None) -> int | None:
    value = response.headers.get("X-Total-Count", "").strip()
    return int(value) if value.isdigit() else previous
