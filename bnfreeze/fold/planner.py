"""Decide, for every BatchNormalization layer of a model, whether and how it folds.

The planner walks the model graph and every nested Sequential/Functional
model, makes a :class:`~bnfreeze.fold.rules.BNSite` for each BN, checks what every
rule needs of the BN itself (one call, inference mode, built) and then tries
the rules in their registered order. The first rule whose pattern matches and
whose check passes wins; otherwise the BN is kept with the reasons the rules
gave.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from bnfreeze.fold.affine import BNAffine
from bnfreeze.fold.classes import (
    PER_SAMPLE_NORMALIZATIONS,
    batch_norms_inside,
    is_batch_norm,
    is_exact_batch_norm,
    is_exactly,
    is_keras_op,
    subclass_reason,
)
from bnfreeze.fold.graph import ModelGraph, model_kind_of_layer
from bnfreeze.fold.rules import RULES, BNSite, FoldRule, Match
from bnfreeze.fold.rules.backward import walk_backward
from bnfreeze.fold.rules.forward import forward_stop_reason
from bnfreeze.fold.training import TrainingModes, probe_training_modes, recorded_training


@dataclass(frozen=True)
class Kept:
    """A BN that stays, and why."""

    bn: str
    reason: str

    def report_entry(self) -> dict:
        return {"bn": self.bn, "reason": self.reason}


@dataclass(frozen=True)
class Dropped:
    """A BN the plain model does not hold (a traced call never reaches it), and why."""

    bn: str
    reason: str

    def report_entry(self) -> dict:
        return {"bn": self.bn, "reason": self.reason}


@dataclass
class Plan:
    """Every fold to make and every BN to keep, in graph order (and the BNs no call reaches)."""

    outcomes: list[Match | Kept] = field(default_factory=list)
    per_sample: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def folds(self) -> list[Match]:
        return [o for o in self.outcomes if isinstance(o, Match)]

    @property
    def kept(self) -> list[Kept]:
        return [o for o in self.outcomes if isinstance(o, Kept)]

    @property
    def bn_count(self) -> int:
        return len(self.folds) + len(self.kept) + len(self.dropped)


def _training_cause(graph: ModelGraph, name: str) -> str:
    """Why BN ``name`` receives ``training=True`` under the default call, as far as the config says."""
    call = graph.calls[name][0]
    if recorded_training(call.kwargs.get("training")):
        return f"{name} is called with training={call.kwargs.get('training')!r}"
    scope = graph
    while scope.parent is not None:
        outer = scope.parent
        model_name = scope.path[-1]
        if any(recorded_training(c.kwargs.get("training")) for c in outer.calls.get(model_name, [])):
            return f"{name} is inside {outer.qualified(model_name)}, which is called with training=True"
        scope = outer
    return (f"{name} receives training=True under the model's default call (Keras passes it on from an "
            "earlier call with training=True)")


def _site_problem(graph: ModelGraph, name: str, bn) -> str | None:
    """What the BN's own call forbids (every rule needs one call, in inference mode, built)."""
    calls = graph.calls.get(name, [])
    if not calls:
        return f"{name} is never called in {graph.label}"
    if len(calls) > 1:
        return f"{name} is called at {len(calls)} places"
    call = calls[0]
    explicit = recorded_training(call.kwargs.get("training"))
    if bn.trainable and (explicit or graph.modes is not None and graph.modes.in_training(bn)):
        return f"{_training_cause(graph, name)}, so it uses batch statistics at inference"
    if explicit:
        return (f"{name} is frozen but called with training={call.kwargs.get('training')!r}: under the default call "
                "Keras passes that on to the layers it calls after it, and folding it away would change them")
    if explicit is False and (graph.modes is None or graph.modes.context_matters):
        return (f"{name} is called with training={call.kwargs.get('training')!r}: under the default call Keras passes "
                "that on to the layers it calls after it, and folding it away would change what they receive")
    if len(call.inputs) == 2:  # a BN takes one tensor: the other is the Keras mask that reaches it
        return (f"{name} receives a Keras mask as well as its input (from {graph.describe(call.inputs[1].layer)}); "
                "bnfreeze does not fold a BN a mask reaches")
    if len(call.inputs) != 1:
        return f"{name} has {len(call.inputs)} inputs"
    if not bn.weights:
        return f"{name} is not built (it has no weights)"
    return None


def _make_site(graph: ModelGraph, name: str, bn, wrapped: bool) -> BNSite:
    """The site of BN ``name``; for ``TimeDistributed(BN)`` the BN's axis is moved past the time axis."""
    call = graph.calls[name][0]
    shape = call.input_shapes[0] if call.input_shapes else None
    rank = len(shape) if shape is not None else len(graph.layer(name).input.shape)
    inner_rank = rank - 1 if wrapped else rank
    axis = bn.axis if isinstance(bn.axis, int) else bn.axis[0]
    axis = int(axis) % inner_rank + (1 if wrapped else 0)
    return BNSite(
        graph=graph,
        name=name,
        call=call,
        layer=bn,
        axis=axis,
        rank=rank,
        affine=BNAffine.from_layer(bn),
        label=f"{name}/{bn.name}" if wrapped else None,
    )


def _backward_default_reason(site: BNSite) -> str:
    walk = walk_backward(site)
    if walk.stop is not None:
        return walk.stop
    if walk.target is None:
        return f"{site.name} normalizes the model input {walk.target_ref.layer}"
    return f"{site.name}'s input comes from {site.graph.describe(walk.target)}, not a layer bnfreeze folds into"


def _dtype_problem(match: Match) -> str | None:
    """A fold moves the BN's map into the target (and past the ops between): they must compute
    in the BN's precision. A float32 BN folded into a float16 layer would scale inside float16
    (range 65504) and overflow where the original did not."""
    graph, bn = match.site.graph, match.site.layer
    wanted = str(bn.compute_dtype)
    if match.direction != "backward":
        # A BN on an integer tensor (a uint8 image input, say) also casts it to float: folded away, the
        # layer after it would receive the integers (a Conv2D cannot run on uint8; pooling would round)
        source = graph.layer(match.site.name)
        dtype = str(getattr(getattr(source, "input", None), "dtype", "") or "")
        if dtype and not any(dtype.startswith(kind) for kind in ("float", "bfloat")):
            first = (*match.through, match.target)[0]
            return (f"{match.site.name}'s input is {dtype}: the BN also makes it float, and folded away "
                    f"{first} would receive {dtype}")
    for name in match.involved:
        layer = graph.layer(name)
        for part in (layer, getattr(layer, "layer", None)):
            dtype = getattr(part, "compute_dtype", None)
            if part is None or dtype is None or is_keras_op(part):
                continue
            if str(dtype) != wanted:
                return (f"{match.site.name} computes in {wanted}, but {name} computes in {dtype}: "
                        "folded, the BN's scale and shift would act in the other precision")
    return None


def plan_site(site: BNSite, rules: Sequence[FoldRule]) -> Match | Kept:
    """The first rule that folds ``site``, or the reasons it is kept.

    The reasons name, for each direction, what stopped it: a rule's check,
    or (when no rule of that direction recognised its pattern) what sits
    before and after the BN.
    """
    reasons = []
    matched_directions = set()
    for rule in rules:
        match = rule.match(site)
        if match is None:
            continue
        matched_directions.add(rule.direction)
        reason = rule.check(match) or _dtype_problem(match)
        if reason is None:
            return match
        if reason not in reasons:
            reasons.append(reason)
    directions = {rule.direction for rule in rules}
    if "backward" in directions and "backward" not in matched_directions:
        reasons.insert(0, _backward_default_reason(site))
    if "forward" in directions and "forward" not in matched_directions:
        reasons.append(forward_stop_reason(site))
    return Kept(site.report_name, "; ".join(reasons))


def _plan_batch_norm(graph: ModelGraph, name: str, bn, rules: Sequence[FoldRule], wrapped: bool) -> Match | Kept:
    label = graph.qualified(f"{name}/{bn.name}" if wrapped else name)
    if not is_exact_batch_norm(bn):
        return Kept(label, subclass_reason(name, bn, "BatchNormalization"))
    problem = _site_problem(graph, name, bn)
    if problem is not None:
        return Kept(label, problem)
    site = _make_site(graph, name, bn, wrapped)
    if site.axis == 0:
        return Kept(label, f"{name} normalizes the batch axis: its statistics are not per channel")
    if wrapped and site.axis == 1:
        # TimeDistributed calls the BN on one step (batch, ...) at a time: the BN's own axis 0 is the batch axis
        return Kept(label, f"{bn.name} inside {name} normalizes the batch axis of each step: its statistics "
                           "are not per channel")
    return plan_site(site, rules)


def plan(model, rules: Sequence[FoldRule] = RULES, modes: TrainingModes | None = None,
         opaque: dict | None = None) -> Plan:
    """Plan the folds of every BN in ``model`` (nested models included).

    Every BatchNormalization anywhere in the model gets an outcome: a fold,
    or a reason it stays (a subclass of BatchNormalization, a BN inside a
    wrapper or custom layer, a BN in training mode under the default call...).
    Raises :class:`~bnfreeze.errors.InputError` for a subclassed top-level model.
    ``modes`` (which layers run in training mode under ``model(x)``) is probed
    when not given. ``model`` is read as it is: :func:`plan_model` reads any
    model plainly first (:mod:`bnfreeze.fold.plain`); ``opaque`` (a layer's
    qualified name -> :class:`~bnfreeze.fold.plain.Opaque`: why bnfreeze could
    not trace it, and the original layer, whose BNs' names reports use) words
    the reasons of the BNs inside such layers.
    """
    modes = probe_training_modes(model) if modes is None else modes
    result = Plan()
    for graph in ModelGraph(model, modes=modes).walk():
        for name in graph.layer_names():
            if graph.class_name(name) == "InputLayer":
                continue
            layer = graph.layer(name)
            if is_keras_op(layer) or model_kind_of_layer(layer) in ("sequential", "functional"):
                continue  # nested graphs are walked on their own
            if is_exactly(layer, *PER_SAMPLE_NORMALIZATIONS):
                result.per_sample.append((graph.qualified(name), type(layer).__name__))
                continue
            if is_batch_norm(layer):
                result.outcomes.append(_plan_batch_norm(graph, name, layer, rules, wrapped=False))
                continue
            if is_exactly(layer, "TimeDistributed") and is_batch_norm(layer.layer):
                result.outcomes.append(_plan_batch_norm(graph, name, layer.layer, rules, wrapped=True))
                continue
            untraced = (opaque or {}).get(graph.qualified(name))
            inside = [inner.name for inner in batch_norms_inside(untraced.layer if untraced else layer)]
            if not inside:
                continue
            if untraced:
                why = f"it is inside {name}, which bnfreeze keeps as it is: {untraced.reason}"
            elif model_kind_of_layer(layer) == "subclassed":
                why = f"it is inside {name}, a subclassed model whose graph bnfreeze cannot read"
            else:
                why = f"it is inside {graph.describe(name)}, a layer that calls it itself, out of bnfreeze's sight"
            for inner in inside:
                result.outcomes.append(Kept(graph.qualified(f"{name}/{inner}"), why))
    return result



def plan_model(model, rules: Sequence[FoldRule] = RULES):
    """Read ``model`` plainly and plan its folds: ``(PlainModel, Plan)``.

    The plan is of the plain model (its graph is the one a fold rewrites); BNs
    a traced call never reaches are in the plan's ``dropped``.
    """
    from bnfreeze.fold.plain import plain_model

    plain = plain_model(model)
    result = plan(plain.model, rules, opaque=plain.opaque)
    result.dropped = [Dropped(name, reason) for name, reason in plain.unused_bns]
    return plain, result
