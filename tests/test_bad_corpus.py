"""The bad-input corpus: every malformed upload gets exactly its issues, quickly and cheaply.

The corpus is generated (``tests/data/bad/make_corpus.py``) into a temporary
folder once per session; each case is checked from its file as an upload is,
in-process. A case with sync codes is then planned against the store it
names, the way a run would. At the end of the session the terminal summary
shows one row per case: its codes, the time it took and its peak traced
memory (Python and numpy allocations; tracemalloc does not see polars' own).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from rosterdrop.codes import Code
from rosterdrop.config import LimitSettings, TenantSettings
from rosterdrop.pipeline.check import Checked, check_upload
from rosterdrop.pipeline.guard import check_guard
from rosterdrop.pipeline.plan import plan_sync
from rosterdrop.pipeline.snapshot import Snapshot
from rosterdrop.runs.document import check_document
from uploads import TODAY

SCRIPT = Path(__file__).parent / "data" / "bad" / "make_corpus.py"
MAX_SECONDS = 5.0
"""Per case, generous: the slowest takes well under half a second."""
MAX_TRACED_MIB = 256.0
"""Per case, generous: the largest peak is a few tens of MiB."""
UPLOAD_CODES = frozenset({
    "ZIP_UNREADABLE", "ZIP_NESTED_FOLDER", "ZIP_UNEXPECTED_FILE", "ZIP_UNSAFE",
    "FORMAT_UNKNOWN", "FILE_MISSING", "FILE_NAME_CASE", "FILE_EMPTY", "FILE_DUPLICATE",
    "FORMAT_FOREIGN",
    "MANIFEST_INVALID", "HEADER_MISSING_COLUMN", "HEADER_COLUMN_CASE",
    "HEADER_UNKNOWN_COLUMN", "HEADER_DUPLICATE_COLUMN", "ENCODING_INVALID",
    "ROW_COLUMN_COUNT", "VALUE_REQUIRED", "VALUE_INVALID", "VALUE_CASE", "ID_DUPLICATE",
    "REFERENCE_MISSING", "PATCHED_REFERENCE", "EMAIL_MISSING", "EMAIL_INVALID",
    "ENCODING_CONVERTED", "MATCH_AMBIGUOUS", "ACCOUNT_NAME_FAILED", "CHANGE_THRESHOLD",
    "ACCOUNT_LOCAL", "HEADER_NEAR_MISS", "HEADER_BLANK_COLUMNS", "HEADER_MISSING_UNUSED",
    "HEADER_FIELD_COUNT", "VALUE_TOO_LONG",
})
"""The codes of codes.md that an upload's content can raise: all but UPLOAD_SUPERSEDED
(the queue's decision when a newer upload arrives)."""


def _load_corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()


@dataclass(frozen=True)
class Figure:
    case: str
    codes: str
    ms: float
    mib: float


class _Table:
    """A pytest plugin, registered at run time, that prints the figures at the end."""

    def __init__(self) -> None:
        self.rows: list[Figure] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        width = max(len(row.case) for row in self.rows)
        codes = max(len(row.codes) for row in self.rows)
        terminalreporter.write_sep("=", f"bad-input corpus: {len(self.rows)} cases")
        terminalreporter.write_line(
            f"{'case':<{width}}  {'codes':<{codes}}  {'ms':>8}  {'peak MiB':>8}")
        for row in self.rows:
            terminalreporter.write_line(
                f"{row.case:<{width}}  {row.codes:<{codes}}  {row.ms:>8.1f}  {row.mib:>8.1f}")
        slowest = max(self.rows, key=lambda row: row.ms)
        biggest = max(self.rows, key=lambda row: row.mib)
        terminalreporter.write_line(
            f"slowest: {slowest.case} {slowest.ms:.1f} ms; largest: {biggest.case} "
            f"{biggest.mib:.1f} MiB; total {sum(row.ms for row in self.rows) / 1000:.2f} s")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole corpus written once, as the standalone script writes it."""
    folder = tmp_path_factory.mktemp("bad-corpus")
    corpus.write_corpus(folder)
    return folder


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Iterator[list[Figure]]:
    """Where each case leaves its row for the end-of-session table."""
    manager = request.config.pluginmanager
    table = manager.get_plugin("bad-corpus-table")
    if table is None:
        table = _Table()
        manager.register(table, "bad-corpus-table")
    yield table.rows


def _check(case: Any, path: Path) -> Checked:
    """What a run does with the upload: check it, then plan it when the case has a store."""
    tenant = TenantSettings.model_validate(case.tenant)
    checked = check_upload(path, tenant=tenant, limits=LimitSettings(), today=TODAY)
    if case.existing is None or checked.model is None or checked.issues.has_errors():
        return checked
    snapshot = (Snapshot.of(people=pl.DataFrame(list(case.existing)))
                if case.existing else Snapshot.empty())
    plan = plan_sync(snapshot, checked.model, tenant, TODAY, checked.issues)
    if not plan.failed:
        check_guard(plan, tenant.guard).record(checked.issues)
    return checked


@pytest.mark.parametrize("case", corpus.CASES, ids=lambda case: case.name)
def test_bad_upload(case: Any, corpus_dir: Path, figures: list[Figure]) -> None:
    """The case ends in exactly its declared (code, severity) pairs and a JSON verdict,
    raises nothing, and stays within the time and traced-memory bounds."""
    path = corpus_dir / f"{case.name}.zip"
    tracemalloc.start()
    try:
        started = time.perf_counter()
        checked = _check(case, path)
        document = check_document(checked).to_json()
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()

    found = set(checked.issues.frame().select("code", "severity").unique().iter_rows())
    figures.append(Figure(case.name, ", ".join(sorted({c for c, _ in found})) or "(none)",
                          seconds * 1000, peak))
    detail = [(i.code, i.severity, i.message) for i in checked.issues][:8]
    assert found == set(case.expect), detail
    verdict = json.loads(json.dumps(document, default=str))
    assert verdict["status"] == ("failed" if checked.issues.has_errors()
                                 else "warnings" if found else "ok")
    assert set(verdict["issue_counts"]) == {code for code, _ in found}
    assert seconds < MAX_SECONDS, f"{case.name} took {seconds:.2f} s"
    assert peak < MAX_TRACED_MIB, f"{case.name} peaked at {peak:.1f} MiB"


def test_corpus_covers_every_code() -> None:
    """Every code of codes.md that an upload can raise is the expectation of some case,
    and at least 60 cases are malformed (the rest pin tricky but valid uploads)."""
    expected = {code for case in corpus.CASES for code, _ in case.expect}
    assert expected == UPLOAD_CODES
    assert {code.value for code in Code} >= UPLOAD_CODES
    malformed = [case for case in corpus.CASES if case.expect]
    assert len(malformed) >= 60
    assert len({case.name for case in corpus.CASES}) == len(corpus.CASES)


def test_script_writes_the_corpus_standalone(tmp_path: Path) -> None:
    """``python make_corpus.py FOLDER`` writes every upload and a cases.json index that
    matches the cases the tests check."""
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "cases.json").read_text(encoding="utf-8"))
    assert [entry["name"] for entry in index] == [case.name for case in corpus.CASES]
    for entry, case in zip(index, corpus.CASES, strict=True):
        assert (tmp_path / entry["file"]).read_bytes() == case.build()
        assert [tuple(pair) for pair in entry["expect"]] == list(case.expect)
