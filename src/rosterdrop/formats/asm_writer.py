"""Write a model out in the Apple School Manager layout ("Modified CSVs").

A OneRoster upload comes out as a valid ASM ZIP; an ASM upload comes out as
what was applied after filter and patch. Deterministic bytes for equal input.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import polars as pl

from rosterdrop.formats.layouts import ASM_FILES
from rosterdrop.model import Model

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
MAX_INSTRUCTORS = 15


def _numbered(base: str, count: int) -> list[str]:
    return [base] + [f"{base}_{n}" for n in range(2, count + 1)]


def _spread(frame: pl.DataFrame, list_column: str, base: str, minimum: int) -> pl.DataFrame:
    """A list column → base, base_2, … columns (at least ``minimum`` of them)."""
    longest = frame[list_column].list.len().max() if frame.height else 0
    width = max(minimum, int(longest or 0))  # type: ignore[arg-type]
    names = _numbered(base, width)
    return frame.with_columns(
        [pl.col(list_column).list.get(i, null_on_oob=True).alias(name)
         for i, name in enumerate(names)]
    ).drop(list_column)


def asm_tables(model: Model) -> dict[str, pl.DataFrame]:
    live = pl.col("active")
    people = model.people.filter(live).sort("person_id")
    tables: dict[str, pl.DataFrame] = {
        "locations.csv": model.locations.filter(live).sort("location_id")
        .select(ASM_FILES["locations.csv"].columns),
    }
    for file, role in (("students.csv", "student"), ("staff.csv", "staff")):
        spec = ASM_FILES[file]
        rows = _spread(people.filter(pl.col("role") == role), "location_ids", "location_id", 1)
        extra = sorted((c for c in rows.columns if c.startswith("location_id_")),
                       key=lambda c: int(c.rsplit("_", 1)[1]))
        tables[file] = rows.select(*spec.columns, *extra)
    tables["courses.csv"] = model.courses.filter(live).sort("course_id").select(
        ASM_FILES["courses.csv"].columns)

    instructors = (
        model.instructors.filter(live).sort("class_id", "position")
        .group_by("class_id", maintain_order=True)
        .agg(pl.col("person_id").head(MAX_INSTRUCTORS).alias("_instructors"))
    )
    classes = (
        model.classes.filter(live).sort("class_id")
        .join(instructors, on="class_id", how="left")
        .with_columns(pl.col("_instructors").fill_null([]))
    )
    classes = _spread(classes, "_instructors", "instructor_id", 3)
    extra = [c for c in classes.columns
             if c.startswith("instructor_id_") and int(c.rsplit("_", 1)[1]) > 3]
    tables["classes.csv"] = classes.select(
        *ASM_FILES["classes.csv"].columns, *extra, "class_display_name")
    tables["rosters.csv"] = model.rosters.filter(live).sort("roster_id").select(
        ASM_FILES["rosters.csv"].columns)
    return tables


def write_asm_zip(model: Model, out: Path | io.BytesIO) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, table in asm_tables(model).items():
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            # open(ZipInfo) ignores the archive's level; level 1 is ~4x faster than 6.
            info._compresslevel = 1  # type: ignore[attr-defined]
            with archive.open(info, "w") as entry:
                table.write_csv(entry)
