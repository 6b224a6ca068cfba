"""Look inside a layer (or model) with its own ``call``: trace it into a Functional graph of known layers.

KerasHub's blocks (``MBConvBlock``, HGNetV2's conv layers) and the
``ConvBNReLU(keras.layers.Layer)`` of every tutorial call their sublayers in
``call``. Called on *symbolic* Keras tensors, such a ``call`` usually records
an ordinary Functional graph: every sublayer call becomes a node, every
``keras.ops`` call an operation node. :func:`trace_layer` does that with the
layer's own input shapes and ``training=False`` (the inference call that
``predict``, serving and every exporter make), and then *proves* the trace:

* the graph must serialize and rebuild from its config (what bnfreeze writes),
  hold only weights the layer holds (a layer created with weights inside
  ``call`` would be new and random at every call), and compute with no
  tensor that is not one of its inputs or a layer's weight (a weight read
  directly, ``x * self.scale``, would be frozen into a constant);
* the rebuilt graph must equal the layer itself on seeded random inputs at
  batch 1 and batch 3, at two magnitudes (x1 and x10) and, where the layer
  accepts free sizes, at two sizes; the layer must give the same output
  twice (nothing random) and leave its variables as they were (no state).

Tracing refuses, with a reason naming the class and what stopped it, where
Python control flow depends on tensor values (a symbolic tensor has none),
the call cannot run symbolically, a Keras mask reaches the layer, the layer
computes its own mask, or any check above fails. Nothing is guessed: a layer
whose trace does not hold stays as it is, and every BN inside it is kept.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnfreeze.fold.classes import class_label

#: Relative error (to the largest magnitude of the layer's output) a trace may show, by compute dtype.
#: A true trace runs the same ops in the same order, so it agrees to the last bits.
TRACE_RTOL = {"float64": 1e-12, "float32": 1e-6, "float16": 2e-3, "bfloat16": 1e-2}
#: Sizes given to unknown (None) dims of the layer's inputs when the trace is checked.
CHECK_FREE_DIMS = (12, 17)


@dataclass(frozen=True)
class TensorSlot:
    """A tensor argument of a call: its shape (batch first, None where free) and dtype."""

    shape: tuple[int | None, ...]
    dtype: str


@dataclass
class CallTemplate:
    """One call of a layer as its graph records it: ``args``/``kwargs`` with :class:`TensorSlot` s for tensors.

    ``training`` is the ``training`` argument the graph passes (None when it passes none);
    it stays on the call of the traced graph, and the trace itself is made with ``training=False``.
    """

    args: tuple
    kwargs: dict
    training: Any = None

    def slots(self) -> list[TensorSlot]:
        return [value for value in _leaves((self.args, self.kwargs)) if isinstance(value, TensorSlot)]

    def structure(self):
        """The call with every tensor replaced by the same marker: equal for calls that differ only in shapes."""
        return _map((self.args, self.kwargs), lambda v: "<tensor>" if isinstance(v, TensorSlot) else v)


class TraceRefused(Exception):
    """A layer cannot be traced exactly; the message says why (it names the class)."""


@dataclass
class Trace:
    """A layer's ``call`` as a Functional graph.

    ``model`` is the traced Functional over the layer's own sublayers (live,
    sharing their weights); ``config`` its config with the ``training=False``
    arguments the trace passed removed, which rebuilds into the graph bnfreeze
    writes; ``unused`` the layers the layer holds that its call never reaches.
    """

    layer: Any
    model: Any
    config: dict
    template: CallTemplate
    unused: list = field(default_factory=list)


# -- structures ------------------------------------------------------------------------
def _leaves(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _leaves(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _leaves(value)
    else:
        yield obj


def _map(obj, fn):
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_map(v, fn) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_map(v, fn) for v in obj)
    return fn(obj)


def _is_tensor_config(obj) -> bool:
    return isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__"


def _holds_tensor_config(obj) -> bool:
    if _is_tensor_config(obj):
        return True
    if isinstance(obj, dict):
        return any(_holds_tensor_config(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_tensor_config(v) for v in obj)
    return False


def mask_problem(layer) -> str | None:
    """Why a Keras mask may reach ``layer`` at run time, from its recorded calls, or None.

    Keras 3 carries masks on the tensors themselves: a layer whose ``call`` takes
    no ``mask`` still receives them, and drops them unless it supports masking,
    while a traced Functional graph would pass them on to its sublayers.
    """
    for node in getattr(layer, "_inbound_nodes", []):
        for tensor in node.arguments.keras_tensors:
            mask = getattr(tensor, "_keras_mask", None)
            if mask is not None:
                history = getattr(mask, "_keras_history", None)
                source = getattr(getattr(history, "operation", None), "name", None)
                return f"a Keras mask reaches it{f' (from {source})' if source else ''}"
    return None


def template_from_node(node: dict, label: str) -> CallTemplate:
    """The :class:`CallTemplate` of one inbound node of a Functional config."""

    def convert(obj):
        if _is_tensor_config(obj):
            config = obj["config"]
            shape = config.get("shape")
            return TensorSlot(tuple(shape) if shape is not None else None, str(config.get("dtype") or "float32"))
        if isinstance(obj, dict):
            if "class_name" in obj:
                raise TraceRefused(f"{label} is called with a {obj['class_name']} argument bnfreeze cannot rebuild")
            return {k: convert(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [convert(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(convert(v) for v in obj)
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TraceRefused(f"{label} is called with an argument of type {type(obj).__name__} bnfreeze cannot rebuild")

    kwargs = dict(node.get("kwargs", {}))
    training = kwargs.pop("training", None)
    mask = kwargs.pop("mask", None)
    if _holds_tensor_config(mask):
        raise TraceRefused(f"{label} receives a Keras mask; bnfreeze does not trace a layer a mask reaches")
    return CallTemplate(tuple(convert(a) for a in node.get("args", [])), {k: convert(v) for k, v in kwargs.items()},
                        training)


def template_from_shape(shape, dtype: str = "float32") -> CallTemplate:
    """A one-argument call on a tensor (or a list/dict of tensors) of ``shape`` (a Sequential layer, a
    subclassed model's build shape)."""

    def convert(obj):
        if isinstance(obj, dict):
            return {k: convert(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)) and obj and all(isinstance(d, (int, type(None))) for d in obj):
            return TensorSlot(tuple(obj), dtype)
        if isinstance(obj, (list, tuple)):
            return [convert(v) for v in obj]
        raise TraceRefused(f"cannot read an input shape from {obj!r}")

    return CallTemplate((convert(shape),), {}, None)


def merge_templates(templates: list[CallTemplate], label: str) -> CallTemplate:
    """One template for every call of a shared layer: the same arguments; shapes free where calls differ."""
    first = templates[0]
    for other in templates[1:]:
        if other.structure() != first.structure():
            raise TraceRefused(f"{label} is called with different arguments at its {len(templates)} places")
    slots = [t.slots() for t in templates]
    merged = []
    for group in zip(*slots):
        shapes = [s.shape for s in group]
        if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
            raise TraceRefused(f"{label} is called on tensors of unknown or different rank")
        if len({s.dtype for s in group}) != 1:
            raise TraceRefused(f"{label} is called on tensors of different dtypes")
        dims = tuple(d[0] if len(set(d)) == 1 else None for d in zip(*shapes))
        merged.append(TensorSlot(dims, group[0].dtype))
    queue = iter(merged)
    return CallTemplate(_map(first.args, lambda v: next(queue) if isinstance(v, TensorSlot) else v),
                        _map(first.kwargs, lambda v: next(queue) if isinstance(v, TensorSlot) else v),
                        first.training)


# -- the trace -------------------------------------------------------------------------------
def _numeric(dtype: str) -> bool:
    if dtype == "bfloat16":
        return True
    try:
        kind = np.dtype(dtype).kind
    except TypeError:
        return False
    return kind in "biuf"


def _accepts(layer, name: str) -> bool:
    try:
        return name in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def _why_untraceable(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "cannot be used as input to a tensorflow function" in lowered:
        kind = ("it computes with TensorFlow directly or with its own weights outside a layer "
                "(x * self.scale), which does not trace on Keras tensors")
    elif any(words in lowered for words in ("as a boolean", "as a python `bool`", "truth value", "__bool__",
                                            "iterate over")):
        kind = "Python control flow on tensor values"
    else:
        kind = "its call cannot run on symbolic Keras tensors"
    detail = text[:160] if text else type(exc).__name__
    return f"{kind} ({type(exc).__name__}: {detail})"


def _variables_in_arguments(model) -> list[tuple[str, str]]:
    """(operation, variable) for every op node of ``model`` that computes with a variable or a backend tensor
    passed in as a constant (a weight read outside a layer)."""
    import keras

    found = []
    for operation in model.operations:
        if isinstance(operation, keras.layers.Layer):
            continue
        for node in operation._inbound_nodes:
            for value in keras.tree.flatten((node.arguments.args, node.arguments.kwargs)):
                if isinstance(value, keras.Variable):
                    found.append((operation.name, value.path))
                elif keras.ops.is_tensor(value) and not isinstance(value, keras.KerasTensor):
                    found.append((operation.name, None))
    return found


def _lambdas(config, where: str = "") -> list[str]:
    """The layers of a config that hold a serialized Python lambda (``__lambda__``)."""
    found = []
    if isinstance(config, dict):
        if config.get("class_name") == "__lambda__":
            return [where or "its graph"]
        name = config.get("name") if isinstance(config.get("name"), str) else where
        for value in config.values():
            found.extend(_lambdas(value, name))
    elif isinstance(config, (list, tuple)):
        for value in config:
            found.extend(_lambdas(value, where))
    return found


def _strip_training(config: dict) -> list[tuple[str, Any]]:
    """Remove ``training`` from every call recorded in a Functional config (nested models too).

    The trace passed ``training=False``; a traced graph is for inference, which
    Keras gives every layer under ``model(x, training=False)``. Returns the calls
    that recorded a true value, which a check refuses.
    """
    truthy = []
    for entry in config.get("layers", []):
        for node in entry.get("inbound_nodes", []):
            kwargs = node.get("kwargs") or {}
            if "training" in kwargs:
                value = kwargs.pop("training")
                if value:
                    truthy.append((entry.get("name"), value))
        if entry.get("class_name") in ("Functional", "Sequential") and isinstance(entry.get("config"), dict):
            truthy.extend(_strip_training(entry["config"]))
    return truthy


def trace_layer(layer, template: CallTemplate, *, owned_layers=None) -> Trace:
    """Trace ``layer.call`` on ``template``'s arguments into a Functional graph, and prove it (see the module).

    Raises :class:`TraceRefused` with a reason naming the class when the trace
    does not hold, whatever the user's code raised on the way. The layer's
    variables are as they were afterwards, and the node lists of its sublayers
    too (the trace's own graph is read first).
    """
    try:
        return _trace_layer(layer, template, owned_layers)
    except TraceRefused:
        raise
    except Exception as exc:  # the layer's own code (build, call, get_config) failed in a way not foreseen here
        raise TraceRefused(f"{layer.name} ({class_label(layer)}) cannot be traced "
                           f"({type(exc).__name__}: {_first_line(exc)})") from exc


def _trace_layer(layer, template: CallTemplate, owned_layers) -> Trace:
    import keras

    label = f"{layer.name} ({class_label(layer)})"
    if not getattr(layer, "built", False):
        raise TraceRefused(f"{label} is not built")
    masked = mask_problem(layer)
    if masked:
        raise TraceRefused(f"{label}: {masked}; bnfreeze does not trace a layer a mask reaches")
    if type(layer).compute_mask is not keras.layers.Layer.compute_mask and not isinstance(layer, keras.Model):
        raise TraceRefused(f"{label} computes its own Keras mask (compute_mask), which a traced graph would not carry")
    slots = template.slots()
    if not slots:
        raise TraceRefused(f"{label} is called with no tensor")
    odd = [slot.dtype for slot in slots if not _numeric(slot.dtype)]
    if odd:
        raise TraceRefused(f"{label} takes {odd[0]} tensors, which bnfreeze cannot make random inputs of to check "
                           "a trace")
    from bnfreeze.parity import preserved_state

    inputs = [keras.Input(batch_shape=slot.shape, dtype=slot.dtype) for slot in slots]
    queue = iter(inputs)
    args = _map(template.args, lambda v: next(queue) if isinstance(v, TensorSlot) else v)
    kwargs = _map(template.kwargs, lambda v: next(queue) if isinstance(v, TensorSlot) else v)
    if _accepts(layer, "training"):
        kwargs["training"] = False
    with preserved_state(layer), _node_lists_kept(layer):
        # the trace: every node it records in the user's layers is removed on exit
        try:
            outputs = layer.call(*args, **kwargs)
        except Exception as exc:  # user code: anything it raises means it cannot be traced
            raise TraceRefused(f"{label} cannot be traced: {_why_untraceable(exc)}") from exc
        leaves = keras.tree.flatten(outputs)
        if not leaves or not all(isinstance(t, keras.KerasTensor) for t in leaves):
            raise TraceRefused(f"{label} cannot be traced: its call returns something other than tensors "
                               "computed from its inputs")
        if any(getattr(t, "_keras_mask", None) is not None for t in leaves):
            raise TraceRefused(f"{label} makes a Keras mask inside its call, which its traced graph would pass "
                               "on to the layers after it")
        try:
            model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=layer.name)
        except Exception as exc:
            raise TraceRefused(f"{label} cannot be traced: {_why_untraceable(exc)}") from exc
        problem = _graph_problem(layer, model, label, owned_layers)
        if problem:
            raise TraceRefused(problem)
        try:
            with _serializable_keras_layers(model):
                config = copy.deepcopy(model.get_config())
        except Exception as exc:
            raise TraceRefused(f"{label} cannot be traced: its graph does not serialize "
                               f"({type(exc).__name__}: {_first_line(exc)})") from exc
    lambdas = _lambdas(config)
    if lambdas:
        raise TraceRefused(f"{label} computes with a Python lambda (in {lambdas[0]}): a plain model holding it "
                           "would load only with safe_mode=False")
    from bnfreeze.fold.inference import trains_by_default

    live = {op.name: op for op in model.operations}
    # Keras records the default of a call that defaults to training=True (Resizing) as passed: such a
    # layer is pinned to training=False when the traced graph is read (bnfreeze.fold.plain)
    truthy = [(name, value) for name, value in _strip_training(config) if not trains_by_default(live.get(name))]
    if truthy:
        name, value = truthy[0]
        raise TraceRefused(f"{label} calls {name} with training={value!r}: a training-mode branch that stays active "
                           "at inference")
    reached = {id(op) for op in model.operations}
    unused = [sub for sub in layer._flatten_layers(include_self=False, recursive=False) if id(sub) not in reached
              and not _reached_inside(sub, model)]
    trace = Trace(layer=layer, model=model, config=config, template=template, unused=unused)
    check_trace(trace, label)
    return trace


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(exc).__name__


class _node_lists_kept:
    """Restore the node lists of ``layer`` and every layer inside it on exit.

    Calling a layer on Keras tensors records a node in it (and in the layers it
    reads from); a trace and its check call the user's layers so, and must leave
    them as they were.
    """

    def __init__(self, layer):
        layers = [layer, *layer._flatten_layers(include_self=False, recursive=True)]
        self.counts = [(op, len(op._inbound_nodes), len(op._outbound_nodes)) for op in layers]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for op, inbound, outbound in self.counts:
            del op._inbound_nodes[inbound:]
            del op._outbound_nodes[outbound:]
        return False


class _serializable_keras_layers:
    """Let Keras's own argument-free layers serialize however they were made.

    ``keras.layers.Identity`` has no ``get_config`` of its own: Keras generates
    it from the ``__init__`` arguments, and refuses when one was an object
    (KerasHub passes ``dtype=self.dtype_policy``). Such a layer's config is its
    name, dtype and trainable flag whatever it was made with; this gives it an
    empty generated config while the traced graph is read, and restores it after.
    """

    def __init__(self, model):
        self.patched = []
        for op in model.operations:
            if not type(op).__module__.startswith("keras.") or getattr(op, "_auto_config", True) is not None:
                continue
            try:
                parameters = [p for p in inspect.signature(type(op).__init__).parameters.values()
                              if p.name != "self"]
            except (TypeError, ValueError):
                continue
            if all(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
                self.patched.append(op)

    def __enter__(self):
        from keras.src.saving.serialization_lib import SerializableDict

        for op in self.patched:
            object.__setattr__(op, "_auto_config", SerializableDict())
        return self

    def __exit__(self, *exc):
        for op in self.patched:
            object.__setattr__(op, "_auto_config", None)
        return False


def _reached_inside(sublayer, model) -> bool:
    """Is ``sublayer`` reached as part of a layer the traced graph calls (a list of layers, a nested block)?"""
    for op in model.operations:
        if hasattr(op, "_flatten_layers") and any(inner is sublayer for inner in op._flatten_layers(include_self=False)):
            return True
    return False


def _graph_problem(layer, model, label: str, owned_layers) -> str | None:
    import keras

    owned = {id(v) for v in layer.weights} if owned_layers is None else owned_layers
    for variable in model.weights:
        if id(variable) not in owned:
            creator = next((op.name for op in model.operations if any(v is variable for v in getattr(op, "weights", []))),
                           "a layer")
            return (f"{label} creates {creator} with weights inside its call: they would be new at every call, "
                    "so the trace cannot stand for it")
    outside = _variables_in_arguments(model)
    if outside:
        op, variable = outside[0]
        if variable is not None:
            return (f"{label} reads its weight {variable} outside a layer (in keras.ops {op}): a traced graph would "
                    "freeze it into a constant")
        return (f"{label} computes with a tensor that does not come from its inputs (in keras.ops {op}: a weight read "
                "directly, a random draw or a tensor made in its call): a traced graph would freeze it into a constant")
    for op in model.operations:
        if isinstance(op, keras.layers.Layer) and op is layer:
            return f"{label} calls itself"
    return None


# -- the proof ------------------------------------------------------------------------------
def _rebuild(trace: Trace):
    """The traced graph as bnfreeze writes it: Keras's own layers rebuilt from their configs with their state
    copied; layers with their own call are the layer's own (each is traced and checked on its own, or kept)."""
    import keras

    from bnfreeze.io.models import copy_state

    clones = []

    def clone(op):
        if isinstance(op, keras.layers.Layer) and type(op).__module__.startswith("keras."):
            new = op.__class__.from_config(op.get_config())
            clones.append((op, new))
            return new
        return op  # keras.ops operations hold nothing; custom layers are the layer's own

    with _serializable_keras_layers(trace.model), _node_lists_kept(trace.layer):
        rebuilt = keras.models.clone_model(trace.model, clone_function=clone)
    for source, new in clones:
        copy_state(source, new)
    return rebuilt


def _integer_high(layer) -> int:
    import keras

    sizes = [int(l.input_dim) for l in layer._flatten_layers(include_self=True) if isinstance(l, keras.layers.Embedding)]
    return min(sizes) if sizes else 2


def _random_arrays(slots: list[TensorSlot], batch: int, free: int, seed: int, magnitude: float, int_high: int):
    rng = np.random.default_rng(seed)
    arrays = []
    for slot in slots:
        shape = tuple(batch if i == 0 and d is None else (free if d is None else int(d)) for i, d in enumerate(slot.shape))
        dtype = np.dtype("float32" if slot.dtype == "bfloat16" else slot.dtype)
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, int_high, size=shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append((rng.standard_normal(shape) * magnitude).astype(dtype))
    return arrays


def _as_called(layer, template: CallTemplate):
    """``layer`` called as its graph calls it, in a Functional model of its own: run with
    ``training=False``, it computes what it computes inside the model under ``predict`` (Keras's call
    context passes ``training=False`` on to the layers it calls, which a bare call would not)."""
    import keras

    inputs = [keras.Input(batch_shape=slot.shape, dtype=slot.dtype) for slot in template.slots()]
    queue = iter(inputs)
    args = _map(template.args, lambda v: next(queue) if isinstance(v, TensorSlot) else v)
    kwargs = _map(template.kwargs, lambda v: next(queue) if isinstance(v, TensorSlot) else v)
    with _node_lists_kept(layer):
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs, layer(*args, **kwargs))


def _call_graph(model, arrays):
    import keras

    feed = arrays[0] if len(arrays) == 1 else list(arrays)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(model(feed, training=False))]


def _worst(expected, got) -> float:
    worst = 0.0
    for a, b in zip(expected, got):
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a64.shape != b64.shape:
            return float("inf")
        same_nan = np.isnan(a64) == np.isnan(b64)
        if not same_nan.all():
            return float("inf")
        finite = ~np.isnan(a64)
        if not finite.any():
            continue
        scale = max(float(np.max(np.abs(a64[finite]), initial=0.0)), 1.0)
        diff = np.abs(a64[finite] - b64[finite])
        diff = np.where(np.isinf(a64[finite]) & (a64[finite] == b64[finite]), 0.0, diff)
        worst = max(worst, float(np.max(diff, initial=0.0)) / scale)
    return worst


def check_trace(trace: Trace, label: str) -> None:
    """Prove ``trace`` on seeded random inputs (see the module); raise :class:`TraceRefused` where it fails."""
    from bnfreeze.compare.tolerance import compute_dtype
    from bnfreeze.parity import preserved_state

    layer, template = trace.layer, trace.template
    slots = template.slots()
    free = any(d is None for slot in slots for d in slot.shape[1:])
    fixed_batch = next((slot.shape[0] for slot in slots if slot.shape and slot.shape[0] is not None), None)
    rtol = TRACE_RTOL.get(compute_dtype(layer) if hasattr(layer, "_flatten_layers") else "float32", 1e-6)
    int_high = _integer_high(layer)
    try:
        original = _as_called(layer, template)
    except Exception as exc:
        raise TraceRefused(f"{label} cannot be called on Keras tensors of its recorded shapes "
                           f"({type(exc).__name__}: {_first_line(exc)})") from exc
    try:
        rebuilt = _rebuild(trace)
    except Exception as exc:
        raise TraceRefused(f"{label}'s traced graph does not rebuild from its config "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from exc
    cases = [(1, CHECK_FREE_DIMS[0], 1.0), (3, CHECK_FREE_DIMS[0], 10.0)]
    if free:
        cases += [(1, CHECK_FREE_DIMS[1], 1.0), (3, CHECK_FREE_DIMS[1], 10.0)]
    ran = 0
    for seed, (batch, size, magnitude) in enumerate(cases):
        arrays = _random_arrays(slots, fixed_batch or batch, size, seed, magnitude, int_high)
        with preserved_state(layer):
            before = [np.array(v.numpy(), copy=True) for v in layer.variables]
            try:
                expected = _call_graph(original, arrays)
            except Exception:
                continue  # the layer itself does not run at this size: not a case to check
            again = _call_graph(original, arrays)
            after = [np.asarray(v.numpy()) for v in layer.variables]
        if any(not np.array_equal(b, a, equal_nan=True) for b, a in zip(before, after)):
            raise TraceRefused(f"{label} changes its own variables when called at inference (it has state): "
                               "a traced graph would not")
        if _worst(expected, again) > 0:
            raise TraceRefused(f"{label} gives different outputs for the same input (something random runs at "
                               "inference)")
        try:
            got = _call_graph(rebuilt, arrays)
        except Exception as exc:
            raise TraceRefused(f"{label}'s traced graph does not run where the layer does "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from exc
        if len(got) != len(expected):
            raise TraceRefused(f"{label}'s traced graph has {len(got)} outputs, the layer {len(expected)}")
        worst = _worst(expected, got)
        if worst > rtol:
            raise TraceRefused(f"{label}'s traced graph differs from the layer on random inputs (batch {batch}, "
                               f"x{magnitude:g}: max error {worst:.3g} of the output's largest magnitude)")
        ran += 1
    if ran == 0:
        raise TraceRefused(f"{label} does not run on random inputs of its recorded shapes, so its trace cannot be checked")
