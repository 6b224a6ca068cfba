"""``bnfreeze.inspect``: every normalization layer and what fold would do with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bnfreeze.fold.planner import Kept, plan
from bnfreeze.fold.rules import RULES


@dataclass(frozen=True)
class NormalizationRow:
    layer: str
    kind: str  # "batch" or "per-sample"
    action: str  # "fold backward into X", "fold forward into X", "fold pre-activation into X, Y", "keep", ...
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def inspect(model, rules=RULES) -> list[NormalizationRow]:
    """List every normalization layer of ``model`` with its fold plan or the reason it stays."""
    return plan_rows(plan(model, rules))


def plan_rows(fold_plan) -> list[NormalizationRow]:
    """The rows of :func:`inspect` for a plan already made (a fold's ``.plan``)."""
    rows = []
    for outcome in fold_plan.outcomes:
        if isinstance(outcome, Kept):
            rows.append(NormalizationRow(outcome.bn, "batch", "keep", outcome.reason))
            continue
        entry = outcome.report_entry()
        through = entry.get("through")
        detail = entry.get("detail") or (f"through {', '.join(through)}" if through else f"rule {outcome.rule.name}")
        rows.append(NormalizationRow(entry["bn"], "batch", f"fold {entry['direction']} into {entry['into']}", detail))
    for name, class_name in fold_plan.per_sample:
        rows.append(
            NormalizationRow(
                name, "per-sample", "nothing to fold",
                f"{class_name} normalizes each sample by its own statistics; it has no population statistics",
            )
        )
    return rows
