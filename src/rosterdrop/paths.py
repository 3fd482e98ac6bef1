"""Where things live in the state folder (nothing is written outside it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @property
    def host_keys(self) -> Path:
        return self.root / "host_keys"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def database(self) -> Path:
        return self.root / "rosterdrop.db"

    def tenant(self, tenant: str) -> Path:
        return self.root / "tenants" / tenant

    def dropbox(self, tenant: str) -> Path:
        return self.tenant(tenant) / "dropbox"

    def reports(self, tenant: str) -> Path:
        return self.tenant(tenant) / "reports"

    def run_reports(self, tenant: str, run_id: str) -> Path:
        return self.reports(tenant) / run_id
