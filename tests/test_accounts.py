"""Managed account names: folding, cleaning, collisions, failures."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rosterdrop.config import TenantSettings
from rosterdrop.pipeline.accounts import (
    LOCAL_PATTERN,
    _suffixed,
    assign_accounts,
    clean_local,
    fold_ascii,
    fold_series,
    resolve_collisions,
)
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import Model, conform
from rosterdrop.pipeline.plan import plan_sync
from rosterdrop.pipeline.snapshot import Snapshot

NAME = re.compile(r"^[a-z0-9._-]{1,64}$")


def clean_local_text(text: str) -> str:
    """The account-name cleaning of one string, as the pipeline does it to a column."""
    frame = pl.DataFrame({"v": [fold_ascii(text)]}, schema={"v": pl.String})
    return str(frame.select(clean_local(pl.col("v")))["v"][0])


def people(*rows: dict[str, Any]) -> pl.DataFrame:
    data = [
        {"role": "student", "_file": "users.csv", "_line": i + 2, "active": True, **row}
        for i, row in enumerate(rows)
    ]
    return conform("people", pl.DataFrame(data))


def names(
    frame: pl.DataFrame,
    fmt: str = "{first_name}.{last_name}",
    taken: tuple[str, ...] = (),
    domain: str = "x.org",
) -> tuple[list[str | None], IssueLog]:
    log = IssueLog()
    result = assign_accounts(frame, fmt, domain, pl.Series("account", taken, pl.String), log)
    return result.to_list(), log


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("José", "jose"),
        ("Nguyễn", "nguyen"),
        ("Straße", "strasse"),
        ("Ærø", "aero"),
        ("Søren", "soren"),
        ("Łukasz", "lukasz"),
        ("Đorđe", "dorde"),
        ("Zoë", "zoe"),
        ("Ｆｕｌｌ", "full"),
    ],
)
def test_fold_to_ascii(text: str, expected: str) -> None:
    """Accents are removed and letters NFKD keeps whole are spelled in ASCII."""
    assert clean_local_text(text) == expected


def test_name_is_folded_lowercased_and_stripped_of_other_characters() -> None:
    """José Nguyễn → jose.nguyen; apostrophes, spaces and symbols disappear."""
    result, log = names(
        people(
            {"person_id": "1", "first_name": "José", "last_name": "Nguyễn"},
            {"person_id": "2", "first_name": "Mary Ann", "last_name": "O'Brien-Smith"},
            {"person_id": "3", "first_name": "Zoë!", "last_name": "St. (Clair)"},
        ),
        domain="Appleid.Example",
    )
    assert result == [
        "jose.nguyen@appleid.example",
        "maryann.obrien-smith@appleid.example",
        "zoe.st.clair@appleid.example",
    ]
    assert len(log) == 0


def test_no_leading_trailing_or_doubled_dots() -> None:
    """Dots from the data never lead, trail or double up."""
    result, _ = names(people({"person_id": "1", "first_name": ".Ann.", "last_name": "..Lee."}))
    assert result == ["ann.lee@x.org"]


def test_collisions_in_one_run_get_numbered_suffixes() -> None:
    """The first in model order keeps the plain name; later ones get .1, .2."""
    result, _ = names(
        people(*[{"person_id": str(i), "first_name": "Ann", "last_name": "Lee"} for i in range(3)])
    )
    assert result == ["ann.lee@x.org", "ann.lee.1@x.org", "ann.lee.2@x.org"]


def test_taken_names_are_skipped() -> None:
    """Names held by existing (or retained) accounts are never given again."""
    result, _ = names(
        people(
            {"person_id": "1", "first_name": "Ann", "last_name": "Lee"},
            {"person_id": "2", "first_name": "Ann", "last_name": "Lee"},
        ),
        taken=("ann.lee@x.org", "ann.lee.1@x.org", "ann.lee.3@x.org"),
    )
    assert result == ["ann.lee.2@x.org", "ann.lee.4@x.org"]


def test_suffix_never_collides_with_another_persons_plain_name() -> None:
    """A person whose own name is 'a.1' keeps it; the suffix search skips it."""
    result, _ = names(
        people(
            {"person_id": "1", "first_name": "a", "last_name": None, "person_number": "x"},
            {"person_id": "2", "first_name": "a", "last_name": None, "person_number": "x"},
            {"person_id": "3", "first_name": "a.1", "last_name": None, "person_number": "x"},
        ),
        fmt="{first_name}",
    )
    assert result == ["a@x.org", "a.2@x.org", "a.1@x.org"]


def test_long_names_are_cut_to_64_characters_suffix_included() -> None:
    """The part before the @ is at most 64 characters, with the suffix."""
    long = "b" * 70
    result, _ = names(
        people(
            {"person_id": "1", "first_name": "A", "last_name": long},
            {"person_id": "2", "first_name": "A", "last_name": long},
        )
    )
    first, second = (name.split("@")[0] for name in result if name)
    assert len(first) == 64 and first == ("a." + long)[:64]
    assert len(second) == 64 and second.endswith(".1")


def test_other_format_fields() -> None:
    """first_initial, middle_name, person_number, sis_username and person_id render."""
    result, _ = names(
        people(
            {
                "person_id": "P-9",
                "first_name": "Émile",
                "middle_name": "R",
                "last_name": "Zola",
                "person_number": "0042",
                "sis_username": "EZola",
            }
        ),
        fmt="{first_initial}{middle_name}{last_name}_{person_number}-{sis_username}.{person_id}",
    )
    assert result == ["erzola_0042-ezola.p-9@x.org"]


def test_blank_field_is_account_name_failed() -> None:
    """A blank field the format needs fails that person only, naming them and the field."""
    result, log = names(
        people(
            {"person_id": "1", "first_name": "Ann", "last_name": "Lee"},
            {"person_id": "2", "first_name": "  ", "last_name": "Kim"},
            {"person_id": "3", "first_name": "Bo", "last_name": None},
        )
    )
    assert result == ["ann.lee@x.org", None, None]
    issues = list(log)
    assert [i.code for i in issues] == ["ACCOUNT_NAME_FAILED"] * 2
    assert [(i.file, i.line, i.column, i.value) for i in issues] == [
        ("users.csv", 3, "first_name", "2"),
        ("users.csv", 4, "last_name", "3"),
    ]
    assert issues[0].severity == "error"
    assert "person '2' has no first_name" in issues[0].message
    assert "{first_name}.{last_name}" in issues[0].message


def test_name_without_usable_characters_fails() -> None:
    """Names with no letter or digit left after folding (李 明) fail with a clear reason."""
    result, log = names(people({"person_id": "9", "first_name": "李", "last_name": "明"}))
    assert result == [None]
    (issue,) = list(log)
    assert issue.code == "ACCOUNT_NAME_FAILED"
    assert "empty managed account name" in issue.message


def test_plan_fails_and_creates_nobody_without_a_name() -> None:
    """ACCOUNT_NAME_FAILED is an error: the plan is failed and that person is not created."""
    model = Model(
        people=people(
            {"person_id": "1", "first_name": "Ann", "last_name": "Lee"},
            {"person_id": "2", "first_name": None, "last_name": "Kim"},
        )
    )
    log = IssueLog()
    plan = plan_sync(Snapshot.empty(), model, TenantSettings(), date(2026, 1, 5), log)
    assert plan.failed
    assert plan.people.create["person_id"].to_list() == ["1"]
    assert log.codes() == {"ACCOUNT_NAME_FAILED"}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.text(max_size=40)), min_size=1, max_size=12))
def test_names_always_match_the_pattern(rows: list[tuple[str, str]]) -> None:
    """Every name made is a-z0-9._- , 1–64 long, no leading/trailing/doubled dots, unique."""
    frame = people(
        *[
            {"person_id": str(i), "first_name": first, "last_name": last}
            for i, (first, last) in enumerate(rows)
        ]
    )
    result, log = names(frame, taken=("a.b@x.org",))
    made = [name for name in result if name is not None]
    assert len(made) + len(log) == len(rows)
    assert len(set(made)) == len(made) and "a.b@x.org" not in made
    for name in made:
        local, domain = name.split("@")
        assert domain == "x.org"
        assert NAME.match(local) and LOCAL_PATTERN.match(local), name
        assert ".." not in local and not local.startswith(".") and not local.endswith(".")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20)), max_size=20))
def test_vectorised_fold_equals_the_scalar_fold(values: list[str | None]) -> None:
    """fold_series gives fold_ascii of each value (and keeps nulls)."""
    series = pl.Series("v", values, pl.String)
    assert fold_series(series).to_list() == [
        None if v is None else fold_ascii(v) for v in values
    ]


def _served_one_by_one(locals_: list[str], domain: str, taken: list[str]) -> list[str]:
    """The rule of pipeline.md, spelled out row by row: a name that clashes with no
    one is kept; every other row, in order, takes its lowest free number."""
    plain = [f"{local}@{domain}" for local in locals_]
    clashing = [plain.count(name) > 1 or name in taken for name in plain]
    used = set(taken) | {name for name, clash in zip(plain, clashing, strict=True) if not clash}
    result = []
    for local, name, clash in zip(locals_, plain, clashing, strict=True):
        if clash:
            number = 0
            while (name := f"{local if number == 0 else _suffixed(local, number)}@{domain}") in used:
                number += 1
            used.add(name)
        result.append(name)
    return result


# Short names from few letters, and names that look numbered: both paths get exercised.
_LOCALS = st.one_of(
    st.sampled_from(["ann", "ann.1", "ann.2", "bo", "bo.1", "x" * 63, "x" * 62 + ".1"]),
    st.text(alphabet="ab.1", min_size=1, max_size=4).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LOCALS, min_size=1, max_size=25), st.lists(_LOCALS, max_size=6))
def test_collisions_resolve_as_if_served_one_by_one(locals_: list[str], taken: list[str]) -> None:
    """The column-wise numbering and the row loop both give the one-by-one answer."""
    taken_names = [f"{local}@x.org" for local in taken]
    got = resolve_collisions(pl.Series("local", locals_, pl.String), "x.org",
                             pl.Series("account", taken_names, pl.String))
    assert got.to_list() == _served_one_by_one(locals_, "x.org", taken_names)
