"""A tenant's switches kept in the store: paused or not (``rosterdrop tenant pause``).

A paused tenant's uploads are still accepted, kept and queued; the queue does not
claim them until the tenant is resumed (the summer disconnect Apple School
Manager advises before a new school year). Being in the store, the switch holds
for every process sharing it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text, update

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import TENANT_STATE


def paused_since(store: Store, tenant: str) -> datetime | None:
    with translate(f"reading whether tenant {tenant!r} is paused"), \
            store.engine.connect() as conn:
        value = conn.execute(select(TENANT_STATE.c.paused_at)
                             .where(TENANT_STATE.c.tenant == tenant)).scalar_one_or_none()
    if value is None:
        return None
    moment: datetime = value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def set_paused(store: Store, tenant: str, now: datetime | None) -> bool:
    """Pause the tenant (``now``) or resume it (None); False when it already was so."""
    with translate(f"{'pausing' if now else 'resuming'} tenant {tenant!r}"), \
            store.write() as conn:
        conn.execute(text("INSERT INTO tenant_state (tenant, revision) VALUES (:t, 0) "
                          "ON CONFLICT (tenant) DO NOTHING"), {"t": tenant})
        was = TENANT_STATE.c.paused_at.is_(None) if now else TENANT_STATE.c.paused_at.isnot(None)
        moment = now.astimezone(UTC) if now else None
        changed = conn.execute(update(TENANT_STATE).where(
            (TENANT_STATE.c.tenant == tenant) & was).values(paused_at=moment)).rowcount
    return bool(changed)
