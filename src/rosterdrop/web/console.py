"""What the console needs from the daemon, handed in (the app imports no daemon code):
the settings, the store and the Runner the CLI uses, and a few callables for the
daemon's own parts (intake, the workers' wake-up, Sync Now, health)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog

from rosterdrop.config import AdminAccount, Settings
from rosterdrop.passwords import hash_password
from rosterdrop.paths import StatePaths, open_private, private_file
from rosterdrop.runs.runner import Runner
from rosterdrop.store.engine import Store

log = structlog.get_logger("rosterdrop.web")

FIRST_ADMIN = "admin"
FIRST_ADMIN_FILE = "admin-password"


@dataclass
class Console:
    settings: Settings
    store: Store
    runner: Runner
    admins: list[AdminAccount]
    clock: Callable[[], datetime]
    take: Callable[[str, Path, str], int | None]
    """Intake: move a completed upload into the spool and queue it (as SFTP uploads are)."""
    wake: Callable[[], None] = lambda: None
    """Tell the workers a job is queued."""
    sync_now: Callable[[str], str] | None = None
    """The resync path for a tenant; returns what was done, in a sentence."""
    ready: Callable[[], list[str]] = field(default=lambda: [])
    """/readyz: reasons the daemon is not ready (blocking: called in a thread)."""
    scrape: Callable[[], bytes] = lambda: b""
    """/metrics: Prometheus text."""
    host_key_fingerprint: Callable[[], str | None] = lambda: None

    @property
    def paths(self) -> StatePaths:
        return StatePaths.of(self.settings)


def console_admins(settings: Settings, paths: StatePaths) -> list[AdminAccount]:
    """The configured ``[[admins]]``; with none, one administrator ``admin`` whose random
    password is kept in ``state_dir/admin-password`` (0600), made once, like a generated
    SFTP password, so a newcomer can sign in at once."""
    if settings.admins:
        return list(settings.admins)
    file = paths.root / FIRST_ADMIN_FILE
    made = not file.is_file()
    if made:
        with os.fdopen(open_private(file, "xb"), "w") as handle:
            handle.write(secrets.token_urlsafe(18) + "\n")
    password = private_file(file).read_text().strip()
    (log.warning if made else log.info)(
        "console_password_generated" if made else "console_password_file_used",
        username=FIRST_ADMIN, password_file=str(file),
        hint="add [[admins]] to the config (rosterdrop hash-password) to replace it")
    return [AdminAccount(username=FIRST_ADMIN, password_hash=hash_password(password),
                         role="administrator", tenants=[])]
