"""A tenant's page: Sync Now, pause and resume, the settings as configured, the SFTP
accounts and the host-key fingerprint to give the SIS vendor."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from rosterdrop.store.audit import Action, Target, entries_for
from rosterdrop.store.tenants import paused_since, set_paused
from rosterdrop.web.console import Console
from rosterdrop.web.http import Ctx, Refusal, flash, redirect, route
from rosterdrop.web.roles import Permission


def tenant_page(ctx: Ctx) -> Response:
    key = ctx.tenant(ctx.request.path_params["tenant"], Permission.SETTINGS)
    console = ctx.console
    tenant = console.settings.tenants[key]
    schedule = ""
    if tenant.source is not None:
        from rosterdrop.sources.oneroster.schedule import Schedule

        schedule = Schedule.of(tenant.source).describe()
    host, port = console.settings.sftp.listen.rsplit(":", 1)
    return ctx.render(
        "tenant.html", title=tenant.name or key, key=key, tenant=tenant, schedule=schedule,
        paused=paused_since(console.store, key), fingerprint=console.host_key_fingerprint(),
        sftp_host=host.strip("[]"), sftp_port=port, may_act=ctx.may(Permission.ACT, key),
        audit=entries_for(console.store, Target.TENANT, key, tenant=key), done=flash(ctx.request))


def sync_now(ctx: Ctx) -> Response:
    key = ctx.tenant(ctx.request.path_params["tenant"], Permission.ACT)
    if ctx.console.sync_now is None:
        raise Refusal(503, "Sync Now needs the daemon (rosterdrop serve)")
    said = ctx.console.sync_now(key)
    ctx.console.wake()
    ctx.audit(Action.SYNC_NOW, key, Target.TENANT, key, said)
    return redirect(f"/tenants/{key}", done=said)


def _switch(ctx: Ctx, pause: bool) -> Response:
    key = ctx.tenant(ctx.request.path_params["tenant"], Permission.ACT)
    changed = set_paused(ctx.console.store, key, ctx.now if pause else None)
    if not pause:
        ctx.console.wake()  # jobs that waited may run now
    ctx.audit(Action.PAUSE if pause else Action.RESUME, key, Target.TENANT, key,
              "" if changed else "it already was")
    said = ("Paused: uploads are kept and queued, none is applied until resumed." if pause
            else "Resumed: of the uploads that waited, the newest valid one runs.")
    return redirect(f"/tenants/{key}", done=said if changed else "Nothing changed.")


def pause(ctx: Ctx) -> Response:
    return _switch(ctx, True)


def resume(ctx: Ctx) -> Response:
    return _switch(ctx, False)


def routes(console: Console) -> list[Route]:
    return [
        Route("/tenants/{tenant}", route(console, tenant_page), methods=["GET"]),
        Route("/tenants/{tenant}/sync-now", route(console, sync_now, changes=True),
              methods=["POST"]),
        Route("/tenants/{tenant}/pause", route(console, pause, changes=True), methods=["POST"]),
        Route("/tenants/{tenant}/resume", route(console, resume, changes=True),
              methods=["POST"]),
    ]
