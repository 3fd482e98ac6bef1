"""plan_sync, advance, the guard and retention: the pure core of the sync."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rosterdrop.config import GuardSettings, TenantSettings
from rosterdrop.pipeline.guard import check_guard
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.model import KINDS, Model, conform, empty_frame
from rosterdrop.pipeline.plan import Plan, advance, plan_sync
from rosterdrop.pipeline.retention import choose_purge
from rosterdrop.pipeline.snapshot import KEYS, Snapshot

TODAY = date(2026, 11, 23)
TENANT = TenantSettings(account_domain="x.org")

Rows = Iterable[Mapping[str, Any]]


def frame(kind: str, rows: Rows) -> pl.DataFrame:
    data = [
        {"_file": f"{kind}.csv", "_line": i + 2, "active": True, **row}
        for i, row in enumerate(rows)
    ]
    return conform(kind, pl.DataFrame(data)) if data else empty_frame(kind)


def person(pid: str, first: str, last: str, role: str = "student", **extra: Any) -> dict[str, Any]:
    return {
        "person_id": pid,
        "role": role,
        "first_name": first,
        "last_name": last,
        "email_address": f"{pid.lower()}@school.org",
        "location_ids": ["L1"],
        **extra,
    }


def model(delta: Iterable[str] = (), **rows: Rows) -> Model:
    return Model(
        **{kind: frame(kind, rows.get(kind, ())) for kind in KINDS},
        delta=frozenset(delta),
    )


def school(n_students: int = 4) -> Model:
    """One school, one course, two classes with a teacher each, students in both."""
    students = [person(f"S{i}", f"Stu{i}", "Kid") for i in range(n_students)]
    return model(
        locations=[{"location_id": "L1", "location_name": "North High"}],
        people=[*students, person("T1", "Tea", "Cher", "staff"), person("T2", "Pro", "Fes", "staff")],
        courses=[{"course_id": "K1", "course_name": "Math", "location_id": "L1"}],
        classes=[
            {"class_id": "C1", "course_id": "K1", "location_id": "L1", "term_ids": []},
            {"class_id": "C2", "course_id": "K1", "location_id": "L1", "term_ids": []},
        ],
        instructors=[
            {"class_id": "C1", "person_id": "T1", "position": 0},
            {"class_id": "C2", "person_id": "T2", "position": 0},
        ],
        rosters=[
            {"roster_id": f"R{c}{i}", "class_id": c, "student_id": f"S{i}"}
            for c in ("C1", "C2")
            for i in range(n_students)
        ],
    )


def plan(snapshot: Snapshot, m: Model, tenant: TenantSettings = TENANT) -> tuple[Plan, IssueLog]:
    log = IssueLog()
    return plan_sync(snapshot, m, tenant, TODAY, log), log


def synced(m: Model, snapshot: Snapshot | None = None) -> Snapshot:
    p, _ = plan(snapshot or Snapshot.empty(), m)
    assert not p.failed
    return advance(p)


def with_rows(m: Model, kind: str, update: Mapping[str, Mapping[str, Any]]) -> Model:
    """``m`` with some rows of ``kind`` (by id) changed."""
    key = {"people": "person_id", "classes": "class_id", "rosters": "roster_id"}[kind]
    rows = [
        {**row, **update.get(row[key], {})} for row in m.frame(kind).iter_rows(named=True)
    ]
    return m.with_frames(**{kind: conform(kind, pl.DataFrame(rows))})


def without(m: Model, kind: str, ids: set[str]) -> Model:
    key = {"people": "person_id", "classes": "class_id", "rosters": "roster_id"}[kind]
    return m.with_frames(**{kind: m.frame(kind).filter(~pl.col(key).is_in(list(ids)))})


def test_first_sync_creates_everything() -> None:
    """Into an empty directory every record is created; people get account names."""
    p, log = plan(Snapshot.empty(), school())
    assert not p.failed and len(log) == 0
    assert p.changes() == {
        "created": {"locations": 1, "students": 4, "staff": 2, "courses": 1, "classes": 2,
                    "rosters": 8},
        "updated": dict.fromkeys(("locations", "students", "staff", "courses", "classes",
                                  "rosters"), 0),
        "deactivated": {"students": 0, "staff": 0},
        "removed": {"locations": 0, "courses": 0, "classes": 0, "rosters": 0},
        "unchanged": dict.fromkeys(("locations", "students", "staff", "courses", "classes",
                                    "rosters"), 0),
    }
    created = p.people.create
    assert created.filter(pl.col("person_id") == "S0")["account"].item() == "stu0.kid@x.org"
    assert set(created["status"]) == {"active"} and set(created["source"]) == {"sis"}
    assert p.instructors.create.height == 2



def test_a_person_twice_in_the_model_counts_once_first_row_first() -> None:
    """The check reports ID_DUPLICATE; the plan (a pure function others may call)
    still never creates two accounts for one person_id: the first row wins."""
    twice = model(people=[person("S1", "Ann", "First"), person("S2", "Bo", "Other"),
                          person("S1", "Ann", "Second")])
    p, _ = plan(Snapshot.empty(), twice)
    created = p.people.create.sort("person_id")
    assert created["person_id"].to_list() == ["S1", "S2"]
    assert created["last_name"].to_list() == ["First", "Other"]

def test_same_model_again_changes_nothing() -> None:
    """Planning the model that was just applied writes no row and counts all unchanged."""
    m = school()
    p, _ = plan(synced(m), m)
    assert p.is_empty() and p.rows() == 0
    changes = p.changes()
    assert changes["unchanged"] == {"locations": 1, "students": 4, "staff": 2, "courses": 1,
                                    "classes": 2, "rosters": 8}
    assert sum(sum(v.values()) for k, v in changes.items() if k != "unchanged") == 0


def test_updates_and_deactivations() -> None:
    """A changed field updates; a person missing from a bulk upload is deactivated."""
    m = school()
    snapshot = synced(m)
    m2 = without(with_rows(m, "people", {"S1": {"last_name": "Smith"}}), "people", {"S2"})
    m2 = without(m2, "rosters", {"RC12", "RC22"})
    m2 = with_rows(m2, "classes", {"C1": {"class_display_name": "Algebra"}})
    p, _ = plan(snapshot, m2)
    changes = p.changes()
    assert changes["updated"]["students"] == 1
    assert changes["updated"]["classes"] == 1
    assert changes["deactivated"] == {"students": 1, "staff": 0}
    assert changes["removed"]["rosters"] == 2
    assert p.people.update["last_name"].to_list() == ["Smith"]
    # The account name never changes with the name.
    assert p.people.update["account"].to_list() == ["stu1.kid@x.org"]
    gone = p.people.deactivate
    assert gone["person_id"].to_list() == ["S2"]
    assert gone["status"].to_list() == ["inactive"]
    assert gone["deactivated_on"].to_list() == [TODAY]


def test_returning_person_is_reactivated_with_the_same_account() -> None:
    """Back after a deactivation: same account_id and name, counted as updated."""
    m = school()
    first = synced(m)
    second = synced(without(m, "people", {"S3"}), first)
    before = first.people.filter(pl.col("person_id") == "S3")
    assert second.people.filter(pl.col("person_id") == "S3")["status"].item() == "inactive"
    p, _ = plan(second, m)
    assert p.people.reactivated == 1
    back = p.people.update
    assert back["account_id"].to_list() == before["account_id"].to_list()
    assert back["account"].to_list() == before["account"].to_list()
    assert back["status"].to_list() == ["active"]
    assert back["deactivated_on"].to_list() == [None]
    assert p.changes()["updated"]["students"] == 1 and p.people.create.height == 0


def test_inactive_people_absent_again_are_left_alone() -> None:
    """A deactivated person who stays absent is not deactivated again."""
    m = school()
    snapshot = synced(without(m, "people", {"S3"}), synced(m))
    p, _ = plan(snapshot, without(m, "people", {"S3"}))
    assert p.people.deactivate.height == 0


def test_local_edit_is_not_overwritten_and_warned() -> None:
    """source=local keeps its values; ACCOUNT_LOCAL lists the SIS values not applied."""
    m = school()
    snapshot = synced(m)
    people = snapshot.people.with_columns(
        source=pl.when(pl.col("person_id") == "S1").then(pl.lit("local")).otherwise("source"),
        first_name=pl.when(pl.col("person_id") == "S1").then(pl.lit("Stuey"))
        .otherwise("first_name"),
    )
    snapshot = Snapshot.of(
        people=people, **{k: snapshot.frame(k) for k in
                          ("locations", "courses", "classes", "instructors", "rosters")}
    )
    p, log = plan(snapshot, with_rows(m, "people", {"S1": {"grade_level": "9"}}))
    # written only to note what the SIS said (sis_seen), its own values kept
    assert p.people.update["person_id"].to_list() == ["S1"]
    assert p.people.update["first_name"].to_list() == ["Stuey"]
    assert p.people.update["sis_seen"][0] is not None
    assert p.changes()["updated"]["students"] == 0
    (issue,) = list(log)
    assert issue.code == "ACCOUNT_LOCAL" and issue.severity == "warning"
    assert issue.value == "S1" and issue.file == "people.csv" and issue.line == 3
    assert "first_name 'Stu1'" in issue.message and "grade_level '9'" in issue.message
    assert "stu1.kid@x.org" in issue.message
    assert p.changes()["unchanged"]["students"] == 4
    # planned again once that was noted: the same SIS values say nothing
    noted = people.with_columns(sis_seen=pl.when(pl.col("person_id") == "S1")
                                .then(pl.lit(p.people.update["sis_seen"][0])).otherwise(None))
    again, quiet = plan(Snapshot.of(people=noted, **{k: snapshot.frame(k) for k in (
        "locations", "courses", "classes", "instructors", "rosters")}),
        with_rows(m, "people", {"S1": {"grade_level": "9"}}))
    assert again.people.update.height == 0 and not [i for i in quiet
                                                     if i.code == "ACCOUNT_LOCAL"]


def test_a_local_account_the_sis_drops_stays_active_and_is_reported() -> None:
    """Apple School Manager: an edited account "is considered a local account and is no
    longer associated with your SIS": absent from the upload, it is not deactivated; one
    ACCOUNT_LOCAL warning names it and the way back (people reset). An SIS account absent
    from the same upload is deactivated as before."""
    m = school()
    snapshot = synced(m)
    people = snapshot.people.with_columns(
        source=pl.when(pl.col("person_id") == "S0").then(pl.lit("local"))
        .otherwise(pl.lit("sis")))
    snapshot = Snapshot.of(people=people)
    p, log = plan(snapshot, without(m, "people", {"S0", "S1"}))
    assert p.people.deactivate["person_id"].to_list() == ["S1"]
    (issue,) = [i for i in log if i.code == "ACCOUNT_LOCAL"]
    assert issue.value == "S0" and issue.severity == "warning"
    assert "people reset S0" in issue.message and issue.file is None


def test_instructor_change_updates_the_class() -> None:
    """Instructors are part of a class: a new teacher makes an updated class."""
    m = school()
    snapshot = synced(m)
    m2 = m.with_frames(
        instructors=frame(
            "instructors",
            [
                {"class_id": "C1", "person_id": "T1", "position": 0},
                {"class_id": "C1", "person_id": "T2", "position": 1},
                {"class_id": "C2", "person_id": "T2", "position": 0},
            ],
        )
    )
    p, _ = plan(snapshot, m2)
    assert p.instructors.create.select("class_id", "person_id").rows() == [("C1", "T2")]
    changes = p.changes()
    assert changes["updated"]["classes"] == 1 and changes["unchanged"]["classes"] == 1


def test_removed_records_of_every_kind() -> None:
    """Absent locations, courses, classes and rosters are removed."""
    snapshot = synced(school())
    p, _ = plan(snapshot, model(people=[person("S0", "Stu0", "Kid")]))
    assert p.changes()["removed"] == {"locations": 1, "courses": 1, "classes": 2, "rosters": 8}
    assert p.instructors.remove.height == 2
    assert p.changes()["deactivated"] == {"students": 3, "staff": 2}


def test_delta_changes_only_what_it_names() -> None:
    """Delta: named rows upsert, tombstones deactivate/remove, absent records stay."""
    snapshot = synced(school())
    delta = model(
        delta=KINDS,
        people=[
            person("S1", "Stu1", "Kidd"),
            {**person("S2", "Stu2", "Kid"), "active": False},
            person("S9", "New", "Kid"),
            {**person("GHOST", "No", "One"), "active": False},
        ],
        rosters=[
            {"roster_id": "RC10", "class_id": "C1", "student_id": "S0", "active": False},
            {"roster_id": "RX", "class_id": "C2", "student_id": "S9"},
        ],
    )
    p, log = plan(snapshot, delta)
    assert not p.failed and len(log) == 0
    changes = p.changes()
    assert changes["created"]["students"] == 1 and changes["updated"]["students"] == 1
    assert changes["deactivated"] == {"students": 1, "staff": 0}
    assert changes["created"]["rosters"] == 1
    # RC10 by its tombstone, RC12 and RC22 because their student S2 was tombstoned.
    assert sorted(p.rosters.remove["roster_id"]) == ["RC10", "RC12", "RC22"]
    # Classes, locations, courses are absent from the delta: untouched.
    assert changes["removed"]["classes"] == 0 and changes["removed"]["locations"] == 0
    after = advance(p)
    again, _ = plan(after, delta)
    assert again.is_empty()


def test_delta_class_tombstone_removes_its_rosters_and_instructors() -> None:
    """A removed class takes its enrollments with it, in the store and in the upload."""
    snapshot = synced(school())
    delta = model(
        delta={"classes", "rosters", "instructors"},
        classes=[{"class_id": "C2", "active": False}],
        rosters=[{"roster_id": "RNEW", "class_id": "C2", "student_id": "S0"}],
    )
    p, _ = plan(snapshot, delta)
    assert p.classes.remove["class_id"].to_list() == ["C2"]
    assert p.instructors.remove.select("class_id", "person_id").rows() == [("C2", "T2")]
    assert sorted(p.rosters.remove["roster_id"]) == [f"RC2{i}" for i in range(4)]
    assert p.rosters.create.height == 0
    assert p.changes()["updated"]["classes"] == 0


def test_changes_use_the_role_kinds() -> None:
    """People are reported as students and staff, like the model counts."""
    p, _ = plan(Snapshot.empty(), school(2))
    assert set(p.changes()["created"]) == {"locations", "students", "staff", "courses",
                                           "classes", "rosters"}
    assert p.changes()["created"]["staff"] == 2


# --- guard -------------------------------------------------------------------------------------


def population(n: int) -> tuple[Snapshot, Model]:
    m = model(people=[person(f"S{i}", "A", f"N{i}") for i in range(n)])
    return synced(m), m


@pytest.mark.parametrize(
    ("n", "drop", "percent", "min_population", "held"),
    [
        (100, 21, 20, 50, True),  # 21% > 20%
        (100, 20, 20, 50, False),  # exactly the threshold is allowed
        (40, 39, 20, 50, False),  # below min_population: never held
        (50, 11, 20, 50, True),  # at min_population: held
        (100, 90, 0, 0, False),  # 0 disables the guard
        (100, 6, 5, 50, True),
    ],
)
def test_guard_thresholds(
    n: int, drop: int, percent: float, min_population: int, held: bool
) -> None:
    """Held when more than the percent would go and the tenant is big enough."""
    snapshot, m = population(n)
    p, _ = plan(snapshot, m.with_frames(people=m.people.slice(drop)))
    guard = GuardSettings(max_deactivate_percent=percent, min_population=min_population)
    decision = check_guard(p, guard, run_id="20261123-113845-ab12")
    assert decision.held is held
    assert decision.deactivated == drop and decision.active_people == n
    log = IssueLog()
    decision.record(log)
    if held:
        (issue,) = list(log)
        assert issue.code == "CHANGE_THRESHOLD" and issue.severity == "error"
        assert f"deactivate {drop} of {n} active people" in issue.message
        assert "rosterdrop approve 20261123-113845-ab12" in issue.message
        assert "rosterdrop discard 20261123-113845-ab12" in issue.message
        assert f"{percent:g}%" in issue.message
    else:
        assert len(log) == 0


def test_guard_counts_removed_classes() -> None:
    """Removing more than the share of classes holds the run too."""
    m = school(60)
    snapshot = synced(m)
    p, _ = plan(snapshot, without(m, "classes", {"C2"}))
    decision = check_guard(p, GuardSettings(max_deactivate_percent=20, min_population=50))
    assert decision.held
    assert "remove 1 of 2 classes (50%)" in decision.message
    assert "RUN_ID" in decision.message


# --- retention ---------------------------------------------------------------------------------


def test_retention_chooses_only_people_past_retention() -> None:
    """Inactive people deactivated retention_days or more ago are purged, nobody else."""
    people = pl.DataFrame(
        {
            "account_id": [1, 2, 3, 4],
            "status": ["inactive", "inactive", "active", "inactive"],
            "deactivated_on": [date(2026, 7, 26), date(2026, 7, 27), None, None],
        }
    )
    chosen = choose_purge(people, TODAY, 120)  # TODAY - 120 days = 2026-07-26
    assert chosen["account_id"].to_list() == [1]
    assert choose_purge(people, TODAY, 0)["account_id"].to_list() == [1, 2]


# --- properties --------------------------------------------------------------------------------

ids = st.sampled_from([f"P{i}" for i in range(8)])
first_names = st.sampled_from(["Ann", "José", "ann ", "Zoë"])
last_names = st.sampled_from(["Lee", "O'Neil", "Straße"])


@st.composite
def models(draw: st.DrawFn) -> Model:
    """Small random models; delta for some kinds."""
    people = draw(
        st.lists(
            st.builds(
                lambda pid, f, last, role, grade, email, active: {
                    **person(pid, f, last, role),
                    "grade_level": grade,
                    "email_address": email,
                    "active": active,
                },
                ids, first_names, last_names, st.sampled_from(["student", "staff"]),
                st.sampled_from([None, "1", "2"]),
                st.sampled_from([None, "a@x.org", "B@x.org ", "c@x.org"]),
                st.booleans(),
            ),
            max_size=10,
            unique_by=lambda r: r["person_id"],
        )
    )
    classes = [
        {"class_id": f"C{i}", "class_display_name": draw(st.sampled_from(["x", "y", None])),
         "term_ids": draw(st.sampled_from([[], ["T1"], ["T1", "T2"]])),
         "active": draw(st.booleans())}
        for i in sorted(draw(st.sets(st.integers(0, 5), max_size=5)))
    ]
    rosters = [
        {"roster_id": f"R{i}", "class_id": f"C{draw(st.integers(0, 5))}",
         "student_id": draw(ids), "active": draw(st.booleans())}
        for i in sorted(draw(st.sets(st.integers(0, 15), max_size=10)))
    ]
    instructors = [
        {"class_id": c, "person_id": p, "position": 0, "active": draw(st.booleans())}
        for c, p in sorted(draw(st.sets(st.tuples(st.sampled_from(["C0", "C1"]), ids),
                                        max_size=4)))
    ]
    delta = draw(st.sets(st.sampled_from(["people", "classes", "rosters", "instructors"])))
    return model(delta=delta, people=people, classes=classes, rosters=rosters,
                 instructors=instructors)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(models(), min_size=1, max_size=3), st.booleans())
def test_planning_the_applied_model_again_changes_nothing(
    sequence: list[Model], prevent: bool
) -> None:
    """For any sequence of uploads: apply each, then the last one again is a no-op."""
    tenant = TenantSettings(
        account_domain="x.org", duplicates={"prevent": prevent}  # type: ignore[arg-type]
    )
    snapshot = Snapshot.empty()
    for m in sequence:
        p, _ = plan(snapshot, m, tenant)
        if p.failed:  # MATCH_AMBIGUOUS / ACCOUNT_NAME_FAILED: never applied
            continue
        snapshot = advance(p)
        again, _ = plan(snapshot, m, tenant)
        assert again.is_empty(), again.changes()
        names = snapshot.people["account"]
        assert names.is_unique().all()
        assert names.str.contains(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*@x\.org$").all()
        assert snapshot.people["account_id"].is_unique().all()
        assert snapshot.people["person_id"].is_unique().all()  # the store's unique key
        for kind in ("classes", "rosters", "instructors"):
            keys = snapshot.frame(kind).select(KEYS[kind])
            assert not keys.is_duplicated().any(), kind


def test_key_hash_collisions_never_match_the_wrong_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are diffed by joining 64-bit hashes of their keys. With every key hashing
    alike (the worst collision possible) the plan must be exactly the same."""
    before = synced(school(6))
    changed = with_rows(school(6), "rosters", {"RC10": {"class_id": "C2"}})
    changed = without(changed, "rosters", {"RC23"})
    changed = changed.with_frames(rosters=pl.concat([
        changed.rosters,
        frame("rosters", [{"roster_id": "RNEW", "class_id": "C1", "student_id": "S5"},
                          {"roster_id": "RC11", "class_id": "C2", "student_id": "S1"}]),
    ]))  # RC11 twice: the first row counts

    def tables(p: Plan) -> dict[str, list[pl.DataFrame]]:
        return {
            kind: [getattr(p.table(kind), part).sort(KEYS[kind])
                   for part in ("create", "update", "remove")]
            for kind in ("locations", "courses", "classes", "instructors", "rosters")
        }

    honest, _ = plan(before, changed)
    monkeypatch.setattr(pl.DataFrame, "hash_rows",
                        lambda self, *a, **k: pl.Series([0] * self.height, dtype=pl.UInt64))
    colliding, _ = plan(before, changed)
    assert honest.changes() == colliding.changes()
    assert honest.changes()["updated"]["rosters"] == 1
    assert honest.changes()["created"]["rosters"] == 1
    assert honest.changes()["removed"]["rosters"] == 1
    for kind, parts in tables(honest).items():
        for mine, theirs in zip(parts, tables(colliding)[kind], strict=True):
            assert mine.equals(theirs), kind
