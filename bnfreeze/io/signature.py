"""Input and output names and shapes of a Keras model, as artifacts expose them.

Every backend runner and exporter uses these names: the Keras input names
for inputs, and the Keras output layer names for outputs (made unique).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, shape (batch first, None where free) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def matches_shape(self, shape) -> bool:
        shape = tuple(shape)
        if len(shape) != len(self.shape):
            return False
        return all(a is None or b is None or a < 0 or b < 0 or a == b for a, b in zip(self.shape[1:], shape[1:]))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        result.append(name if count == 0 else f"{name}_{count}")
    return result


def input_specs(model) -> list[TensorSpec]:
    names = _unique([getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(model.inputs)])
    return [TensorSpec(n, tuple(t.shape), str(t.dtype)) for n, t in zip(names, model.inputs)]


def output_names(model) -> list[str]:
    import keras

    count = len(model.outputs)
    struct = getattr(model, "_outputs_struct", None)
    if isinstance(model, keras.Sequential):
        names = [model.layers[-1].name]
    elif isinstance(struct, dict) and all(not isinstance(v, (dict, list, tuple)) for v in struct.values()):
        # outputs given as a dict: its keys name them (as in model.export's signature), in flatten order
        names = [str(key) for key in keras.tree.flatten({key: key for key in struct})]
    else:
        names = list(getattr(model, "output_names", None) or [])
    if len(names) != count:
        names = [f"output_{i}" for i in range(count)]
    # an output named like an input (Model(x, [x, f(x)]) names both after x) would clash in every
    # artifact's signature: the output gets a suffix, everywhere alike
    taken = {spec.name for spec in input_specs(model)}
    names = [f"{name}_output" if name in taken else name for name in names]
    return _unique(names)


def output_specs(model) -> list[TensorSpec]:
    return [TensorSpec(n, tuple(t.shape), str(t.dtype)) for n, t in zip(output_names(model), model.outputs)]


def pack_inputs(model, values: list):
    """``values`` (one per input, in :func:`input_specs` order) in the structure ``model`` is called
    with: one tensor, a list, or a dict keyed like the model's ``Input`` dict."""
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if struct is not None and not isinstance(struct, (list, tuple)) and not hasattr(struct, "shape"):
        return keras.tree.pack_sequence_as(struct, list(values))
    if struct is not None and isinstance(struct, (list, tuple)) and len(struct) == 1 and len(values) == 1:
        return values[0]
    return values[0] if len(values) == 1 else list(values)
