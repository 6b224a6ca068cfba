"""Cross-layer equalization and bias correction (Nagel et al. 2019, "Data-Free Quantization").

Both rewrite the folded float model before the converters see it.

*Cross-layer equalization* (CLE): for two linear layers joined through a
positively homogeneous, channel-wise map (``relu(x / s) = relu(x) / s`` for
``s > 0``: a ReLU without a cap, max or average pooling, a Flatten into a
Dense, or nothing), dividing output channel ``c`` of the first
by ``s_c`` and multiplying input channel ``c`` of the second by ``s_c``
changes nothing the network computes (exactly, up to float rounding; zero
padding stays zero). With ``s_c = sqrt(r1_c / r2_c)``, where ``r1_c`` and
``r2_c`` are the largest weights of channel ``c`` in the two layers, both
channels end with the range ``sqrt(r1_c * r2_c)``: per-tensor weight
quantization no longer spends its 255 levels on one wide channel while the
narrow ones round to a few steps (folded BNs make channel ranges very
unequal, most of all in depthwise layers). Pairs are equalized in sweeps
until the scales settle. ReLU6 is not positively homogeneous (the cap at 6
does not scale), so a pair joined by ReLU6 is left alone.

*Bias correction*: rounding a layer's weights shifts the mean of its outputs
by ``(Q(W) - W) E[x]``; subtracting that from the bias removes the shift.
``Q`` is the converters' symmetric int8 weight quantization (scale
``max|W| / 127`` per output channel, or per tensor), and ``E[x]`` the mean of
each input channel over the calibration data (Nagel et al.'s empirical
variant; their data-free one estimates it from the BN statistics, which
calibration data makes unnecessary here). The float model changes slightly,
on purpose: the int8 model is what gets closer to the original.

Only Keras's own ``Conv2D`` (``groups=1``), ``DepthwiseConv2D``
(``depth_multiplier=1``) and ``Dense`` (2-D inputs) in channels_last, each
called once, at the top level of a Sequential or Functional model, take part.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnfreeze.fold.classes import is_exactly
from bnfreeze.fold.graph import ModelGraph, TensorRef
from bnfreeze.fold.rewrite import copy_model
from bnfreeze.io.signature import pack_inputs

SWEEPS = 20


def linear_kind(layer) -> str | None:
    if is_exactly(layer, "Conv2D") and layer.groups == 1 and layer.data_format == "channels_last":
        return "conv"
    if (is_exactly(layer, "DepthwiseConv2D") and layer.depth_multiplier == 1
            and layer.data_format == "channels_last"):
        return "depthwise"
    if is_exactly(layer, "Dense") and len(layer.kernel.shape) == 2:
        return "dense"
    return None


def weights_problem(layer) -> str | None:
    """Why ``layer``'s kernel and bias cannot be rewritten in float, or None: a layer Keras quantized
    (``layer.quantize("int8")``: an integer kernel and its scale) or one with LoRA adapters (its kernel is
    computed from the adapters at every call), or one whose weights are not floats. Such a layer is left
    as it is by every weight rewrite of quantize, with this reason in the report (as fold does)."""
    from bnfreeze.fold.rules.backward import weight_problem

    names = ("kernel", "bias") if getattr(layer, "use_bias", False) else ("kernel",)
    return weight_problem(layer.name, layer, names)


def positively_homogeneous(layer) -> bool:
    """``f(x / s) == f(x) / s`` for every ``s > 0``: identity or an uncapped ReLU."""
    if is_exactly(layer, "ReLU"):
        return (layer.max_value is None and float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0)
    if is_exactly(layer, "Activation"):
        return getattr(layer.activation, "__name__", "") in ("relu", "linear")
    return False


def homogeneous_activation(layer) -> bool:
    return getattr(layer.activation, "__name__", "") in ("relu", "linear")


#: Ops between two layers that commute with a positive per-channel scale and keep channels on the last axis.
CHANNEL_WISE = ("MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
                "AveragePooling3D", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity", "ActivityRegularization")
#: Ops after which a Dense reads one value per channel.
GLOBAL_POOLING = ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
                  "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D")


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


@dataclass
class Pair:
    first: str
    second: str
    through: list[str] = field(default_factory=list)
    #: the channel of the first layer's output behind every input row of a Dense second layer (after Flatten)
    rows: np.ndarray | None = None


def equalization_pairs(model, skipped: list | None = None) -> list[Pair]:
    """Linear layers joined through positively homogeneous, channel-wise maps only, each tensor with one consumer.

    Crossed: uncapped ReLUs, identities at inference, max and average
    pooling (local and global) and a Flatten right before a Dense (channels
    last), which reads channel ``i % C`` at row ``i``. A pair with a layer
    whose weights cannot be rewritten (:func:`weights_problem`) is left out;
    ``skipped`` receives ``{"layer", "step", "reason"}`` for it.
    """
    graph = ModelGraph(model)
    pairs = []
    found = _equalization_pairs(graph)
    for pair in found:
        problems = [(name, weights_problem(graph.layer(name))) for name in (pair.first, pair.second)]
        problems = [(name, why) for name, why in problems if why]
        if problems:
            if skipped is not None:
                skipped.extend({"layer": name, "step": "equalization", "reason": why} for name, why in problems
                               if not any(e["layer"] == name and e["step"] == "equalization" for e in skipped))
            continue
        pairs.append(pair)
    return pairs


def _equalization_pairs(graph: ModelGraph) -> list[Pair]:
    pairs = []
    for name in graph.layer_names():
        if graph.is_input(name) or len(graph.calls.get(name, [])) != 1:
            continue
        layer = graph.layer(name)
        kind = linear_kind(layer)
        if kind is None or not homogeneous_activation(layer):
            continue
        channels = layer.kernel.shape[2] if kind == "depthwise" else layer.kernel.shape[-1]
        ref, through, flattened, pooled = TensorRef(name, 0, 0), [], False, False
        while True:
            consumers = graph.consumers_of(ref)
            if len(consumers) != 1 or consumers[0].call is None or graph.is_output(ref):
                break
            following = consumers[0].call.layer
            if len(graph.calls.get(following, [])) != 1:
                break
            nxt = graph.layer(following)
            crossable = positively_homogeneous(nxt) or (
                not flattened and not pooled and is_exactly(nxt, *CHANNEL_WISE) and _channels_last(nxt))
            if not flattened and not pooled and is_exactly(nxt, *GLOBAL_POOLING) and _channels_last(nxt):
                pooled = crossable = True
            if not flattened and not pooled and is_exactly(nxt, "Flatten") and _channels_last(nxt):
                flattened = crossable = True
            if crossable:
                through.append(following)
                ref = TensorRef(following, 0, 0)
                continue
            second = linear_kind(nxt)
            if second == "dense":
                size = nxt.kernel.shape[0]
                if flattened and size % channels == 0:
                    pairs.append(Pair(name, following, through, np.arange(size) % channels))
                elif not flattened and size == channels:
                    pairs.append(Pair(name, following, through, np.arange(size)))
            elif second is not None and not flattened and not pooled and nxt.kernel.shape[2] == channels:
                pairs.append(Pair(name, following, through))
            break
    return pairs


def _out_ranges(kind: str, kernel: np.ndarray) -> np.ndarray:
    if kind == "depthwise":
        return np.abs(kernel[:, :, :, 0]).max(axis=(0, 1))
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0)


def _in_ranges(kind: str, kernel: np.ndarray, rows: np.ndarray | None, channels: int) -> np.ndarray:
    if kind == "dense":
        ranges = np.zeros(channels)
        np.maximum.at(ranges, rows, np.abs(kernel).max(axis=1))
        return ranges
    if kind == "depthwise":
        return np.abs(kernel[:, :, :, 0]).max(axis=(0, 1))
    return np.abs(kernel).max(axis=(0, 1, 3))


def _scale_out(kind: str, kernel: np.ndarray, factor: np.ndarray) -> np.ndarray:
    if kind == "depthwise":
        return kernel * factor[None, None, :, None]
    return kernel * factor  # last axis


def _scale_in(kind: str, kernel: np.ndarray, factor: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    if kind == "dense":
        return kernel * factor[rows][:, None]
    return kernel * factor[None, None, :, None]


def equalize(model, sweeps: int = SWEEPS) -> tuple[object, dict]:
    """A copy of ``model`` with every equalizable pair equalized; and what was done."""
    result = copy_model(model)
    skipped: list = []
    pairs = equalization_pairs(result, skipped)
    if not pairs:
        return result, {"pairs": [], "sweeps": 0, "not_rewritten": skipped}
    kernels = {}
    biases = {}
    kinds = {}
    for pair in pairs:
        for name in (pair.first, pair.second):
            layer = result.get_layer(name)
            kinds[name] = linear_kind(layer)
            kernels[name] = np.asarray(layer.kernel.numpy(), np.float64)
            biases[name] = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else None
    before = {p.first + ">" + p.second: _spread(kinds, kernels, p) for p in pairs}
    done = 0
    for done in range(1, sweeps + 1):
        largest = 0.0
        for pair in pairs:
            r1 = _out_ranges(kinds[pair.first], kernels[pair.first])
            r2 = _in_ranges(kinds[pair.second], kernels[pair.second], pair.rows, r1.size)
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / r2), 1.0)
            kernels[pair.first] = _scale_out(kinds[pair.first], kernels[pair.first], 1.0 / s)
            if biases[pair.first] is not None:
                biases[pair.first] = biases[pair.first] / s
            kernels[pair.second] = _scale_in(kinds[pair.second], kernels[pair.second], s, pair.rows)
            largest = max(largest, float(np.max(np.abs(np.log(s)))))
        if largest < 1e-4:
            break
    for name, kernel in kernels.items():
        layer = result.get_layer(name)
        layer.kernel.assign(kernel.astype(layer.kernel.dtype))
        if biases[name] is not None:
            layer.bias.assign(biases[name].astype(layer.bias.dtype))
    return result, {
        "sweeps": done,
        "not_rewritten": skipped,
        "pairs": [{"first": p.first, "second": p.second, "through": p.through,
                   "range_spread_before": before[p.first + ">" + p.second],
                   "range_spread_after": _spread(kinds, kernels, p)} for p in pairs],
    }


def _spread(kinds, kernels, pair: Pair) -> float:
    """Largest over smallest channel range of the first layer's outputs (what per-tensor quantization suffers)."""
    ranges = _out_ranges(kinds[pair.first], kernels[pair.first])
    ranges = ranges[ranges > 0]
    return float(ranges.max() / ranges.min()) if ranges.size else 1.0


# -- bias correction ------------------------------------------------------------------------
def quantized_weights(kind: str, kernel: np.ndarray, per_tensor: bool) -> np.ndarray:
    """Symmetric int8 rounding of ``kernel`` as the converters do it: scale ``max|W| / 127`` per output channel."""
    if per_tensor:
        scale = np.abs(kernel).max() / 127.0
    elif kind == "depthwise":
        scale = np.abs(kernel).max(axis=(0, 1, 3), keepdims=True) / 127.0
    else:
        scale = np.abs(kernel).reshape(-1, kernel.shape[-1]).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale)
    return np.clip(np.round(kernel / scale), -127, 127) * scale


def _output_shift(kind: str, delta: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The mean output change ``(Q(W) - W) E[x]`` per output channel (padding borders ignored)."""
    if kind == "dense":
        return mean @ delta
    if kind == "depthwise":
        return np.einsum("hwc,c->c", delta[:, :, :, 0], mean)
    return np.einsum("hwio,i->o", delta, mean)


def correct_bias(model, data, *, per_tensor: bool = False, limit: int | None = None,
                 batch_size: int = 32) -> tuple[object, dict]:
    """A copy of ``model`` whose linear layers' biases cancel the mean shift of their rounded weights."""
    import keras

    result = copy_model(model)
    graph = ModelGraph(result)
    layers = [result.get_layer(name) for name in graph.layer_names()
              if not graph.is_input(name) and len(graph.calls.get(name, [])) == 1
              and linear_kind(graph.layer(name)) is not None]
    not_rewritten = [{"layer": layer.name, "step": "bias correction", "reason": why}
                     for layer in layers if (why := weights_problem(layer))]
    layers = [layer for layer in layers if not weights_problem(layer)]
    skipped = [layer.name for layer in layers if not layer.use_bias]
    layers = [layer for layer in layers if layer.use_bias]
    if not layers:
        return result, {"layers": [], "skipped": skipped, "not_rewritten": not_rewritten}
    probe = keras.Model(result.inputs[0] if len(result.inputs) == 1 else result.inputs,
                        [layer.input for layer in layers])
    names = [s.name for s in data.specs]
    sums = [None] * len(layers)
    count = 0
    for feed in data.batches(batch_size, limit):
        arrays = [feed[n] for n in names]
        values = probe(pack_inputs(probe, list(arrays)), training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for i, value in enumerate(values):
            value = np.asarray(keras.ops.convert_to_numpy(value), np.float64)
            total = value.reshape(-1, value.shape[-1]).sum(axis=0)
            sums[i] = total if sums[i] is None else sums[i] + total
        count += len(arrays[0])
    entries = []
    for layer, total in zip(layers, sums):
        kind = linear_kind(layer)
        positions = count * int(np.prod(layer.input.shape[1:-1], dtype=np.int64))
        mean = total / positions
        kernel = np.asarray(layer.kernel.numpy(), np.float64)
        shift = _output_shift(kind, quantized_weights(kind, kernel, per_tensor) - kernel, mean)
        bias = np.asarray(layer.bias.numpy(), np.float64)
        layer.bias.assign((bias - shift).astype(layer.bias.dtype))
        entries.append({"layer": layer.name, "max_shift": float(np.max(np.abs(shift))),
                        "max_bias": float(np.max(np.abs(bias)))})
    return result, {"layers": entries, "skipped": skipped, "not_rewritten": not_rewritten, "samples": count,
                    "weights": "per-tensor" if per_tensor else "per-channel"}
