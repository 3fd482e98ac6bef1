"""The real public exports in ../shared/samples (AGPL/GPL: read in place, never copied)."""

from __future__ import annotations

from uploads import SAMPLES, check, issues_of, needs_samples

pytestmark = needs_samples


def _files(name: str) -> dict[str, str | bytes]:
    folder = SAMPLES / name
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.csv"))}


def test_roster_hub_11_bulk_validates_without_errors() -> None:
    """roster-hub's OneRoster 1.1 bulk export: no errors, the manifest typo is a warning."""
    checked = check(_files("roster-hub-v1p1-bulk"))
    assert checked.layout == "oneroster-1.1"
    assert not checked.issues.has_errors(), checked.issues.frame().to_dicts()
    assert checked.counts["students"] == 20 and checked.counts["classes"] == 5
    typo = issues_of(checked, "MANIFEST_INVALID")
    assert [i["value"] for i in typo] == ["fiel.demographics"]


def test_moodle_12_delta_is_read_as_12() -> None:
    """The moodle 1.2 delta set is read as OneRoster 1.2 with delta kinds."""
    checked = check(_files("moodle-v1p2-delta"))
    assert checked.layout == "oneroster-1.2"
    assert checked.model is not None
    assert {"people", "classes", "rosters"} <= checked.model.delta
    assert checked.files_ignored == ["demographics.csv", "userProfiles.csv"]
    assert [i["value"] for i in issues_of(checked, "VALUE_CASE")] == ["TRUE"]


def test_moodle_11_dirty_fails_with_file_missing() -> None:
    """The dirty moodle 1.1 set fails; courses.csv is missing among its issues."""
    checked = check(_files("moodle-v1p1-dirty"))
    assert checked.status == "failed"
    missing = issues_of(checked, "FILE_MISSING")
    assert [i["file"] for i in missing] == ["courses.csv"]
    invalid = [i for i in issues_of(checked, "VALUE_INVALID") if i["severity"] == "error"]
    assert ("academicSessions.csv", "status", "inactive") in {
        (i["file"], i["column"], i["value"]) for i in invalid}
