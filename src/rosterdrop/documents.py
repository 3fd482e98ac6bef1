"""The typed documents rosterdrop hands to the outside: statuses, the check
document, the run document and its history forms (docs/cli.md, "JSON documents").

Every layer shares these types, so they live in the foundation and import only
the standard library: the store keeps a ``RunDocument`` as JSON, the CLI
prints it, the email lays it out, and ``report.json`` is it. The JSON shape is
made in exactly one place, ``to_json``, and read back in one, ``from_json``
(which also reads documents stored by older versions: a missing field takes its
default).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Self


class RunStatus(StrEnum):
    """Where a run is in its life (docs/pipeline.md, "Run statuses")."""

    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_WARNINGS = "completed_with_warnings"
    FAILED = "failed"
    HELD = "held"
    UNCHANGED = "unchanged"
    DISCARDED = "discarded"

    @property
    def finished(self) -> bool:
        """The run will not change again by itself (a held run waits for an admin)."""
        return self is not RunStatus.RUNNING

    @property
    def succeeded(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_WARNINGS)


TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.RUNNING: frozenset({
        RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_WARNINGS, RunStatus.FAILED,
        RunStatus.HELD, RunStatus.UNCHANGED,
    }),
    # approve plans the held upload again and ends like any run; discard drops it
    RunStatus.HELD: frozenset({
        RunStatus.COMPLETED, RunStatus.COMPLETED_WITH_WARNINGS, RunStatus.FAILED,
        RunStatus.HELD, RunStatus.DISCARDED,
    }),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.COMPLETED_WITH_WARNINGS: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.UNCHANGED: frozenset(),
    RunStatus.DISCARDED: frozenset(),
}
"""The only moves a run can make; ``runs/lifecycle.py`` refuses every other."""


class CheckStatus(StrEnum):
    """The verdict of ``validate``: no issues, warnings only, or at least one error."""

    OK = "ok"
    WARNINGS = "warnings"
    FAILED = "failed"


class RunSource(StrEnum):
    SFTP = "sftp"
    WATCH = "watch"
    CLI = "cli"
    RESYNC = "resync"
    ONEROSTER_API = "oneroster-api"
    WEB = "web"
    """An upload through the admin console (``POST /upload``, mode sync)."""
    PURGE = "purge"
    """A purge outside a sync (the daemon's daily one, ``rosterdrop purge``)."""
    CLASSES_CLEAR = "classes-clear"
    """``rosterdrop classes clear``: the year-end removal of every class, held for approval."""


PURGE_FILE = "(purge)"
"""The ``file`` of a purge run's document: a purge has no upload."""

CHANGE_GROUPS = ("created", "updated", "deactivated", "removed", "unchanged")


@dataclass(frozen=True, slots=True)
class IssueExample:
    """One issue as the documents and the email show it (the full list is issues.csv)."""

    code: str
    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    column: str | None = None
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "file": self.file,
                "line": self.line, "column": self.column, "value": self.value,
                "message": self.message}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        line = data.get("line")
        return cls(code=str(data.get("code", "")), severity=str(data.get("severity", "")),
                   message=str(data.get("message", "")), file=_text(data.get("file")),
                   line=int(line) if line is not None else None,
                   column=_text(data.get("column")), value=_text(data.get("value")))


@dataclass(frozen=True, slots=True)
class CheckDocument:
    """``validate --json``: what reading, validating, filtering and patching found."""

    file: str
    sha256: str
    layout: str | None
    status: CheckStatus
    counts: Mapping[str, int]
    issue_counts: Mapping[str, int]
    errors: Sequence[IssueExample] = ()
    warnings: Sequence[IssueExample] = ()
    files_ignored: Sequence[str] = ()

    def to_json(self) -> dict[str, Any]:
        return _check_json(self)


def no_changes() -> dict[str, dict[str, int]]:
    return {group: {} for group in CHANGE_GROUPS}


@dataclass(frozen=True, slots=True)
class RunDocument:
    """``sync --json`` and ``report.json``: a check document plus what the run did."""

    run_id: str
    tenant: str
    file: str
    sha256: str
    status: RunStatus
    layout: str | None = None
    dry_run: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)
    issue_counts: Mapping[str, int] = field(default_factory=dict)
    errors: Sequence[IssueExample] = ()
    warnings: Sequence[IssueExample] = ()
    files_ignored: Sequence[str] = ()
    changes: Mapping[str, Mapping[str, int]] = field(default_factory=no_changes)
    filtered: Mapping[str, int] = field(default_factory=dict)
    patched: Mapping[str, int] = field(default_factory=dict)
    matched: int = 0
    """New SIS people who took over an existing account (duplicate prevention; matches.csv)."""
    purged: int = 0
    """People deactivated longer than retention_days, deleted by this run."""

    @classmethod
    def of_check(cls, check: CheckDocument, *, run_id: str, tenant: str, status: RunStatus,
                 dry_run: bool = False, changes: Mapping[str, Mapping[str, int]] | None = None,
                 filtered: Mapping[str, int] | None = None,
                 patched: Mapping[str, int] | None = None, matched: int = 0,
                 purged: int = 0) -> Self:
        return cls(
            run_id=run_id, tenant=tenant, file=check.file, sha256=check.sha256,
            status=status, layout=check.layout, dry_run=dry_run, counts=check.counts,
            issue_counts=check.issue_counts, errors=check.errors, warnings=check.warnings,
            files_ignored=check.files_ignored,
            changes=changes if changes is not None else no_changes(),
            filtered=filtered or {}, patched=patched or {}, matched=matched,
            purged=purged,
        )

    def with_status(self, status: RunStatus) -> Self:
        return replace(self, status=status)

    def to_json(self) -> dict[str, Any]:
        return {
            **_check_json(self),
            "run_id": self.run_id, "tenant": self.tenant, "dry_run": self.dry_run,
            "changes": {group: dict(kinds) for group, kinds in self.changes.items()},
            "filtered": dict(self.filtered), "patched": dict(self.patched),
            "matched": self.matched, "purged": self.purged,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        changes = data.get("changes") or {}
        return cls(
            run_id=str(data.get("run_id", "")), tenant=str(data.get("tenant", "")),
            file=str(data.get("file") or ""), sha256=str(data.get("sha256") or ""),
            status=RunStatus(data.get("status", RunStatus.FAILED)),
            layout=_text(data.get("layout")), dry_run=bool(data.get("dry_run", False)),
            counts=_ints(data.get("counts")), issue_counts=_ints(data.get("issue_counts")),
            errors=tuple(IssueExample.from_json(i) for i in data.get("errors") or ()),
            warnings=tuple(IssueExample.from_json(i) for i in data.get("warnings") or ()),
            files_ignored=tuple(str(f) for f in data.get("files_ignored") or ()),
            changes={**no_changes(), **{str(g): _ints(k) for g, k in changes.items()}},
            filtered=_ints(data.get("filtered")), patched=_ints(data.get("patched")),
            matched=int(data.get("matched") or 0), purged=int(data.get("purged") or 0),
        )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run of ``history --json`` (and, with details, ``show --json``): the stored
    record's facts over its document's, since a run still in progress has none."""

    run_id: str
    tenant: str
    source: RunSource
    status: RunStatus
    file: str | None
    sha256: str | None
    layout: str | None
    dry_run: bool
    created_at: datetime | None
    finished_at: datetime | None
    document: RunDocument | None
    counts: Mapping[str, int] = field(default_factory=dict)
    issue_counts: Mapping[str, int] = field(default_factory=dict)
    deliveries: Sequence[DeliveryRecord] = ()
    """What the run sent to the tenant's outlets (docs/outlets.md)."""

    @property
    def issues(self) -> int:
        return sum(self.issue_counts.values())

    def to_json(self) -> dict[str, Any]:
        """A run summary: the sync document without its issue lists, plus source and times."""
        base = self.document.to_json() if self.document is not None else {}
        base.pop("errors", None)
        base.pop("warnings", None)
        base.update(
            run_id=self.run_id, tenant=self.tenant, source=self.source.value,
            status=self.status.value, file=self.file, sha256=self.sha256,
            layout=self.layout, dry_run=self.dry_run,
            created_at=self.created_at.isoformat() if self.created_at else None,
            finished_at=self.finished_at.isoformat() if self.finished_at else None,
        )
        base.setdefault("counts", dict(self.counts))
        base.setdefault("issue_counts", dict(self.issue_counts))
        base["deliveries"] = [d.to_json() for d in self.deliveries]
        return base

    def details_json(self, artifacts: Mapping[str, str],
                     timings: Mapping[str, float]) -> dict[str, Any]:
        """``show --json``: the summary plus issue lists, artifact paths and step timings."""
        full = self.to_json()
        full["errors"] = [i.to_json() for i in self.document.errors] if self.document else []
        full["warnings"] = ([i.to_json() for i in self.document.warnings]
                            if self.document else [])
        full["artifacts"] = dict(artifacts)
        full["timings"] = dict(timings)
        return full


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One run's delivery to one outlet, as stored."""

    id: int
    run_id: str
    tenant: str
    outlet: str
    kind: str
    status: DeliveryState
    attempts: int
    last_error: str | None
    detail: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None

    @property
    def given_up(self) -> bool:
        return self.status is DeliveryState.FAILED and self.next_attempt_at is None

    def to_json(self) -> dict[str, Any]:
        """The form ``show --json``, ``history --json`` and ``deliveries --json`` print."""
        def moment(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "outlet": self.outlet, "kind": self.kind, "status": self.status.value,
            "attempts": self.attempts, "last_error": self.last_error, "detail": self.detail,
            "next_attempt_at": moment(self.next_attempt_at), "given_up": self.given_up,
            "created_at": moment(self.created_at), "delivered_at": moment(self.delivered_at),
            "run_id": self.run_id, "tenant": self.tenant,
        }


def _check_json(document: CheckDocument | RunDocument) -> dict[str, Any]:
    """The check document's fields, which the run document starts with (cli.md)."""
    return {
        "file": document.file, "sha256": document.sha256, "layout": document.layout,
        "status": document.status.value, "counts": dict(document.counts),
        "issue_counts": dict(document.issue_counts),
        "errors": [i.to_json() for i in document.errors],
        "warnings": [i.to_json() for i in document.warnings],
        "files_ignored": list(document.files_ignored),
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _ints(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items()}
