"""Modified CSVs: the model written back in the ASM layout re-validates to the same model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rosterdrop.pipeline.asm_writer import write_asm_zip
from rosterdrop.pipeline.model import Model
from rosterdrop.tools.sample import write_sample
from uploads import asm_files, check, oneroster_files

COMPARE = {
    "locations": ["location_id", "location_name"],
    "people": ["person_id", "role", "person_number", "first_name", "middle_name", "last_name",
               "grade_level", "email_address", "sis_username", "password_policy",
               "location_ids"],
    "courses": ["course_id", "course_number", "course_name", "location_id"],
    "classes": ["class_id", "class_number", "course_id", "location_id", "class_display_name"],
    "instructors": ["class_id", "person_id", "position"],
    "rosters": ["roster_id", "class_id", "student_id"],
}


def _same(a: Model, b: Model) -> None:
    for kind, columns in COMPARE.items():
        key = columns[:3] if kind == "instructors" else columns[:1]
        left = a.frame(kind).select(columns).sort(key)
        right = b.frame(kind).select(columns).sort(key)
        assert left.equals(right), (kind, left, right)


def _round_trip(model: Model) -> Model:
    buffer = io.BytesIO()
    write_asm_zip(model, buffer)
    again = check(buffer.getvalue())
    assert again.layout == "asm"
    assert not again.issues.has_errors(), again.issues.frame().to_dicts()
    assert again.model is not None
    return again.model


@pytest.mark.parametrize("make", [asm_files, lambda: oneroster_files("1.1"),
                                  lambda: oneroster_files("1.2")])
def test_round_trip_small(make: object) -> None:
    """ASM and OneRoster uploads come out as an ASM ZIP that reads back to the same model."""
    checked = check(make())  # type: ignore[operator]
    assert checked.model is not None
    _same(checked.model, _round_trip(checked.model))


def test_round_trip_generated_district(tmp_path: Path) -> None:
    """A generated OneRoster district (extra instructors, multi-school staff) round-trips."""
    path = tmp_path / "d.zip"
    write_sample(path, layout="oneroster-1.2", students=600, seed=3)
    checked = check(path.read_bytes())
    assert checked.model is not None
    again = _round_trip(checked.model)
    _same(checked.model, again)
    assert again.instructors.group_by("class_id").len()["len"].max() >= 2  # type: ignore[operator]
    assert (again.people["location_ids"].list.len() > 1).any()


def test_writer_is_deterministic() -> None:
    """Equal models give identical bytes."""
    checked = check(asm_files())
    assert checked.model is not None
    one, two = io.BytesIO(), io.BytesIO()
    write_asm_zip(checked.model, one)
    write_asm_zip(checked.model, two)
    assert one.getvalue() == two.getvalue()


@pytest.mark.parametrize("zip64", [False, True])
def test_zip_is_standard(zip64: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-built ZIP (ISA-L deflate) is a standard one: zipfile lists the six ASM
    files with the 1980 timestamp and their CRCs check. Entries of 4 GiB or more go
    through zipfile's ZIP64 writer instead (forced here with a tiny limit)."""
    import zipfile

    from rosterdrop.pipeline import asm_writer

    if zip64:
        monkeypatch.setattr(asm_writer, "_ZIP32_LIMIT", 10)
    checked = check(asm_files())
    assert checked.model is not None
    buffer = io.BytesIO()
    write_asm_zip(checked.model, buffer)
    with zipfile.ZipFile(buffer) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [i.filename for i in infos] == [
            "locations.csv", "students.csv", "staff.csv", "courses.csv", "classes.csv",
            "rosters.csv"]
        assert {i.compress_type for i in infos} == {zipfile.ZIP_DEFLATED}
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert archive.read("students.csv").startswith(b"person_id,")
    _same(checked.model, _round_trip(checked.model))
