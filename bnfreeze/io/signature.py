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
    if isinstance(model, keras.Sequential):
        names = [model.layers[-1].name]
    else:
        names = list(getattr(model, "output_names", None) or [])
    if len(names) != count:
        names = [f"output_{i}" for i in range(count)]
    return _unique(names)


def output_specs(model) -> list[TensorSpec]:
    return [TensorSpec(n, tuple(t.shape), str(t.dtype)) for n, t in zip(output_names(model), model.outputs)]
