"""People: search and filters, a person's page (synced values against the SIS's
latest), a local edit (``set_person``, the validation of ``people set``) and "return
to SIS" (``reset_person``, as ``people reset``)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from rosterdrop.errors import UsageError
from rosterdrop.pipeline.snapshot import LOCAL, PERSON_FIELDS
from rosterdrop.store.audit import Action, Target, entries_for
from rosterdrop.store.directory import EDITABLE_FIELDS, reset_person, set_person
from rosterdrop.web import queries
from rosterdrop.web.console import Console
from rosterdrop.web.http import Ctx, Refusal, flash, query_param, redirect, route
from rosterdrop.web.paging import Page
from rosterdrop.web.roles import Permission


def _tenant(ctx: Ctx) -> str:
    key = query_param(ctx.request, "tenant") or ctx.request.path_params.get("tenant", "")
    if not key and len(ctx.tenants) == 1:
        key = ctx.tenants[0]
    return ctx.tenant(key)


def people_list(ctx: Ctx) -> Response:
    request = ctx.request
    if not query_param(request, "tenant") and len(ctx.tenants) != 1:
        return ctx.render("people.html", title="People", tenant="", rows=[], page=None,
                          filters={}, locations=[], tenant_choices=ctx.tenants)
    tenant = _tenant(ctx)
    where = queries.PeopleFilter(tenant, *(query_param(request, n)[:200] for n in (
        "q", "role", "status", "source", "location")))
    counted = Page.of(query_param(request, "page"), queries.PEOPLE_PAGE, 10**12)
    rows, total = queries.people_page(ctx.console.store, where, counted.offset)
    page = Page.of(counted.number, queries.PEOPLE_PAGE, total)
    filters = {"tenant": tenant, "q": where.search, "role": where.role, "status": where.status,
               "source": where.source, "location": where.location}
    return ctx.render("people.html", title="People", tenant=tenant, rows=rows, page=page,
                      filters=filters, locations=queries.locations(ctx.console.store, tenant),
                      tenant_choices=ctx.tenants)


def _shown(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in ("location_ids", "previous_ids"):
        try:
            return ", ".join(str(v) for v in json.loads(value))
        except (TypeError, ValueError):
            return str(value)
    return str(value)


FIELD_LABELS = {"role": "Role", "person_number": "Person number", "first_name": "First name",
                "middle_name": "Middle name", "last_name": "Last name",
                "grade_level": "Grade level", "email_address": "Email address",
                "sis_username": "SIS username", "password_policy": "Password policy",
                "location_ids": "Locations"}
"""The person page's labels; the form's field names stay ``people set``'s."""


def _person(ctx: Ctx, permission: Permission = Permission.READ) -> tuple[str, dict[str, Any]]:
    tenant = ctx.tenant(ctx.request.path_params["tenant"], permission)
    person_id = ctx.request.path_params["person_id"]
    row = queries.person(ctx.console.store, tenant, person_id)
    if row is None:
        raise Refusal(404, f"no person {person_id!r} in tenant {tenant!r}")
    return tenant, row


def person_page(ctx: Ctx, message: str = "", status: int = 200,
                entered: dict[str, str] | None = None) -> Response:
    tenant, row = _person(ctx)
    seen = row.get("sis_seen")
    sis = dict(zip(PERSON_FIELDS, seen.split("\x1f"), strict=False)) if seen else {}
    values = {name: _shown(name, row.get(name)) for name in EDITABLE_FIELDS}
    return ctx.render(
        "person.html", status=status, title=f"{row['first_name'] or ''} {row['last_name'] or ''}"
        .strip() or row["person_id"], tenant=tenant, person=row, values=values,
        entered=entered or values, sis=sis, fields=EDITABLE_FIELDS, local=row["source"] == LOCAL,
        labels=FIELD_LABELS, may_act=ctx.may(Permission.ACT, tenant), message=message,
        done=flash(ctx.request),
        account=row["account"], audit=entries_for(ctx.console.store, Target.PERSON,
                                                  row["person_id"], tenant=tenant))


def person_view(ctx: Ctx) -> Response:
    return person_page(ctx)


def person_edit(ctx: Ctx) -> Response:
    tenant, row = _person(ctx, Permission.ACT)
    before = {name: _shown(name, row.get(name)) for name in EDITABLE_FIELDS}
    # A field the form leaves out is kept as it is (blank means blank: null).
    entered = {name: ctx.field(name) if ctx.form is not None and name in ctx.form
               else before[name] for name in EDITABLE_FIELDS}
    changed = {name: value for name, value in entered.items() if value.strip() != before[name]}
    if not changed:
        return redirect(f"/people/{tenant}/{row['person_id']}", done="Nothing changed.")
    try:
        set_person(ctx.console.store, tenant, row["person_id"], changed, ctx.now)
    except UsageError as exc:  # the validation of `people set`: shown with the form
        return person_page(ctx, str(exc), 400, entered)
    ctx.audit(Action.EDIT, tenant, Target.PERSON, row["person_id"],
              "set " + ", ".join(sorted(changed)))
    return redirect(f"/people/{tenant}/{row['person_id']}",
                    done=f"Saved {', '.join(sorted(changed))}; later syncs leave this account "
                    f"alone until it is returned to the SIS.")


def person_reset(ctx: Ctx) -> Response:
    tenant, row = _person(ctx, Permission.ACT)
    reset_person(ctx.console.store, tenant, row["person_id"], ctx.now)
    ctx.audit(Action.RESET, tenant, Target.PERSON, row["person_id"], "returned to the SIS")
    return redirect(f"/people/{tenant}/{row['person_id']}",
                    done="Returned to the SIS: the next sync applies the SIS's values.")


def routes(console: Console) -> list[Route]:
    return [
        Route("/people", route(console, people_list), methods=["GET"]),
        Route("/people/{tenant}/{person_id}", route(console, person_view), methods=["GET"]),
        Route("/people/{tenant}/{person_id}", route(console, person_edit, changes=True),
              methods=["POST"]),
        Route("/people/{tenant}/{person_id}/reset", route(console, person_reset,
                                                          changes=True), methods=["POST"]),
    ]
