"""Kept uploads and report folders: the files of a run that hold student data.

One kept upload per run, ``tenants/<t>/uploads/<run-id>.zip``
(``StatePaths.kept_upload``), hard-linked from the spool when the file system
allows it, for ``approve`` and ``resync``; one report folder per run,
``tenants/<t>/reports/<run-id>/``. ``prune`` applies ``[retention]``: the newest
``uploads_keep`` uploads younger than ``uploads_days`` stay, a held run's
always; report folders go ``reports_days`` after their run. A run id starts with
its UTC start time, so a file's age is read from its name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rosterdrop.config import RetentionSettings
from rosterdrop.errors import NotFound
from rosterdrop.paths import StatePaths, private_file, private_folder


class KeptUploads:
    def __init__(self, paths: StatePaths) -> None:
        self.paths = paths

    def keep(self, tenant: str, run_id: str, upload: Path) -> Path:
        """Keep ``upload`` as the run's; atomic, and a no-op for a resumed run."""
        kept = self.paths.kept_upload(tenant, run_id)
        private_folder(kept.parent)
        if kept.exists() and os.path.samefile(upload, kept):
            return kept
        staging = kept.with_name(f".{run_id}.zip.tmp")
        staging.unlink(missing_ok=True)
        try:
            os.link(upload, staging)
        except OSError:
            shutil.copyfile(upload, staging)
        os.replace(private_file(staging), kept)  # a link: the spooled name is private too
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

    def prune(self, tenant: str, held: Iterable[str], retention: RetentionSettings,
              now: datetime) -> Pruned:
        """Delete what retention no longer allows; never a held run's upload."""
        spare = set(held)
        uploads = 0
        kept = sorted(self.paths.kept_uploads(tenant).glob("*.zip"), reverse=True)
        too_old = now - timedelta(days=retention.uploads_days)
        for n, path in enumerate(kept):
            if path.stem in spare:
                continue
            if n >= retention.uploads_keep or _started(path.stem, path) < too_old:
                path.unlink(missing_ok=True)
                uploads += 1
        reports = 0
        folder = self.paths.reports(tenant)
        expired = now - timedelta(days=retention.reports_days)
        for run_folder in sorted(folder.iterdir()) if folder.is_dir() else []:
            if run_folder.is_dir() and run_folder.name not in spare and (
                    _started(run_folder.name, run_folder) < expired):
                shutil.rmtree(run_folder, ignore_errors=True)
                reports += 1
        return Pruned(uploads, reports)


@dataclass(frozen=True)
class Pruned:
    uploads: int
    reports: int


def _started(run_id: str, path: Path) -> datetime:
    """When the run began: from its id (``20261203-080541-…``), else the file's mtime."""
    try:
        return datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
