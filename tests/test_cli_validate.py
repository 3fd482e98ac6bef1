"""`rosterdrop validate` and `rosterdrop sample` as a user runs them (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from uploads import asm_files, make_zip

ISSUE_KEYS = {"code", "severity", "file", "line", "column", "value", "message"}
DOC_KEYS = {"file", "sha256", "layout", "status", "counts", "issue_counts", "errors",
            "warnings", "files_ignored"}


def rosterdrop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rosterdrop", *args], cwd=cwd, capture_output=True, text=True,
        timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


@pytest.mark.parametrize("layout", ["oneroster-1.1", "oneroster-1.2", "asm"])
def test_sample_then_validate_json(tmp_path: Path, layout: str) -> None:
    """A generated sample validates with warnings only; the JSON has cli.md's shape."""
    out = tmp_path / "demo.zip"
    made = rosterdrop("sample", str(out), "--layout", layout, "--students", "300",
                      cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = rosterdrop("validate", str(out), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == DOC_KEYS
    assert doc["layout"] == layout and doc["status"] in ("ok", "warnings")
    assert doc["errors"] == []
    assert set(doc["counts"]) == {"locations", "students", "staff", "courses", "classes",
                                  "rosters"}
    assert doc["counts"]["students"] == 300
    for issue in doc["warnings"]:
        assert set(issue) == ISSUE_KEYS
    assert sum(doc["issue_counts"].values()) == len(doc["warnings"])


def test_validate_failed_upload_exits_1(tmp_path: Path) -> None:
    """An upload with errors exits 1 and the human summary names the first error."""
    files = asm_files()
    del files["staff.csv"]
    path = tmp_path / "bad.zip"
    path.write_bytes(make_zip(dict(files)))
    result = rosterdrop("validate", str(path), cwd=tmp_path)
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "FILE_MISSING" in result.stdout
    assert "staff.csv" in result.stdout


def test_validate_unreadable_path_exits_2(tmp_path: Path) -> None:
    """A path that does not exist is exit 2 with one line on stderr, no traceback."""
    result = rosterdrop("validate", str(tmp_path / "nope.zip"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "nope.zip" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_not_a_zip_exits_1(tmp_path: Path) -> None:
    """Bytes that are not a ZIP are ZIP_UNREADABLE in the JSON and exit 1."""
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is not a zip")
    result = rosterdrop("validate", str(path), "--json", cwd=tmp_path)
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["layout"] is None and doc["status"] == "failed"
    assert [e["code"] for e in doc["errors"]] == ["ZIP_UNREADABLE"]


def test_validate_usage_and_config_errors_exit_2(tmp_path: Path) -> None:
    """Unknown tenant, bad config and a missing argument are exit 2."""
    path = tmp_path / "ok.zip"
    path.write_bytes(make_zip(dict(asm_files())))
    unknown = rosterdrop("validate", str(path), "--tenant", "nowhere", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown tenant 'nowhere'" in unknown.stderr
    (tmp_path / "bad.toml").write_text("workers = 'two'\n")
    bad = rosterdrop("-c", "bad.toml", "validate", str(path), cwd=tmp_path)
    assert bad.returncode == 2 and "workers" in bad.stderr
    missing = rosterdrop("validate", cwd=tmp_path)
    assert missing.returncode == 2


def test_validate_uses_tenant_settings(tmp_path: Path) -> None:
    """--tenant applies that tenant's filter: patching off turns a warning into an error."""
    files = asm_files()
    files["rosters.csv"] += "R4,K2,P9\n"
    path = tmp_path / "u.zip"
    path.write_bytes(make_zip(dict(files)))
    (tmp_path / "rosterdrop.toml").write_text(
        "[tenants.strict.patch]\nrosters = false\n[tenants.lenient]\n")
    strict = rosterdrop("validate", str(path), "--tenant", "strict", "--json", cwd=tmp_path)
    lenient = rosterdrop("validate", str(path), "--tenant", "lenient", "--json", cwd=tmp_path)
    assert strict.returncode == 1 and lenient.returncode == 0
    assert json.loads(strict.stdout)["issue_counts"] == {"REFERENCE_MISSING": 1}
    assert json.loads(lenient.stdout)["issue_counts"] == {"PATCHED_REFERENCE": 1}


def test_validate_writes_nothing(tmp_path: Path) -> None:
    """validate creates no state folder or any other file."""
    path = tmp_path / "ok.zip"
    path.write_bytes(make_zip(dict(asm_files())))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert rosterdrop("validate", str(path), cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert zipfile.is_zipfile(path)
