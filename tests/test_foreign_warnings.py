"""The one foreign warning rosterdrop silences is still raised (else drop the filter)."""

from __future__ import annotations

import subprocess
import sys


def _import_asyncssh(*options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *options, "-c", "import asyncssh"],
                          capture_output=True, text=True, check=False, timeout=60)


def test_asyncssh_still_warns_about_dsa_without_the_filter() -> None:
    """Fails once cryptography or asyncssh stop warning: then remove foreign_warnings.py."""
    result = _import_asyncssh("-W", "error")
    assert result.returncode != 0 and "DSA is deprecated" in result.stderr, result.stderr


def test_the_filter_silences_only_that_warning() -> None:
    code = ("import warnings; from rosterdrop.foreign_warnings import quiet_foreign_warnings; "
            "warnings.simplefilter('error'); quiet_foreign_warnings(); import asyncssh; "
            "warnings.warn('another warning')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, timeout=60)
    assert "DSA is deprecated" not in result.stderr
    assert result.returncode != 0 and "another warning" in result.stderr
