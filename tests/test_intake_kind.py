"""Intake tells a delta upload from a bulk one by reading the manifest exactly as the sync
does (one parser: pipeline.check.file_modes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rosterdrop.daemon.intake import upload_kind
from uploads import asm_files, make_zip, manifest, oneroster_files


def _zip(tmp_path: Path, files: dict[str, str | bytes], name: str = "u.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(make_zip(files))
    return path


@pytest.mark.parametrize(("files", "kind"), [
    (oneroster_files(), "bulk"),
    ({**oneroster_files(), "manifest.csv": manifest("1.1", "delta")}, "delta"),
    # quoted, with a BOM and CRLF lines: what the sync accepts, intake reads alike
    ({**oneroster_files(), "manifest.csv": "\ufeff" + manifest("1.1", "delta")
      .replace("\n", "\r\n").replace("file.users,delta", '"file.users","delta"')}, "delta"),
    (dict(asm_files()), "bulk"),
])
def test_the_kind_is_what_the_manifest_declares(tmp_path: Path,
                                                files: dict[str, str | bytes],
                                                kind: str) -> None:
    assert upload_kind(_zip(tmp_path, files)) == kind


def test_an_unreadable_upload_counts_as_bulk(tmp_path: Path) -> None:
    garbage = tmp_path / "g.zip"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert upload_kind(garbage) == "bulk"
    assert upload_kind(tmp_path / "missing.zip") == "bulk"
