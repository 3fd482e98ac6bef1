"""The validator never raises: arbitrary uploads end in issues, not tracebacks."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.codes import Code
from uploads import asm_files, check, make_zip, oneroster_files

CSV_TEXT = st.lists(
    st.sampled_from([*"ab,;\"'\n\r \t1é-@.", "\x00", "TRUE", "tobedeleted",
                     "sourcedId,", "person_id,", "\n"]),
    max_size=80,
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(
    ["users.csv", "orgs.csv", "students.csv", "manifest.csv", "Staff.csv", "x/y.csv",
     "classes.csv", "readme.txt"]), CSV_TEXT, max_size=5))
def test_arbitrary_csv_content_never_raises(files: dict[str, str]) -> None:
    """Any mix of file names and CSV text gives a verdict with known codes."""
    checked = check(make_zip(dict(files)))
    codes = set(checked.issues.frame()["code"].to_list())
    assert codes <= {c.value for c in Code}
    assert checked.status in ("ok", "warnings", "failed")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["asm", "1.1", "1.2"]), st.randoms(use_true_random=False),
       st.integers(min_value=1, max_value=6))
def test_mutated_valid_uploads_never_raise(layout: str, rnd: random.Random, edits: int) -> None:
    """Byte flips, truncations and insertions in valid files end in issues."""
    files: dict[str, str | bytes] = dict(asm_files() if layout == "asm"
                                         else oneroster_files(layout))
    for _ in range(edits):
        name = rnd.choice(sorted(files))
        data = bytearray(files[name] if isinstance(files[name], bytes)
                         else str(files[name]).encode())
        if not data:
            continue
        at = rnd.randrange(len(data))
        action = rnd.choice(["flip", "cut", "insert", "drop"])
        if action == "flip":
            data[at] = rnd.randrange(256)
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = rnd.choice([b",", b'"', b"\n", b"\xff\xfe", b"\x00", b";"])
        else:
            del files[name]
            continue
        files[name] = bytes(data)
    checked = check(make_zip(files))
    assert checked.status in ("ok", "warnings", "failed")
    if checked.status == "failed":
        assert checked.issues.has_errors()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=30))
def test_id_check_by_bad_character_equals_the_whole_pattern(values: list[str]) -> None:
    """IDs are checked by searching for one bad character (or an empty value); that
    flags exactly the values the anchored ID pattern rejects."""
    import polars as pl

    from rosterdrop.pipeline.validate import ID_PATTERN, NOT_ID_CHAR

    series = pl.Series(values, dtype=pl.String)
    whole = (~series.str.contains(ID_PATTERN)).to_list()
    by_char = (series.str.contains(NOT_ID_CHAR) | (series.str.len_bytes() == 0)).to_list()
    assert by_char == whole
