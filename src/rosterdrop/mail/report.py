"""The report email of a run, built from its run document.

``build_report_email`` is pure: it reads the templates and the attachment
files, and nothing else (the clock only when ``now`` is not given). Every
value that came from an upload (file names, issue values, messages) is
cleaned of control characters and shortened before it reaches a template, and
the HTML template escapes everything (Jinja2 autoescape).

The templates get a small view model (``_View``) rather than the raw run
document, so they only lay things out and never compute.

The reader is a district admin, often on a phone, who cannot reach the server:
what the email asks of them is what they can do (check, fix the export, ask
the person who runs rosterdrop, or use the console when ``[web] base_url`` is
set), and a server command appears only on a line labelled for whoever runs
rosterdrop. Both parts are one column with nothing aligned in columns; the
plain text is not hard-wrapped, so a phone reflows each paragraph to its width.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined

from rosterdrop.codes import CATALOGUE, Code, Severity
from rosterdrop.config import MailSettings, TenantSettings, WebSettings
from rosterdrop.documents import PURGE_FILE, RunDocument

RUN_HEADER = "X-Rosterdrop-Run"
STATUS_HEADER = "X-Rosterdrop-Status"

MAX_EXAMPLES = 20
"""Examples shown per code in the email (the run document holds up to 100)."""
DOCUMENT_EXAMPLES = 100
"""Examples per code in the run document: a shorter list is complete."""
MAX_VALUE_CHARS = 200
MAX_MESSAGE_CHARS = 600

METRICS = (
    "received", "filtered", "patched", "created", "updated", "deactivated", "removed",
    "unchanged",
)
KIND_ORDER = ("locations", "students", "staff", "courses", "classes", "rosters")

# status → (label for the heading, accent colour of the HTML card)
_STATUS_STYLE = {
    "completed": ("Sync completed", "#15803d"),
    "completed_with_warnings": ("Sync completed with warnings", "#b45309"),
    "failed": ("Sync failed", "#b91c1c"),
    "held": ("Sync held for approval", "#6d28d9"),
    "unchanged": ("Upload unchanged", "#4b5563"),
    "discarded": ("Held sync discarded", "#4b5563"),
}

OPERATOR = "the person who runs rosterdrop for your district"
"""Who the admin asks for what only the server can do (the config names no contact)."""
OPERATOR_LABEL = "For whoever runs rosterdrop"

# C0/C1 controls and the bidirectional overrides that can make a value read
# differently from what it is ("Trojan source").
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BACKTICKED = re.compile(r"`([^`]*)`")
_HEADER_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`'(])")
_HELD_COMMAND = re.compile(r"`rosterdrop (?:approve|discard)\b")


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of prose: plain text, or a command shown as code."""

    text: str
    code: bool = False


@dataclass(frozen=True, slots=True)
class CountRow:
    """One count that is not zero (zero counts are left out)."""

    label: str
    total: str
    detail: str
    """Per kind, zeros left out: ``students 1,000 · staff 80``."""


@dataclass(frozen=True, slots=True)
class Example:
    where: str
    """``users.csv, line 812, column email`` (whatever is known)."""
    value: str | None
    """None: the issue has no value; ``""`` is shown as blank."""
    message: str
    """The issue's message without the place it starts with (``where`` shows it)."""


@dataclass(frozen=True, slots=True)
class IssueGroup:
    code: str
    severity: str
    title: str
    count: int
    count_text: str
    examples: list[Example]
    fix: list[Segment]
    link: str
    """The code's section on the issue-code page (``mail.docs_url``), or ``""``."""

    @property
    def not_shown(self) -> int:
        return self.count - len(self.examples)


@dataclass(frozen=True, slots=True)
class Omitted:
    """An attachment too large to send: the admin fetches it instead."""

    name: str
    size: str
    path: str


@dataclass(frozen=True, slots=True)
class _View:
    subject: str
    tenant_name: str
    status_label: str
    accent: str
    headline: str
    counts_caption: str
    count_rows: list[CountRow]
    counts_note: str
    """Said once where there is nothing to count: ``No changes`` ..."""
    error_count: str
    warning_count: str
    errors: list[IssueGroup]
    warnings: list[IssueGroup]
    next_steps: list[list[Segment]]
    """What the admin who reads the email can do."""
    operator_steps: list[list[Segment]]
    """Server commands, shown under ``operator_label`` only."""
    operator_label: str
    run_url: str
    """The run's page in the console (``[web] base_url``), or ``""``."""
    run_link_text: str
    docs_url: str
    details: list[tuple[str, str]]
    files_ignored: list[str]
    attached: list[str]
    omitted: list[Omitted]
    attach_limit: str
    max_examples: int


def build_report_email(
    document: RunDocument,
    tenant: TenantSettings,
    mail: MailSettings,
    attachments: Mapping[str, Path],
    artifacts_hint: str,
    *,
    web: WebSettings | None = None,
    now: datetime | None = None,
    forwarded_to: Sequence[str] = (),
) -> EmailMessage:
    """The report email of one finished run.

    ``document`` is the run document; the email lays out its JSON form (the
    ``sync --json`` shape), so the email and ``report.json`` never disagree;
    ``attachments`` maps an attachment name (``issues.csv``) to its file;
    ``artifacts_hint`` is where the admin finds the run's artifacts, as a
    folder they can reach (``reports/<run-id>/``): oversized attachments are
    named relative to it. Missing or empty (header-only) attachment files are
    left out; files over ``mail.attach_max_bytes`` are named, not attached.
    With ``web.base_url`` the email links to the run's page in the console;
    with ``mail.docs_url`` each code links to its section of the issue-code page.
    ``forwarded_to`` names the SFTP destinations the run is being pushed to (their
    outcome is in ``rosterdrop deliveries`` and on the run's page, docs/outlets.md).
    """
    run = document.to_json()
    run_id = document.run_id
    status = document.status.value
    tenant_name = _clean(tenant.name or str(run.get("tenant") or ""), 120) or "rosterdrop"
    totals = _issue_totals(run)
    n_errors = sum(n for (severity, _), n in totals.items() if severity == Severity.ERROR)
    n_warnings = sum(n for (severity, _), n in totals.items() if severity == Severity.WARNING)
    superseded = status == "unchanged" and _has_code(run, Code.UPLOAD_SUPERSEDED)
    subject = _subject(tenant_name, status, n_errors, n_warnings, bool(run.get("dry_run")),
                       superseded=superseded)
    if run.get("file") == PURGE_FILE:
        subject = (f"[rosterdrop] {tenant_name}: "
                   f"{_plural(int(run.get('purged') or 0), 'account')} purged")

    files, omitted = _read_attachments(attachments, mail.attach_max_bytes, artifacts_hint)
    base_url = web.base_url if web is not None else ""
    run_url = f"{base_url}/runs/{quote(run_id, safe='')}" if base_url and run_id else ""
    held = status == "held" and not run.get("dry_run")
    tenant_key = _clean(str(run.get("tenant") or ""), 80)
    label, accent = _STATUS_STYLE.get(status, (f"Sync {_clean(status, 40)}", "#4b5563"))
    view = _View(
        subject=subject,
        tenant_name=tenant_name,
        status_label="Upload skipped" if superseded else label,
        accent=accent,
        headline=_headline(run, status, n_errors, n_warnings, superseded=superseded),
        counts_caption=_counts_caption(status, bool(run.get("dry_run")), superseded=superseded),
        count_rows=_count_rows(run),
        counts_note=_counts_note(run, status, superseded=superseded),
        error_count=f"{n_errors:,}",
        warning_count=f"{n_warnings:,}",
        errors=_groups(run.get("errors"), Severity.ERROR, totals, run_id, tenant_key,
                       mail.docs_url),
        warnings=_groups(run.get("warnings"), Severity.WARNING, totals, run_id, tenant_key,
                         mail.docs_url),
        next_steps=_next_steps(status, run_id, n_warnings, bool(run.get("dry_run")),
                               pulled=_is_pull_failure(run), run_url=run_url,
                               preview="preview.csv" in attachments),
        operator_steps=_operator_steps(status, run_id, tenant_key, bool(run.get("dry_run")),
                                       pulled=_is_pull_failure(run)),
        operator_label=OPERATOR_LABEL,
        run_url=run_url,
        run_link_text="Approve or discard this run" if held else "Open this run in the console",
        docs_url=mail.docs_url,
        details=_details(run, run_id, artifacts_hint, forwarded_to),
        files_ignored=[_clean(str(f), MAX_VALUE_CHARS) for f in run.get("files_ignored") or []],
        attached=[name for name, _ in files],
        omitted=omitted,
        attach_limit=_size(mail.attach_max_bytes),
        max_examples=MAX_EXAMPLES,
    )
    text_env, html_env = _environments()

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = mail.from_
    if tenant.report_to:
        message["To"] = ", ".join(tenant.report_to)
    message["Date"] = format_datetime(now or datetime.now(UTC))
    safe_run = re.sub(r"[^A-Za-z0-9.-]", "", run_id)[:64]
    # One Message-ID per run and status: a mail re-sent after a crash is recognisably the
    # same mail, while a held run's later approval or discard is a mail of its own (with
    # the held mail's ID, mail clients would drop it as a duplicate).
    message["Message-ID"] = (
        f"<{safe_run}.{_HEADER_SAFE.sub('_', status)}.report@{_domain(mail.from_)}>"
        if safe_run
        else make_msgid(domain=_domain(mail.from_))
    )
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    if run_id:
        message[RUN_HEADER] = _HEADER_SAFE.sub("_", run_id)[:128]
    message[STATUS_HEADER] = _HEADER_SAFE.sub("_", status)
    message.set_content(text_env.get_template("report.txt.j2").render(v=view))
    message.add_alternative(
        html_env.get_template("report.html.j2").render(v=view), subtype="html"
    )
    for name, data in files:
        maintype, subtype = _mime_type(name)
        # rosterdrop writes its CSVs as UTF-8; say so, or clients guess ASCII
        params = {"charset": "utf-8"} if maintype == "text" else {}
        message.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=name, params=params
        )
    return message


def run_sentence(document: RunDocument) -> str:
    """The email's one sentence on what happened (the console's run page shows it too)."""
    run = document.to_json()
    totals = _issue_totals(run)
    errors = sum(n for (severity, _), n in totals.items() if severity == Severity.ERROR)
    warnings = sum(n for (severity, _), n in totals.items() if severity == Severity.WARNING)
    status = document.status.value
    superseded = status == "unchanged" and _has_code(run, Code.UPLOAD_SUPERSEDED)
    return _headline(run, status, errors, warnings, superseded=superseded)


# --- subject and prose -------------------------------------------------------


def _subject(tenant_name: str, status: str, errors: int, warnings: int, dry_run: bool, *,
             superseded: bool = False) -> str:
    if superseded:
        what = "upload skipped for a newer one"
    elif status == "completed_with_warnings":
        what = f"sync completed with {_plural(warnings, 'warning')}" if warnings else (
            "sync completed with warnings")
    elif status == "completed":
        what = "sync completed"
    elif status == "failed":
        what = f"sync failed with {_plural(errors, 'error')}" if errors else "sync failed"
    elif status == "held":
        what = "sync held for approval"
    elif status == "unchanged":
        what = "upload unchanged"
    elif status == "discarded":
        what = "held sync discarded"
    else:
        what = f"sync {_clean(status, 40)}"
    return f"[rosterdrop] {tenant_name}: {what}{' (dry run)' if dry_run else ''}"


def _headline(run: Mapping[str, Any], status: str, errors: int, warnings: int, *,
              superseded: bool = False) -> str:
    """What happened, in one sentence."""
    name = run.get("file")
    upload = f"The upload {_clean(str(name), 120)}" if name else "The upload"
    changes = _change_totals(run)
    summary = (
        f"{changes['created']:,} created, {changes['updated']:,} updated, "
        f"{changes['deactivated']:,} deactivated and {changes['removed']:,} removed"
    )
    nothing = not any(changes.values())
    if run.get("file") == PURGE_FILE:
        return (f"{_plural(int(run.get('purged') or 0), 'account')} deactivated longer than "
                f"retention_days {'was' if run.get('purged') == 1 else 'were'} deleted; "
                f"their account names are free again.")
    dry_run = bool(run.get("dry_run"))
    applied = "was checked in a dry run" if dry_run else "was applied"
    if status == "completed":
        if nothing:
            return f"{upload} {applied}; nothing needed to change."
        return f"{upload} {applied}: {summary}."
    if status == "completed_with_warnings":
        if nothing:
            return (f"{upload} {applied} with {_plural(warnings, 'warning')}; "
                    "nothing needed to change.")
        return f"{upload} {applied} with {_plural(warnings, 'warning')}: {summary}."
    if status == "failed" and _is_pull_failure(run):
        return "The roster could not be pulled from the SIS; nothing in the directory changed."
    if status == "failed":
        because = f" because of {_plural(errors, 'error')}" if errors else ""
        return f"{upload} was not applied{because}; nothing in the directory changed."
    if status == "held" and dry_run:
        return (f"{upload} was checked in a dry run: the real run would be held, because it "
                f"would deactivate {changes['deactivated']:,} and remove "
                f"{changes['removed']:,} records, more than the change threshold allows.")
    if status == "discarded":
        return f"{upload} was held and has now been discarded; nothing of it was applied."
    if status == "held":
        return (f"{upload} was held and not applied: it would deactivate "
                f"{changes['deactivated']:,} and remove {changes['removed']:,} records, more "
                "than the change threshold allows.")
    if superseded:
        return (f"{upload} was skipped: a newer upload arrived before its turn and was "
                "synced instead, so nothing of this one was applied.")
    if status == "unchanged":
        return (f"{upload} is byte-identical to the last applied upload, so it was not "
                "read again and nothing changed.")
    return f"{upload} ended with status {_clean(status, 40)}."


def _counts_caption(status: str, dry_run: bool, *, superseded: bool = False) -> str:
    if superseded:
        return "Counts (nothing applied)"
    if status == "unchanged":
        return "What the upload holds (as last time)"
    if status == "held":
        return "What the sync would change (nothing applied)"
    if status == "failed":
        return "Counts (nothing applied)"
    if dry_run:
        return "What the sync would change (dry run, nothing applied)"
    return "Counts"


def _is_pull_failure(run: Mapping[str, Any]) -> bool:
    """The run records a pull from the SIS that produced no upload (SOURCE_* errors only)."""
    codes = [str(i.get("code")) for i in _issue_list(run.get("errors"))]
    return bool(codes) and all(code.startswith("SOURCE_") for code in codes)


def _next_steps(status: str, run_id: str, warnings: int, dry_run: bool, *,
                pulled: bool = False, run_url: str = "",
                preview: bool = False) -> list[list[Segment]]:
    """What the admin reading the email can do (no server commands: see _operator_steps)."""
    if status == "held" and dry_run:
        return [
            [Segment("This was a dry run: the real run of this upload would be held for "
                     "approval. preview.csv lists every account and class it would change.")],
            [Segment("If the changes are expected, upload it for real (or run the sync "
                     "without --dry-run) and approve the held run.")],
        ]
    if status == "discarded":
        return [[Segment("Nothing to do: the held upload was dropped and nothing of it was "
                         "applied. The directory still holds the last applied upload.")]]
    if status == "failed" and pulled:
        return [[Segment("rosterdrop could not get the roster from the SIS. Check the "
                         "connection named above; the next scheduled pull tries again. "
                         "Nothing was changed.")]]
    if status == "held":
        check = "Check the export and the changes above"
        if preview:
            check += "; preview.csv lists every account and class the sync would change"
        held = [[Segment(check + ".")]]
        if run_url:
            return [*held,
                    [Segment("If they are expected, approve the run on its page in the "
                             "rosterdrop console (linked below). If not, discard it "
                             "there, or upload a corrected export: a newer upload discards "
                             "this held run.")],
                    [Segment(f"If your console role cannot approve, ask {OPERATOR}.")]]
        return [*held,
                [Segment(f"If they are expected, ask {OPERATOR} to approve run "),
                 Segment(run_id or "(this run)", code=True),
                 Segment(": forward this email to them.")],
                [Segment("If not, fix the export in the SIS and upload it again: a newer "
                         "upload discards this held run. Until then nothing of it is "
                         "applied.")]]
    if status == "failed":
        return [[Segment("Fix the errors above in the SIS, export again and upload the new "
                         "ZIP. Nothing was changed, so the directory still holds the last "
                         "applied upload.")]]
    if status == "unchanged":
        return [[Segment("Nothing to do.")]]
    steps: list[list[Segment]] = []
    if dry_run:
        steps.append([Segment("This was a dry run: run the sync without --dry-run to apply it.")])
    if status == "completed_with_warnings" or warnings:
        steps.append([Segment("Nothing is blocked. Review the warnings above; records they "
                              "name were dropped or corrected for this sync. Fix them in the "
                              "SIS and the next upload picks the fixes up.")])
    elif not dry_run:
        steps.append([Segment("Nothing to do.")])
    return steps


def _operator_steps(status: str, run_id: str, tenant_key: str, dry_run: bool, *,
                    pulled: bool) -> list[list[Segment]]:
    """The server commands that go with the admin's steps, for whoever runs rosterdrop."""
    if status == "held" and not dry_run:
        shown = run_id or "RUN_ID"
        return [[Segment(f"rosterdrop approve {shown}", code=True),
                 Segment(" applies the held run; "),
                 Segment(f"rosterdrop discard {shown}", code=True),
                 Segment(" drops it.")]]
    if status == "failed" and pulled:
        return [[Segment(f"rosterdrop resync --tenant {tenant_key or 'T'}", code=True),
                 Segment(" pulls from the SIS again now.")]]
    return []


def _details(run: Mapping[str, Any], run_id: str, artifacts_hint: str,
             forwarded_to: Sequence[str] = ()) -> list[tuple[str, str]]:
    rows = [("Run id", run_id or "(none)")]
    if run.get("tenant"):
        rows.append(("Tenant", _clean(str(run["tenant"]), 80)))
    if run.get("file"):
        rows.append(("File", _clean(str(run["file"]), MAX_VALUE_CHARS)))
    if not _is_pull_failure(run) and run.get("file") != PURGE_FILE:
        # (a failed pull and a purge have no upload: no layout, no bytes to fingerprint)
        if run.get("layout") or run.get("status") != "unchanged":
            # (an unchanged upload was not read again: no layout is not "not recognised")
            rows.append(("Layout", _clean(str(run.get("layout") or "not recognised"), 40)))
        if run.get("sha256"):
            rows.append(("SHA-256", _clean(str(run["sha256"]), 80)))
    purged = run.get("purged") or 0
    if purged:
        rows.append(("Accounts purged", f"{int(purged):,} (deactivated longer than "
                     f"retention_days; their names are free again)"))
    matched = run.get("matched") or 0
    if matched:
        rows.append(("Existing accounts matched", f"{int(matched):,} (listed in matches.csv)"))
    if artifacts_hint:
        rows.append(("Files for this run", _clean(artifacts_hint, MAX_VALUE_CHARS)))
    if forwarded_to:
        rows.append(("Forwarded to", _clean(", ".join(forwarded_to), MAX_VALUE_CHARS)
                     + " (being sent now; `rosterdrop deliveries` shows the outcome)"))
    return rows


# --- counts ------------------------------------------------------------------


def _per_kind(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): int(n) for k, n in value.items() if isinstance(n, int | float)}


def _metric(run: Mapping[str, Any], metric: str) -> dict[str, int]:
    if metric == "received":
        return _per_kind(run.get("counts"))
    if metric in ("filtered", "patched"):
        return _per_kind(run.get(metric))
    changes = run.get("changes")
    return _per_kind(changes.get(metric)) if isinstance(changes, Mapping) else {}


def _change_totals(run: Mapping[str, Any]) -> dict[str, int]:
    return {m: sum(_metric(run, m).values()) for m in ("created", "updated", "deactivated",
                                                       "removed")}


def _kind_key(kind: str) -> tuple[int, str]:
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), kind)


def _count_rows(run: Mapping[str, Any]) -> list[CountRow]:
    """The counts that are not zero."""
    rows = []
    status = run.get("status")
    # Nothing of a failed run was applied: filter and patch counts would read as done.
    skipped = {"filtered", "patched"} if status == "failed" else set()
    for metric in METRICS:
        if metric in skipped:
            continue
        per_kind = _metric(run, metric)
        total = sum(per_kind.values())
        if not total:
            continue
        detail = " · ".join(
            f"{_clean(kind, 40)} {n:,}"
            for kind, n in sorted(per_kind.items(), key=lambda kv: _kind_key(kv[0]))
            if n
        )
        rows.append(CountRow(metric.capitalize(), f"{total:,}", detail))
    return rows


def _counts_note(run: Mapping[str, Any], status: str, *, superseded: bool) -> str:
    """One line for what the rows cannot say: that nothing changed, and why."""
    if run.get("file") == PURGE_FILE:
        return f"{_plural(int(run.get('purged') or 0), 'account')} purged"
    if superseded:
        return "No changes: skipped for a newer upload"
    if status == "unchanged":
        return "No changes: byte-identical to the last applied upload"
    if any(_change_totals(run).values()):
        return ""
    return "No changes"


# --- issues ------------------------------------------------------------------


def _issue_list(value: Any) -> list[Mapping[str, Any]]:
    return [i for i in value if isinstance(i, Mapping)] if isinstance(value, list) else []


def _issue_totals(run: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """Complete counts per (severity, code).

    ``issue_counts`` is per code only, and a few codes (``VALUE_INVALID``) are
    errors or warnings by field. A code's example list shorter than
    ``DOCUMENT_EXAMPLES`` is complete, which settles the split; when both
    lists are full the rest of the count goes to the errors.
    """
    listed = {
        severity: Counter(str(i.get("code")) for i in _issue_list(run.get(key)))
        for severity, key in ((Severity.ERROR, "errors"), (Severity.WARNING, "warnings"))
    }
    counts = run.get("issue_counts")
    counts = counts if isinstance(counts, Mapping) else {}
    totals: dict[tuple[str, str], int] = {}
    for code in set(map(str, counts)) | set(listed[Severity.ERROR]) | set(
        listed[Severity.WARNING]
    ):
        errors, warnings = listed[Severity.ERROR][code], listed[Severity.WARNING][code]
        total = max(int(counts.get(code, 0) or 0), errors + warnings)
        if errors and warnings:
            # a list shorter than the document's cap is complete
            if errors < DOCUMENT_EXAMPLES:
                warnings = total - errors
            else:
                errors = total - warnings
        elif errors:
            errors = total
        elif warnings:
            warnings = total
        elif code in Code.__members__:
            if CATALOGUE[Code(code)].severity == Severity.ERROR:
                errors = total
            else:
                warnings = total
        else:
            errors = total
        if errors:
            totals[(Severity.ERROR, code)] = errors
        if warnings:
            totals[(Severity.WARNING, code)] = warnings
    return totals


def _code_key(code: str) -> tuple[int, str]:
    """Catalogue order: package problems, then records, then sync; root causes first."""
    members = list(Code.__members__)
    return (members.index(code) if code in members else len(members), code)


def _has_code(run: Mapping[str, Any], code: Code) -> bool:
    counts = run.get("issue_counts")
    listed = _issue_list(run.get("errors")) + _issue_list(run.get("warnings"))
    return (isinstance(counts, Mapping) and bool(counts.get(code.value))) or any(
        i.get("code") == code.value for i in listed)


def _code_link(docs_url: str, code: str) -> str:
    """The code's section of the issue-code page: its heading ``### `CODE``` makes the
    anchor ``#code`` (GitHub's and most renderers' rule); an unknown code, the page."""
    if not docs_url:
        return ""
    return f"{docs_url}#{code.lower()}" if code in Code.__members__ else docs_url


# A code whose catalogue fix is a server command: the email's next steps say what the
# admin can do instead (and give the command to whoever runs rosterdrop).
_ADMIN_FIX = {
    Code.CHANGE_THRESHOLD: "Check the export and the changes; what you can do is under "
                           "\"What to do next\".",
}


def _groups(
    issues: Any, severity: Severity, totals: Mapping[tuple[str, str], int], run_id: str,
    tenant_key: str = "", docs_url: str = "",
) -> list[IssueGroup]:
    by_code: dict[str, list[Mapping[str, Any]]] = {}
    for issue in _issue_list(issues):
        by_code.setdefault(str(issue.get("code")), []).append(issue)
    for (sev, code) in totals:
        if sev == severity:
            by_code.setdefault(code, [])
    groups = []
    for code in sorted(by_code, key=_code_key):
        known = Code(code) if code in Code.__members__ else None
        info = CATALOGUE.get(known) if known else None
        count = max(totals.get((severity, code), 0), len(by_code[code]))
        fix = _ADMIN_FIX.get(known, info.fix) if known and info else ""
        if run_id:
            fix = fix.replace("RUN_ID", run_id)
        if tenant_key:
            fix = fix.replace("--tenant T`", f"--tenant {tenant_key}`")
        groups.append(
            IssueGroup(
                code=_clean(code, 60),
                severity=severity.value,
                title=info.title if info else _clean(code, 60),
                count=count,
                count_text=_plural(count, "issue"),
                examples=[_example(i) for i in by_code[code][:MAX_EXAMPLES]],
                fix=_segments(fix),
                link=_code_link(docs_url, code),
            )
        )
    return groups


def _example(issue: Mapping[str, Any]) -> Example:
    where = []
    file, line = issue.get("file"), issue.get("line")
    if file:
        where.append(_clean(str(file), 120))
    if line is not None:
        where.append(f"line {line:,}" if isinstance(line, int) else f"line {_clean(str(line), 20)}")
    if issue.get("column"):
        where.append(f"column {_clean(str(issue['column']), 80)}")
    value = issue.get("value")
    message = _admin_message(_without_place(str(issue.get("message") or ""), file, line))
    return Example(
        where=", ".join(where),
        value=None if value is None else _clean(str(value), MAX_VALUE_CHARS),
        message=_clean(message, MAX_MESSAGE_CHARS),
    )


def _without_place(message: str, file: Any, line: Any) -> str:
    """``message`` without the ``users.csv line 12: `` it starts with: the example's
    ``where`` shows the place, and once is enough."""
    if not file:
        return message
    prefixes = [f"{file} line {line}: "] if line is not None else []
    prefixes.append(f"{file}: ")
    for prefix in prefixes:
        if message.startswith(prefix) and len(message) > len(prefix):
            # (not capitalised: it often starts with a column name, ``email_address``)
            return message[len(prefix):]
    return message


def _admin_message(message: str) -> str:
    """``message`` without its approve/discard commands (for whoever runs rosterdrop,
    given on their own line): a sentence that gives them loses its clause, or goes."""
    if not _HELD_COMMAND.search(message):
        return message
    kept = []
    for sentence in _SENTENCE_END.split(message):
        command = _HELD_COMMAND.search(sentence)
        if command is None:
            kept.append(sentence)
            continue
        before = sentence[: command.start()]
        if "; " in before:
            kept.append(before[: before.rindex("; ")] + ".")
    return " ".join(kept) or message


# --- attachments -------------------------------------------------------------


def _read_attachments(
    attachments: Mapping[str, Path], limit: int, artifacts_hint: str
) -> tuple[list[tuple[str, bytes]], list[Omitted]]:
    files: list[tuple[str, bytes]] = []
    omitted: list[Omitted] = []
    for name, path in attachments.items():
        try:
            size = path.stat().st_size
            if size > limit:
                omitted.append(Omitted(name, _size(size), _artifact_path(artifacts_hint, name)))
                continue
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        # A CSV with only its header row is as empty as a 0-byte file.
        if b"\n" not in data.strip():
            continue
        files.append((name, data))
    return files, omitted


def _artifact_path(artifacts_hint: str, name: str) -> str:
    hint = _clean(artifacts_hint, MAX_VALUE_CHARS)
    return f"{hint.rstrip('/')}/{name}" if hint else name


def _mime_type(name: str) -> tuple[str, str]:
    if name.lower().endswith(".csv"):
        return "text", "csv"
    if name.lower().endswith(".json"):
        return "application", "json"
    if name.lower().endswith(".zip"):
        return "application", "zip"
    return "application", "octet-stream"


# --- small helpers -----------------------------------------------------------


def _clean(text: str, limit: int) -> str:
    """Make an upload's value safe to show: controls made visible, length capped."""
    shown = _INVISIBLE.sub(lambda m: _escape_char(m.group()), text)
    shown = unicodedata.normalize("NFC", shown)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _segments(text: str) -> list[Segment]:
    """Split prose at `backticks` into text and code segments."""
    parts = _BACKTICKED.split(text)
    return [Segment(part, code=bool(i % 2)) for i, part in enumerate(parts) if part]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _size(n: int) -> str:
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def _domain(address: str) -> str:
    match = re.search(r"@([A-Za-z0-9.-]+)>?\s*$", address)
    return match.group(1) if match else "rosterdrop.invalid"


@cache
def _environments() -> tuple[Environment, Environment]:
    """(text, html) template environments; only the HTML one escapes."""
    common: dict[str, Any] = {
        "loader": PackageLoader("rosterdrop", "templates"),
        "undefined": StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    return Environment(autoescape=False, **common), Environment(autoescape=True, **common)

