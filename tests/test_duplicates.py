"""Duplicate prevention: a new SIS id that matches an existing account takes it over."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from rosterdrop.config import TenantSettings
from rosterdrop.errors import UsageError
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import Model, conform
from rosterdrop.pipeline.plan import Plan, plan_sync
from rosterdrop.pipeline.snapshot import Snapshot
from rosterdrop.store.directory import apply_plan
from rosterdrop.store.engine import open_store

TODAY = date(2026, 11, 23)


def existing(*rows: dict[str, Any]) -> Snapshot:
    """A directory holding these accounts (account_id 1, 2, … in order)."""
    people = [
        {
            "account_id": i + 1,
            "role": "student",
            "previous_ids": [],
            "status": "active",
            "source": "sis",
            "location_ids": ["L1"],
            **row,
        }
        for i, row in enumerate(rows)
    ]
    return Snapshot.of(people=pl.DataFrame(people))


def upload(*rows: dict[str, Any]) -> Model:
    people = [
        {"role": "student", "location_ids": ["L1"], "active": True, "_file": "users.csv",
         "_line": i + 2, **row}
        for i, row in enumerate(rows)
    ]
    return Model(people=conform("people", pl.DataFrame(people)))


def tenant(*match_on: str, prevent: bool = True) -> TenantSettings:
    return TenantSettings.model_validate(
        {
            "account_domain": "x.org",
            "duplicates": {
                "prevent": prevent,
                "match_on": list(match_on) or ["first_name", "last_name", "email_address"],
            },
        }
    )


def plan(snapshot: Snapshot, model: Model, settings: TenantSettings) -> tuple[Plan, IssueLog]:
    log = IssueLog()
    return plan_sync(snapshot, model, settings, TODAY, log), log


ANN = {"first_name": "Ann", "last_name": "Lee", "email_address": "ann@school.org",
       "person_number": "1001", "sis_username": "alee"}


@pytest.mark.parametrize(
    ("match_on", "incoming"),
    [
        (
            ("first_name", "last_name", "email_address"),
            {"first_name": " ANN", "last_name": "lee ", "email_address": "Ann@School.org",
             "person_number": "other", "sis_username": "other"},
        ),
        (("person_number",), {"first_name": "Annie", "last_name": "Li", "person_number": "1001"}),
        (("sis_username",), {"first_name": "Annie", "last_name": "Li", "sis_username": "alee"}),
    ],
)
def test_match_takes_over_the_existing_account(
    match_on: tuple[str, ...], incoming: dict[str, Any]
) -> None:
    """Exactly one match on every match_on field: same account, new SIS id recorded."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN})
    p, log = plan(snapshot, upload({"person_id": "NEW-1", **incoming}), tenant(*match_on))
    assert len(log) == 0 and not p.failed
    assert p.people.create.height == 0 and p.people.deactivate.height == 0
    (row,) = p.people.update.iter_rows(named=True)
    assert row["account_id"] == 1 and row["account"] == "ann.lee@x.org"
    assert row["person_id"] == "NEW-1" and row["previous_ids"] == ["OLD-1"]
    assert p.changes()["updated"]["students"] == 1


def test_inactive_account_is_matched_and_reactivated() -> None:
    """Duplicate prevention looks at inactive accounts too and brings them back."""
    snapshot = existing(
        {"person_id": "OLD-1", "account": "ann.lee@x.org", "status": "inactive",
         "deactivated_on": date(2026, 9, 1), **ANN}
    )
    p, _ = plan(snapshot, upload({"person_id": "NEW-1", **ANN}), tenant())
    assert p.people.reactivated == 1
    assert p.people.update["status"].to_list() == ["active"]


def test_blank_values_never_match() -> None:
    """Two people without email are not the same person: a new account is created."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org",
                         **{**ANN, "email_address": None}})
    p, _ = plan(
        snapshot,
        upload({"person_id": "OLD-1", **{**ANN, "email_address": None}},
               {"person_id": "NEW-1", **{**ANN, "email_address": None}}),
        tenant(),
    )
    assert p.people.create["account"].to_list() == ["ann.lee.1@x.org"]


def test_all_fields_must_match() -> None:
    """A different email means a different person."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN})
    p, _ = plan(
        snapshot,
        upload({"person_id": "OLD-1", **ANN},
               {"person_id": "NEW-1", **{**ANN, "email_address": "ann2@school.org"}}),
        tenant(),
    )
    assert p.people.create["person_id"].to_list() == ["NEW-1"]


def test_prevention_off_creates_a_second_account() -> None:
    """With prevent = false the unknown id is a new person (and the old one deactivates)."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN})
    p, log = plan(snapshot, upload({"person_id": "NEW-1", **ANN}), tenant(prevent=False))
    assert len(log) == 0
    assert p.people.create["account"].to_list() == ["ann.lee.1@x.org"]
    assert p.people.deactivate["person_id"].to_list() == ["OLD-1"]


def test_several_candidates_is_match_ambiguous() -> None:
    """Two accounts match one new person: MATCH_AMBIGUOUS lists both, nothing is applied."""
    snapshot = existing(
        {"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN},
        {"person_id": "OLD-2", "account": "ann.lee.1@x.org", **ANN},
    )
    p, log = plan(snapshot, upload({"person_id": "NEW-1", **ANN}), tenant())
    assert p.failed
    (issue,) = list(log)
    assert issue.code == "MATCH_AMBIGUOUS" and issue.severity == "error"
    assert (issue.file, issue.line, issue.value) == ("users.csv", 2, "NEW-1")
    assert "ann.lee@x.org (account 1)" in issue.message
    assert "ann.lee.1@x.org (account 2)" in issue.message
    assert "ann@school.org" not in issue.message  # no personal data beyond names and ids


def test_two_new_people_for_one_account_is_match_ambiguous() -> None:
    """Two incoming people matching one account: both are reported."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN})
    p, log = plan(
        snapshot,
        upload({"person_id": "NEW-1", **ANN}, {"person_id": "NEW-2", **ANN}),
        tenant(),
    )
    assert p.failed
    issues = sorted(log, key=lambda i: str(i.value))
    assert [i.value for i in issues] == ["NEW-1", "NEW-2"]
    assert "so does person 'NEW-2'" in issues[0].message
    assert "so does person 'NEW-1'" in issues[1].message


def test_match_on_an_account_whose_own_id_is_still_present_is_ambiguous() -> None:
    """The old SIS id is still in the upload: the new id cannot take its account."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN})
    p, log = plan(
        snapshot,
        upload({"person_id": "OLD-1", **ANN}, {"person_id": "NEW-1", **ANN}),
        tenant(),
    )
    assert p.failed
    (issue,) = list(log)
    assert issue.value == "NEW-1"
    assert "person 'OLD-1' (the account's current SIS id)" in issue.message


def test_ambiguous_plan_is_never_applied(tmp_path: Path) -> None:
    """apply_plan refuses a failed plan before touching the store."""
    snapshot = existing(
        {"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN},
        {"person_id": "OLD-2", "account": "ann.lee.1@x.org", **ANN},
    )
    p, _ = plan(snapshot, upload({"person_id": "NEW-1", **ANN}), tenant())
    with open_store(f"sqlite:///{tmp_path}/s.db") as store, pytest.raises(UsageError):
        apply_plan(store, "demo", p, datetime.now(UTC))


def test_delta_rekey_moves_the_account_instead_of_deactivating_it() -> None:
    """Delta tombstone for the old id plus the same person under a new id: one active account."""
    snapshot = existing({"person_id": "OLD-1", "account": "ann.lee@x.org", **ANN})
    model = upload({"person_id": "OLD-1", **ANN, "active": False}, {"person_id": "NEW-1", **ANN})
    model = Model(people=model.people, delta=frozenset({"people"}))
    p, log = plan(snapshot, model, tenant())
    assert len(log) == 0
    assert p.people.deactivate.height == 0
    assert p.people.update.select("account_id", "person_id", "status").rows() == [
        (1, "NEW-1", "active")
    ]
