"""Reading the tenant's accounts as ``people`` lists them: SQLAlchemy Core only, so the
command answers without loading polars or the pipeline (``directory.py`` writes them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, or_, select

from rosterdrop.store.engine import Store, translate
from rosterdrop.store.tables import PEOPLE


def _person_dict(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "person_id": row["person_id"],
        "role": row["role"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "email_address": row["email_address"],
        "location_ids": json.loads(row["location_ids"]) if row["location_ids"] else [],
        "account": row["account"],
        "status": row["status"],
        "source": row["source"],
    }


def list_people(
    store: Store,
    tenant: str,
    search: str | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    """The tenant's accounts as ``people --json`` lists them, by last and first name.

    ``search`` matches case-insensitively anywhere in the person_id, names,
    email address or account name.
    """
    people = PEOPLE
    columns = [people.c[name] for name in (
        "person_id", "role", "first_name", "last_name", "email_address", "location_ids",
        "account", "status", "source",
    )]
    query = select(*columns).where(people.c.tenant == tenant)
    if not include_inactive:
        query = query.where(people.c.status == "active")
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        query = query.where(
            or_(
                *[
                    func.lower(people.c[name]).like(pattern, escape="\\")
                    for name in ("person_id", "first_name", "last_name", "email_address", "account")
                ]
            )
        )
    query = query.order_by(
        people.c.last_name.nulls_last(), people.c.first_name.nulls_last(), people.c.person_id
    )
    with translate(f"listing the people of tenant {tenant!r}"), store.engine.connect() as conn:
        return [_person_dict(row._mapping) for row in conn.execute(query)]


