"""A read-only view of a Sequential or Functional model's call graph.

The graph is read from the model's config, the same structure Keras saves:
each layer entry lists its calls (``inbound_nodes``) and each call names the
tensors it consumes by ``keras_history`` ``[layer, node, index]``. A nested
model is a layer of its parent graph and has a graph of its own
(:meth:`ModelGraph.children`); bnfreeze never folds across that boundary.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple

from bnfreeze.errors import InputError
from bnfreeze.io.models import model_label

SEQUENTIAL_INPUT = "<sequential input>"


class TensorRef(NamedTuple):
    """A tensor of the graph: output ``index`` of call ``node`` of ``layer``."""

    layer: str
    node: int
    index: int


@dataclass(frozen=True)
class Call:
    """One call of a layer: the tensors it reads and its keyword arguments."""

    layer: str
    node: int
    inputs: tuple[TensorRef, ...]
    input_shapes: tuple[tuple[int | None, ...] | None, ...]
    kwargs: dict = field(hash=False, compare=False)


@dataclass(frozen=True)
class Consumer:
    """Where a tensor goes: a layer call, or a model output (``call`` is None)."""

    call: Call | None

    def describe(self) -> str:
        return self.call.layer if self.call is not None else "the model output"


def tensor_configs(obj: Any) -> Iterator[dict]:
    """Every ``__keras_tensor__`` config in a (nested) inbound-node structure, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield obj["config"]
            return
        for value in obj.values():
            yield from tensor_configs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensor_configs(value)


def _is_history(obj: Any) -> bool:
    return (
        isinstance(obj, (list, tuple))
        and len(obj) == 3
        and isinstance(obj[0], str)
        and isinstance(obj[1], int)
        and isinstance(obj[2], int)
    )


def walk_histories(obj: Any) -> Iterator[list]:
    """Yield every ``[layer, node, index]`` triple in an ``output_layers`` structure."""
    if _is_history(obj):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from walk_histories(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from walk_histories(value)


def model_kind(model) -> str:
    """``"sequential"``, ``"functional"`` or ``"subclassed"``.

    Only Keras's own ``Sequential`` and ``Functional`` classes count: a
    subclass may override ``call``, so its graph does not say what it computes.
    """
    import keras
    from keras.src.models.functional import Functional

    if type(model) is keras.Sequential:
        return "sequential"
    if type(model) is Functional:
        return "functional"
    return "subclassed"


class ModelGraph:
    """The call graph of one Sequential or Functional model (not its nested models)."""

    def __init__(self, model, config: dict | None = None, path: tuple[str, ...] = (), modes=None):
        kind = model_kind(model)
        if kind == "subclassed":
            name = model_label(model) if not path else model.name  # the top model is named by its file
            raise InputError(
                f"{name} is a subclassed model ({type(model).__name__}); bnfreeze rewrites "
                "Sequential and Functional models only: rebuild it with the Functional API"
            )
        self.model = model
        self.kind = kind
        #: Set once the recorded shapes are known not to hold at run time (:meth:`forget_shapes`).
        self.shapes_forgotten = False
        #: Which layers run in training mode under the default call (:mod:`bnfreeze.fold.training`).
        self.modes = modes
        #: The graph this one is a nested model of (None at the top).
        self.parent: ModelGraph | None = None
        self.path = path
        self.config = copy.deepcopy(model.get_config()) if config is None else config
        self.entries: dict[str, dict] = {}
        self.calls: dict[str, list[Call]] = {}
        self.consumers: dict[TensorRef, list[Consumer]] = {}
        self.outputs: list[TensorRef] = []
        self.inputs: list[str] = []
        if kind == "sequential":
            self._read_sequential()
        else:
            self._read_functional()
        self._link()

    def _link(self) -> None:
        """Index every tensor's consumers (layer calls and model outputs)."""
        self.consumers = {}
        for calls in self.calls.values():
            for call in calls:
                for ref in call.inputs:
                    self.consumers.setdefault(ref, []).append(Consumer(call))
        for ref in self.outputs:
            self.consumers.setdefault(ref, []).append(Consumer(None))

    # -- shapes of a nested model ------------------------------------------------
    def _input_shapes(self) -> list[tuple[int | None, ...] | None]:
        """The shape this graph recorded for each of its inputs (None where nothing recorded one)."""
        return [self.shape_of(TensorRef(name, 0, 0)) for name in self.inputs]

    def holds_for(self, calls: list[Call]) -> bool:
        """Do the shapes recorded inside this (nested) graph hold for every one of ``calls`` in its parent?

        A nested model records the shapes it was built on. Its parent may call it on other
        ones: a Sequential built for 8x8 images and used in a model whose input has None
        spatial dims runs on any size (Keras checks no input spec there), so a size-dependent
        decision made on the recorded 8x8 (does a 'same' convolution pad anything?) would not
        hold at run time.
        """
        own = self._input_shapes()
        for call in calls:
            if len(call.input_shapes) != len(own):
                return False
            for given, recorded in zip(call.input_shapes, own):
                if recorded is None:
                    continue
                if given is None or len(given) != len(recorded):
                    return False
                if any(r is not None and g != r for g, r in zip(given[1:], recorded[1:])):
                    return False
        return True

    def forget_shapes(self) -> None:
        """Keep only the rank of every recorded shape: the dims are not known to hold at run time."""
        self.shapes_forgotten = True
        for name, calls in self.calls.items():
            self.calls[name] = [
                Call(c.layer, c.node, c.inputs,
                     tuple(None if s is None else (None,) * len(s) for s in c.input_shapes), c.kwargs)
                for c in calls
            ]
        self._link()

    # -- reading -----------------------------------------------------------------
    def _read_functional(self) -> None:
        for entry in self.config["layers"]:
            name = entry["name"]
            self.entries[name] = entry
            calls = []
            for node_index, node in enumerate(entry.get("inbound_nodes", [])):
                tensors = list(tensor_configs(node.get("args", []))) + list(tensor_configs(node.get("kwargs", {})))
                refs = tuple(TensorRef(*t["keras_history"]) for t in tensors)
                shapes = tuple(tuple(t["shape"]) if t.get("shape") is not None else None for t in tensors)
                kwargs = {k: v for k, v in node.get("kwargs", {}).items() if not list(tensor_configs(v))}
                calls.append(Call(name, node_index, refs, shapes, kwargs))
            self.calls[name] = calls
        self.inputs = [h[0] for h in walk_histories(self.config["input_layers"])]
        self.outputs = [TensorRef(*h) for h in walk_histories(self.config["output_layers"])]

    def _read_sequential(self) -> None:
        previous = TensorRef(SEQUENTIAL_INPUT, 0, 0)
        shape = self.config.get("build_input_shape")
        for entry in self.config["layers"]:
            name = entry["config"]["name"]
            self.entries[name] = entry
            if entry["class_name"] == "InputLayer":
                self.inputs.append(name)
                self.calls[name] = []
                previous = TensorRef(name, 0, 0)
                shape = entry["config"].get("batch_shape", shape)
                continue
            build = entry.get("build_config") or {}
            in_shape = build.get("input_shape", shape)
            self.calls[name] = [
                Call(name, 0, (previous,), (tuple(in_shape) if in_shape is not None else None,), {})
            ]
            previous = TensorRef(name, 0, 0)
            shape = None
        if not self.inputs:
            self.inputs.append(SEQUENTIAL_INPUT)
        self.outputs = [previous]

    # -- queries -----------------------------------------------------------------
    @property
    def label(self) -> str:
        return "/".join(self.path) if self.path else self.model.name

    def qualified(self, name: str) -> str:
        """A layer name with the names of the nested models around it."""
        return "/".join(self.path + (name,))

    def layer(self, name: str):
        """The live layer, or the Keras operation (``keras.ops`` call) of that name."""
        if not hasattr(self, "_operations"):
            operations = getattr(self.model, "operations", None) or self.model.layers
            self._operations = {op.name: op for op in operations}
        if name in self._operations:
            return self._operations[name]
        return self.model.get_layer(name)

    def class_name(self, name: str) -> str:
        return self.entries[name]["class_name"] if name in self.entries else "InputLayer"

    def layer_names(self) -> list[str]:
        return list(self.entries)

    def is_input(self, name: str) -> bool:
        return name in self.inputs

    def consumers_of(self, ref: TensorRef) -> list[Consumer]:
        return self.consumers.get(ref, [])

    def shape_of(self, ref: TensorRef) -> tuple[int | None, ...] | None:
        """The shape (batch first) the graph recorded for tensor ``ref``: where a consumer recorded it,
        or, for a model output, the model's own output tensor."""
        for consumer in self.consumers_of(ref):
            if consumer.call is None:
                continue
            for input_ref, shape in zip(consumer.call.inputs, consumer.call.input_shapes):
                if input_ref == ref and shape is not None:
                    return tuple(shape)
        if self.shapes_forgotten:
            return None
        for tensor in getattr(self.model, "outputs", None) or []:
            history = getattr(tensor, "_keras_history", None)
            operation = getattr(history, "operation", None)
            # a layer called once: its node index cannot differ between the model's config and the layer
            if (operation is not None and len(getattr(operation, "_inbound_nodes", ())) == 1
                    and (operation.name, history.tensor_index) == (ref.layer, ref.index)):
                return tuple(tensor.shape)
        return None

    def in_training(self, name: str) -> bool:
        """Does layer ``name`` receive ``training=True`` under the model's default call?"""
        if self.modes is None or name not in self.entries:
            return False
        return self.modes.in_training(self.layer(name))

    def describe(self, name: str) -> str:
        """``name (Class)`` for reports: ``reshape (keras.ops Reshape)``, ``bn (my_pkg>ClippedBN)``."""
        from bnfreeze.fold.classes import class_label

        if name not in self.entries:
            return name
        return f"{name} ({class_label(self.layer(name))})"

    def is_output(self, ref: TensorRef) -> bool:
        return ref in self.outputs

    def children(self) -> Iterator["ModelGraph"]:
        """Graphs of the Sequential/Functional models used as layers here."""
        for name, entry in self.entries.items():
            if entry["class_name"] == "InputLayer":
                continue
            layer = self.layer(name)
            if model_kind_of_layer(layer) in ("sequential", "functional"):
                child = ModelGraph(layer, entry["config"], self.path + (name,), self.modes)
                child.parent = self
                if not child.holds_for(self.calls.get(name, [])):
                    child.forget_shapes()
                yield child

    def walk(self) -> Iterator["ModelGraph"]:
        """This graph and every nested one, parents first."""
        yield self
        for child in self.children():
            yield from child.walk()


def functional_like(model) -> bool:
    """A subclass of Keras's Functional model that computes its graph: its ``call`` is Functional's.

    KerasHub's ``Backbone`` and ``Task`` classes are such subclasses (they add
    constructor arguments, presets and a preprocessor, not computation). A class
    that overrides ``call`` (or the graph walk behind it) is not.
    """
    from keras.src.models.functional import Functional

    cls = type(model)
    if not isinstance(model, Functional) or cls is Functional:
        return False
    return all(getattr(cls, name) is getattr(Functional, name)
               for name in ("call", "_run_through_graph", "compute_output_spec"))


def sequential_like(model) -> bool:
    """A subclass of ``keras.Sequential`` whose ``call`` is Sequential's."""
    import keras

    cls = type(model)
    return isinstance(model, keras.Sequential) and cls is not keras.Sequential and cls.call is keras.Sequential.call


def graph_config(model) -> dict:
    """The Functional config of a :func:`functional_like` model: the graph it computes.

    Such a class's own ``get_config`` returns its constructor arguments, so the
    graph is read through a plain Functional model over the same tensors (made
    for the read and dropped; the node lists it touched are restored).
    """
    from keras.src.models.functional import Functional

    operations = list(model.operations)
    counts = [(op, len(op._inbound_nodes), len(op._outbound_nodes)) for op in operations]
    try:
        view = Functional(model._inputs_struct, model._outputs_struct, name=model.name)
        config = copy.deepcopy(view.get_config())
    finally:
        for op, inbound, outbound in counts:
            del op._inbound_nodes[inbound:]
            del op._outbound_nodes[outbound:]
    config["trainable"] = model.trainable
    return config


def model_kind_of_layer(layer) -> str | None:
    import keras

    if isinstance(layer, keras.Model):
        return model_kind(layer)
    return None
