"""``bnfreeze.fold``: fold every BN that can be folded exactly, and prove it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bnfreeze.compare import Tolerance
from bnfreeze.errors import KeptError, ParityError
from bnfreeze.io.models import model_label
from bnfreeze.parity import ParityResult, check_models
from bnfreeze.fold.planner import Plan, plan
from bnfreeze.fold.rewrite import apply_plan, copy_model
from bnfreeze.fold.classes import is_batch_norm
from bnfreeze.fold.rules import RULES, FoldRule, Match


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


def fold_in_rounds(model, rules: Sequence[FoldRule] = RULES):
    """Plan and rewrite until no fold waits on another; return the folded model and the combined plan.

    A fold whose target is a BN that folds away in the same round (a BN merged
    into the BN before it, :mod:`bnfreeze.fold.rules.backward_batch_norm`, while
    that BN folds into its convolution) waits, and a merge gives the merged BN
    new neighbours: in both cases the next round plans again on the rewritten
    model. Graphs are
    acyclic, so every round with a waiting fold also applies one, and the
    number of rounds is at most the number of BNs. Most models take one round.
    """
    folds: list[Match] = []
    current = model
    while True:
        round_plan = plan(current, rules)
        removed = {(m.site.graph.path, m.site.name) for m in round_plan.folds}
        ready = [m for m in round_plan.folds if (m.site.graph.path, m.target) not in removed]
        if ready:
            current = apply_plan(current, ready)
            folds.extend(ready)
        merged = any(m.target_layer is not None and is_batch_norm(m.target_layer) for m in ready)
        waiting = len(ready) < len(round_plan.folds)
        if not ready or not (waiting or merged):
            break  # a merge makes new neighbours (BN1 -> BN2 -> L becomes BN1 -> L): plan again
    combined = Plan(outcomes=[*folds, *round_plan.kept], per_sample=round_plan.per_sample)
    return (current if folds else copy_model(model)), combined


def fold(
    model,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    check: bool = True,
    seed: int = 0,
    data=None,
    max_kept: int | None = None,
    rules: Sequence[FoldRule] = RULES,
) -> FoldResult:
    """Fold the BatchNormalization layers of ``model`` into neighbouring linear layers.

    ``model`` (a Sequential or Functional Keras model) is not modified. The
    result's ``.model`` is a new model of standard Keras layers with the same
    input and output names; ``.report`` says which BNs folded into which layer
    and why the others stay (every BN of the model is in one of the two lists).

    With ``check`` (the default) the folded model is compared with ``model``
    (:func:`bnfreeze.parity.check_models`): inference on seeded inputs at two
    magnitudes, the default call ``model(x)``, and the first samples of
    ``data`` (a source from :func:`bnfreeze.open_data`) when given. If any
    output differs by more than ``atol`` and by more than ``rtol`` times the
    output's largest magnitude, :class:`~bnfreeze.errors.ParityError` is raised
    (its ``.parity`` holds the numbers). With ``max_kept``, more BNs left
    than that raise :class:`~bnfreeze.errors.KeptError` (``max_kept=0`` is
    ``--strict``).
    """
    tolerance = Tolerance(atol=atol, rtol=rtol).resolved(model)
    folded, fold_plan = fold_in_rounds(model, rules)
    if max_kept is not None and len(fold_plan.kept) > max_kept:
        report = build_report(model.name, fold_plan, None)
        names = ", ".join(k.bn for k in fold_plan.kept[:5]) + (", ..." if len(fold_plan.kept) > 5 else "")
        raise KeptError(
            f"{len(fold_plan.kept)} of {fold_plan.bn_count} BatchNormalization layer"
            f"{'s' if fold_plan.bn_count != 1 else ''} {'stays' if len(fold_plan.kept) == 1 else 'stay'}, more than the "
            f"{max_kept} allowed ({names}); the reasons are in the report",
            report,
        )
    parity = check_models(model, folded, tolerance, seed=seed, data=data) if check else None
    report = build_report(model.name, fold_plan, parity)
    if parity is not None and not parity.passed:
        raise ParityError(
            f"the folded model differs from {model_label(model)}: max_abs {parity.max_abs:.3g}, "
            f"max_rel {parity.max_rel:.3g} ({tolerance.describe()})",
            parity,
        )
    return FoldResult(model=folded, plan=fold_plan, parity=parity, report=report)
