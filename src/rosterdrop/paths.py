"""Where things live in the state folder (nothing is written outside it).

A process's own things (host keys, snapshot cache, SQLite database,
generated passwords) live in ``root`` (``state_dir``). What several
``rosterdrop serve`` processes must see alike, when they share one
PostgreSQL store, lives in ``shared`` (``shared_dir``): the tenants' drop
and report folders, kept uploads, the spool and the outbox. With no
``shared_dir`` both are the state folder, as for one process on SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rosterdrop.config import Settings


@dataclass(frozen=True)
class StatePaths:
    root: Path
    shared_root: Path | None = None

    @classmethod
    def of(cls, settings: Settings) -> StatePaths:
        return cls(settings.state_dir, settings.shared_dir)

    @property
    def shared(self) -> Path:
        return self.shared_root or self.root

    @property
    def host_keys(self) -> Path:
        return self.root / "host_keys"

    @property
    def spool(self) -> Path:
        return self.shared / "spool"

    @property
    def outbox(self) -> Path:
        return self.shared / "outbox"

    @property
    def database(self) -> Path:
        return self.root / "rosterdrop.db"

    def tenant(self, tenant: str) -> Path:
        return self.shared / "tenants" / tenant

    def dropbox(self, tenant: str) -> Path:
        return self.tenant(tenant) / "dropbox"

    def incoming(self, tenant: str, instance: str) -> Path:
        """Uploads in progress, one folder per process (``instance``): a process
        that starts deletes only its own leftovers, never a live peer's."""
        return self.tenant(tenant) / "incoming" / instance

    @property
    def instance_file(self) -> Path:
        return self.root / "instance-id"

    def kept_uploads(self, tenant: str) -> Path:
        """Uploads kept for ``approve`` and ``resync``, one per run (runs/kept.py)."""
        return self.tenant(tenant) / "uploads"

    def kept_upload(self, tenant: str, run_id: str) -> Path:
        return self.kept_uploads(tenant) / f"{run_id}.zip"

    def reports(self, tenant: str) -> Path:
        return self.tenant(tenant) / "reports"

    def run_reports(self, tenant: str, run_id: str) -> Path:
        return self.reports(tenant) / run_id
