"""Operator docs: the generated configuration reference and the issue-code page."""

from __future__ import annotations

import re
from pathlib import Path

from rosterdrop.codes import CATALOGUE, Severity
from rosterdrop.config import Settings
from rosterdrop.tools import docs

ROOT = Path(__file__).parent.parent


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is what `python -m rosterdrop.tools.docs` writes from the model
    (regenerate it after changing config.py or config.example.toml)."""
    current = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == docs.render(), "out of date: run python -m rosterdrop.tools.docs"


def test_reference_lists_every_section_and_key() -> None:
    """Each settings section has a heading and each top-level key a row."""
    text = docs.render()
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
    assert docs.main(["--check", "--output", str(target)]) == 1
    assert docs.main(["--output", str(target)]) == 0
    assert docs.main(["--check", "--output", str(target)]) == 0


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
