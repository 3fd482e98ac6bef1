"""OAuth 2 client-credentials tokens of the OneRoster provider, kept in ``api_tokens``.

A token is 32 random bytes (URL-safe base64); the table keeps its sha256, the
tenant and client it was issued to, the scopes granted and when it ends, so
every process sharing the store accepts it and a copy of the table signs no one
in. Expired rows are deleted as new tokens are issued.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import API_TOKENS

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class ApiToken:
    tenant: str
    client_id: str
    scopes: frozenset[str]
    expires_at: datetime


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def issue_token(store: Store, tenant: str, client_id: str, scopes: Sequence[str],
                now: datetime, minutes: int) -> tuple[str, ApiToken]:
    """A new bearer token for ``client_id`` of ``tenant``: (the token, what it grants)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = _utc(now)
    granted = ApiToken(tenant, client_id, frozenset(scopes), now + timedelta(minutes=minutes))
    with translate("issuing an API token"), store.write() as conn:
        conn.execute(delete(API_TOKENS).where(API_TOKENS.c.expires_at <= now))
        conn.execute(insert(API_TOKENS).values(
            token_hash=digest(token), tenant=tenant, client_id=client_id,
            scopes=" ".join(sorted(granted.scopes)), created_at=now,
            expires_at=granted.expires_at))
    return token, granted


def find_token(store: Store, token: str, now: datetime) -> ApiToken | None:
    """What a live bearer token grants, or None (unknown, expired or malformed)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    with translate("reading an API token"), store.engine.connect() as conn:
        row = conn.execute(select(API_TOKENS).where(
            API_TOKENS.c.token_hash == digest(token))).mappings().first()
    if row is None:
        return None
    found = ApiToken(row["tenant"], row["client_id"], frozenset(row["scopes"].split()),
                     _utc(row["expires_at"]))
    return found if found.expires_at > _utc(now) else None


def revoke_client(store: Store, tenant: str, client_id: str) -> int:
    """Delete every token of one client (a removed or re-keyed client); how many."""
    with translate("revoking API tokens"), store.write() as conn:
        result = conn.execute(delete(API_TOKENS).where(API_TOKENS.c.tenant == tenant,
                                                       API_TOKENS.c.client_id == client_id))
    return int(result.rowcount or 0)
