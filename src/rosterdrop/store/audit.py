"""The audit trail: who approved, discarded, edited, reset, uploaded, synced or paused
what, and when; written by the console (actor ``web:<username>``) and by the CLI
(``cli:<os user>``), read by the console's run and person pages.

Only actions an admin takes are here; what a sync did is the run history's.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import insert, select

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import AUDIT


class Action(StrEnum):
    APPROVE = "approve"
    DISCARD = "discard"
    EDIT = "edit"
    RESET = "reset"
    UPLOAD = "upload"
    SYNC_NOW = "sync_now"
    PAUSE = "pause"
    RESUME = "resume"
    REDELIVER = "redeliver"


class Target(StrEnum):
    RUN = "run"
    PERSON = "person"
    TENANT = "tenant"
    UPLOAD = "upload"


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: Action
    tenant: str | None
    target_kind: Target
    target: str
    detail: str = ""
    at: datetime | None = None


def cli_actor() -> str:
    """``cli:<os user>``: who ran a command (the name the OS gives, not a claim)."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = str(os.getuid())
    return f"cli:{name}"


def record(store: Store, entry: AuditEntry) -> None:
    moment = (entry.at or datetime.now(UTC)).astimezone(UTC)
    with translate(f"recording the audit entry for {entry.action.value}"), \
            store.write() as conn:
        conn.execute(insert(AUDIT).values(
            at=moment, actor=entry.actor[:200], action=entry.action.value,
            tenant=entry.tenant, target_kind=entry.target_kind.value,
            target=entry.target[:500], detail=entry.detail[:2000]))


def entries_for(store: Store, target_kind: Target, target: str, *,
                tenant: str | None = None, limit: int = 50) -> list[AuditEntry]:
    """The newest entries about one run, person or tenant (a person's ids are per tenant)."""
    query = select(AUDIT).where((AUDIT.c.target_kind == target_kind.value)
                                & (AUDIT.c.target == target))
    if tenant is not None:
        query = query.where(AUDIT.c.tenant == tenant)
    query = query.order_by(AUDIT.c.at.desc(), AUDIT.c.id.desc()).limit(limit)
    with translate("reading the audit trail"), store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [AuditEntry(
        actor=row["actor"], action=Action(row["action"]), tenant=row["tenant"],
        target_kind=Target(row["target_kind"]), target=row["target"], detail=row["detail"],
        at=_utc(row["at"])) for row in rows]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
