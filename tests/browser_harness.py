"""A real `rosterdrop serve` with its console, Debian's chromium driven by Playwright,
and axe-core for accessibility checks: the pieces of tests/test_web_browser.py (no
tests here).

Nothing is downloaded for the browser: Playwright launches /usr/bin/chromium (the
Debian package `.ci/run` installs). axe-core comes from the npm registry on first use
into a cache folder outside the repository (never committed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Daemon, free_port, toml_list
from test_sftp_support import paramiko_sftp

from rosterdrop.passwords import hash_password
from uploads import make_zip

# Playwright must never fetch a browser build of its own (the machine cannot, and CI
# must test the chromium users get from Debian).
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"Debian's chromium is not installed ({CHROMIUM}): apt-get install chromium "
           "(.ci/run does)")

PASSWORD = "correct horse battery staple"
SFTP_PASSWORD = "district sftp password"
ADMINS = {"ana": "administrator", "sam": "site_manager", "pam": "people_manager"}
TENANTS = ("springfield", "shelbyville", "ogdenville", "capital", "northhaverbrook")
"""One tenant per scenario, so that each test sees only its own runs whatever ran
before it on the module's one daemon."""

AXE_VERSION = "4"
AXE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rosterdrop-tests"


def hash_with_rosterdrop(password: str) -> str:
    """The admin's hash as an operator makes it: `rosterdrop hash-password`, on stdin."""
    made = subprocess.run([sys.executable, "-m", "rosterdrop", "hash-password"],
                          input=password + "\n", capture_output=True, text=True, timeout=60,
                          check=False)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


class ConsoleDaemon(Daemon):
    """serve with ``[web] listen`` on a free port, one admin of each role on every tenant
    (an administrator's empty list is every tenant), and a change guard that holds a run
    deactivating more than 20% of at least 5 active people."""

    def __init__(self, root: Path) -> None:
        self.web_port = free_port()
        hashed = hash_with_rosterdrop(PASSWORD)
        admins = "".join(
            f'[[admins]]\nusername = "{name}"\npassword_hash = "{hashed}"\nrole = "{role}"\n'
            f"tenants = {toml_list([] if role == 'administrator' else list(TENANTS))}\n"
            for name, role in ADMINS.items())
        # The base harness writes no tenant when given none: the tenants here need a
        # guard that is on (the harness's are off) and an account domain for ASM.
        super().__init__(root, {}, extra=f'[web]\nlisten = "127.0.0.1:{self.web_port}"\n'
                         f"{admins}")
        sftp_hash = hash_password(SFTP_PASSWORD)
        tenants = "".join(
            f'[tenants.{key}]\nname = "{key.title()}"\nreport_to = ["admin@{key}.example"]\n'
            f'account_domain = "{key}.example"\n'
            f"[tenants.{key}.guard]\nmax_deactivate_percent = 20\nmin_population = 5\n"
            f'[[tenants.{key}.accounts]]\nusername = "sis-{key}"\n'
            f'password_hash = "{sftp_hash}"\n'
            for key in TENANTS)
        with self.config.open("a") as config:
            config.write(tenants)
        self.uploads = root / "uploads"
        self.uploads.mkdir()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def sftp_sync(self, tenant: str, files: dict[str, str | bytes], name: str) -> dict[str, Any]:
        """Put a ZIP in the tenant's drop box with paramiko, as the SIS does; the
        ``run_finished`` log event of the run it made."""
        before = len(self.named("run_finished", tenant=tenant))
        path = self.uploads / name
        path.write_bytes(make_zip(files))
        with paramiko_sftp(self.port, f"sis-{tenant}", password=SFTP_PASSWORD) as sftp:
            sftp.put(str(path), f"/dropbox/{name}")
        return self.wait_event("run_finished", count=before + 1, tenant=tenant)[before]


def axe_script() -> Path:
    """axe.min.js of axe-core 4.x, from the npm registry once into ``AXE_CACHE``
    (`npm pack`, no node_modules, nothing in the repository); skips the test when npm
    or the registry cannot be reached."""
    target = AXE_CACHE / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: axe-core (the accessibility checks) comes from "
                    "the npm registry")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        packed = subprocess.run([npm, "pack", f"axe-core@{AXE_VERSION}", "--silent",
                                 "--pack-destination", scratch],
                                capture_output=True, text=True, timeout=120, check=False)
        tarballs = list(Path(scratch).glob("axe-core-*.tgz"))
        if packed.returncode != 0 or not tarballs:
            pytest.skip(f"axe-core could not be fetched from the npm registry: "
                        f"{(packed.stderr or packed.stdout).strip()[-300:]}")
        with tarfile.open(tarballs[0]) as archive:
            member = archive.extractfile("package/axe.min.js")
            assert member is not None
            (Path(scratch) / "axe.min.js").write_bytes(member.read())
        # Whole or not at all, should two test runs fetch at once.
        os.replace(Path(scratch) / "axe.min.js", target)
    return target


SERIOUS = ("serious", "critical")

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
}"""


def serious_violations(page: Any, axe: Path) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, one line
    each (rule, what it asks, the first elements)."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(axe))
    found = page.evaluate(AXE_RUN)
    return [f"{v['impact']} {v['id']}: {v['help']} ({', '.join(v['nodes'])})"
            for v in found if v["impact"] in SERIOUS]
