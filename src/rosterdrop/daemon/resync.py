""""Sync Now": put the tenant's last upload back into the queue."""

from __future__ import annotations

import shutil
import uuid

from rosterdrop.config import Settings
from rosterdrop.daemon.intake import SEPARATOR, upload_kind
from rosterdrop.errors import NotFound
from rosterdrop.paths import StatePaths, private_file, private_folder
from rosterdrop.runs.kept import KeptUploads
from rosterdrop.runs.runner import utc_now
from rosterdrop.store.engine import Store
from rosterdrop.store.history import list_runs
from rosterdrop.store.jobs import JobQueue


def queue_last_upload(settings: Settings, store: Store, tenant: str) -> tuple[int, str]:
    """Copy the tenant's last applied upload (still kept) into the spool and queue it."""
    paths = StatePaths.of(settings)
    kept = KeptUploads(paths)
    for run in list_runs(store, tenant, limit=50):
        # Only what was applied: never a dry run's preview, a held or a failed upload.
        upload = kept.find(tenant, run.run_id) if run.applied else None
        if upload is None:
            continue
        name = run.file_name or upload.name
        spool = private_folder(paths.spool / tenant)
        spooled = spool / f"{uuid.uuid4().hex}{SEPARATOR}{name}"
        shutil.copyfile(upload, spooled)
        private_file(spooled)
        job_id = JobQueue(store).enqueue(tenant=tenant, path=str(spooled), file_name=name,
                                         source="resync", kind=upload_kind(spooled),
                                         now=utc_now())
        return job_id, name
    raise NotFound(f"tenant {tenant!r} has no applied upload still kept to sync again "
                   f"(a held upload is released with 'rosterdrop approve RUN_ID')")
