"""The P3 upload: a OneRoster sample with 1 % of people, classes and enrollments changed.

    python benchmarks/variant.py SAMPLE.zip OUT.zip

Deterministic: the same sample always gives the same variant (rows are
picked by position, nothing is random). Every CSV other than ``users.csv``,
``classes.csv`` and ``enrollments.csv`` is copied byte for byte; those three
are read with polars (all columns strings) and written again with

- users: every 100th user (1 %) gets a new family name and email address;
- classes: every 100th class (1 %) gets a new title;
- enrollments: 1 % of the enrollments change, half of them dropped (every
  200th student enrollment) and as many added: a student of one picked
  enrollment joins the class of another picked enrollment, in a pair
  (class, student) that does not exist yet, under a new sourcedId.

The changes are chosen so that each touches exactly one directory row: a
changed user is one ``people`` row, a changed class one ``classes`` row, a
dropped enrollment one removed ``rosters`` row and an added one one created
``rosters`` row. ``make_variant`` returns these expected counts, which P3
compares with the rows the sync wrote.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import polars as pl

EVERY = 100
"""One row in EVERY is changed (1 %)."""


def _read(zf: zipfile.ZipFile, name: str) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(zf.read(name)), infer_schema=False)


def _csv(frame: pl.DataFrame) -> bytes:
    return frame.write_csv(null_value="").encode("utf-8")


def _every(every: int, offset: int) -> pl.Expr:
    """True on one row in ``every``, by position."""
    return (pl.int_range(pl.len()) % every) == offset


def change_users(users: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    pick = _every(EVERY, 7)
    changed = users.with_columns(
        familyName=pl.when(pick).then(pl.col("familyName") + "-Moreau")
        .otherwise(pl.col("familyName")),
        email=pl.when(pick & pl.col("email").is_not_null())
        .then(pl.lit("moved.") + pl.col("email"))
        .otherwise(pl.col("email")),
    )
    return changed, users.select(pick.sum()).item()


def change_classes(classes: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    pick = _every(EVERY, 3)
    changed = classes.with_columns(
        title=pl.when(pick).then(pl.col("title") + " (renamed)").otherwise(pl.col("title"))
    )
    return changed, classes.select(pick.sum()).item()


def change_enrollments(enrollments: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """Drop 0.5 % of the enrollments (student ones, evenly spread) and add as many."""
    count = max(1, round(enrollments.height / EVERY / 2))
    students = enrollments.with_row_index("_row").filter(pl.col("role") == "student")
    stride = max(1, students.height // count)
    dropped = students.filter((pl.int_range(pl.len()) % stride) == stride // 2).head(count)
    # New pairs, within one school: the student of a school's i-th dropped row joins
    # the class of its (i + k)-th (mod the school's count), which lies elsewhere in the
    # file; pairs that exist already or repeat are left out, the next k is tried for them.
    school = "schoolSourcedId"
    ranked = dropped.with_columns(
        i=pl.int_range(pl.len()).over(school), n=pl.len().over(school)
    )
    donors = ranked.select(school, "i", "userSourcedId")
    candidates = pl.concat(
        donors.join(
            ranked.select(school, "classSourcedId", i=(pl.col("i") + k) % pl.col("n")),
            on=[school, "i"],
        ).with_columns(choice=pl.lit(choice))
        for choice, k in enumerate((3, 5, 7, 11, 13))
    )
    existing = enrollments.select("classSourcedId", "userSourcedId").unique()
    added = (
        candidates.join(existing, on=["classSourcedId", "userSourcedId"], how="anti")
        .sort("choice", school, "i")
        .unique(["classSourcedId", "userSourcedId"], keep="first", maintain_order=True)
        .unique([school, "i"], keep="first", maintain_order=True)
        .sort(school, "i")
        .head(count)
    )
    template = enrollments.head(0)
    added = pl.DataFrame(
        {
            "sourcedId": [f"enr-var-{i:08d}" for i in range(1, added.height + 1)],
            "classSourcedId": added["classSourcedId"],
            "schoolSourcedId": added["schoolSourcedId"],
            "userSourcedId": added["userSourcedId"],
            "role": ["student"] * added.height,
            "primary": ["false"] * added.height,
        }
    )
    added = pl.concat([template, added], how="diagonal").select(template.columns)
    kept = enrollments.with_row_index("_row").join(
        dropped.select("_row"), on="_row", how="anti"
    ).sort("_row").drop("_row")
    return pl.concat([kept, added]), dropped.height, added.height


def make_variant(sample: Path, out: Path) -> dict[str, int]:
    """Write the 1 %-changed variant of ``sample`` to ``out``; return the expected row
    changes per directory table (what a sync that writes only changed rows writes)."""
    with zipfile.ZipFile(sample) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
        users, changed_people = change_users(_read(source, "users.csv"))
        classes, changed_classes = change_classes(_read(source, "classes.csv"))
        enrollments, dropped, added = change_enrollments(_read(source, "enrollments.csv"))
    entries["users.csv"] = _csv(users)
    entries["classes.csv"] = _csv(classes)
    entries["enrollments.csv"] = _csv(enrollments)
    staging = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(staging, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in entries.items():
            target.writestr(name, data)
    staging.replace(out)
    return {"people": changed_people, "classes": changed_classes,
            "rosters_removed": dropped, "rosters_created": added}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python benchmarks/variant.py SAMPLE.zip OUT.zip", file=sys.stderr)
        return 2
    print(json.dumps(make_variant(Path(argv[0]), Path(argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
