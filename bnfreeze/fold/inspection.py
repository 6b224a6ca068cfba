"""``bnfreeze.inspect``: every normalization layer and what fold would do with it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bnfreeze.fold.planner import Kept, plan_model
from bnfreeze.fold.rules import RULES


@dataclass(frozen=True)
class NormalizationRow:
    """One normalization layer: what fold does with it, how (``rule``, the layers it is moved ``through``) or
    why it stays (``reason``). ``detail`` says the one that applies in words (the rule or path of a fold, the
    reason of a kept BN), as the terminal and the JSON rows always had it. Rows of kind ``structure`` say what
    the plain reading of the model did with a class or layer (read as its Functional graph, traced, kept
    opaque, dropped, pinned) in ``detail``."""

    layer: str
    kind: str  # "batch", "per-sample" or "structure"
    #: "fold backward into X", "fold forward into X", "fold pre-activation into X, Y", "keep", "drop",
    #: "nothing to fold"; for a structure row its action and class ("traced (keras_hub>MBConvBlock)")
    action: str
    detail: str
    rule: str | None = None
    through: tuple[str, ...] = ()
    reason: str | None = None
    #: how a pre-activation fold splits the BN (where the scale and the shift went), in words
    split: str | None = None

    @property
    def how(self) -> str:
        """``rule conv-backward, through pool1``: how a fold is made ("" for a layer that stays)."""
        if self.split:
            return f"rule {self.rule}: {self.split}"
        parts = [f"rule {self.rule}"] if self.rule else []
        if self.through:
            parts.append(f"through {', '.join(self.through)}")
        return ", ".join(parts)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["through"] = list(self.through)
        return data


def inspect(model, rules=RULES) -> list[NormalizationRow]:
    """List every normalization layer of ``model`` with its fold plan or the reason it stays, then (kind
    ``structure``) how bnfreeze read the model (:mod:`bnfreeze.fold.plain`)."""
    plain, fold_plan = plan_model(model, rules)
    return plan_rows(fold_plan, plain)


def plan_rows(fold_plan, plain=None) -> list[NormalizationRow]:
    """The rows of :func:`inspect` for a plan already made (a fold's ``.plan`` and ``.plain``)."""
    rows = []
    for outcome in fold_plan.outcomes:
        if isinstance(outcome, Kept):
            rows.append(NormalizationRow(outcome.bn, "batch", "keep", outcome.reason, reason=outcome.reason))
            continue
        entry = outcome.report_entry()
        through = tuple(entry.get("through") or ())
        # a pre-activation fold says where its scale and its shift went
        detail = entry.get("detail") or (f"through {', '.join(through)}" if through else f"rule {outcome.rule.name}")
        rows.append(NormalizationRow(entry["bn"], "batch", f"fold {entry['direction']} into {entry['into']}", detail,
                                     rule=outcome.rule.name, through=through, split=entry.get("detail")))
    for dropped in fold_plan.dropped:
        rows.append(NormalizationRow(dropped.bn, "batch", "drop", dropped.reason, reason=dropped.reason))
    for name, class_name in fold_plan.per_sample:
        reason = f"{class_name} normalizes each sample by its own statistics; it has no population statistics"
        rows.append(NormalizationRow(name, "per-sample", "nothing to fold", reason, reason=reason))
    rows += [NormalizationRow(note.layer, "structure", f"{note.action} ({note.cls})", note.detail)
             for note in (plain.notes if plain is not None else [])]
    return rows
