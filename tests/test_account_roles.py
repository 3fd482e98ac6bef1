"""Managed account names per role (``accounts_by_role``): each role's format and domain,
the tenant's as default, and names unique across the tenant whatever the role."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from rosterdrop.config import TenantSettings, parse_settings
from rosterdrop.pipeline.accounts import NameRule, assign_accounts, render_local
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import Model, conform
from rosterdrop.pipeline.plan import plan_sync
from rosterdrop.pipeline.snapshot import Snapshot
from uploads import asm_files, make_zip

BY_ROLE = {"account_format": "{first_name}.{last_name}", "account_domain": "example",
           "accounts_by_role": {"student": {"account_format": "{first_initial}{last_name}",
                                            "account_domain": "students.example"}}}
"""Students get their own format and domain; staff have none of their own (the tenant's)."""


def tenant(**values: Any) -> TenantSettings:
    return parse_settings({"tenants": {"t": values}}).tenant("t")


def people(*rows: dict[str, Any]) -> pl.DataFrame:
    data = [{"role": "student", "_file": "users.csv", "_line": i + 2, "active": True,
             "sis_username": f"u{i}", **row} for i, row in enumerate(rows)]
    return conform("people", pl.DataFrame(data))


def created(model_people: pl.DataFrame, settings: TenantSettings,
            snapshot: Snapshot | None = None) -> tuple[dict[str, str], IssueLog]:
    """person_id → account of the people a first plan creates."""
    log = IssueLog()
    plan = plan_sync(snapshot or Snapshot.empty(), Model(people=model_people), settings,
                     date(2026, 1, 5), log)
    create = plan.people.create
    return dict(zip(create["person_id"].to_list(), create["account"].to_list(),
                    strict=True)), log


def test_each_role_gets_its_format_and_domain_with_the_tenants_as_default() -> None:
    """Students: {first_initial}{last_name}@students.example; staff, who have no
    accounts_by_role.staff, the tenant's {first_name}.{last_name}@example."""
    accounts, log = created(people(
        {"person_id": "S1", "first_name": "José", "last_name": "García"},
        {"person_id": "T1", "role": "staff", "first_name": "Ann", "last_name": "Smith"},
        {"person_id": "S2", "first_name": "Li", "last_name": "Chen"},
    ), tenant(**BY_ROLE))
    assert accounts == {"S1": "jgarcia@students.example", "T1": "ann.smith@example",
                        "S2": "lchen@students.example"}
    assert len(log) == 0


def test_only_a_roles_domain_set_keeps_the_tenants_format() -> None:
    """A role with only account_domain uses the tenant's format with its own domain."""
    accounts, _ = created(people(
        {"person_id": "S1", "first_name": "Li", "last_name": "Chen"},
        {"person_id": "T1", "role": "staff", "first_name": "Li", "last_name": "Chen"},
    ), tenant(account_domain="example",
              accounts_by_role={"staff": {"account_domain": "staff.example"}}))
    # Different domains: li.chen@example and li.chen@staff.example are two names, no suffix.
    assert accounts == {"S1": "li.chen@example", "T1": "li.chen@staff.example"}


def test_names_that_collide_across_roles_are_made_distinct() -> None:
    """A student and a teacher whose per-role formats give the same name get distinct
    names, model order deciding who keeps the plain one, and a name taken by an
    existing account of the other role is not reused either."""
    settings = tenant(account_domain="example", accounts_by_role={
        "student": {"account_format": "{first_initial}{last_name}"},
        "staff": {"account_format": "{sis_username}"}})
    teacher_first = people(
        {"person_id": "T1", "role": "staff", "first_name": "Bo", "last_name": "Xu",
         "sis_username": "asmith"},
        {"person_id": "S1", "first_name": "Ann", "last_name": "Smith"},
    )
    accounts, _ = created(teacher_first, settings)
    # The teacher comes first in the model: a per-role pass that served students first
    # would give the student the plain name.
    assert accounts == {"T1": "asmith@example", "S1": "asmith.1@example"}
    accounts, _ = created(teacher_first.reverse(), settings)
    assert accounts == {"S1": "asmith@example", "T1": "asmith.1@example"}

    existing = Snapshot.of(taken_accounts=["asmith@example"])
    accounts, _ = created(teacher_first.filter(pl.col("role") == "student"), settings, existing)
    assert accounts == {"S1": "asmith.1@example"}


def test_a_failed_name_names_the_roles_setting() -> None:
    """ACCOUNT_NAME_FAILED tells the operator to change the key that made the name:
    the role's own format, or the tenant's for a role without one."""
    settings = tenant(accounts_by_role={"student": {"account_format": "{person_number}"}})
    accounts, log = created(people(
        {"person_id": "S1", "first_name": "Ann", "last_name": "Lee", "person_number": None},
        {"person_id": "T1", "role": "staff", "first_name": None, "last_name": "Kim"},
        {"person_id": "S2", "first_name": "Bo", "last_name": "Xu", "person_number": "42"},
    ), settings)
    assert accounts == {"S2": "42@appleid.example"}
    messages = {issue.value: issue.message for issue in log}
    assert log.codes() == {"ACCOUNT_NAME_FAILED"}
    assert "change accounts_by_role.student.account_format." in messages["S1"]
    assert "change account_format." in messages["T1"]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["Ann", "Bo", "Åsa", "a"]),
                          st.sampled_from(["Smith", "Xu", "Øy"])), min_size=1, max_size=14),
       st.sampled_from(["example", "students.example"]))
def test_names_are_unique_and_plain_first_across_roles(
        rows: list[tuple[bool, str, str]], student_domain: str) -> None:
    """Whatever the mix of roles: every name is unique, carries its role's domain, and
    the first person (in model order) of each candidate name gets it plain."""
    frame = people(*[{"person_id": str(i), "role": "staff" if staff else "student",
                      "first_name": first, "last_name": last}
                     for i, (staff, first, last) in enumerate(rows)])
    rules = {"student": NameRule("{first_initial}{last_name}", student_domain),
             "staff": NameRule("{first_name}{last_name}", "example")}
    got = assign_accounts(frame, "{first_name}.{last_name}", "example",
                          pl.Series("account", ["asmith@example"], pl.String), IssueLog(),
                          by_role=rules).to_list()
    assert None not in got and len(set(got)) == len(got) and "asmith@example" not in got
    seen: set[str] = {"asmith@example"}
    for row, name in zip(frame.iter_rows(named=True), got, strict=True):
        rule = rules[row["role"]]
        one = frame.filter(pl.col("person_id") == row["person_id"])
        candidate = f"{render_local(one, rule.account_format)[0]}@{rule.domain}"
        assert name.endswith("@" + rule.domain)
        # The plain name goes to the first who wants it, unless it is already taken.
        assert (name == candidate) == (candidate not in seen), (name, candidate, seen)
        seen |= {name, candidate}


CONFIG = """
state_dir = "state"
[tenants.t]
name = "Test"
report_to = ["a@t.example"]
account_domain = "example"
[tenants.t.accounts_by_role.student]
account_format = "{first_initial}{last_name}"
account_domain = "students.example"
[tenants.t.guard]
min_population = 3
"""


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rosterdrop", "-c", "rd.toml", *args], cwd=cwd, text=True,
        capture_output=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def test_sync_through_the_cli_gives_each_role_its_domain(tmp_path: Path) -> None:
    """End to end: a sync with per-role student settings lists students at
    students.example and staff at the tenant's example in people --json."""
    (tmp_path / "rd.toml").write_text(CONFIG)
    (tmp_path / "u.zip").write_bytes(make_zip(dict(asm_files())))
    synced = run(tmp_path, "sync", "u.zip", "--tenant", "t", "--json")
    assert synced.returncode == 0, synced.stderr
    listed = json.loads(run(tmp_path, "people", "--tenant", "t", "--json").stdout)
    accounts = {p["person_id"]: p["account"] for p in listed}
    assert accounts == {"P1": "jgarcia@students.example", "P2": "zobrien@students.example",
                        "P3": "lchen@students.example", "T1": "ann.smith@example",
                        "T2": "bob.jones@example"}


def test_an_unknown_field_in_a_roles_format_is_a_config_error(tmp_path: Path) -> None:
    """The CLI refuses a per-role format naming an unknown field with exit 2 and the
    key's path, before doing anything."""
    bad = CONFIG.replace('"{first_initial}{last_name}"', '"{nickname}"')
    (tmp_path / "rd.toml").write_text(bad)
    result = run(tmp_path, "people", "--tenant", "t", "--json")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "accounts_by_role.student.account_format" in result.stderr
    assert "nickname" in result.stderr and "Traceback" not in result.stderr
