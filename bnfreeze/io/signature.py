"""Input and output names and shapes of a Keras model, as artifacts expose them.

Every backend runner and exporter uses these names: the Keras input names
for inputs, and the Keras output layer names for outputs (made unique).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bnfreeze.errors import InputError


@dataclass(frozen=True)
class ValueRange:
    """The values an integer input accepts, ``low`` to ``high`` inclusive, and why (its dtype, a vocabulary)."""

    low: int
    high: int
    why: str

    def text(self) -> str:
        return f"{self.low}..{self.high} ({self.why})"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, shape (batch first, None where free) and dtype.

    ``key``: the dict key Keras takes this input under, for a model whose
    inputs are a dict (Keras pairs a dict of data by those keys, not by the
    tensors' names). ``values``: the integers the input accepts where a layer
    reading it bounds them (an ``Embedding``'s vocabulary), else None.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    key: str | None = field(default=None, compare=False, kw_only=True)
    values: ValueRange | None = field(default=None, compare=False, kw_only=True)

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


def input_keys(model) -> list[str | None]:
    """For each input (in ``model.inputs`` order), the dict key Keras takes it under, or None where the
    model's inputs are not a dict."""
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if not isinstance(struct, dict) or any(isinstance(v, (dict, list, tuple)) for v in struct.values()):
        return [None] * len(model.inputs)
    return [str(key) for key in keras.tree.flatten({key: key for key in struct})]


def input_specs(model) -> list[TensorSpec]:
    names = _unique([getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(model.inputs)])
    keys = input_keys(model)
    ranges = vocabulary_ranges(model)
    return [TensorSpec(n, tuple(t.shape), str(t.dtype), key=k, values=ranges.get(i))
            for i, (n, k, t) in enumerate(zip(names, keys, model.inputs))]


def data_name(spec: TensorSpec) -> str:
    """The name data gives this input under: the model's dict key where it has one, else the input's name."""
    return spec.key if spec.key is not None else spec.name


def select_inputs(available, specs: list[TensorSpec]) -> dict | None:
    """``{spec.name: available[...]}`` paired the way Keras pairs a dict with a model's inputs.

    Keras takes a dict of data by the model's dict keys where its inputs are a
    dict, and by the inputs' names otherwise. The other name of an input (its
    tensor name beside its key) is accepted too, unless it is another input's
    key (a model whose key ``a`` is the input named ``b`` and the other way
    round: there only the keys count, as in Keras). None when some input has
    no entry.
    """
    keys = {spec.key for spec in specs if spec.key is not None}
    chosen = {}
    for spec in specs:
        names = [data_name(spec)]
        if spec.key is not None and spec.name != spec.key and spec.name not in keys:
            names.append(spec.name)
        found = next((n for n in names if n in available), None)
        if found is None:
            return None
        chosen[spec.name] = available[found]
    return chosen


def call_arguments(model, structure, label: str = "the model") -> list:
    """The tensors of a call ``model(structure)`` in ``model.inputs`` order, paired the way Keras pairs them.

    Keras (``Functional._standardize_inputs``) takes a dict by the inputs'
    names where the model's inputs are a list, by its keys where they are a
    dict, and anything else position by position in ``keras.tree.flatten``
    order. Raises :class:`InputError` where Keras itself would refuse.
    """
    import keras

    struct = getattr(model, "_inputs_struct", None)
    if isinstance(structure, dict) and not isinstance(struct, dict):
        tensors = struct if isinstance(struct, (list, tuple)) else [struct]
        if all(hasattr(t, "name") for t in tensors) and all(t.name in structure for t in tensors):
            return [structure[t.name] for t in tensors]
        raise InputError(f"{label}: {model.name} is called with a dict whose keys ({', '.join(map(str, structure))}) "
                         f"are not the names of its inputs ({', '.join(str(getattr(t, 'name', t)) for t in tensors)})")
    flat = keras.tree.flatten(structure)
    if len(flat) != len(model.inputs):
        raise InputError(f"{label}: {model.name} takes {len(model.inputs)} inputs and is called with {len(flat)}")
    return flat


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


# -- the vocabularies a model's layers give its inputs ---------------------------------------------
@dataclass(frozen=True)
class _Bound:
    high: int
    why: str


def _vocabulary(op) -> _Bound | None:
    """The exclusive bound of the ids ``op`` takes: Keras's own ``Embedding`` and ``CategoryEncoding``."""
    import keras

    if type(op) is keras.layers.Embedding:  # a subclass may map its ids otherwise
        return _Bound(int(op.input_dim), f"the vocabulary of {op.name}, input_dim {int(op.input_dim)}")
    if type(op) is keras.layers.CategoryEncoding:
        return _Bound(int(op.num_tokens), f"the tokens of {op.name}, num_tokens {int(op.num_tokens)}")
    return None


def _graph_of(model):
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def _readers(graph, tensor) -> list:
    """The nodes of ``graph`` that take ``tensor`` as an input."""
    nodes = [node for depth in graph._nodes_by_depth.values() for node in depth]
    return [node for node in nodes if not node.is_input and any(t is tensor for t in node.input_tensors)]


def _bounds_of(graph, tensor, depth: int = 0) -> list[_Bound]:
    found = []
    if depth > 32:
        return found
    for node in _readers(graph, tensor):
        op = node.operation
        bound = _vocabulary(op)
        if bound is not None:
            found.append(bound)
            continue
        inner = _graph_of(op) if op is not graph else None
        if inner is not None and node.arguments.args:
            try:
                arguments = call_arguments(inner, node.arguments.args[0])
            except InputError:
                continue
            for argument, inner_input in zip(arguments, inner.inputs):
                if argument is tensor:
                    found += _bounds_of(inner, inner_input, depth + 1)
    return found


def vocabulary_ranges(model) -> dict[int, ValueRange]:
    """``{input index: ValueRange}`` for the integer inputs an ``Embedding``/``CategoryEncoding`` reads
    directly (also through nested models): ids ``0 .. vocabulary - 1``, the smallest vocabulary where
    several read it. An input first transformed by other ops gets none (its ids are not the layer's)."""
    graph = _graph_of(model)
    if graph is None:
        return {}
    ranges = {}
    for index, tensor in enumerate(model.inputs):
        if "int" not in str(tensor.dtype):
            continue
        try:
            bounds = _bounds_of(graph, tensor)
        except Exception:  # noqa: BLE001 - a graph this walk does not know gives no bound, never an error
            bounds = []
        if bounds:
            tightest = min(bounds, key=lambda b: b.high)
            ranges[index] = ValueRange(0, tightest.high - 1, tightest.why)
    return ranges
