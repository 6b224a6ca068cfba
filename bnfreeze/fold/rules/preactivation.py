"""What every pre-activation fold (BN, then a positively homogeneous activation, then linear layers) has in common.

In pre-activation networks (ResNet v2, DenseNet) a BN reads an Add, a
Concatenate or a pooling layer and feeds a ReLU and then convolutions, so
it folds neither backward (no linear layer before it) nor forward (the ReLU
between). The BN computes ``y = s * x + t`` per channel. Where ``s_c > 0``,

    y_c = s_c * (x_c + a_c),    a_c = t_c / s_c

and every op ``g`` on the way to the next linear layers satisfies
``g(s * z) = s * g(z)`` (the scale *commutes*; the tracked channel of each
element may move):

* a positively homogeneous activation, ``f(s z) = s f(z)`` for ``s > 0``:
  ``ReLU`` without ``max_value`` and with ``threshold`` 0 (any
  ``negative_slope``), ``LeakyReLU``, ``PReLU`` (any alphas: they act on the
  sign, which a positive scale keeps), ``Activation('relu')`` and
  ``Activation('leaky_relu')``. ReLU6 and a ReLU with ``max_value`` or a
  threshold are not (``min(s z, 6) != s min(z, 6)``), nor are smooth ones
  (swish, gelu, elu, tanh, ...): the BN is kept, saying so;
* max pooling (monotone: needs ``s > 0``), average pooling, global pooling,
  zero padding (``s * 0 = 0``: with the shift kept out of the way the border
  is exact, whatever the shift), cropping, upsampling, Flatten, Reshape,
  Permute, RepeatVector, the identities at inference (Dropout...) — the ops
  of :mod:`bnfreeze.fold.rules.commuting`, each given the scale alone;
* ``Concatenate`` along the channel axis: the BN's channels are one block of
  its output, the other inputs' channels get the factor 1.

A linear layer ``L`` (Conv1D/2D/3D, grouped or not, DepthwiseConv1D/2D,
SeparableConv1D/2D, Dense, Conv1D/2D/3DTranspose) then computes
``L(s' * u) = L_W'(u)`` with ``W'`` its kernel scaled per *input* channel by
the factor ``s'`` each input channel carries. This is exact whatever ``L``'s
padding, stride, dilation or groups: zero padding pads zeros, which the
scale leaves zeros, and every tap is linear in its input. So

    L(P(BN(x))) = L_W'(P(x + a))

for the ops ``P`` between: the BN's scale moves into the kernel of **every**
consumer (all of them or the BN is kept), and what stays of the BN is the
per-channel add ``x + a`` before ``P`` — or nothing, where the add moves into
an earlier bias exactly (:mod:`bnfreeze.fold.rules.preactivation_bias`;
otherwise :mod:`bnfreeze.fold.rules.preactivation_add`).

Other scales:

* ``s_c < 0``: ``relu(s z) = |s| relu(-z)``: a per-channel sign flip would
  stay with the add (the multiply the fold removes), so a BN with a negative
  scale is kept where the way to the consumers holds an activation or max
  pooling. On a way of linear ops alone (zero padding, average pooling,
  Concatenate, Flatten...) the sign passes like any factor and the fold is
  exact.
* ``s_c = 0``: the channel is the constant ``t_c``. It folds when it reaches
  the consumers as 0 — ``t_c = 0``, or every way from the BN starts with an
  activation that maps ``t_c`` to 0 (a ReLU and ``t_c <= 0``) — with the
  kernel entries of the channel set to 0; otherwise the BN is kept.

Every tensor on the way goes to the ops and layers of the fold only (a model
output or any other consumer keeps the BN), no op runs in training mode, and
every consumer is called once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from bnfreeze.fold.affine import BNAffine
from bnfreeze.fold.classes import activation_name, is_exactly
from bnfreeze.fold.graph import Call, TensorRef
from bnfreeze.fold.rules.backward import weight_problem
from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, TargetUpdate, cast_like
from bnfreeze.fold.rules.commuting import Layout, Step, commuting_op_for
from bnfreeze.fold.rules.commuting.identities import InferenceIdentity
from bnfreeze.fold.rules.forward import NONLINEARITIES
from bnfreeze.fold.rules.forward_conv import input_channel_index
from bnfreeze.fold.training import recorded_training

#: The linear layers a pre-activation BN's scale moves into (per input channel), with their kernels.
CONSUMER_KERNELS = {
    "Conv1D": "kernel", "Conv2D": "kernel", "Conv3D": "kernel",
    "DepthwiseConv1D": "kernel", "DepthwiseConv2D": "kernel",
    "SeparableConv1D": "depthwise_kernel", "SeparableConv2D": "depthwise_kernel",
    "Dense": "kernel",
    "Conv1DTranspose": "kernel", "Conv2DTranspose": "kernel", "Conv3DTranspose": "kernel",
}
MAX_POOLING = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
               "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")


# -- activations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Homogeneity:
    """What an activation layer does to a positive scale and to a constant.

    ``problem`` says why ``f(s z) != s f(z)`` (None when it holds for every
    ``s > 0``); ``vanishes(t)`` is True where ``f(t) == 0``.
    """

    what: str
    problem: str | None
    vanishes: Callable[[np.ndarray], np.ndarray]


def _zero_only(t):
    return np.asarray(t) == 0


def _not_positive(t):
    return np.asarray(t) <= 0


def activation_homogeneity(name: str, layer) -> Homogeneity | None:
    """How activation layer ``name`` treats a positive scale, or None when ``layer`` is no activation."""
    if not is_exactly(layer, *NONLINEARITIES):
        return None
    if is_exactly(layer, "ReLU"):
        if layer.max_value is not None:
            return Homogeneity("relu", f"{name} caps at max_value={layer.max_value:g} (min(s*x, m) != s*min(x, m)), "
                                       "so it is not positively homogeneous", _zero_only)
        if float(layer.threshold) != 0.0:
            return Homogeneity("relu", f"{name} has threshold={layer.threshold:g}, so it is not positively "
                                       "homogeneous (relu(s*x) != s*relu(x) near the threshold)", _zero_only)
        slope = float(layer.negative_slope)
        return Homogeneity("relu", None, _not_positive if slope == 0.0 else _zero_only)
    if is_exactly(layer, "LeakyReLU"):
        slope = float(layer.negative_slope)
        return Homogeneity("leaky_relu", None, _not_positive if slope == 0.0 else _zero_only)
    if is_exactly(layer, "PReLU"):
        return Homogeneity("prelu", None, _zero_only)
    if is_exactly(layer, "Activation"):
        what = activation_name(layer)
        if what == "relu":
            return Homogeneity(what, None, _not_positive)
        if what == "leaky_relu":
            return Homogeneity(what, None, _zero_only)
        if what == "relu6":
            problem = f"{name} applies relu6, capped at 6 (min(s*x, 6) != s*min(x, 6)), so it is not positively homogeneous"
        else:
            problem = f"{name} applies {what}, which is not positively homogeneous ({what}(s*x) != s*{what}(x))"
        return Homogeneity(what, problem, _zero_only)
    what = type(layer).__name__.lower()
    if is_exactly(layer, "Softmax"):
        return Homogeneity(what, f"{name} applies softmax, which mixes the channels", _zero_only)
    return Homogeneity(what, f"{name} applies {what}, which is not positively homogeneous", _zero_only)


# -- the scale's way to the consumers ------------------------------------------------------------
@dataclass(frozen=True)
class ScaledLayer:
    """A linear layer the BN's scale moves into: its call, the layout it reads, the BN channel of each
    virtual channel of that layout (-1: a channel from elsewhere, factor 1)."""

    name: str
    call: Call
    layout: Layout
    channel_of: np.ndarray


@dataclass(frozen=True)
class ScaleTree:
    """Every way from a BN's output to the linear layers that take its scale.

    ``through``: the ops crossed (each once); ``consumers``: the linear
    layers; ``signed``: ops that need a positive scale (activations, max
    pooling); ``heads``: for every way, the first op that is not an identity
    at inference, with its :class:`Homogeneity` when it is an activation;
    ``activation``: whether an activation was reached; ``stop``/``end``: why
    and where the walk ended early.
    """

    through: tuple[str, ...]
    consumers: tuple[ScaledLayer, ...]
    signed: tuple[str, ...]
    heads: tuple[tuple[str, Homogeneity | None], ...]
    activation: bool
    stop: str | None = None
    end: str | None = None


@dataclass
class _Way:
    ref: TensorRef
    name: str
    layout: Layout
    channel_of: np.ndarray
    head: tuple[str, Homogeneity | None] | None


def walk_scale(site: BNSite) -> ScaleTree:
    """Follow the BN's output through every op its scale commutes with, to the linear layers."""
    graph = site.graph
    shape = site.call.input_shapes[0]
    start = Layout(shape=tuple(shape[1:]) if shape is not None else (None,) * (site.rank - 1), axis=site.axis)
    through: list[str] = []
    consumers: list[ScaledLayer] = []
    signed: list[str] = []
    heads: list[tuple[str, Homogeneity | None]] = []
    foreign: list[tuple[str, TensorRef]] = []
    visited: set[tuple[str, int]] = set()
    activation = False
    ways = [_Way(site.output_ref, site.name, start, np.arange(site.affine.channels), None)]

    def stopped(reason: str, end: str | None = None) -> ScaleTree:
        return ScaleTree(tuple(through), tuple(consumers), tuple(signed), tuple(heads), activation, reason, end)

    while ways:
        way = ways.pop()
        uses = graph.consumers_of(way.ref)
        if not uses:
            return stopped(f"{way.name}'s output is not used")
        calls_seen: set[tuple[str, int]] = set()
        for use in uses:
            call = use.call
            if call is None:
                return stopped(f"{way.name}'s output is a model output, so {site.name}'s scale cannot move "
                               "into a layer after it")
            key = (call.layer, call.node)
            if key in calls_seen:
                continue
            calls_seen.add(key)
            name = call.layer
            if key in visited:
                return stopped(f"{graph.describe(name)} joins two ways from {site.name}", name)
            visited.add(key)
            if recorded_training(call.kwargs.get("training")):
                return stopped(f"{name} is called with training={call.kwargs.get('training')!r}", name)
            if graph.in_training(name):
                return stopped(f"{name} runs in training mode under the model's default call", name)
            layer = graph.layer(name)
            if is_exactly(layer, *CONSUMER_KERNELS):
                consumers.append(ScaledLayer(name, call, way.layout, way.channel_of))
                heads.append(way.head or (name, None))
                continue
            out = TensorRef(name, call.node, 0)
            homogeneity = activation_homogeneity(name, layer)
            if homogeneity is not None:
                activation = True
                if homogeneity.problem:
                    return stopped(homogeneity.problem, name)
                signed.append(name)
                through.append(name)
                ways.append(_Way(out, name, way.layout, way.channel_of, way.head or (name, homogeneity)))
                continue
            if is_exactly(layer, "Concatenate"):
                result = _concatenate(graph, name, layer, call, way, site.name)
                if isinstance(result, str):
                    return stopped(result, name)
                foreign.extend((name, ref) for ref in call.inputs if ref != way.ref)
                through.append(name)
                ways.append(_Way(out, name, result[0], result[1], way.head or (name, None)))
                continue
            op = commuting_op_for(layer)
            if op is None or len(call.inputs) != 1:
                return stopped(f"{graph.describe(name)} after {way.name} is neither a layer bnfreeze scales nor an "
                               f"op {site.name}'s scale moves through", name)
            channels = len(way.channel_of)
            recorded = graph.shape_of(out)
            step = Step(name, layer, call, way.layout, BNAffine(np.ones(channels), np.zeros(channels)), site.name,
                        tuple(recorded[1:]) if recorded else None)
            layout = op.transfer(step)
            if isinstance(layout, str):
                return stopped(layout, name)
            if is_exactly(layer, *MAX_POOLING):
                signed.append(name)
            through.append(name)
            head = way.head if isinstance(op, InferenceIdentity) else (way.head or (name, None))
            ways.append(_Way(out, name, layout, way.channel_of, head))
    crossed = set(through) | {site.name}
    for concatenate, ref in foreign:
        if ref.layer in crossed:
            return stopped(f"{concatenate} joins two ways from {site.name}", concatenate)
    return ScaleTree(tuple(through), tuple(consumers), tuple(signed), tuple(heads), activation)


def _concatenate(graph, name, layer, call, way: _Way, bn: str):
    """The layout after a Concatenate of the BN's channels with others, and the BN channel of each."""
    layout = way.layout
    rank = layout.rank
    axis = int(layer.axis) % rank
    if layout.mapping is not None or layout.axis != axis:
        return f"{name} does not concatenate along {bn}'s channel axis"
    parts = []
    for ref, shape in zip(call.inputs, call.input_shapes):
        if ref == way.ref:
            parts.append(way.channel_of)
            continue
        size = shape[axis] if shape is not None and len(shape) == rank else None
        if size is None:
            return f"{name} concatenates a tensor of unknown channel count"
        parts.append(np.full(int(size), -1))
    channel_of = np.concatenate(parts)
    shape = list(layout.shape)
    shape[axis - 1] = len(channel_of)
    return Layout(shape=tuple(shape), axis=axis), channel_of


# -- the consumers' kernels ----------------------------------------------------------------------
def input_channels(scaled: ScaledLayer, layer) -> np.ndarray | str:
    """The BN channel (-1: none) of each input channel of consumer ``layer``, or why it cannot be read."""
    layout, channel_of = scaled.layout, scaled.channel_of
    kernel_name = CONSUMER_KERNELS[type(layer).__name__]
    shape = tuple(next(v for v in layer.weights if v.name == kernel_name).shape)
    if is_exactly(layer, "Dense"):
        rows = layout.last_axis_channels(len(channel_of))
        if rows is None or len(rows) != shape[0]:
            return f"{scaled.name} does not read the BN's channels on its last axis"
        return channel_of[np.asarray(rows)]
    axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else layout.rank - 1
    if layout.mapping is not None or layout.axis != axis:
        return f"{scaled.name} does not read the BN's channels on its channel axis"
    if type(layer).__name__.endswith("Transpose"):
        count = shape[-1]
    elif is_exactly(layer, "Conv1D", "Conv2D", "Conv3D"):
        count = shape[-2] * int(layer.groups)
    else:  # depthwise and separable: (*k, C, multiplier)
        count = shape[-2]
    if count != len(channel_of):
        return f"{scaled.name} reads {count} channels where the BN's layout has {len(channel_of)}"
    return channel_of


def scale_kernel(layer, kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """``kernel`` with every entry multiplied by the factor of the input channel it reads."""
    if is_exactly(layer, "Dense"):
        return kernel * factor[:, np.newaxis]
    if type(layer).__name__.endswith("Transpose"):  # (*k, out, in)
        return kernel * factor
    if is_exactly(layer, "Conv1D", "Conv2D", "Conv3D"):  # (*k, in / groups, out)
        return kernel * factor[input_channel_index(kernel.shape, int(layer.groups))]
    return kernel * factor[:, np.newaxis]  # depthwise kernels (*k, C, multiplier)


# -- the rule ------------------------------------------------------------------------------------
def effective_scale(affine: BNAffine) -> np.ndarray:
    """The factor each channel's consumers take: ``s``, and 0 where ``s = 0``."""
    return np.where(affine.scale == 0, 0.0, affine.scale)


def shift_before(affine: BNAffine) -> np.ndarray:
    """``a = t / s`` per channel, 0 where ``s = 0`` (such a channel folds only when it reaches its consumers as 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(affine.scale == 0, 0.0, affine.shift / affine.scale)


class PreActivationFold(FoldRule):
    """Move a BN's scale into every linear layer after its activation; subclasses place the shift."""

    direction = "pre-activation"
    target_class_names = tuple(CONSUMER_KERNELS)

    # -- hooks ---------------------------------------------------------------------------------
    def place_shift(self, site: BNSite, tree: ScaleTree):
        """Where this rule puts ``a = t / s`` (an object its other hooks read), or None: not this rule's."""
        raise NotImplementedError

    def shift_problem(self, match: Match) -> str | None:
        """Why the shift cannot go where :meth:`place_shift` put it, or None."""
        return None

    def shift_updates(self, match: Match, weights_of) -> dict[str, TargetUpdate]:
        """Updates of the layers that take the shift (none by default)."""
        return {}

    def shift_layers(self, placement) -> tuple[str, ...]:
        """The layers, besides the consumers, whose weights the placement rewrites."""
        return ()

    def shift_through(self, placement) -> tuple[str, ...]:
        return ()

    # -- the contract ----------------------------------------------------------------------------
    def match(self, site: BNSite) -> Match | None:
        tree = walk_scale(site)
        if tree.stop is not None and not tree.activation:
            return None  # no activation on the way: the forward rules' reasons say what stops it
        placement = self.place_shift(site, tree)
        if placement is None:
            return None
        consumers = [c.name for c in tree.consumers]
        target = consumers[0] if consumers else (tree.end or site.name)
        calls = site.graph.calls.get(target) or [site.call]
        return Match(
            rule=self, site=site, target=target, target_call=calls[0], through=tree.through,
            also=(*consumers[1:], *self.shift_layers(placement)), shift_through=self.shift_through(placement),
            details={"tree": tree, "placement": placement},
        )

    def check(self, match: Match) -> str | None:
        return scale_problem(match.site, match.details["tree"]) or self.shift_problem(match)

    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        """The first consumer's update (:meth:`rewrite_layers` gives every layer's)."""
        return self.consumer_update(match, match.details["tree"].consumers[0], weights)

    def consumer_update(self, match: Match, scaled: ScaledLayer, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        """Consumer ``scaled`` with its kernel scaled per input channel (factor 1 for channels from elsewhere)."""
        layer = match.site.graph.layer(scaled.name)
        channels = input_channels(scaled, layer)
        kernel_name = CONSUMER_KERNELS[type(layer).__name__]
        factor_of = effective_scale(match.site.affine)
        factor = np.where(channels >= 0, factor_of[np.maximum(channels, 0)], 1.0)
        kernel = np.asarray(weights[kernel_name])
        new = {k: np.asarray(v) for k, v in weights.items()}
        new[kernel_name] = cast_like(scale_kernel(layer, kernel.astype(np.float64), factor), kernel)
        return TargetUpdate(weights=new)

    def rewrite_layers(self, match: Match, weights_of) -> dict[str, TargetUpdate]:
        updates = {scaled.name: self.consumer_update(match, scaled, weights_of(scaled.name))
                   for scaled in match.details["tree"].consumers}
        updates.update(self.shift_updates(match, weights_of))
        return updates

    def shift_report(self, match: Match) -> tuple[dict, str]:
        """Report keys saying where the shift went, and the same in words."""
        return {}, ""

    def report_details(self, match: Match) -> dict:
        graph, tree = match.site.graph, match.details["tree"]
        scale_into = [graph.qualified(c.name) for c in tree.consumers]
        through = f" (through {', '.join(graph.qualified(n) for n in tree.through)})" if tree.through else ""
        keys, words = self.shift_report(match)
        return {"into": ", ".join(scale_into), "scale_into": scale_into, **keys,
                "detail": f"scale into {', '.join(scale_into)}{through}; {words}"}


def scale_problem(site: BNSite, tree: ScaleTree) -> str | None:
    """Why the BN's scale cannot move into its consumers (the walk's stop, a scale's sign, a consumer), or None."""
    if tree.stop is not None:
        return tree.stop
    if not tree.consumers:
        return f"{site.name}'s output reaches no linear layer"
    affine = site.affine
    bad = np.flatnonzero(~np.isfinite(affine.scale) | ~np.isfinite(affine.shift))
    if bad.size:
        return f"{site.name}'s scale or shift is not finite on channel {int(bad[0])}"
    negative = np.flatnonzero(affine.scale < 0)
    if negative.size and tree.signed:
        channel = int(negative[0])
        return (f"{site.name}'s scale is negative on channel {channel} ({affine.scale[channel]:.3g}): "
                f"{tree.signed[0]} needs a positive scale (relu(s*x) = |s|*relu(-x) for s < 0, a sign flip "
                "that would stay), so the pre-activation fold keeps it")
    for channel in np.flatnonzero(affine.scale == 0):
        shift = affine.shift[channel]
        if shift == 0:
            continue
        for head, homogeneity in tree.heads:
            if homogeneity is None or not bool(homogeneity.vanishes(shift)):
                why = (f"{head} maps it to {homogeneity.what}({shift:.3g}) != 0" if homogeneity is not None
                       else f"{head} comes before any activation")
                return (f"{site.name}'s scale is 0 on channel {int(channel)}: the channel is the constant "
                        f"{shift:.3g}, which does not reach the layers after it as 0 ({why})")
    graph = site.graph
    for scaled in tree.consumers:
        layer = graph.layer(scaled.name)
        calls = graph.calls[scaled.name]
        if len(calls) > 1:
            return f"{scaled.name} is called at {len(calls)} places"
        if len(scaled.call.inputs) != 1:
            return f"{scaled.name} has {len(scaled.call.inputs)} inputs"
        problem = weight_problem(scaled.name, layer, (CONSUMER_KERNELS[type(layer).__name__],))
        channels = input_channels(scaled, layer)
        if problem or isinstance(channels, str):
            return problem or channels
    return None


def unique_name(graph, wanted: str) -> str:
    """``wanted``, or ``wanted_1``, ``wanted_2``... where the graph already has a layer of that name."""
    taken = set(graph.entries)
    name, n = wanted, 0
    while name in taken:
        n += 1
        name = f"{wanted}_{n}"
    return name
