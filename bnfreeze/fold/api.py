"""``bnfreeze.fold``: fold every BN that can be folded exactly, and prove it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bnfreeze.compare import Tolerance
from bnfreeze.errors import InputError, KeptError, ParityError
from bnfreeze.io.models import model_label
from bnfreeze.parity import ParityResult, check_models
from bnfreeze.fold.plain import PlainModel, plain_model
from bnfreeze.fold.planner import Dropped, Plan, plan
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
    #: how the model was read (classes read as their graph, layers traced, preprocessing dropped)
    plain: PlainModel | None = None


def build_report(model_label: str, fold_plan: Plan, parity: ParityResult | None, output: str | None = None,
                 plain: PlainModel | None = None) -> dict:
    """The fold report: every BN of the model is in ``folded``, ``kept`` or ``dropped``.

    ``structure`` lists what the plain reading of the model did (classes read as
    their Functional graph, layers traced, kept opaque, preprocessing layers
    dropped or pinned); ``default_call`` says how the original's default call
    ``model(x)`` differs from its inference call, where it does by design.
    """
    report = {
        "model": model_label,
        "output": output,
        "folded": [m.report_entry() for m in fold_plan.folds],
        "kept": [k.report_entry() for k in fold_plan.kept],
        "dropped": [d.report_entry() for d in fold_plan.dropped],
        "structure": plain.notes_dicts() if plain is not None else [],
        "default_call": default_call_note(plain),
        "parity": parity.as_dict() if parity is not None else None,
    }
    return report


def default_call_note(plain: PlainModel | None) -> str | None:
    """How the original's default call ``model(x)`` differs from its inference call, or None."""
    if plain is None or not plain.default_call_changed:
        return None
    names = [n.layer for n in plain.notes if n.action in ("dropped", "pinned")] + list(plain.pinned_calls)
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return (f"under model(x) the original passes training=True on from {shown} (layers whose call defaults to "
            "training=True, as Keras's preprocessing layers do): they and the layers after them run in training "
            "mode there (BNs on batch statistics, "
            "augmentation and dropout active). predict, serving and every export call it with training=False; "
            "the output computes that under both calls")


def fold_in_rounds(model, rules: Sequence[FoldRule] = RULES, *, opaque: dict | None = None,
                   fresh: bool = False):
    """Plan and rewrite until no fold waits on another; return the folded model and the combined plan.

    A fold that rewrites a BN that folds away in the same round (a BN merged
    into the BN before it, :mod:`bnfreeze.fold.rules.backward_batch_norm`, while
    that BN folds into its convolution; a pre-activation BN whose shift would go
    into the beta of such a BN) waits, and a merge gives the merged BN
    new neighbours: in both cases the next round plans again on the rewritten
    model. Graphs are
    acyclic, so every round with a waiting fold also applies one, and the
    number of rounds is at most the number of BNs. Most models take one round.

    ``model`` is a plain model (:mod:`bnfreeze.fold.plain`); ``fresh`` says it was
    built for this fold, so it is returned as it is when nothing folds.
    """
    folds: list[Match] = []
    current = model
    while True:
        round_plan = plan(current, rules, opaque=opaque)
        removed = {(m.site.graph.path, m.site.name) for m in round_plan.folds}
        ready = [m for m in round_plan.folds
                 if not any((m.site.graph.path, name) in removed for name in m.targets)]
        if ready:
            current = apply_plan(current, ready)
            folds.extend(ready)
        # a BN that took another's map (a merge; a pre-activation shift in its beta) has new neighbours
        merged = any(is_batch_norm(m.site.graph.layer(name)) for m in ready for name in m.targets)
        waiting = len(ready) < len(round_plan.folds)
        if not ready or not (waiting or merged):
            break  # a merge makes new neighbours (BN1 -> BN2 -> L becomes BN1 -> L): plan again
    combined = Plan(outcomes=[*folds, *round_plan.kept], per_sample=round_plan.per_sample)
    return (current if folds or fresh else copy_model(model)), combined


def _stored_precision(folded, fold_plan) -> str:
    """The lowest precision the weights a fold rewrote are stored in (float16 ones are rounded by it)."""
    from bnfreeze.compare.tolerance import lowest_precision

    targets = set()
    for match in fold_plan.folds:
        for key, value in match.report_entry().items():
            if "into" in key:
                for name in (value if isinstance(value, list) else str(value).split(", ")):
                    targets.add(str(name).split("/")[-1])
    return lowest_precision({str(v.dtype) for layer in folded._flatten_layers(include_self=False, recursive=True)
                             if layer.name in targets for v in layer.weights})


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
    plain = plain_model(model)
    if plain.unwritable:
        raise InputError(plain.unwritable)
    folded, fold_plan = fold_in_rounds(plain.model, rules, opaque=plain.opaque, fresh=plain.changed)
    fold_plan.dropped = [Dropped(name, reason) for name, reason in plain.unused_bns]
    if max_kept is not None and len(fold_plan.kept) > max_kept:
        report = build_report(model.name, fold_plan, None, plain=plain)
        names = ", ".join(k.bn for k in fold_plan.kept[:5]) + (", ..." if len(fold_plan.kept) > 5 else "")
        raise KeptError(
            f"{len(fold_plan.kept)} of {fold_plan.bn_count} BatchNormalization layer"
            f"{'s' if fold_plan.bn_count != 1 else ''} {'stays' if len(fold_plan.kept) == 1 else 'stay'}, more than the "
            f"{max_kept} allowed ({names}); the reasons are in the report",
            report,
        )
    default_reference = plain.model if plain.default_call_changed else None
    like = plain.model if not hasattr(model, "inputs") else None  # a subclassed model records no inputs
    parity = (check_models(model, folded, tolerance, seed=seed, data=data, default_reference=default_reference,
                           like=like, reading_reference=plain.model, stored=_stored_precision(folded, fold_plan))
              if check else None)
    report = build_report(model.name, fold_plan, parity, plain=plain)
    if parity is not None and not parity.passed:
        raise ParityError(
            f"the folded model differs from {model_label(model)}: {parity.failure()}",
            parity,
        )
    return FoldResult(model=folded, plan=fold_plan, parity=parity, report=report, plain=plain)
