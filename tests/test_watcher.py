"""The watcher with real inotify events: what other programs write into a drop folder.

The intake is a stand-in that moves taken files away (as the real one moves
them into the spool) and records when, so the tests see exactly which files
were taken, when, and how big they were then.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rosterdrop.daemon.watcher import Watcher
from rosterdrop.paths import StatePaths

SETTLE = 0.6


class _Intake:
    def __init__(self, root: Path) -> None:
        self.paths = StatePaths(root)
        self.tenants = ["alpha"]
        self.taken: list[tuple[str, int, float]] = []
        self.dropbox = self.paths.dropbox("alpha")
        self.dropbox.mkdir(parents=True)
        self.away = root / "taken"
        self.away.mkdir()
        self.turn_down: set[str] = set()
        """Names left where they are once (as if taking them failed)."""

    def pending_in_dropboxes(self) -> list[tuple[str, Path]]:
        return [("alpha", p) for p in sorted(self.dropbox.glob("*.zip"))]

    def take(self, tenant: str, path: Path, source: str) -> Path | None:
        size = path.stat().st_size
        if path.name in self.turn_down:
            self.turn_down.discard(path.name)
            self.taken.append(("(turned down) " + path.name, size, time.monotonic()))
            return None
        moved = self.away / f"{len(self.taken)}-{path.name}"
        path.rename(moved)
        self.taken.append((path.name, size, time.monotonic()))
        return moved


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[_Intake]:
    yield _Intake(tmp_path)


@pytest.fixture
def watcher(intake: _Intake) -> Iterator[Watcher]:
    running = Watcher(intake, settle_seconds=SETTLE, rescan_seconds=3600)  # type: ignore[arg-type]
    running.start()
    yield running
    running.stop()


def _wait_taken(intake: _Intake, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(intake.taken) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(intake.taken) >= count, intake.taken


def test_a_slow_writer_is_taken_once_after_its_last_write(intake: _Intake,
                                                          watcher: Watcher) -> None:
    """Pauses shorter than the settle time never let a half-written file through,
    although the watcher does not ask inotify for every write."""
    path = intake.dropbox / "slow.zip"
    with path.open("wb") as out:
        for _ in range(5):
            out.write(b"x" * 100_000)
            out.flush()
            time.sleep(SETTLE / 3)
        last_write = time.monotonic()
    _wait_taken(intake, 1)
    time.sleep(SETTLE * 2)
    assert [(name, size) for name, size, _ in intake.taken] == [("slow.zip", 500_000)]
    assert intake.taken[0][2] - last_write >= SETTLE * 0.9


def test_files_renamed_in_or_rewritten_in_place_are_taken(intake: _Intake,
                                                          watcher: Watcher) -> None:
    """A rename into place (cp to a temporary name, then mv), and a file left in the
    folder that is rewritten in place: no create event then, only the close after
    writing tells (long before the next rescan)."""
    staged = intake.dropbox / ".staging.zip"
    staged.write_bytes(b"a" * 1000)
    staged.rename(intake.dropbox / "moved.zip")
    _wait_taken(intake, 1)

    intake.turn_down.add("rewritten.zip")
    inside = intake.dropbox / "rewritten.zip"
    inside.write_bytes(b"old")
    _wait_taken(intake, 2)
    time.sleep(SETTLE * 2)
    assert len(intake.taken) == 2
    with inside.open("r+b") as out:
        out.write(b"b" * 2000)
    _wait_taken(intake, 3)
    assert [(name, size) for name, size, _ in intake.taken] == [
        ("moved.zip", 1000), ("(turned down) rewritten.zip", 3), ("rewritten.zip", 2000)]


def test_temporary_names_and_other_files_are_left_alone(intake: _Intake,
                                                        watcher: Watcher) -> None:
    for name in ("upload.zip.filepart", ".hidden.zip", "notes.txt", "data.zip.tmp"):
        (intake.dropbox / name).write_bytes(b"z")
    (intake.dropbox / "real.zip").write_bytes(b"r")
    _wait_taken(intake, 1)
    time.sleep(SETTLE * 2)
    assert [name for name, _, _ in intake.taken] == ["real.zip"]
