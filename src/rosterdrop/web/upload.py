"""Upload by hand: ``mode=validate`` checks the ZIP as ``rosterdrop validate --tenant``
does and shows the verdict (nothing is kept or applied); ``mode=sync`` hands it to
intake, the path an SFTP upload takes (spool, queue, a worker, history, email)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePath

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rosterdrop.pipeline.check import check_upload
from rosterdrop.runs.document import check_document
from rosterdrop.runs.runner import local_today
from rosterdrop.sftp.vpath import is_zip
from rosterdrop.store.audit import Action, Target
from rosterdrop.web.console import Console
from rosterdrop.web.http import Ctx, Refusal, route
from rosterdrop.web.roles import Permission

MODES = ("validate", "sync")
FORM_OVERHEAD_BYTES = 64 * 1024


def _form(console: Console) -> Callable[[Request], Awaitable[FormData]]:
    limit = console.settings.sftp.max_upload_bytes + FORM_OVERHEAD_BYTES

    async def read(request: Request) -> FormData:
        length = request.headers.get("content-length", "")
        if not length.isdigit():
            raise Refusal(411, "the upload needs a Content-Length (send it as a form)")
        if int(length) > limit:
            raise Refusal(413, f"the upload is larger than sftp.max_upload_bytes "
                          f"({console.settings.sftp.max_upload_bytes:,} bytes)")
        return await request.form(max_files=1, max_fields=10)

    return read


def _choices(ctx: Ctx) -> list[str]:
    return [t for t in ctx.tenants if ctx.may(Permission.ACT, t)]


def upload_page(ctx: Ctx) -> Response:
    if not _choices(ctx):
        raise Refusal(403, "a People Manager may not upload")
    return ctx.render("upload.html", title="Upload", tenants=_choices(ctx), verdict=None,
                      queued=None, mode="validate", tenant="")


def upload_submit(ctx: Ctx) -> Response:
    tenant = ctx.tenant(ctx.field("tenant") or (ctx.tenants[0] if len(ctx.tenants) == 1
                                                else ""), Permission.ACT)
    mode = ctx.field("mode") or "validate"
    if mode not in MODES:
        raise Refusal(400, f"mode must be validate or sync, got {mode!r}")
    upload = ctx.form.get("file") if ctx.form is not None else None
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise Refusal(400, "choose a ZIP file to upload (form field 'file')")
    name = PurePath(upload.filename.replace("\\", "/")).name[:200]
    if not is_zip(name) or name.startswith("."):
        raise Refusal(400, f"{name!r} is not a .zip file: upload the ZIP your SIS exports")
    console = ctx.console
    paths = console.paths
    settings = console.settings
    if mode == "validate":
        with tempfile.TemporaryDirectory(prefix=".console-", dir=paths.root) as scratch:
            path = Path(scratch) / name
            with path.open("wb") as out:
                shutil.copyfileobj(upload.file, out, 1024 * 1024)
            checked = check_upload(path, tenant=settings.tenant(tenant), limits=settings.limits,
                                   today=local_today(ctx.now), name=name)
        verdict = check_document(checked)
        return ctx.render("upload.html", title="Upload", tenants=_choices(ctx),
                          verdict=verdict, queued=None, mode=mode, tenant=tenant)
    incoming = paths.tenant(tenant) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".console-", dir=incoming))
    try:
        path = folder / name
        with path.open("wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)
        job = console.take(tenant, path, "web")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if job is None:
        raise Refusal(500, "the upload could not be queued (the server log says why)")
    console.wake()
    ctx.audit(Action.UPLOAD, tenant, Target.UPLOAD, name, f"queued as job {job}")
    return ctx.render("upload.html", title="Upload", tenants=_choices(ctx), verdict=None,
                      queued=(name, job), mode=mode, tenant=tenant)


def routes(console: Console) -> list[Route]:
    return [
        Route("/upload", route(console, upload_page), methods=["GET"]),
        Route("/upload", route(console, upload_submit, changes=True, form=_form(console)),
              methods=["POST"]),
    ]
