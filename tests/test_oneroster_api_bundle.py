"""JSON → OneRoster CSV bundle: the same rows as the export, a valid upload, stable bytes."""

from __future__ import annotations

import csv
import io
import random
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oneroster_server import OneRosterServer, load_dataset, read_csv_files, serving

from rosterdrop.config import LimitSettings, TenantSettings, parse_settings
from rosterdrop.pipeline.check import check_upload, sha256_of
from rosterdrop.sources.oneroster.bundle import (
    BundleWriter,
    class_row,
    course_row,
    enrollment_row,
    headers,
    org_row,
    role_rows,
    session_row,
    timestamp,
    user_row_11,
    user_row_12,
)
from rosterdrop.sources.oneroster.puller import fetch_bundle
from rosterdrop.tools.sample import write_sample
from uploads import SAMPLES, needs_samples

TODAY = date(2026, 1, 15)


def pull(api: OneRosterServer, out: Path, **overrides: Any) -> Path:
    table = api.source(**overrides)
    source = parse_settings({"tenants": {"t": {"source": table}}}).tenants["t"].source
    assert source is not None
    return fetch_bundle("t", source, api.secret, out).path


def check(path: Path) -> dict[str, Any]:
    checked = check_upload(path, tenant=TenantSettings(), limits=LimitSettings(), today=TODAY)
    return {"counts": checked.counts, "issues": checked.issues.frame()["code"].to_list(),
            "layout": checked.layout}


def rows(path: Path, name: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(path) as archive:
        text = archive.read(name).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_pulled_sample_has_the_exported_rows(tmp_path: Path, version: str) -> None:
    """A generated export served as REST JSON comes back as the same CSV rows and model."""
    export = tmp_path / "export.zip"
    write_sample(export, layout=f"oneroster-{version}", students=400, seed=7)
    with serving(OneRosterServer(load_dataset(export, version), version=version,
                                 max_limit=250)) as api:
        bundle = pull(api, tmp_path / "pulled.zip", page_size=250)
    original = read_csv_files(export)
    for name in headers(version):
        got = rows(bundle, name)
        want = original[name]
        if name == "roles.csv":  # REST roles have no sourcedId: the bundle numbers them
            for row in (*got, *want):
                row.pop("sourcedId")
            key = ("userSourcedId", "roleType", "orgSourcedId")
        else:
            key = ("sourcedId",)
        assert sorted(got, key=lambda r: [r[k] for k in key]) == \
            sorted(want, key=lambda r: [r[k] for k in key]), name
        assert list(got[0]) == list(want[0])  # the header, column for column
    assert check(bundle) == check(export) | {"layout": f"oneroster-{version}"}


@needs_samples
def test_public_samples_pull_like_their_exports(tmp_path: Path) -> None:
    """The public exports in shared/samples, served as JSON, pull into valid bundles."""
    clean = SAMPLES / "roster-hub-v1p1-bulk"
    with serving(OneRosterServer(load_dataset(clean, "1.1"), max_limit=7)) as api:
        bundle = pull(api, tmp_path / "hub.zip", page_size=7)
    export = tmp_path / "hub-export.zip"
    with zipfile.ZipFile(export, "w") as archive:
        for csv_file in clean.glob("*.csv"):
            archive.write(csv_file, csv_file.name)
    assert check(bundle)["counts"] == check(export)["counts"] == {
        "locations": 1, "students": 20, "staff": 0, "courses": 2, "classes": 5, "rosters": 25}

    dirty = SAMPLES / "moodle-v1p1-dirty"
    with serving(OneRosterServer(load_dataset(dirty, "1.1"), auth="oauth1")) as api:
        found = check(pull(api, tmp_path / "dirty.zip"))
    # the SIS's own mistakes reach validation unchanged: wrong case, bad enum, missing course
    assert {"VALUE_CASE", "VALUE_INVALID", "REFERENCE_MISSING"} <= set(found["issues"])

    delta = SAMPLES / "moodle-v1p2-delta"
    with serving(OneRosterServer(load_dataset(delta, "1.2"), version="1.2")) as api:
        bundle = pull(api, tmp_path / "v12.zip")
    assert rows(bundle, "roles.csv")[0] | {"sourcedId": "-"} == {
        "sourcedId": "-", "status": "active", "dateLastModified": "2023-10-02T00:00:00.000Z",
        "userSourcedId": "USER_0", "roleType": "primary", "role": "student", "beginDate": "",
        "endDate": "", "orgSourcedId": "ORG_1", "userProfileSourcedId": ""}
    assert check(bundle)["counts"] == {"locations": 1, "students": 1, "staff": 0, "courses": 1,
                                       "classes": 1, "rosters": 1}
    manifest = {r["propertyName"]: r["value"] for r in rows(bundle, "manifest.csv")}
    assert manifest["oneroster.version"] == "1.2" and manifest["file.roles"] == "bulk"
    assert manifest["file.demographics"] == "absent"


def test_same_data_in_any_order_gives_the_same_bytes(tmp_path: Path) -> None:
    """Records are sorted by sourcedId and ZIP times fixed: a reshuffled SIS, same sha256."""
    export = tmp_path / "export.zip"
    write_sample(export, layout="oneroster-1.2", students=120, seed=2)
    data = load_dataset(export, "1.2")
    with serving(OneRosterServer(data, version="1.2")) as api:
        first = pull(api, tmp_path / "a.zip")
    shuffled = {name: random.Random(5).sample(records, len(records))
                for name, records in data.items()}
    with serving(OneRosterServer(shuffled, version="1.2", max_limit=33)) as api:
        second = pull(api, tmp_path / "b.zip", page_size=33)
    assert sha256_of(first) == sha256_of(second)


def test_roles_of_a_12_user_keep_their_order(tmp_path: Path) -> None:
    """Each role of a 1.2 user is one roles.csv row, in array order; users without roles noted."""
    writer = BundleWriter(tmp_path / "parts", "1.2")
    writer.add("users", [
        {"sourcedId": "u2", "givenName": "A", "familyName": "B", "enabledUser": True,
         "roles": [{"roleType": "secondary", "role": "teacher", "org": {"sourcedId": "s9"}},
                   {"roleType": "primary", "role": "teacher", "org": {"sourcedId": "s1"},
                    "userProfile": "p1"}]},
        {"sourcedId": "u1", "givenName": "C", "familyName": "D", "enabledUser": "false"},
    ])
    for collection in ("orgs", "academicSessions", "courses", "classes", "enrollments"):
        writer.add(collection, [])
    writer.write_zip(tmp_path / "b.zip", system_name="x", system_code="y")
    roles = rows(tmp_path / "b.zip", "roles.csv")
    assert [(r["sourcedId"], r["orgSourcedId"], r["userProfileSourcedId"]) for r in roles] == [
        ("u2-role-1", "s9", ""), ("u2-role-2", "s1", "p1")]
    users = rows(tmp_path / "b.zip", "users.csv")
    assert [(u["sourcedId"], u["enabledUser"]) for u in users] == [("u1", "false"),
                                                                    ("u2", "true")]
    assert writer.notes == ["users: 1 user(s) have no roles, so they are not imported "
                            "(OneRoster 1.2 takes the role from roles)"]


def test_rest_shapes_become_csv_fields() -> None:
    """References, reference lists, string lists, userIds, booleans and timestamps."""
    user = {"sourcedId": "u1", "status": "active", "dateLastModified": "2024-03-01T10:00:00Z",
            "enabledUser": "true", "orgs": [{"sourcedId": "o1", "href": "/orgs/o1"},
                                            {"sourcedId": "o2"}],
            "role": "student", "userIds": [{"type": "LDAP", "identifier": "12"}],
            "grades": ["09", "10"], "agents": []}
    row = dict(zip(headers("1.1")["users.csv"], user_row_11(user), strict=True))
    assert row["orgSourcedIds"] == "o1,o2" and row["userIds"] == "{LDAP:12}"
    assert row["grades"] == "09,10" and row["dateLastModified"] == "2024-03-01T10:00:00.000Z"
    klass = dict(zip(headers("1.1")["classes.csv"], class_row({
        "sourcedId": "c1", "course": {"sourcedId": "k1"}, "school": "s1",
        "terms": [{"sourcedId": "t1"}, {"sourcedId": "t2"}], "periods": [1, 2]}), strict=True))
    assert (klass["courseSourcedId"], klass["schoolSourcedId"], klass["termSourcedIds"],
            klass["periods"]) == ("k1", "s1", "t1,t2", "1,2")
    enrollment = dict(zip(headers("1.1")["enrollments.csv"], enrollment_row(
        {"sourcedId": "e1", "primary": False, "user": {"sourcedId": "u1"}}), strict=True))
    assert enrollment["primary"] == "false" and enrollment["userSourcedId"] == "u1"
    assert timestamp("2024-03-01T12:00:00.123456+02:00") == "2024-03-01T10:00:00.123Z"
    assert timestamp("last tuesday") == "last tuesday"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=3),
    max_leaves=8,
)
FIELDS = ("sourcedId", "status", "dateLastModified", "name", "parent", "orgs", "roles",
          "userIds", "terms", "course", "school", "user", "class", "grades", "primary",
          "enabledUser", "role", "org", "schoolYear")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8))
def test_row_functions_never_raise(record: dict[str, Any]) -> None:
    """Any JSON object becomes a row of strings of the header's width; nothing raises."""
    for make, name, version in ((org_row, "orgs.csv", "1.1"),
                                (session_row, "academicSessions.csv", "1.1"),
                                (course_row, "courses.csv", "1.1"),
                                (class_row, "classes.csv", "1.1"),
                                (enrollment_row, "enrollments.csv", "1.1"),
                                (user_row_11, "users.csv", "1.1"),
                                (user_row_12, "users.csv", "1.2")):
        row = make(record)
        assert len(row) == len(headers(version)[name])
        assert all(isinstance(v, str) for v in row)
    assert all(len(r) == len(headers("1.2")["roles.csv"]) + 1 for r in role_rows(record))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=20), min_size=1,
                max_size=5))
def test_any_text_survives_the_bundle(tmp_path_factory: pytest.TempPathFactory,
                                      names: list[str]) -> None:
    """Commas, quotes, line breaks and any Unicode in values come back unchanged."""
    folder = tmp_path_factory.mktemp("b")
    writer = BundleWriter(folder / "parts", "1.1")
    orgs = [{"sourcedId": f"o{i}", "name": name, "type": "school"}
            for i, name in enumerate(names)]
    writer.add("orgs", orgs)
    for collection in ("academicSessions", "courses", "classes", "users", "enrollments"):
        writer.add(collection, [])
    writer.write_zip(folder / "b.zip", system_name="x", system_code="y")
    got = {r["sourcedId"]: r["name"] for r in rows(folder / "b.zip", "orgs.csv")}
    assert got == {o["sourcedId"]: o["name"] for o in orgs}
