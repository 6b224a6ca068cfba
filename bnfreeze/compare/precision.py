"""The float32 reading of a float16 or bfloat16 model: the same network, the same stored weights, computing
in float32.

Why: a fold is exact algebra, but in float16 two exact computations of the same network differ by their
own rounding, and that rounding grows with the inputs (float16 keeps 11 bits: softmax outputs over logits
of 100s differ by 1e-2 between two orders of the same sums, bfloat16 by 1e-1). A check held to float16's
1e-2 both fails exact folds at large inputs and hides a wrong channel of 1% at small ones. In the float32
reading the folded model must match its original to float32's 1e-5 / 1e-4, where a wrong channel shows.
PyTorch's compiler accuracy checks meet the same fact by judging low-precision results through a float64
reference (``torch._dynamo.utils.same(..., fp64_ref=...)``).

:func:`float32_twin` builds the reading from the model's own config with every low-precision dtype
(policies, inputs, casts recorded in a traced graph) read as float32, and its weights, float16 ones cast
up exactly. A model whose config does not rebuild it (an in-memory class without ``get_config``, a
quantized layer) has no reading: :class:`NoReading` says why, and the check judges it in its own precision.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.errors import message_line
from bnfreeze.io.models import copy_state

#: The precisions whose rounding a fold's check cannot hold to float32's tolerance.
LOW_PRECISIONS = ("float16", "bfloat16")
_LOW_NAMES = {*LOW_PRECISIONS, "mixed_float16", "mixed_bfloat16"}


class NoReading(Exception):
    """The model has no float32 reading; the message says why."""


def low_precision_layers(model) -> list:
    """The layers of ``model`` (itself and every nested one) that compute in float16 or bfloat16."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if str(getattr(layer, "compute_dtype", "")) in LOW_PRECISIONS]


def stored_precision(model) -> str:
    """The lowest precision ``model`` stores a floating-point weight in: float32 for a mixed policy, float16
    for the ``float16`` policy (a folded weight is rounded to it, so the reading is held to its tolerance)."""
    from bnfreeze.compare.tolerance import lowest_precision

    return lowest_precision({str(v.dtype) for v in model.weights})


def _as_float32(config):
    """``config`` with every low-precision dtype name (a policy's, an input's, a recorded cast's) float32."""
    if isinstance(config, dict):
        return {key: ("float32" if isinstance(value, str) and value in _LOW_NAMES
                      and key in ("dtype", "name", "compute_dtype", "variable_dtype") and _is_dtype_slot(config, key)
                      else _as_float32(value))
                for key, value in config.items()}
    if isinstance(config, list):
        return [_as_float32(value) for value in config]
    return config


def _is_dtype_slot(config: dict, key: str) -> bool:
    """``key`` of ``config`` names a dtype: a ``dtype`` entry, or the ``name`` of a serialized policy."""
    if key != "name":
        return True
    return "DTypePolicy" in str(config.get("class_name", "")) or set(config) <= {"name"}


def _classes(model) -> dict:
    """The classes of ``model``'s layers by every name their config may use, for deserialization."""
    import keras

    found = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        cls = type(layer)
        found[cls.__name__] = cls
        found[keras.saving.get_registered_name(cls)] = cls
    return found


def float32_twin(model):
    """A new model: ``model`` rebuilt from its config with float32 in place of float16/bfloat16, holding
    its weights (cast up, exactly). Raises :class:`NoReading` where it cannot be built."""
    import keras

    for layer in model._flatten_layers(include_self=True, recursive=True):
        if getattr(layer.dtype_policy, "quantization_mode", None) is not None:
            raise NoReading(f"{layer.name} is quantized ({layer.dtype_policy.name})")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # a layer whose config names no dtype takes the global policy
    try:
        serialized = keras.saving.serialize_keras_object(model)
        serialized.pop("compile_config", None)
        twin = keras.saving.deserialize_keras_object(_as_float32(serialized), custom_objects=_classes(model),
                                                     safe_mode=False)
    except Exception as exc:  # a class whose config does not rebuild it
        raise NoReading(f"{type(model).__name__} does not rebuild from its config in float32 "
                        f"({type(exc).__name__}: {message_line(exc)})") from exc
    finally:
        keras.config.set_dtype_policy(previous)
    mine = model._flatten_layers(include_self=True, recursive=True)
    theirs = twin._flatten_layers(include_self=True, recursive=True)
    if [type(layer) for layer in mine] != [type(layer) for layer in theirs]:
        raise NoReading(f"{type(model).__name__}'s config does not describe the same layers")
    if low_precision_layers(twin):
        raise NoReading(f"{low_precision_layers(twin)[0].name} still computes in low precision")
    rounding = _low_precision_output(twin)
    if rounding is not None:
        raise NoReading(rounding)
    try:
        copy_state(model, twin, convert=_up)  # variables cast up, a lookup's vocabulary as it is
    except Exception as exc:
        raise NoReading(f"{type(model).__name__}'s state does not load into its float32 twin "
                        f"({type(exc).__name__}: {message_line(exc)})") from exc
    return twin


def _low_precision_output(twin) -> str | None:
    """Where the twin's graph still carries a float16 or bfloat16 tensor (a cast in the ``call`` of a layer
    the config does not describe, a Lambda), in words; None where every tensor is float32 or wider."""
    for model in twin._flatten_layers(include_self=True, recursive=True):
        for operation in getattr(model, "_operations", None) or []:
            for node in getattr(operation, "_inbound_nodes", []):
                for tensor in getattr(node, "output_tensors", []):
                    dtype = str(getattr(tensor, "dtype", ""))
                    if dtype in LOW_PRECISIONS:
                        return (f"{operation.name} ({type(operation).__name__}) outputs {dtype} whatever its policy "
                                "(a cast in its call)")
    return None


def _up(value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind == "f" and array.dtype.itemsize < 4 or str(array.dtype) == "bfloat16":
        return array.astype(np.float32)
    return np.array(array)
