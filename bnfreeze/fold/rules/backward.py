"""What every backward fold (linear layer L, then BN) has in common.

If L computes ``z_o = sum_i W[..., i, o] x_i + b_o`` for output channel ``o``
and the BN computes ``y_o = s_o z_o + t_o``, then

    y_o = sum_i (s_o W[..., i, o]) x_i + (s_o b_o + t_o)

so the BN disappears when every kernel entry feeding output channel ``o`` is
scaled by ``s_o`` and the bias becomes ``s_o b + t`` (a missing bias is 0).
This is exact whatever L's padding, strides, dilation or groups, because the
BN acts on L's output after all of them. It needs:

* the BN's only input is L's output, and L's output goes only to the BN
  (inference identities between them, such as Dropout, are crossed);
* L is called once (a shared layer would change its other calls);
* L's activation is linear (the BN must see L's affine output);
* the BN normalizes L's channel axis;
* L's weights are plain floats (not quantized, no LoRA adapters).

Subclasses say which Keras classes they fold into, where the output channels
are in the kernel and how to scale it.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from bnfreeze.fold.classes import activation_name
from bnfreeze.fold.training import recorded_training
from bnfreeze.fold.graph import TensorRef
from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, TargetUpdate, cast_like


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


def bias_layout_problem(name: str, layer, output_shape) -> str | None:
    """Why Keras would add a folded bias to ``layer``'s output on the wrong axis, or ``None``.

    A channels_first layer adds its bias as ``keras.ops.add(x, bias reshaped
    to (1, C, 1, ...))``; Keras's TensorFlow backend turns that into
    ``tf.nn.bias_add`` and picks the channels-last format whenever ``x``'s
    *last* size equals ``C``, so the bias lands on the last spatial axis
    (checked against ``tf.nn.conv2d``: a 4x4 output of 4 filters is off by the
    bias). A fold gives such a layer a bias (or changes it), so it is exact
    only where the last size is known and differs from ``C``. ``output_shape``
    is the layer's output as the graph recorded it (None where unknown).
    """
    if getattr(layer, "data_format", "channels_last") != "channels_first":
        return None
    if output_shape is None or len(output_shape) < 3 or output_shape[1] is None:
        return (f"{name} is channels_first and its output shape is unknown here: Keras's TensorFlow backend adds "
                "a channels_first bias along the last axis where that axis is as long as the channel count")
    channels, last = output_shape[1], output_shape[-1]
    if channels == 1 or (last is not None and last != channels):
        return None
    size = "unknown" if last is None else f"{last}, the channel count"
    return (f"{name} is channels_first with a last axis of size {size}: Keras's TensorFlow backend adds a "
            f"channels_first bias along the last axis when it is as long as the {channels} channels "
            "(keras.ops.add), so the folded bias could land on the wrong axis")


@dataclass(frozen=True)
class BackwardWalk:
    """The path from a BN's input back through inference identities to the layer before them.

    ``target`` is that layer (None when the walk reaches a model input),
    ``through`` the identities crossed (in graph order), ``stop`` why the walk
    ended early (an identity whose output also goes elsewhere, say).
    """

    target: str | None
    target_ref: TensorRef
    through: tuple[str, ...]
    stop: str | None


def walk_backward(site: BNSite) -> BackwardWalk:
    """Follow the BN's input back through Dropout, ``Activation('linear')``, Identity and the like.

    Those layers return their input at inference, so ``L -> Dropout -> BN``
    folds as ``L -> BN`` does; they stay in place. Every tensor on the way must
    feed only the next layer, and no identity may run in training mode.
    """
    from bnfreeze.fold.rules.commuting import is_inference_identity

    graph = site.graph
    ref, consumer = site.input_ref, site.name
    through: list[str] = []
    while True:
        if graph.is_input(ref.layer) or ref.layer not in graph.entries:
            return BackwardWalk(None, ref, tuple(reversed(through)), None)
        name = ref.layer
        layer = graph.layer(name)
        if not is_inference_identity(layer):
            return BackwardWalk(name, ref, tuple(reversed(through)), None)
        others = [c for c in graph.consumers_of(ref) if c.call is None or c.call.layer != consumer]
        calls = graph.calls[name]
        call = calls[min(ref.node, len(calls) - 1)]
        problem = None
        if others:
            problem = f"{name}'s output also feeds {others[0].describe()}"
        elif len(call.inputs) != 1:
            problem = f"{name} has {len(call.inputs)} inputs"
        elif recorded_training(call.kwargs.get("training")) or graph.in_training(name):
            problem = f"{name} runs in training mode under the model's default call"
        if problem:
            return BackwardWalk(name, ref, tuple(reversed(through)), problem)
        through.append(name)
        consumer, ref = name, call.inputs[0]


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
    def folds_into(self, layer) -> bool:
        return type(layer) in self.target_classes()

    def match(self, site: BNSite) -> Match | None:
        walk = walk_backward(site)
        if walk.target is None or walk.stop is not None:
            return None
        graph = site.graph
        if not self.folds_into(graph.layer(walk.target)):
            return None
        calls = graph.calls[walk.target]
        return Match(rule=self, site=site, target=walk.target, target_call=calls[min(walk.target_ref.node, len(calls) - 1)],
                     through=walk.through, details={"target_ref": walk.target_ref})

    def path_problem(self, match: Match) -> str | None:
        """What the graph around the target forbids: shared target, output used elsewhere."""
        site, graph, target = match.site, match.site.graph, match.target
        calls = graph.calls[target]
        if len(calls) > 1:
            return f"{target} is called at {len(calls)} places"
        following = match.through[0] if match.through else site.name
        ref = match.details["target_ref"]
        others = [c for c in graph.consumers_of(ref) if c.call is None or c.call.layer != following]
        if others:
            return f"{target}'s output also feeds {others[0].describe()}"
        return None

    def layer_problem(self, target: str, layer, site: BNSite, axis: int, rank: int, offset: int = 0) -> str | None:
        """What ``layer`` itself forbids, with the BN on ``axis`` of a tensor of ``rank`` dims.

        ``offset`` shifts the axes the reason names (a layer inside TimeDistributed counts its
        axes within one step).
        """
        activation = activation_name(layer)
        if activation != "linear":
            return f"{target} applies {activation} before the BN"
        channels = self.channel_axis(layer, rank)
        if axis != channels:
            return (f"{site.name} normalizes axis {axis + offset}, but {target}'s channels are on axis "
                    f"{channels + offset}")
        return weight_problem(target, layer, (self.kernel_name,))

    def check(self, match: Match) -> str | None:
        site = match.site
        return (self.path_problem(match)
                or self.layer_problem(match.target, match.target_layer, site, site.axis, site.rank)
                or bias_layout_problem(match.target, match.target_layer,
                                       site.graph.shape_of(match.details["target_ref"])))

    def fold_weights(self, affine, weights: Mapping[str, np.ndarray], layer) -> dict[str, np.ndarray]:
        """The layer's weights with the BN folded in (kernel scaled, bias ``s * b + t``)."""
        kernel = np.asarray(weights[self.kernel_name])
        new_kernel = self.scale_kernel(kernel.astype(np.float64), affine.scale, layer)
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
        return new_weights

    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        new_weights = self.fold_weights(match.site.affine, weights, match.target_layer)
        return TargetUpdate(weights=new_weights, config={"use_bias": True})
