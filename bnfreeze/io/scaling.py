"""Does the data look unscaled for the model it feeds?

A float model trained on inputs scaled to 0..1 (or standardised) and given raw
pixels (whole numbers 0..255, often uint8) computes garbage without any error:
calibration statistics, parity figures and int8 ranges are then measured on
the wrong distribution. bnfreeze never rescales on its own (``--rescale``
says by how much), but it warns when the first batch of a float input holds
only whole numbers above 1 and the model does not rescale that input itself
(a ``Rescaling`` or ``Normalization`` layer, a ``Lambda`` or an operation on
the input before its first layer: EfficientNet takes 0..255 by design).
"""

from __future__ import annotations

import warnings

import numpy as np

from bnfreeze.errors import DataWarning

#: layers that take an input's values to the scale the rest of the model expects
_SCALING_LAYERS = ("Rescaling", "Normalization", "Lambda", "Discretization")
#: samples looked at
_FIRST = 256


def _first_consumers(model, index: int):
    """The operations that read model input ``index`` (Functional: the input layer's consumers; Sequential:
    its first layer)."""
    inputs = getattr(model, "inputs", None) or []
    if index < len(inputs):
        history = getattr(inputs[index], "_keras_history", None)
        layer = history[0] if history else None
        nodes = getattr(layer, "_outbound_nodes", []) if layer is not None else []
        found = [node.operation for node in nodes]
        if found:
            return found
    layers = [l for l in getattr(model, "layers", []) if type(l).__name__ != "InputLayer"]
    return layers[:1]


def _rescales(operation, depth: int = 0) -> bool:
    """Whether ``operation``, the first to read an input, changes its scale (or may: where bnfreeze cannot
    tell, it does not warn)."""
    import keras

    name = type(operation).__name__
    if not isinstance(operation, keras.layers.Layer):  # an op on the input (x / 255.0, x - mean)
        return True
    if any(kind in name for kind in _SCALING_LAYERS) or "preprocess" in name.lower():
        return True
    if isinstance(operation, keras.Model) and depth < 4:  # a nested model: its own first layers
        return any(_rescales(op, depth + 1) for op in _first_consumers(operation, 0))
    if name in ("Cast", "Reshape", "Permute", "ZeroPadding2D", "InputLayer"):  # moves values, keeps their scale
        return any(_rescales(node.operation, depth + 1) for node in getattr(operation, "_outbound_nodes", []))
    return False


def warn_if_unscaled(data, model) -> None:
    """Warn (:class:`~bnfreeze.errors.DataWarning`) for each float input of ``model`` that ``data`` feeds raw
    whole numbers while the model does not rescale it; reads the first samples only."""
    specs = getattr(data, "specs", None) or []
    floats = [i for i, spec in enumerate(specs) if spec.dtype in ("float16", "bfloat16", "float32", "float64")]
    if not floats:
        return
    try:
        batch = next(iter(data.batches(_FIRST, _FIRST)))
    except StopIteration:
        return
    label = getattr(model, "name", "the model")
    try:
        from bnfreeze.io.models import model_label

        label = model_label(model)
    except Exception:
        pass
    for index in floats:
        spec = specs[index]
        values = np.asarray(batch[spec.name])
        if values.size == 0 or not np.all(np.isfinite(values)):
            continue
        low, high = float(values.min()), float(values.max())
        if low < 0 or high < 2 or not np.all(values == np.round(values)):
            continue
        if any(_rescales(op) for op in _first_consumers(model, index)):
            continue
        scale = "1/255" if 16 < high <= 255 else f"1/{high:g}"
        warnings.warn(DataWarning(
            f"{data.source}: {spec.name} holds whole numbers {low:g}..{high:g} for a {spec.dtype} input that "
            f"{label} does not rescale; if it was trained on scaled inputs, pass --rescale (e.g. --rescale {scale})"),
            stacklevel=2)
