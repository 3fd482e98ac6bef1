"""Console sign-ins kept in the database: the cookie carries a random token, the store
its sha256, the user, a CSRF token and when it ends. The server decides expiry (a
copied cookie dies with its row); sign-out deletes the row; every process sharing the
store honours the same sessions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import WEB_SESSIONS

TOKEN_BYTES = 32


@dataclass(frozen=True)
class WebSession:
    username: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def start_session(store: Store, username: str, now: datetime,
                  minutes: int) -> tuple[str, WebSession]:
    """A new session: (the cookie's token, the session). Expired rows go on the way."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session = WebSession(username, secrets.token_urlsafe(TOKEN_BYTES), now.astimezone(UTC),
                         (now + timedelta(minutes=minutes)).astimezone(UTC))
    with translate("starting a console session"), store.write() as conn:
        conn.execute(delete(WEB_SESSIONS).where(WEB_SESSIONS.c.expires_at <= session.created_at))
        conn.execute(insert(WEB_SESSIONS).values(
            token_hash=_digest(token), username=username, csrf_token=session.csrf_token,
            created_at=session.created_at, expires_at=session.expires_at))
    return token, session


def find_session(store: Store, token: str, now: datetime) -> WebSession | None:
    """The live session of a cookie's token, or None (unknown or expired)."""
    if not token or len(token) > 200:
        return None
    with translate("reading a console session"), store.engine.connect() as conn:
        row = conn.execute(select(WEB_SESSIONS).where(
            WEB_SESSIONS.c.token_hash == _digest(token))).mappings().first()
    if row is None:
        return None
    session = WebSession(row["username"], row["csrf_token"], _utc(row["created_at"]),
                         _utc(row["expires_at"]))
    return session if session.expires_at > now.astimezone(UTC) else None


def end_session(store: Store, token: str) -> None:
    with translate("ending a console session"), store.write() as conn:
        conn.execute(delete(WEB_SESSIONS).where(WEB_SESSIONS.c.token_hash == _digest(token)))


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
