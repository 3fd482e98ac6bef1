"""The change guard (pipeline.md "Guard").

A plan that deactivates more than ``max_deactivate_percent`` of the tenant's
active people, or removes more than that share of its classes, is held when
the tenant has at least ``min_population`` active people: nothing is
applied until someone approves the run. ``max_deactivate_percent = 0``
disables the guard. Shares are of the directory *before* the sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from rosterdrop.codes import Code
from rosterdrop.config import GuardSettings
from rosterdrop.pipeline.issues import IssueLog
from rosterdrop.pipeline.plan import Plan


@dataclass(frozen=True)
class GuardDecision:
    """Whether the plan is held, with the numbers behind it."""

    held: bool
    deactivated: int
    active_people: int
    removed_classes: int
    classes: int
    threshold: float
    min_population: int
    message: str
    """The ``CHANGE_THRESHOLD`` message (empty when not held)."""

    def record(self, issues: IssueLog) -> None:
        """Add the ``CHANGE_THRESHOLD`` error to ``issues`` when held."""
        if self.held:
            issues.add(Code.CHANGE_THRESHOLD, self.message)


def _share(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _pct(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0") + "%"


def check_guard(plan: Plan, guard: GuardSettings, run_id: str | None = None) -> GuardDecision:
    """Decide whether ``plan`` must be held for approval.

    ``run_id`` goes into the message's approve/discard commands when known.
    """
    active = plan.base.active_people()
    classes = plan.base.classes.height
    deactivated = plan.deactivated_people
    removed = plan.removed_classes
    limit = guard.max_deactivate_percent
    people_over = _share(deactivated, active) > limit
    classes_over = _share(removed, classes) > limit
    held = limit > 0 and active >= guard.min_population and (people_over or classes_over)
    message = ""
    if held:
        run = run_id or "RUN_ID"
        parts = []
        if people_over:
            parts.append(
                f"deactivate {deactivated:,} of {active:,} active people "
                f"({_pct(_share(deactivated, active))})"
            )
        if classes_over:
            parts.append(
                f"remove {removed:,} of {classes:,} classes ({_pct(_share(removed, classes))})"
            )
        message = (
            f"This sync would {' and '.join(parts)}, more than the tenant's threshold of "
            f"{_pct(limit)} (guard.max_deactivate_percent), so nothing was applied and the run "
            f"is held. If the export is complete and correct, release it with "
            f"`rosterdrop approve {run}`; otherwise drop it with `rosterdrop discard {run}` "
            f"and upload a corrected export (a newer upload also discards it)."
        )
    return GuardDecision(
        held=held,
        deactivated=deactivated,
        active_people=active,
        removed_classes=removed,
        classes=classes,
        threshold=limit,
        min_population=guard.min_population,
        message=message,
    )
