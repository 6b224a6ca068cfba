"""Pre-activation fold, the shift moving into an earlier bias: nothing of the BN stays.

With the BN written as ``s * (x + a)``, ``a = t / s``
(:mod:`bnfreeze.fold.rules.preactivation`), the scale moves into the
consumers' kernels and the add ``x + a`` is needed only by the BN's ways.
Where ``x`` reaches the BN alone, ``x + a`` can be computed by the layers
that make ``x``, each tensor on the way going only to the next op:

* a linear layer with a linear activation (Conv1D/2D/3D, DepthwiseConv1D/2D,
  SeparableConv1D/2D, Dense, Conv1D/2D/3DTranspose) computes
  ``W * u + b``: ``b' = b + a`` (a bias is created where it had none);
* a BatchNormalization computes ``gamma * u_hat + beta``: ``beta' = beta + a``
  (exact with moving or batch statistics alike);
* ``Add``: ``(u + v) + a = (u + a) + v`` - one input takes the shift (the
  first one through which it reaches such a layer; an input broadcast along
  the channels cannot);
* ``Concatenate`` along the channel axis: every input takes its block of
  ``a`` (a block of zeros needs no one);
* ops that commute with adding a per-channel constant: average and max
  pooling, local and global (``avg(u + a) = avg(u) + a``, ``max(u + a) =
  max(u) + a``; Keras's 'same' pooling ignores the padded elements),
  upsampling (weights summing to 1), cropping, identities at inference, and
  ``keras.ops.pad`` with an infinite constant (``-inf + a = -inf``: KerasHub's
  ResNet v2 pads so before its max pooling). Zero padding does not
  (``0 + a != 0``) and stops the way.

Then ``layers(x) + a`` is what the BN's add would have computed, everything
else in the model is unchanged, and the BN is removed. Where no such way
exists, :mod:`bnfreeze.fold.rules.preactivation_add` (tried next) keeps the
add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnfreeze.fold.classes import activation_name, is_exact_batch_norm, is_exactly, is_keras_op_class
from bnfreeze.fold.graph import TensorRef
from bnfreeze.fold.rules.backward import bias_layout_problem, weight_problem
from bnfreeze.fold.rules.base import BNSite, Match, TargetUpdate, cast_like
from bnfreeze.fold.rules.commuting import channel_axis, is_inference_identity
from bnfreeze.fold.rules.commuting.resampling import AVERAGING_INTERPOLATIONS
from bnfreeze.fold.rules.preactivation import PreActivationFold, ScaleTree, shift_before
from bnfreeze.fold.training import recorded_training

#: Layers whose bias can take the shift, with the weights that must be plain floats.
BIAS_LAYERS = {
    "Conv1D": ("kernel",), "Conv2D": ("kernel",), "Conv3D": ("kernel",),
    "DepthwiseConv1D": ("kernel",), "DepthwiseConv2D": ("kernel",),
    "SeparableConv1D": ("depthwise_kernel", "pointwise_kernel"),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
    "Dense": ("kernel",),
    "Conv1DTranspose": ("kernel",), "Conv2DTranspose": ("kernel",), "Conv3DTranspose": ("kernel",),
}
POOLING = ("AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "MaxPooling1D", "MaxPooling2D",
           "MaxPooling3D")
GLOBAL_POOLING = ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
                  "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")


@dataclass(frozen=True)
class BiasTarget:
    """A layer that takes the shift: ``channels[j]`` is the BN channel whose shift output channel ``j`` takes."""

    name: str
    channels: np.ndarray
    output: TensorRef

    def weight_name(self, layer) -> str:
        return "beta" if is_exact_batch_norm(layer) else "bias"


@dataclass(frozen=True)
class ShiftWay:
    """The layers that take the shift and the ops it moves back through (graph order)."""

    targets: tuple[BiasTarget, ...]
    through: tuple[str, ...]


def walk_shift_back(site: BNSite) -> ShiftWay | None:
    """The earlier layers that can compute ``x + a`` for the BN, or None where there are none."""
    shift = shift_before(site.affine)
    found = _back(site.graph, site.input_ref, site.name, site.axis, site.rank, np.arange(site.affine.channels), shift)
    return found if isinstance(found, ShiftWay) else None


def _back(graph, ref: TensorRef, reader: str, axis: int, rank: int, channels: np.ndarray, shift) -> ShiftWay | str:
    """Move ``shift[channels]`` (along ``axis`` of tensor ``ref``, read only by ``reader``) back to biases."""
    uses = graph.consumers_of(ref)
    if len(uses) != 1 or uses[0].call is None or uses[0].call.layer != reader:
        return f"{ref.layer}'s output also goes elsewhere"
    name = ref.layer
    if graph.is_input(name) or name not in graph.entries:
        return f"{name} is a model input"
    calls = graph.calls[name]
    if len(calls) != 1:
        return f"{name} is called at {len(calls)} places"
    call = calls[0]
    layer = graph.layer(name)

    def onward(index: int, new_axis: int, new_rank: int, part=channels) -> ShiftWay | str:
        found = _back(graph, call.inputs[index], name, new_axis, new_rank, part, shift)
        return found if isinstance(found, str) else ShiftWay(found.targets, (*found.through, name))

    if is_exactly(layer, *BIAS_LAYERS):
        if activation_name(layer) != "linear":
            return f"{name} applies {activation_name(layer)}"
        own = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else rank - 1
        if is_exactly(layer, "Dense"):
            own = rank - 1
        if axis != own:
            return f"{name}'s channels are not on axis {axis}"
        return ShiftWay((BiasTarget(name, channels, ref),), ())
    if is_exact_batch_norm(layer):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if len(axes) != 1 or int(axes[0]) % rank != axis or not layer.weights:
            return f"{name} normalizes another axis"
        return ShiftWay((BiasTarget(name, channels, ref),), ())
    if is_inference_identity(layer):
        if recorded_training(call.kwargs.get("training")) or graph.in_training(name) or len(call.inputs) != 1:
            return f"{name} runs in training mode"
        return onward(0, axis, rank)
    if is_exactly(layer, *POOLING, "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D",
                  "UpSampling3D"):  # the rank of the input is the rank of the output
        if getattr(layer, "interpolation", "nearest") not in AVERAGING_INTERPOLATIONS:
            return f"{name} interpolates with {layer.interpolation!r}"
        if axis != channel_axis(layer, rank):
            return f"{name} does not keep the channels on axis {axis}"
        return onward(0, axis, rank)
    if is_exactly(layer, *GLOBAL_POOLING):
        in_rank = int(type(layer).__name__[-2]) + 2  # Global...Pooling{1,2,3}D: (batch, *spatial, channels)
        inner = channel_axis(layer, in_rank)
        if axis != (inner if rank == in_rank else 1):
            return f"{name} does not keep the channels on axis {axis}"
        return onward(0, inner, in_rank)
    if is_keras_op_class(layer, "Pad"):
        value = call.kwargs.get("constant_values")
        widths = [tuple(w) for w in layer.pad_width]
        if (getattr(layer, "mode", "constant") != "constant" or not isinstance(value, (int, float))
                or not math.isinf(value) or len(widths) != rank or widths[0] != (0, 0) or widths[axis] != (0, 0)):
            return f"{name} pads with a finite value or along the channels"
        return onward(0, axis, rank)
    if is_exactly(layer, "Add"):
        for index, shape in enumerate(call.input_shapes):
            if shape is None or len(shape) != rank or shape[axis] != len(channels):
                continue
            found = onward(index, axis, rank)
            if isinstance(found, ShiftWay):
                return found
        return f"no input of {name} can take the shift"
    if is_exactly(layer, "Concatenate"):
        if int(layer.axis) % rank != axis:
            return f"{name} concatenates along another axis"
        targets, through, start = [], [], 0
        for index, shape in enumerate(call.input_shapes):
            size = shape[axis] if shape is not None and len(shape) == rank else None
            if size is None:
                return f"{name} concatenates a tensor of unknown channel count"
            part = channels[start:start + int(size)]
            start += int(size)
            if not np.any(shift[part] != 0):
                continue
            found = _back(graph, call.inputs[index], name, axis, rank, part, shift)
            if isinstance(found, str):
                return found
            targets.extend(found.targets)
            through.extend(n for n in found.through if n not in through)
        return ShiftWay(tuple(targets), (*through, name))
    return f"{graph.describe(name)} cannot take the shift"


class PreActivationIntoBias(PreActivationFold):
    name = "pre-activation-bias"

    def place_shift(self, site: BNSite, tree: ScaleTree):
        if tree.stop is not None or not np.any(shift_before(site.affine) != 0):
            return None
        return walk_shift_back(site)

    def shift_layers(self, placement: ShiftWay) -> tuple[str, ...]:
        return tuple(t.name for t in placement.targets)

    def shift_through(self, placement: ShiftWay) -> tuple[str, ...]:
        return placement.through

    def shift_problem(self, match: Match) -> str | None:
        graph = match.site.graph
        for target in match.details["placement"].targets:
            layer = graph.layer(target.name)
            if is_exact_batch_norm(layer):
                used = tuple(n for n, on in (("gamma", layer.scale), ("beta", layer.center)) if on)
                problem = weight_problem(target.name, layer, used + ("moving_mean", "moving_variance"))
            else:
                problem = (weight_problem(target.name, layer, BIAS_LAYERS[type(layer).__name__])
                           or bias_layout_problem(target.name, layer, graph.shape_of(target.output)))
            if problem:
                return problem
        return None

    def shift_updates(self, match: Match, weights_of) -> dict[str, TargetUpdate]:
        graph, shift = match.site.graph, shift_before(match.site.affine)
        updates = {}
        for target in match.details["placement"].targets:
            layer = graph.layer(target.name)
            weights = {k: np.asarray(v) for k, v in weights_of(target.name).items()}
            key = target.weight_name(layer)
            if key in weights:
                like = weights[key]
            else:  # no bias (beta) yet: one of the dtype of the layer's other float weights
                like = np.zeros(len(target.channels), next(iter(weights.values())).dtype)
            weights[key] = cast_like(like.astype(np.float64) + shift[target.channels], like)
            config = {"center": True} if key == "beta" else {"use_bias": True}
            updates[target.name] = TargetUpdate(weights=weights, config=config)
        return updates

    def shift_report(self, match: Match) -> tuple[dict, str]:
        graph, way = match.site.graph, match.details["placement"]
        into = [graph.qualified(t.name) for t in way.targets]
        through = [graph.qualified(n) for n in way.through]
        words = ", ".join(f"{name}'s {t.weight_name(graph.layer(t.name))}" for name, t in zip(into, way.targets))
        return ({"shift": "bias", "shift_into": into, "shift_through": through},
                f"shift into {words}" + (f" (through {', '.join(through)})" if through else ""))
