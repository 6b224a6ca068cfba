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

from bnfreeze.fold.affine import PER_SAMPLE_NORMALIZATIONS, BNAffine, is_batch_norm
from bnfreeze.fold.graph import ModelGraph, model_kind_of_layer
from bnfreeze.fold.rules import RULES, BNSite, FoldRule, Match
from bnfreeze.fold.rules.forward import forward_stop_reason


@dataclass(frozen=True)
class Kept:
    """A BN that stays, and why."""

    bn: str
    reason: str

    def report_entry(self) -> dict:
        return {"bn": self.bn, "reason": self.reason}


@dataclass
class Plan:
    """Every fold to make and every BN to keep, in graph order."""

    outcomes: list[Match | Kept] = field(default_factory=list)
    per_sample: list[tuple[str, str]] = field(default_factory=list)

    @property
    def folds(self) -> list[Match]:
        return [o for o in self.outcomes if isinstance(o, Match)]

    @property
    def kept(self) -> list[Kept]:
        return [o for o in self.outcomes if isinstance(o, Kept)]

    @property
    def bn_count(self) -> int:
        return len(self.folds) + len(self.kept)


def _site_problem(graph: ModelGraph, name: str, layer) -> str | None:
    calls = graph.calls.get(name, [])
    if not calls:
        return f"{name} is never called in {graph.label}"
    if len(calls) > 1:
        return f"{name} is called at {len(calls)} places"
    call = calls[0]
    if call.kwargs.get("training") is True and layer.trainable:
        return f"{name} is called with training=True, so it uses batch statistics at inference"
    if len(call.inputs) != 1:
        return f"{name} has {len(call.inputs)} inputs"
    if not layer.weights:
        return f"{name} is not built (it has no weights)"
    return None


def _make_site(graph: ModelGraph, name: str, layer) -> BNSite:
    call = graph.calls[name][0]
    shape = call.input_shapes[0] if call.input_shapes else None
    rank = len(shape) if shape is not None else len(layer.input.shape)
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    if axis < 0:
        axis += rank
    return BNSite(
        graph=graph,
        name=name,
        call=call,
        layer=layer,
        axis=axis,
        rank=rank,
        affine=BNAffine.from_layer(layer),
    )


def _backward_default_reason(site: BNSite) -> str:
    graph = site.graph
    ref = site.input_ref
    if graph.is_input(ref.layer):
        return f"{site.name} normalizes the model input {ref.layer}"
    return (
        f"{site.name}'s input comes from {ref.layer} ({graph.class_name(ref.layer)}), "
        "not a layer bnfreeze folds into"
    )


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
        reason = rule.check(match)
        if reason is None:
            return match
        if reason not in reasons:
            reasons.append(reason)
    directions = {rule.direction for rule in rules}
    if "backward" in directions and "backward" not in matched_directions:
        reasons.insert(0, _backward_default_reason(site))
    if "forward" in directions and "forward" not in matched_directions:
        reasons.append(forward_stop_reason(site))
    return Kept(site.graph.qualified(site.name), "; ".join(reasons))


def plan(model, rules: Sequence[FoldRule] = RULES) -> Plan:
    """Plan the folds of every BN in ``model`` (nested models included).

    Raises :class:`~bnfreeze.errors.InputError` for a subclassed top-level model. BNs inside a
    nested subclassed model are kept with a reason.
    """
    result = Plan()
    for graph in ModelGraph(model).walk():
        for name in graph.layer_names():
            if graph.class_name(name) == "InputLayer":
                continue
            layer = graph.layer(name)
            if type(layer).__name__ in PER_SAMPLE_NORMALIZATIONS:
                result.per_sample.append((graph.qualified(name), type(layer).__name__))
                continue
            if model_kind_of_layer(layer) == "subclassed":
                for inner in _batch_norms_inside(layer):
                    result.outcomes.append(
                        Kept(
                            graph.qualified(f"{name}/{inner}"),
                            f"it is inside {name}, a subclassed model whose graph bnfreeze cannot read",
                        )
                    )
                continue
            if not is_batch_norm(layer):
                continue
            problem = _site_problem(graph, name, layer)
            if problem is not None:
                result.outcomes.append(Kept(graph.qualified(name), problem))
                continue
            result.outcomes.append(plan_site(_make_site(graph, name, layer), rules))
    return result


def _batch_norms_inside(layer) -> list[str]:
    layers = layer._flatten_layers(include_self=False, recursive=True)
    return [inner.name for inner in layers if is_batch_norm(inner)]
