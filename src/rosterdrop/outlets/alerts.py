"""Alerts: a Slack or Microsoft Teams post, or a signed JSON webhook, for a finished run.

:class:`AlertPoster` makes ONE attempt per call: the delivery ledger (``dispatch``)
retries with backoff, so nothing here loops or sleeps, and a run never waits on it.

What an alert says is what the report email's first sentence says
(:func:`rosterdrop.mail.report.run_sentence`: the upload's file name, the change
totals, the number of errors), with the tenant, the status, the record counts per
kind and the run's console link. It never carries a record of the upload: no issue
examples, no names, no ids of people.

The URL of a Slack or Teams incoming webhook is itself the credential, so it is read
from the environment variable the config names and never shown: errors name the
variable, not the URL, and nothing here logs it (httpx's own request log is off below
WARNING, ``logs.py``).

The generic ``webhook`` is signed per Standard Webhooks 1.0
(https://www.standardwebhooks.com/): ``webhook-id`` (the same for every attempt of one
run's alert to one outlet, so a receiver can drop a repeat), ``webhook-timestamp``
(this attempt, Unix seconds) and ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``{id}.{timestamp}.{body}``, keyed with the base64 after ``whsec_`` of the secret.
The body's schema is in docs/outlets.md, "Alerts".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from rosterdrop.codes import Code
from rosterdrop.config import AlertSettings, Settings
from rosterdrop.documents import RunStatus
from rosterdrop.errors import DeliveryError
from rosterdrop.mail.report import run_sentence
from rosterdrop.outlets.dispatch import Delivery
from rosterdrop.store.history import RunRecord

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 16
"""A shorter HMAC key is refused (Standard Webhooks recommends 24 to 64 random bytes)."""
REFUSED = frozenset({401, 403, 404, 410})
"""Answers of a revoked or mistyped webhook: retrying cannot help until the URL changes."""
UNREACHABLE = frozenset({408, 425, 429})
"""Besides 5xx: answers that say "later"."""
ANSWER_SHOWN = 120
"""Characters of a refusing answer's body shown in the error (Slack's say why)."""
ANSWER_READ = 4096
"""Bytes of that body read at most (the rest is never downloaded)."""
CHANGE_GROUPS = ("created", "updated", "deactivated", "removed")
WHAT = {
    RunStatus.COMPLETED: "sync completed",
    RunStatus.COMPLETED_WITH_WARNINGS: "sync completed with warnings",
    RunStatus.FAILED: "sync failed",
    RunStatus.HELD: "sync held for approval",
    RunStatus.UNCHANGED: "upload unchanged",
    RunStatus.DISCARDED: "held sync discarded",
}
"""The headline of each status (the email's subject says the same)."""
TEAMS_CARD_VERSION = "1.4"
"""Adaptive Cards version Teams renders in channel posts from Workflows."""


# --- what an alert says (pure) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """Everything an alert says, built from the run's summary only (no records)."""

    tenant: str
    tenant_name: str
    run_id: str
    status: RunStatus
    title: str
    sentence: str
    occurred_at: datetime
    counts: Mapping[str, int] = field(default_factory=dict)
    """Records in the upload per kind (``students``, ``staff``, …)."""
    changes: Mapping[str, int] = field(default_factory=dict)
    """Totals of ``created``, ``updated``, ``deactivated`` and ``removed``."""
    issue_counts: Mapping[str, int] = field(default_factory=dict)
    """Issues per code (codes only, never an example)."""
    url: str = ""
    """The run's page in the console; empty without ``web.base_url``."""


def alert_message(run: RunRecord, tenant_key: str, tenant_name: str,
                  base_url: str) -> AlertMessage:
    document = run.document
    if document is not None:
        sentence = run_sentence(document)
        counts = {str(k): int(v) for k, v in document.counts.items()}
        changes = {g: sum(int(n) for n in document.changes.get(g, {}).values())
                   for g in CHANGE_GROUPS}
        issue_counts = {str(k): int(v) for k, v in document.issue_counts.items()}
    else:  # a run that could not finish keeps no document: its status says it all
        sentence = f"Run {run.run_id} ended with status {run.status.value}."
        counts, changes = {str(k): int(v) for k, v in run.counts.items()}, {}
        issue_counts = {str(k): int(v) for k, v in run.issue_counts.items()}
    name = tenant_name or tenant_key
    url = f"{base_url}/runs/{quote(run.run_id, safe='')}" if base_url else ""
    return AlertMessage(
        tenant=tenant_key, tenant_name=name, run_id=run.run_id, status=run.status,
        title=f"{name}: {WHAT.get(run.status, run.status.value)}", sentence=sentence,
        occurred_at=run.finished_at or run.created_at or datetime.now(UTC),
        counts=counts, changes=changes, issue_counts=issue_counts, url=url)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _slack_escape(text: str) -> str:
    """Slack reads ``<…>`` as links and mentions (``<!channel>``): a file name must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _facts(message: AlertMessage) -> list[tuple[str, str]]:
    facts = [("Status", message.status.value), ("Run", message.run_id)]
    if message.counts:
        facts.append(("Records", ", ".join(f"{n:,} {kind}"
                                           for kind, n in message.counts.items())))
    if any(message.changes.values()):
        facts.append(("Changes", ", ".join(f"{n:,} {group}"
                                           for group, n in message.changes.items())))
    return facts


def slack_payload(message: AlertMessage) -> dict[str, Any]:
    """An incoming-webhook message: ``text`` for notifications, blocks for the channel.
    The sentence is a ``plain_text`` object: nothing in it is read as markup."""
    link = f" <{message.url}|Open the run>" if message.url else ""
    text = (f"[rosterdrop] {_slack_escape(message.title)}. "
            f"{_slack_escape(message.sentence)}{link}")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
        {"type": "section", "text": {"type": "plain_text", "text": message.sentence[:3000]}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)}"}
            for label, value in _facts(message)]},
    ]
    if message.url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open the run"},
             "url": message.url}]})
    return {"text": text, "blocks": blocks}


def teams_payload(message: AlertMessage) -> dict[str, Any]:
    """A message with one Adaptive Card, the form Teams "Workflows" webhooks post to a
    channel (the retired Office 365 connectors took MessageCards). The sentence is a
    RichTextBlock TextRun, which Teams never reads as Markdown."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": TEAMS_CARD_VERSION,
        "body": [
            {"type": "RichTextBlock", "inlines": [
                {"type": "TextRun", "text": f"rosterdrop · {message.title}", "weight": "bolder",
                 "size": "medium",
                 "color": "attention" if message.status is RunStatus.FAILED else "default"}]},
            {"type": "RichTextBlock", "inlines": [
                {"type": "TextRun", "text": message.sentence}]},
            {"type": "FactSet", "facts": [{"title": label, "value": value}
                                          for label, value in _facts(message)]},
        ],
    }
    if message.url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the run",
                            "url": message.url}]
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
         "content": card}]}


def webhook_payload(message: AlertMessage) -> dict[str, Any]:
    """The Standard Webhooks body: ``type``, ``timestamp`` (when the run ended), ``data``."""
    return {
        "type": f"run.{message.status.value}",
        "timestamp": _iso(message.occurred_at),
        "data": {
            "tenant": message.tenant, "tenant_name": message.tenant_name,
            "run_id": message.run_id, "status": message.status.value,
            "title": message.title, "sentence": message.sentence,
            "counts": dict(message.counts), "changes": dict(message.changes),
            "issue_counts": dict(message.issue_counts), "url": message.url or None,
        },
    }


# --- Standard Webhooks signing (pure) ------------------------------------------------


def webhook_id(run_id: str, outlet_key: str) -> str:
    """The same for every attempt of one run's alert to one outlet (receivers drop a
    repeat by it), different for every other."""
    digest = hashlib.sha256(f"{run_id}\0{outlet_key}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError saying what is wrong."""
    secret = secret.strip()
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"does not start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not base64 after {SECRET_PREFIX}") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"holds {len(key)} bytes, fewer than {MIN_SECRET_BYTES}")
    return key


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` and the base64 HMAC-SHA256."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


GENERATE_SECRET = ("python3 -c 'import base64, secrets; print(\"whsec_\" + "
                   "base64.b64encode(secrets.token_bytes(32)).decode())'")


# --- configuration read at the attempt -----------------------------------------------


def alert_url(alert: AlertSettings, environ: Mapping[str, str]) -> str:
    """The webhook URL from ``url_env``; ValueError naming the variable (never the URL)."""
    url = environ.get(alert.url_env, "").strip()
    if not url:
        raise ValueError(f"environment variable {alert.url_env} (url_env) is not set or "
                         f"empty")
    if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", url):
        raise ValueError(f"environment variable {alert.url_env} (url_env) does not hold an "
                         f"http(s):// URL")
    return url


def alert_key(alert: AlertSettings, environ: Mapping[str, str]) -> bytes:
    """A ``webhook``'s signing key from ``secret_env``; ValueError naming the variable."""
    secret = environ.get(alert.secret_env, "").strip()
    if not secret:
        raise ValueError(f"environment variable {alert.secret_env} (secret_env) is not set "
                         f"or empty")
    try:
        return signing_key(secret)
    except ValueError as exc:
        raise ValueError(f"environment variable {alert.secret_env} (secret_env) {exc}: "
                         f"expected a Standard Webhooks secret, {SECRET_PREFIX} and base64 "
                         f"(make one: {GENERATE_SECRET})") from None


# --- the attempt ---------------------------------------------------------------------


class AlertPoster:
    """Posts one alert per :meth:`send`; the sender of kinds slack, teams and webhook."""

    def __init__(self, settings: Settings, *, environ: Mapping[str, str] = os.environ,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.environ = environ
        self.now = now
        self._transport = transport
        self._tls: ssl.SSLContext | None = None

    async def send(self, delivery: Delivery) -> str:
        """One POST; what the receiver answered (``HTTP 200``), or DeliveryError."""
        alert = delivery.outlet
        if not isinstance(alert, AlertSettings):
            raise DeliveryError(f"outlet {delivery.record.outlet} is not an alert")
        try:
            url = alert_url(alert, self.environ)
            key = alert_key(alert, self.environ) if alert.type == "webhook" else b""
        except ValueError as exc:
            raise DeliveryError(str(exc), code=Code.DELIVERY_FAILED) from None
        message = alert_message(delivery.run, delivery.tenant_key, delivery.tenant.name,
                                self.settings.web.base_url)
        headers = {"Content-Type": "application/json", "User-Agent": "rosterdrop"}
        if alert.type == "slack":
            payload = slack_payload(message)
        elif alert.type == "teams":
            payload = teams_payload(message)
        else:
            payload = webhook_payload(message)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if alert.type == "webhook":
            message_id = webhook_id(delivery.run.run_id, alert.key)
            timestamp = int(self.now().timestamp())
            headers |= {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
                        "webhook-signature": signature(key, message_id, timestamp, body)}
        where = f"the {alert.type} webhook (${alert.url_env})"
        return await self._post(url, body, headers, where, alert)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], where: str,
                    alert: AlertSettings) -> str:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        try:
            async with (
                httpx.AsyncClient(timeout=alert.timeout_seconds, follow_redirects=False,
                                  transport=self._transport, verify=self._tls) as http,
                http.stream("POST", url, content=body, headers=headers) as answer,
            ):
                status = answer.status_code
                excerpt = b""
                if not 200 <= status < 300:
                    async for chunk in answer.aiter_bytes():  # a bounded read
                        excerpt += chunk
                        if len(excerpt) >= ANSWER_READ:
                            break
        except httpx.TimeoutException:
            raise DeliveryError(f"{where}: no answer within {alert.timeout_seconds:g} s",
                                code=Code.DELIVERY_UNREACHABLE) from None
        except httpx.HTTPError as exc:
            # The exception's text may quote the URL: only its kind is shown.
            raise DeliveryError(f"{where}: cannot connect ({type(exc).__name__})",
                                code=Code.DELIVERY_UNREACHABLE) from None
        if 200 <= status < 300:
            return f"HTTP {status}"
        said = _answer(excerpt, url)
        if status >= 500 or status in UNREACHABLE:
            raise DeliveryError(f"{where} answered HTTP {status}{said}",
                                code=Code.DELIVERY_UNREACHABLE)
        if status in REFUSED:
            raise DeliveryError(f"{where} answered HTTP {status}{said}: the webhook was "
                                f"removed or its URL is wrong; put its current URL in "
                                f"{alert.url_env}", code=Code.DELIVERY_REFUSED)
        if 300 <= status < 400:
            raise DeliveryError(f"{where} answered HTTP {status}, a redirect, which is not "
                                f"followed: put the final URL in {alert.url_env}",
                                code=Code.DELIVERY_FAILED)
        raise DeliveryError(f"{where} answered HTTP {status}{said}", code=Code.DELIVERY_FAILED)


def _answer(excerpt: bytes, url: str) -> str:
    """A short, printable excerpt of a refusal's body (Slack says ``invalid_payload``),
    with the URL taken out should the receiver echo it."""
    text = excerpt.decode("utf-8", "replace").replace(url, "<url>")
    text = re.sub(r"\s+", " ", re.sub(r"[^\x20-\x7e\s]", "?", text)).strip()
    if not text:
        return ""
    return f" ({text[:ANSWER_SHOWN - 1]}…)" if len(text) > ANSWER_SHOWN else f" ({text})"
