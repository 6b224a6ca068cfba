"""Where a forward-folded BN's scale goes before int8: back into the layer before the ReLU.

A BN that follows a ``relu`` (the seed article's ``Conv2D(relu) -> BN ->
MaxPooling``) folds *forward*: ``bnfreeze.fold`` multiplies the next layer's
kernel, per **input** channel, by the BN's scale ``s``. Exact in float — but
int8 weights are quantized per **output** channel, so a kernel whose input
channels were stretched by unequal ``s_c`` gets fewer levels for the channels
with small ``s_c``. For int8 the scale belongs on the other side: where
``s_c > 0``, ``s_c * relu(z) = relu(s_c * z)``, so channel ``c`` of the layer
before the ReLU is multiplied by ``s_c`` (kernel and bias; per-channel
quantization absorbs that for free) and the next layer's input channel ``c``
divided by it again. Only the BN's shift ``t`` stays folded forward (into the
next layer's bias). The network computes the same thing (checked by the
caller); the activation between the two layers carries ``s_c * relu(z)``,
exactly what the unfolded model's BN output carries, minus the shift and
minus the two extra roundings of a quantized multiply and add.

The layer before must be Keras's own ``Conv2D`` (``groups=1``),
``DepthwiseConv2D`` (``depth_multiplier=1``) or ``Dense`` with a ``relu`` or
linear activation, called once, its output reaching the folded layer through
uncapped ReLUs, identities at inference and the ops the fold crossed (pooling,
Flatten, ...), each with one consumer. Channels with ``s_c <= 0`` keep their
scale forward (a negative scale does not pass a ReLU).
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.classes import is_exactly
from bnfreeze.fold.graph import ModelGraph
from bnfreeze.fold.rewrite import copy_model
from bnfreeze.quantize.datafree import homogeneous_activation, linear_kind, positively_homogeneous, weights_problem

#: Identities at inference: crossing them changes nothing.
INFERENCE_IDENTITIES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                        "GaussianDropout", "AlphaDropout", "Identity", "ActivityRegularization")


def _first_layer(graph: ModelGraph, target: str, crossable: set[str]) -> tuple[str | None, list[str]]:
    """Walk back from ``target``'s input to the linear layer feeding it, or None with the ops crossed."""
    calls = graph.calls.get(target, [])
    if len(calls) != 1 or len(calls[0].inputs) != 1:
        return None, []
    ref = calls[0].inputs[0]
    crossed: list[str] = []
    while True:
        name = ref.layer
        if graph.is_input(name) or len(graph.calls.get(name, [])) != 1 or len(graph.consumers_of(ref)) != 1:
            return None, crossed
        if graph.is_output(ref):
            return None, crossed
        layer = graph.layer(name)
        if name in crossable or positively_homogeneous(layer) or is_exactly(layer, *INFERENCE_IDENTITIES):
            crossed.append(name)
            inputs = graph.calls[name][0].inputs
            if len(inputs) != 1:
                return None, crossed
            ref = inputs[0]
            continue
        if linear_kind(layer) is not None and homogeneous_activation(layer):
            return name, crossed
        return None, crossed


def _target_channels(match, kind: str, kernel: np.ndarray, channels: int) -> np.ndarray | None:
    """The BN channel of every input row (Dense) or input channel (convolutions) of the folded layer."""
    if kind == "dense":
        layout = match.details.get("layout")
        mapping = layout.last_axis_channels(channels) if layout is not None else None
        return None if mapping is None or len(mapping) != kernel.shape[0] else np.asarray(mapping)
    return np.arange(channels) if kernel.shape[2] == channels else None


def place_scales(fold_result, skipped: list | None = None) -> tuple[object, list[dict]]:
    """A copy of the folded model with every movable forward-folded BN scale moved back (see the module doc).

    A layer whose weights cannot be rewritten (Keras-quantized, LoRA; :func:`weights_problem`) is left as it
    is: ``skipped`` receives ``{"layer", "step", "reason"}`` for it.
    """
    model = copy_model(fold_result.model)
    graph = ModelGraph(model)
    moved = []
    for match in fold_result.plan.folds:
        if match.direction != "forward" or match.site.graph.path or match.target not in graph.calls:
            continue
        second = model.get_layer(match.target)
        second_kind = linear_kind(second)
        if second_kind is None:
            continue
        first_name, crossed = _first_layer(graph, match.target, set(match.through))
        if first_name is None or not set(match.through) <= set(crossed):
            continue
        first = model.get_layer(first_name)
        problems = [(layer.name, why) for layer in (first, second) if (why := weights_problem(layer))]
        if problems:
            if skipped is not None:
                skipped.extend({"layer": name, "step": "scale placement", "reason": why} for name, why in problems)
            continue
        first_kind = linear_kind(first)
        scale = np.asarray(match.site.affine.scale, np.float64)
        first_kernel = np.asarray(first.kernel.numpy(), np.float64)
        out_channels = first_kernel.shape[2] if first_kind == "depthwise" else first_kernel.shape[-1]
        second_kernel = np.asarray(second.kernel.numpy(), np.float64)
        rows = _target_channels(match, second_kind, second_kernel, scale.size)
        if out_channels != scale.size or rows is None:
            continue
        factor = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        if first_kind == "depthwise":
            first_kernel = first_kernel * factor[None, None, :, None]
        else:
            first_kernel = first_kernel * factor
        first.kernel.assign(first_kernel.astype(first.kernel.dtype))
        if first.use_bias:
            first.bias.assign((np.asarray(first.bias.numpy(), np.float64) * factor).astype(first.bias.dtype))
        per_row = factor[rows]
        if second_kind == "dense":
            second_kernel = second_kernel / per_row[:, None]
        else:
            second_kernel = second_kernel / per_row[None, None, :, None]
        second.kernel.assign(second_kernel.astype(second.kernel.dtype))
        moved.append({"bn": match.site.name, "scale_into": first_name, "shift_into": match.target,
                      "channels": int(np.count_nonzero(np.isfinite(scale) & (scale > 0))),
                      "of": int(scale.size)})
    return model, moved
