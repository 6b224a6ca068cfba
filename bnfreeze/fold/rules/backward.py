"""What every backward fold (linear layer L, then BN) has in common.

If L computes ``z_o = sum_i W[..., i, o] x_i + b_o`` for output channel ``o``
and the BN computes ``y_o = s_o z_o + t_o``, then

    y_o = sum_i (s_o W[..., i, o]) x_i + (s_o b_o + t_o)

so the BN disappears when every kernel entry feeding output channel ``o`` is
scaled by ``s_o`` and the bias becomes ``s_o b + t`` (a missing bias is 0).
This is exact whatever L's padding, strides, dilation or groups, because the
BN acts on L's output after all of them. It needs:

* the BN's only input is L's output, and L's output goes only to the BN;
* L is called once (a shared layer would change its other calls);
* L's activation is linear (the BN must see L's affine output);
* the BN normalizes L's channel axis;
* L's weights are plain floats (not quantized, no LoRA adapters).

Subclasses say which Keras classes they fold into, where the output channels
are in the kernel and how to scale it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Mapping

import numpy as np

from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, TargetUpdate, cast_like


def activation_name(layer) -> str:
    """The name of a layer's activation as the user wrote it."""
    import keras

    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    try:
        serialized = keras.activations.serialize(activation)
    except Exception:  # an unregistered callable
        return getattr(activation, "__name__", type(activation).__name__)
    if isinstance(serialized, str):
        return serialized
    if isinstance(serialized, dict):
        config = serialized.get("config")
        if isinstance(config, str):
            return config
        return str(serialized.get("class_name", "a custom activation"))
    return str(serialized)


def weight_problem(name: str, layer, weight_names: tuple[str, ...]) -> str | None:
    """Why ``layer``'s weights cannot be rewritten in float, or ``None``."""
    mode = getattr(layer, "quantization_mode", None)
    if mode:
        return f"{name} is quantized ({mode}); fold before quantizing"
    if getattr(layer, "lora_enabled", False):
        return f"{name} has LoRA adapters; merge them (layer.enable_lora off) before folding"
    variables = {v.name: v for v in layer.weights}
    for weight_name in weight_names:
        variable = variables.get(weight_name)
        if variable is None:
            return f"{name} has no {weight_name} weight (is it built?)"
        if not np.issubdtype(np.dtype(variable.dtype), np.floating):
            return f"{name}'s {weight_name} is {variable.dtype}, not a float"
    return None


class BackwardFold(FoldRule):
    """Fold a BN into the linear layer that produces its input."""

    direction = "backward"
    #: The kernel variable whose output channels get scaled.
    kernel_name = "kernel"

    # -- hooks for subclasses ------------------------------------------------------
    def channel_axis(self, layer, rank: int) -> int:
        """Axis of ``layer``'s output (of ``rank`` dims) that holds its channels."""
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            return 1
        return rank - 1

    @abstractmethod
    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        """Multiply every kernel entry feeding output channel ``o`` by ``scale[o]``."""

    # -- the rule --------------------------------------------------------------------
    def match(self, site: BNSite) -> Match | None:
        graph = site.graph
        ref = site.input_ref
        if graph.is_input(ref.layer) or ref.layer not in graph.entries:
            return None
        layer = graph.layer(ref.layer)
        if type(layer) not in self.target_classes():
            return None
        calls = graph.calls[ref.layer]
        return Match(rule=self, site=site, target=ref.layer, target_call=calls[min(ref.node, len(calls) - 1)])

    def check(self, match: Match) -> str | None:
        site, graph, target = match.site, match.site.graph, match.target
        layer = match.target_layer
        calls = graph.calls[target]
        if len(calls) > 1:
            return f"{target} is called at {len(calls)} places"
        others = [c for c in graph.consumers_of(site.input_ref) if c.call is None or c.call.layer != site.name]
        if others:
            return f"{target}'s output also feeds {others[0].describe()}"
        activation = activation_name(layer)
        if activation != "linear":
            return f"{target} applies {activation} before the BN"
        axis = self.channel_axis(layer, site.rank)
        if site.axis != axis:
            return f"{site.name} normalizes axis {site.axis}, but {target}'s channels are on axis {axis}"
        return weight_problem(target, layer, (self.kernel_name,))

    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        affine = match.site.affine
        kernel = np.asarray(weights[self.kernel_name])
        new_kernel = self.scale_kernel(kernel.astype(np.float64), affine.scale, match.target_layer)
        if "bias" in weights:
            bias = np.asarray(weights["bias"])
            bias_dtype = bias
        else:
            bias = np.zeros(affine.channels)
            bias_dtype = kernel
        new_bias = affine.scale * bias.astype(np.float64) + affine.shift
        new_weights = dict(weights)
        new_weights[self.kernel_name] = cast_like(new_kernel, kernel)
        new_weights["bias"] = cast_like(new_bias, bias_dtype)
        return TargetUpdate(weights=new_weights, config={"use_bias": True})
