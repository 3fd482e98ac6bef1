"""Operator docs: the generated configuration reference and the issue-code page."""

from __future__ import annotations

import re
from pathlib import Path

from rosterdrop.codes import CATALOGUE, Severity
from rosterdrop.config import Settings
from rosterdrop.tools import docs

ROOT = Path(__file__).parent.parent
"""The checkout: docs/ and config.example.toml are repository files, not package data."""
EXAMPLE = ROOT / "config.example.toml"


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is what `python -m rosterdrop.tools.docs` writes from the model
    (regenerate it after changing config.py or config.example.toml)."""
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == docs.render(EXAMPLE), "out of date: run python -m rosterdrop.tools.docs"


def test_reference_lists_every_section_and_key() -> None:
    """Each settings section has a heading and each top-level key a row."""
    text = docs.render(EXAMPLE)
    for section in docs.sections():
        if section.header:
            assert f"## `{section.header}`" in text
    for name, info in Settings.model_fields.items():
        if docs._nested(info.annotation)[0] is None:
            assert f"| `{info.alias or name}` |" in text


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    """`--check` exits 1 for a stale file and 0 once it has been written."""
    target = tmp_path / "configuration.md"
    target.write_text("old\n")
    paths = ["--output", str(target), "--example", str(EXAMPLE)]
    assert docs.main(["--check", *paths]) == 1
    assert docs.main(paths) == 0
    assert docs.main(["--check", *paths]) == 0
    assert target.read_text(encoding="utf-8") == docs.render(EXAMPLE)


def test_a_missing_example_is_an_error_not_a_reference_without_descriptions(
        tmp_path: Path) -> None:
    """Run elsewhere than the repository root, the tool says so (it used to find the
    example next to its own file, which an installed package does not have)."""
    target = tmp_path / "configuration.md"
    assert docs.main(["--output", str(target), "--example", str(tmp_path / "none.toml")]) == 2
    assert not target.exists()


def test_every_issue_code_is_documented_with_cause_and_fix() -> None:
    """docs/errors.md has a section per code of the catalogue, naming its severity
    and saying how to fix it."""
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^### `([A-Z_]+)`\n(.*?)(?=^##|\Z)", text, re.M | re.S))
    for code, info in CATALOGUE.items():
        assert code.value in sections, f"{code} is not documented in docs/errors.md"
        body = sections[code.value]
        severity = "**Error" if info.severity is Severity.ERROR else "**Warning"
        assert body.lstrip().startswith(severity), code
        assert "*Fix:*" in body, code
