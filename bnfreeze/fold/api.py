"""``bnfreeze.fold``: fold every BN that can be folded exactly, and prove it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bnfreeze.compare import Tolerance
from bnfreeze.errors import ParityError
from bnfreeze.parity import ParityResult, check_models
from bnfreeze.fold.planner import Plan, plan
from bnfreeze.fold.rewrite import apply_plan, copy_model
from bnfreeze.fold.rules import RULES, FoldRule


@dataclass
class FoldResult:
    """The folded model, the plan that made it and the report dict."""

    model: object
    plan: Plan
    parity: ParityResult | None
    report: dict


def build_report(model_label: str, fold_plan: Plan, parity: ParityResult | None, output: str | None = None) -> dict:
    return {
        "model": model_label,
        "output": output,
        "folded": [m.report_entry() for m in fold_plan.folds],
        "kept": [k.report_entry() for k in fold_plan.kept],
        "parity": parity.as_dict() if parity is not None else None,
    }


def fold(
    model,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    check: bool = True,
    seed: int = 0,
    rules: Sequence[FoldRule] = RULES,
) -> FoldResult:
    """Fold the BatchNormalization layers of ``model`` into neighbouring linear layers.

    ``model`` (a Sequential or Functional Keras model) is not modified. The
    result's ``.model`` is a new model of standard Keras layers with the same
    input and output names; ``.report`` says which BNs folded into which layer
    and why the others stay. With ``check`` (the default) the folded model is
    compared with ``model`` on seeded random inputs (one sample and a batch);
    if any output differs by more than ``atol`` and by more than ``rtol`` times
    the output's largest magnitude, :class:`~bnfreeze.errors.ParityError` is
    raised (its ``.parity`` holds the numbers).
    """
    tolerance = Tolerance(atol=atol, rtol=rtol).resolved(model)
    fold_plan = plan(model, rules)
    folded = apply_plan(model, fold_plan.folds) if fold_plan.folds else copy_model(model)
    parity = check_models(model, folded, tolerance, seed=seed) if check else None
    report = build_report(model.name, fold_plan, parity)
    if parity is not None and not parity.passed:
        raise ParityError(
            f"the folded model differs from {model.name}: max_abs {parity.max_abs:.3g}, "
            f"max_rel {parity.max_rel:.3g} ({tolerance.describe()})",
            parity,
        )
    return FoldResult(model=folded, plan=fold_plan, parity=parity, report=report)

