"""What every forward fold (BN, then ops it commutes with, then a linear layer L) has in common.

The BN computes ``y = s * x + t`` per channel. Moved past the commuting ops
(:mod:`bnfreeze.fold.rules.commuting`), it reaches L's input, and

    L(s * x + t) = L_W'(x) + L_W(t)      with W' = W scaled by s per *input* channel

so L's kernel is scaled per input channel and the response of L's kernel to
the constant ``t`` is added to its bias. The second term is a constant only
where L sees ``t`` at every kernel tap: always for Dense, and for
convolutions with 'valid' padding. With zero padding ('same', 'causal') the
border windows see zeros instead of ``t``, so the fold is exact there only if
``t`` is zero or the padding is empty (a 1x1 kernel, say).

Every tensor on the path must go to exactly one consumer (the BN's output
used once), the ops must not be called with ``training=True``, and L must be
called once.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from bnfreeze.fold.training import recorded_training
from bnfreeze.fold.graph import Call, TensorRef
from bnfreeze.fold.rules.backward import bias_layout_problem, weight_problem
from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, TargetUpdate, cast_like
from bnfreeze.fold.rules.commuting import Layout, Step, commuting_op_for


@dataclass(frozen=True)
class ForwardWalk:
    """The path from a BN's output through the ops it commutes with.

    ``end`` is the first layer that is not such an op (a candidate target);
    ``stop`` says why the walk ended before one, when it did.
    """

    through: tuple[str, ...]
    end: str | None
    end_call: Call | None
    layout: Layout
    stop: str | None


def walk_forward(site: BNSite) -> ForwardWalk:
    graph = site.graph
    shape = site.call.input_shapes[0]
    layout = Layout(shape=tuple(shape[1:]) if shape is not None else (None,) * (site.rank - 1), axis=site.axis)
    through: list[str] = []
    current, ref = site.name, site.output_ref

    def stopped(reason: str, end=None, call=None) -> ForwardWalk:
        return ForwardWalk(tuple(through), end, call, layout, reason)

    while True:
        consumers = graph.consumers_of(ref)
        if not consumers:
            return stopped(f"{current}'s output is not used")
        if len(consumers) > 1:
            names = " and ".join(c.describe() for c in consumers[:2])
            return stopped(f"{current}'s output feeds both {names}")
        call = consumers[0].call
        if call is None:
            return stopped(f"{current}'s output is a model output")
        name = call.layer
        if len(call.inputs) != 1:
            return stopped(f"{graph.describe(name)} after {current} combines several inputs", name, call)
        if recorded_training(call.kwargs.get("training")):
            return stopped(f"{name} is called with training={call.kwargs.get('training')!r}", name, call)
        if graph.in_training(name):
            return stopped(f"{name} runs in training mode under the model's default call", name, call)
        layer = graph.layer(name)
        op = commuting_op_for(layer)
        if op is None:
            return ForwardWalk(tuple(through), name, call, layout, None)
        out = TensorRef(name, call.node, 0)
        recorded = graph.shape_of(out)
        step = Step(name, layer, call, layout, site.affine, site.name, tuple(recorded[1:]) if recorded else None)
        result = op.transfer(step)
        if isinstance(result, str):
            return stopped(result, name, call)
        through.append(name)
        layout = result
        current, ref = name, out


def forward_stop_reason(site: BNSite) -> str:
    """Why no forward rule applies to ``site``, for the report."""
    from bnfreeze.fold.classes import is_exactly

    walk = walk_forward(site)
    if walk.stop is not None:
        return walk.stop
    layer = site.graph.layer(walk.end)
    if is_exactly(layer, *NONLINEARITIES):
        from bnfreeze.fold.classes import activation_name

        what = activation_name(layer) if hasattr(layer, "activation") else type(layer).__name__.lower()
        return f"{walk.end} applies {what} after {site.name}, and a nonlinearity does not commute with the BN"
    return (
        f"{site.graph.describe(walk.end)} after {site.name} "
        "is neither a layer bnfreeze folds into nor an op the BN commutes with"
    )


NONLINEARITIES = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax")


def pads_nothing(layer, spatial_shape) -> bool:
    """True when a convolution's 'same'/'causal' padding adds no element."""
    if layer.padding == "valid":
        return True
    for size, kernel, stride, dilation in zip(spatial_shape, layer.kernel_size, layer.strides, layer.dilation_rate):
        extent = (kernel - 1) * dilation + 1
        if extent == 1:
            continue
        if layer.padding == "causal" or size is None:
            return False
        total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
        if total:
            return False
    return True


class ForwardFold(FoldRule):
    """Fold a BN into the linear layer its output reaches through commuting ops."""

    direction = "forward"

    def match(self, site: BNSite) -> Match | None:
        walk = walk_forward(site)
        if walk.stop is not None or walk.end is None:
            return None
        if type(site.graph.layer(walk.end)) not in self.target_classes():
            return None
        return Match(
            rule=self,
            site=site,
            target=walk.end,
            target_call=walk.end_call,
            through=walk.through,
            details={"layout": walk.layout},
        )

    def check(self, match: Match) -> str | None:
        calls = match.site.graph.calls[match.target]
        if len(calls) > 1:
            return f"{match.target} is called at {len(calls)} places"
        problem = weight_problem(match.target, match.target_layer, self.weight_names)
        output = TensorRef(match.target, match.target_call.node, 0)
        return (problem or self.check_target(match, match.details["layout"])
                or bias_layout_problem(match.target, match.target_layer, match.site.graph.shape_of(output)))

    #: The target's weights that must be plain floats.
    weight_names: tuple[str, ...] = ("kernel",)

    @abstractmethod
    def check_target(self, match: Match, layout: Layout) -> str | None:
        """Target-specific reasons to decline (channel layout, padding)."""

    @abstractmethod
    def fold_weights(self, match: Match, weights: dict[str, np.ndarray], layout: Layout) -> dict[str, np.ndarray]:
        """New float64 weights (including ``bias``) of the target."""

    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        originals = {k: np.asarray(v) for k, v in weights.items()}
        as_float = {k: v.astype(np.float64) for k, v in originals.items()}
        new = self.fold_weights(match, as_float, match.details["layout"])
        like = dict(originals)
        like.setdefault("bias", originals[self.weight_names[-1]])
        result = dict(originals)
        result.update({k: cast_like(v, like[k]) for k, v in new.items()})
        return TargetUpdate(weights=result, config={"use_bias": True})

    # -- shared by the convolution targets -------------------------------------------
    def conv_layout_problem(self, match: Match, layout: Layout) -> str | None:
        layer = match.target_layer
        axis = 1 if layer.data_format == "channels_first" else layout.rank - 1
        if layout.axis != axis:
            return f"{match.target} does not read {match.site.name}'s channels on its channel axis"
        spatial = layout.shape[1:] if layer.data_format == "channels_first" else layout.shape[:-1]
        if match.site.affine.has_shift() and not pads_nothing(layer, spatial):
            return f"zero padding of {match.target} makes the shift position dependent"
        return None
