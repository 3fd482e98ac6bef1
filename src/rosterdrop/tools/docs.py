"""The configuration reference, generated from the settings model.

    python -m rosterdrop.tools.docs            # writes docs/configuration.md
    python -m rosterdrop.tools.docs --check    # exit 1 when it is out of date

A tool for the repository, run from its root: it reads ``config.example.toml``
and writes ``docs/configuration.md`` there (``--example`` and ``--output`` name
other paths). Neither file is part of the installed package, so the package
never looks for them next to its own files.

Each section of the TOML file is one table: key, type (with its limits),
default, and what it does. The description is the attribute docstring in
``config.py`` when there is one, else the key's inline comment in
``config.example.toml`` (a test requires that file to list every key).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rosterdrop.config import Settings

OUTPUT = Path("docs/configuration.md")
EXAMPLE = Path("config.example.toml")
TENANT = "<tenant>"


@dataclass(frozen=True)
class Section:
    header: str
    """``""`` for the top level, ``[sftp]``, ``[[tenants.<tenant>.accounts]]`` …"""
    model: type[BaseModel]
    note: str = ""


def sections(model: type[BaseModel] = Settings, path: str = "",
             array: bool = False) -> Iterator[Section]:
    header = f"[[{path}]]" if array else (f"[{path}]" if path else "")
    yield Section(header, model, _class_doc(model) if path else "")
    for name, info in model.model_fields.items():
        key = info.alias or name
        sub = f"{path}.{key}" if path else key
        inner, kind = _nested(info.annotation)
        if inner is None:
            continue
        if kind == "dict":
            yield from sections(inner, f"{sub}.{TENANT}")
        else:
            yield from sections(inner, sub, array=kind == "list")


def _nested(annotation: Any) -> tuple[type[BaseModel] | None, str]:
    """A sub-table's model: ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``."""
    if _is_model(annotation):
        return annotation, "table"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        models = [a for a in args if _is_model(a)]
        if len(models) == 1:
            return models[0], "table"
    if origin is list and args and _is_model(args[0]):
        return args[0], "list"
    if origin is dict and len(args) == 2 and _is_model(args[1]):
        return args[1], "dict"
    return None, ""


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _class_doc(model: type[BaseModel]) -> str:
    doc = model.__doc__ or ""
    return " ".join(doc.split()) if doc and not doc.startswith(model.__name__ + "(") else ""


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """Attribute docstrings (a string right after the field) of ``model``'s source."""
    try:
        source = textwrap.dedent(inspect.getsource(model))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    found: dict[str, str] = {}
    for node, following in zip(body.body, body.body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            found[node.target.id] = " ".join(following.value.value.split())
    return found


def example_comments(path: Path = EXAMPLE) -> dict[str, str]:
    """``section.key`` → the inline comment of that key in config.example.toml. A table
    shipped commented out (``# [tenants.x.source]`` and its ``# key = …`` lines, up to
    the next line that is not a comment) counts as if it were not."""
    found: dict[str, str] = {}
    section = ""
    commented = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        commented = (commented and raw.startswith("#")) or bool(re.match(r"^# \[", raw))
        line = raw[2:] if commented and raw.startswith("# ") else raw
        header = re.match(r"^\s*\[\[?([^\]]+)\]\]?", line)
        if header:
            section = re.sub(r"^tenants\.[^.]+", f"tenants.{TENANT}", header.group(1).strip())
            continue
        entry = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s+#\s*(.+)$", line)
        if entry and not line.lstrip().startswith("#"):
            key = f"{section}.{entry.group(1)}" if section else entry.group(1)
            found[key] = entry.group(3).strip()
    return found


def type_name(annotation: Any, info: FieldInfo | None = None) -> str:
    limits = _limits(info.metadata if info is not None else [])
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0], None) + _limits(list(args[1:]))
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in rest) + (" (optional)" if len(rest) < len(args)
                                                           else "")
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(a)}`" for a in args)
    if origin is list:
        inner = type_name(args[0]) if args else "value"
        return f"list of {inner}" + ("" if inner.startswith("one of") else "s")
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation))) + limits


def _limits(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for cls, sign in ((annotated_types.Ge, "≥"), (annotated_types.Gt, ">"),
                          (annotated_types.Le, "≤"), (annotated_types.Lt, "<")):
            if isinstance(item, cls):
                parts.append(f"{sign} {getattr(item, next(iter(cls.__dataclass_fields__)))}")
        if isinstance(item, annotated_types.MinLen) and item.min_length:
            parts.append("not empty")
        pattern = getattr(item, "pattern", None)
        if isinstance(pattern, str):
            parts.append(f"matching `{pattern}`")
    return (", " + ", ".join(parts)) if parts else ""


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return '`""`'
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def render(example: Path = EXAMPLE) -> str:
    """The reference; key descriptions missing from ``config.py`` come from ``example``."""
    comments = example_comments(example)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the settings model by `python -m rosterdrop.tools.docs`; do not edit. -->",
        "",
        "rosterdrop reads one TOML file: `-c PATH`, else `$ROSTERDROP_CONFIG`, else",
        "`./rosterdrop.toml`; with none, built-in defaults run one demo tenant. Unknown keys",
        "and wrong types are refused at start with the key's path. `config.example.toml`",
        "shows every key with its default. Secrets come from the environment:",
        "`ROSTERDROP_SMTP_PASSWORD` (SMTP login).",
        "",
    ]
    for section in sections():
        path = section.header.strip("[]")
        title = section.header or "Top level"
        lines += [f"## `{title}`" if section.header else f"## {title}", ""]
        if section.note:
            lines += [section.note, ""]
        docs = field_docs(section.model)
        rows = []
        for name, info in section.model.model_fields.items():
            if _nested(info.annotation)[0] is not None:
                continue
            key = info.alias or name
            full = f"{path}.{key}" if path else key
            text = docs.get(name) or comments.get(full, "")
            kind = type_name(info.annotation, info)
            rows.append(f"| `{key}` | {kind} | {default_text(info)} | {_cell(text)} |")
        if rows:
            lines += ["| key | type | default | description |", "|---|---|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rosterdrop.tools.docs",
                                     description="Write the configuration reference.")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--example", type=Path, default=EXAMPLE,
                        help="the commented example config (default: ./config.example.toml)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from what would be written")
    args = parser.parse_args(argv)
    if not args.example.is_file():
        print(f"{args.example}: no such file; run from the repository root or pass --example",
              file=sys.stderr)
        return 2
    text = render(args.example)
    current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
    if args.check:
        if current != text:
            print(f"{args.output} is out of date: run python -m rosterdrop.tools.docs", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
