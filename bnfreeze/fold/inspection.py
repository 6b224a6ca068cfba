"""``bnfreeze.inspect``: every normalization layer and what fold would do with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bnfreeze.fold.planner import Kept, plan
from bnfreeze.fold.rules import RULES


@dataclass(frozen=True)
class NormalizationRow:
    """One normalization layer: what fold does with it, how (``rule``, the layers it is moved ``through``) or
    why it stays (``reason``). ``detail`` says the one that applies in words (the rule or path of a fold, the
    reason of a kept BN), as the terminal and the JSON rows always had it."""

    layer: str
    kind: str  # "batch" or "per-sample"
    action: str  # "fold backward into X", "fold forward into X", "keep", "nothing to fold"
    detail: str
    rule: str | None = None
    through: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def how(self) -> str:
        """``rule conv-backward, through pool1``: how a fold is made ("" for a layer that stays)."""
        parts = [f"rule {self.rule}"] if self.rule else []
        if self.through:
            parts.append(f"through {', '.join(self.through)}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["through"] = list(self.through)
        return data


def inspect(model, rules=RULES) -> list[NormalizationRow]:
    """List every normalization layer of ``model`` with its fold plan or the reason it stays."""
    return plan_rows(plan(model, rules))


def plan_rows(fold_plan) -> list[NormalizationRow]:
    """The rows of :func:`inspect` for a plan already made (a fold's ``.plan``)."""
    rows = []
    for outcome in fold_plan.outcomes:
        if isinstance(outcome, Kept):
            rows.append(NormalizationRow(outcome.bn, "batch", "keep", outcome.reason, reason=outcome.reason))
            continue
        entry = outcome.report_entry()
        through = tuple(entry.get("through") or ())
        detail = f"through {', '.join(through)}" if through else f"rule {outcome.rule.name}"
        rows.append(NormalizationRow(entry["bn"], "batch", f"fold {entry['direction']} into {entry['into']}", detail,
                                     rule=outcome.rule.name, through=through))
    for name, class_name in fold_plan.per_sample:
        reason = f"{class_name} normalizes each sample by its own statistics; it has no population statistics"
        rows.append(NormalizationRow(name, "per-sample", "nothing to fold", reason, reason=reason))
    return rows
