"""Kept uploads: a copy of each run's upload, for ``approve`` and ``resync``.

One file per run, ``tenants/<t>/uploads/<run-id>.zip`` (``StatePaths.kept_upload``),
hard-linked from the spool when the file system allows it. The newest
``KEEP_UPLOADS`` are kept, and a held run's upload always, until it is approved
or discarded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from rosterdrop.errors import NotFound
from rosterdrop.paths import StatePaths

KEEP_UPLOADS = 10
"""Uploads kept per tenant for approve and resync (held runs' uploads are always kept)."""


class KeptUploads:
    def __init__(self, paths: StatePaths) -> None:
        self.paths = paths

    def keep(self, tenant: str, run_id: str, upload: Path) -> Path:
        """Keep ``upload`` as the run's; atomic, and a no-op for a resumed run."""
        kept = self.paths.kept_upload(tenant, run_id)
        kept.parent.mkdir(parents=True, exist_ok=True)
        if kept.exists() and os.path.samefile(upload, kept):
            return kept
        staging = kept.with_name(f".{run_id}.zip.tmp")
        staging.unlink(missing_ok=True)
        try:
            os.link(upload, staging)
        except OSError:
            shutil.copyfile(upload, staging)
        os.replace(staging, kept)
        return kept

    def of(self, tenant: str, run_id: str) -> Path:
        """The run's kept upload; ``NotFound`` when it was pruned."""
        path = self.paths.kept_upload(tenant, run_id)
        if not path.is_file():
            raise NotFound(f"the upload of run {run_id} is no longer kept")
        return path

    def find(self, tenant: str, run_id: str) -> Path | None:
        path = self.paths.kept_upload(tenant, run_id)
        return path if path.is_file() else None

    def prune(self, tenant: str, held: Iterable[str]) -> None:
        """Delete all but the newest ``KEEP_UPLOADS`` (run ids sort by time), never a held
        run's."""
        spare = set(held)
        kept = sorted(self.paths.kept_uploads(tenant).glob("*.zip"), reverse=True)
        for path in kept[KEEP_UPLOADS:]:
            if path.stem not in spare:
                path.unlink(missing_ok=True)
