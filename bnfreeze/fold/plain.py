"""One plain Keras reading of any model: the graph bnfreeze plans on and writes.

The fold rules read Sequential and Functional graphs of Keras's own layers
(:class:`~bnfreeze.fold.graph.ModelGraph`). Models people deploy hold more:

* **Functional subclasses** (KerasHub's ``Backbone`` and ``Task`` classes, a
  user's ``class MyNet(keras.Model)`` built with ``super().__init__(inputs,
  outputs)``) whose ``call`` is Functional's: they are Functional graphs, read
  as such. What the class carried beside the graph (a KerasHub task's
  preprocessor, its constructor arguments, its methods) is named in a note;
  the graph itself is unchanged.
* **Layers and models with their own ``call``** (KerasHub's ``MBConvBlock``, a
  ``ConvBNReLU(keras.layers.Layer)``): traced symbolically into a Functional
  graph of known layers (:mod:`bnfreeze.fold.tracing`), which takes the
  layer's place as a nested Functional model of the same name; a layer whose
  trace does not hold stays as it is ("opaque"), with the reason.
* **Preprocessing layers** that default to ``training=True``: dropped where they
  are the identity at inference, otherwise pinned to ``training=False``
  (:mod:`bnfreeze.fold.inference`).

:func:`plain_model` returns the rebuilt model (every layer's state copied as
``keras.saving`` restores it) with a :class:`StructureNote` for each change; the
input model is not touched. A model with nothing to change is returned as it is.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from bnfreeze.errors import InputError
from bnfreeze.fold.classes import batch_norms_inside, class_label, is_batch_norm
from bnfreeze.fold.graph import functional_like, graph_config, sequential_like, tensor_configs
from bnfreeze.fold.inference import drops_at_inference, is_random_augmentation, trains_by_default
from bnfreeze.fold.tracing import (
    CallTemplate,
    TensorSlot,
    Trace,
    TraceRefused,
    merge_templates,
    template_from_node,
    template_from_shape,
    trace_layer,
)
from bnfreeze.io.models import model_label

Path = tuple[str, ...]


@dataclass(frozen=True)
class StructureNote:
    """What the plain reading did with one layer or model, for every report.

    ``action`` is one of ``"read as Functional"``, ``"traced"``, ``"opaque"``,
    ``"dropped"`` and ``"pinned"``.
    """

    layer: str
    cls: str
    action: str
    detail: str

    def as_dict(self) -> dict:
        entry = asdict(self)
        entry["class"] = entry.pop("cls")
        return entry


@dataclass(frozen=True)
class Opaque:
    """A layer bnfreeze keeps as it is: why, and the original layer (its sublayers carry the user's names,
    which a rebuilt copy of a layer that does not name them would not)."""

    reason: str
    layer: Any


@dataclass
class PlainModel:
    """A model read plainly: ``model`` is what bnfreeze plans on (``original`` itself when nothing changed)."""

    model: Any
    original: Any
    notes: list[StructureNote] = field(default_factory=list)
    #: BNs the plain model does not hold (a traced call never reaches them), with why.
    unused_bns: list[tuple[str, str]] = field(default_factory=list)
    #: Qualified names of layers kept as they are, and why bnfreeze could not look inside.
    opaque: dict[str, Opaque] = field(default_factory=dict)
    #: Why a model rebuilt from this one's config would not be this model (a layer that does not come
    #: back from its own config), or None. Reading and planning work; writing does not.
    unwritable: str | None = None
    #: ``{id(plain layer): original layer}`` for each layer of a rebuilt plain model that stands for a
    #: layer of ``original`` (its state was copied from it); empty when nothing changed.
    sources: dict[int, Any] = field(default_factory=dict, repr=False)
    #: traced layers whose own call defaults to training=True (the original's model(x) runs them so)
    pinned_calls: list[str] = field(default_factory=list)

    def source_of(self, layer):
        """The layer of ``original`` that ``layer`` (of ``model``) stands for: itself when nothing changed,
        None for a layer the plain reading made (a traced call's nested model)."""
        if not self.changed:
            return layer
        return self.sources.get(id(layer))

    @property
    def changed(self) -> bool:
        return self.model is not self.original

    @property
    def default_call_changed(self) -> bool:
        """Does the plain model's default call ``model(x)`` differ from the original's by design?

        Dropping or pinning a layer that defaults to ``training=True`` makes the
        default call the inference call; the original's default call passes
        ``training=True`` on to the layers after it.
        """
        return bool(self.pinned_calls) or any(note.action in ("dropped", "pinned") for note in self.notes)

    def notes_dicts(self) -> list[dict]:
        return [note.as_dict() for note in self.notes]


def _entry_name(entry: dict) -> str:
    return entry.get("name") or entry["config"]["name"]


def _live_operations(owner) -> dict[str, Any]:
    operations = getattr(owner, "operations", None)
    if operations is None:
        operations = owner.layers
    found = {op.name: op for op in operations}
    if hasattr(owner, "_layers"):  # a Sequential's InputLayer
        for layer in owner._layers:
            found.setdefault(layer.name, layer)
    return found


def _node_tensors(node: dict) -> list[dict]:
    """The tensor configs of a call, in the order :class:`~bnfreeze.fold.tracing.CallTemplate` lists its slots."""
    kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if k not in ("training", "mask")}
    return list(tensor_configs([node.get("args", []), kwargs]))


def _keep_input_names(config: dict, model) -> None:
    """Name the plain model's inputs as the original's input tensors are named.

    Artifacts and ``verify`` name inputs by their tensors. A Functional config
    names an input by its InputLayer, and so does the model rebuilt from it; a
    subclass built on ``keras.Input(shape)`` without a name (KerasHub's
    backbones) has tensors named otherwise (``keras_tensor_41`` of
    ``input_layer_2``). Each such InputLayer takes its tensor's name, unless
    another layer has it.
    """
    taken = {_entry_name(entry) for entry in config["layers"]}
    renames = {}
    for tensor in model.inputs:
        history = getattr(tensor, "_keras_history", None)
        layer = getattr(getattr(history, "operation", None), "name", None)
        if layer and tensor.name != layer and tensor.name not in taken:
            renames[layer] = tensor.name
            taken.add(tensor.name)
    if not renames:
        return
    for entry in config["layers"]:
        name = _entry_name(entry)
        if name in renames:
            entry["name"] = renames[name]
            entry["config"]["name"] = renames[name]
        for tensor in tensor_configs(entry.get("inbound_nodes", [])):
            if tensor["keras_history"][0] in renames:
                tensor["keras_history"][0] = renames[tensor["keras_history"][0]]
    stack = [config["input_layers"]]
    while stack:
        item = stack.pop()
        if isinstance(item, list) and len(item) == 3 and isinstance(item[0], str):
            item[0] = renames.get(item[0], item[0])
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def _recorded_reshape(layer) -> str | None:
    """``"(None, 12, 12, 3) differs from its input's (None, 16, 16, 3)"`` where the graph records another
    output shape for ``layer`` than its input's, else None."""
    try:
        before, after = tuple(layer.input.shape), tuple(layer.output.shape)
    except (AttributeError, ValueError):  # no single recorded call
        return None
    return None if before == after else f"{after} differs from its input's {before}"


def _needs(layer) -> str:
    """What the output needs to load where it keeps ``layer`` as it is: its package, or the file that
    ``--custom-objects`` imported its class from."""
    import sys

    module = type(layer).__module__
    package = module.split(".")[0]
    if package.startswith("bnfreeze_custom_objects"):  # a --custom-objects file, imported under a made-up name
        where = getattr(sys.modules.get(module), "__file__", None)
        return f" (the output needs the classes of {where or 'the --custom-objects file'} to load)"
    return f" (the output needs {package} to load)" if package not in ("keras", "__main__", "builtins") else ""


def _rebuild_problem(layer) -> str | None:
    """Why ``layer`` does not come back from its own config as itself (bnfreeze writes it so), or None."""
    import keras

    from bnfreeze.fold.rewrite import takes_a_name

    label = f"{layer.name} ({class_label(layer)})"
    try:
        serialized = keras.saving.serialize_keras_object(layer)
        inner = serialized.get("config")
        if isinstance(inner, dict) and "name" not in inner and takes_a_name(type(layer)):
            inner["name"] = layer.name  # as bnfreeze writes it (bnfreeze.fold.rewrite.name_every_layer)
        clone = keras.saving.deserialize_keras_object(serialized, safe_mode=False)
    except Exception as exc:  # the class's own config does not round-trip
        text = " ".join(str(exc).split())
        return f"{label} does not rebuild from its own config ({type(exc).__name__}: {text[:120]})"
    if getattr(clone, "name", None) != layer.name:
        return f"{label} rebuilds from its own config under another name ({clone.name})"
    return None


def _shift_calls(config: dict, name: str) -> None:
    """Renumber the model outputs that layer ``name`` gives, after it became a Functional model.

    In a Functional config Keras numbers the calls of a nested Functional model
    from 1 in ``output_layers`` (its own first node is counted there, and
    ``functional_from_config`` subtracts one), from 0 in the calls of other layers,
    and every other layer's calls from 0 in both places.
    """
    stack = [config.get("output_layers")]
    while stack:
        item = stack.pop()
        if isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[1], int):
            if item[0] == name:
                item[1] += 1
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


def _functional_entry(name: str, config: dict) -> dict:
    config["name"] = name
    return {"module": "keras.src.models.functional", "class_name": "Functional", "config": config,
            "registered_name": "Functional", "build_config": {"input_shape": None}}


def _sequential_entry(config: dict) -> dict:
    return {"module": "keras", "class_name": "Sequential", "config": config, "registered_name": None}


def _public_methods(model) -> list[str]:
    """Methods and properties the class adds to Keras's own model classes."""
    import keras
    from keras.src.models.functional import Functional

    keras_own = {name for cls in (Functional, keras.Model, keras.Sequential) for c in cls.__mro__ for name in vars(c)}
    names = []
    for cls in type(model).__mro__:
        if cls.__module__.startswith(("keras.", "tensorflow", "builtins")):
            continue
        for name, value in vars(cls).items():
            if name.startswith("_") or name in keras_own or name in names:
                continue
            if callable(value) or isinstance(value, property):
                names.append(name)
    return names


def _carried(model, graph_ids: set[int]) -> str:
    """What a Functional subclass holds beside its graph, for its note."""
    parts = []
    graph_keys = {"name", "trainable", "dtype", "layers", "input_layers", "output_layers"}
    preprocessor = getattr(model, "preprocessor", None) if "preprocessor" in dir(type(model)) else None
    extra_layers = [layer for layer in model._flatten_layers(include_self=False, recursive=False)
                    if id(layer) not in graph_ids]
    for layer in extra_layers:
        if layer is preprocessor:
            parts.append(f"its preprocessor {layer.name} ({class_label(layer)}): the output takes preprocessed "
                         "inputs, so run the original's `.preprocessor` on raw inputs first")
        else:
            parts.append(f"its layer {layer.name} ({class_label(layer)}), which the graph does not call")
    try:
        config = model.get_config()
    except Exception:  # a class without get_config: nothing to name
        config = {}
    arguments = [key for key in config if key not in graph_keys and not (key == "preprocessor")]
    if arguments:
        parts.append(f"its constructor arguments ({', '.join(arguments[:8])}{', ...' if len(arguments) > 8 else ''}), "
                     "which the graph already encodes")
    methods = _public_methods(model)
    if methods:
        parts.append(f"its methods ({', '.join(methods[:6])}{', ...' if len(methods) > 6 else ''})")
    return "; ".join(parts) if parts else "nothing beside the graph"


class _Reader:
    """One pass over a model: edits a copy of its config and records where every layer's state comes from."""

    def __init__(self, label: str):
        self.label = label
        self.notes: list[StructureNote] = []
        self.sources: dict[Path, Any] = {}
        #: traced layers whose call defaults to training=True (traced, as every layer, at training=False)
        self.pinned_calls: list[str] = []
        #: dropped layers whose recorded output shape is not their input's (RandomCrop): why a rebuild may fail
        self.reshaping_drops: list[str] = []
        self.graphs: set[Path] = set()
        self.unused_bns: list[tuple[str, str]] = []
        self.opaque: dict[str, Opaque] = {}
        #: opaque layers that do not come back from their own config (qualified name -> why)
        self.unrebuildable: dict[str, str] = {}
        self.changed = False

    @staticmethod
    def qualified(path: Path) -> str:
        return "/".join(path)

    def note(self, path: Path, obj, action: str, detail: str) -> None:
        self.notes.append(StructureNote(self.qualified(path) or obj.name, class_label(obj), action, detail))

    # -- the top model ------------------------------------------------------------------
    def top(self, model) -> dict:
        import keras

        from bnfreeze.fold.graph import model_kind

        kind = model_kind(model)
        if kind in ("sequential", "functional"):
            config = copy.deepcopy(model.get_config())
            if self.graph(model, config, (), sequential=kind == "sequential") and kind == "sequential":
                return _functional_entry(model.name, config)
            entry = keras.saving.serialize_keras_object(model)
            entry["config"] = config
            return entry
        if sequential_like(model):
            config = copy.deepcopy(keras.Sequential.get_config(model))
            self.read_subclass_note((), model, model.layers)
            if self.graph(model, config, (), sequential=True):
                return _functional_entry(model.name, config)
            return _sequential_entry(config)
        if functional_like(model):
            config = graph_config(model)
            _keep_input_names(config, model)
            self.read_subclass_note((), model, model.operations)
            self.graph(model, config, ())
            return _functional_entry(model.name, config)
        template = self.top_template(model)
        try:
            trace = trace_layer(model, template)
        except TraceRefused as exc:
            raise InputError(f"{self.label}: a subclassed model ({class_label(model)}) whose call bnfreeze cannot "
                             f"trace: {exc}; rebuild it with the Functional API") from exc
        return self.traced_entry((), model, trace, sequential=True)

    def top_template(self, model) -> CallTemplate:
        import keras

        struct = getattr(model, "_inputs_struct", None)
        if struct is not None:  # a Functional model that overrides call: its own inputs
            return CallTemplate((keras.tree.map_structure(lambda t: TensorSlot(tuple(t.shape), str(t.dtype)), struct),),
                                {})
        shapes = getattr(model, "_build_shapes_dict", None)
        if not getattr(model, "built", False) or not shapes:
            raise InputError(f"{self.label}: a subclassed model ({class_label(model)}) that records no input shape; "
                             "bnfreeze cannot trace its call: build it (model.build(shape)) or rebuild it with the "
                             "Functional API")
        if len(shapes) != 1:
            raise InputError(f"{self.label}: a subclassed model ({class_label(model)}) built with several arguments "
                             f"({', '.join(shapes)}); bnfreeze traces one input argument")
        try:
            return template_from_shape(next(iter(shapes.values())), str(getattr(model, "input_dtype", "float32")))
        except TraceRefused as exc:
            raise InputError(f"{self.label}: {exc}") from exc

    def read_subclass_note(self, path: Path, model, graph_layers) -> None:
        self.changed = True
        graph_ids = {id(layer) for layer in graph_layers}
        self.note(path, model, "read as Functional",
                  f"its call is Keras's own, so it is the graph it holds: read as a plain "
                  f"{'Sequential' if sequential_like(model) else 'Functional'} model, the graph unchanged; "
                  f"not carried over: {_carried(model, graph_ids)}")

    # -- a graph ----------------------------------------------------------------------------
    def graph(self, owner, config: dict, path: Path, *, sequential: bool = False) -> bool:
        """Read every layer of one Sequential/Functional ``config`` (``owner`` is the live model it came from).

        Returns whether ``config`` is now a Functional config (a Sequential whose
        layer needs ``training`` pinned on its call becomes one).
        """
        from keras.src.models.functional import Functional

        from bnfreeze.fold.rewrite import bypass_layer

        self.graphs.add(path)
        live = _live_operations(owner)
        if sequential and self.needs_pinning(config, live):
            # a call can carry training=False only in a Functional graph: read the Sequential as the
            # Functional model Keras runs it as (the same layers, in the same order)
            functional = getattr(owner, "_functional", None)
            if functional is not None:
                view = graph_config(functional)
                view["name"] = config.get("name", owner.name)
                config.clear()
                config.update(view)
                sequential = False
                live = _live_operations(functional)
        dropped, pinned = [], []
        previous_dtype = None
        for entry in config["layers"]:
            name = _entry_name(entry)
            layer = live.get(name)
            here = path + (name,)
            if entry["class_name"] == "InputLayer" or layer is None or not hasattr(layer, "_flatten_layers"):
                previous_dtype = (entry.get("config") or {}).get("dtype", previous_dtype) \
                    if entry["class_name"] == "InputLayer" else previous_dtype
                continue
            dtypes = self.input_dtypes(entry, layer, previous_dtype, sequential)
            previous_dtype = str(getattr(layer, "compute_dtype", previous_dtype) or previous_dtype)
            if self.keras_model(layer) is not None or not type(layer).__module__.startswith("keras.") \
                    or self.keras_container(layer):
                if self.keras_model(layer) is not None:
                    self.nested_model(layer, entry, here, sequential)
                else:
                    self.custom_layer(layer, entry, here, sequential)
                if not sequential and entry["class_name"] == "Functional" and not isinstance(layer, Functional):
                    _shift_calls(config, name)
                continue
            if trains_by_default(layer):
                if drops_at_inference(layer, dtypes):
                    dropped.append(name)
                    reshaped = _recorded_reshape(layer)
                    if reshaped is not None:
                        self.reshaping_drops.append(f"{self.qualified(here)} ({class_label(layer)}) is the identity "
                                                    f"at inference, but its recorded output shape {reshaped}")
                    self.note(here, layer, "dropped", "a random augmentation: the identity at inference "
                              "(predict, serving and every export call it with training=False)")
                else:
                    pinned.append(name)
                    self.sources[here] = layer
                    why = ("a random augmentation that casts its " + "/".join(dtypes) + " input to "
                           f"{layer.compute_dtype} at inference" if is_random_augmentation(layer)
                           else "its call defaults to training=True")
                    self.note(here, layer, "pinned", f"{why}: called with training=False, what predict, serving and "
                              "every export do, so it no longer passes training=True on under model(x)")
            else:
                self.sources[here] = layer
        if dropped or pinned:
            self.changed = True
        for name in pinned if not sequential else ():  # a Sequential without an input shape keeps its default
            entry = next(e for e in config["layers"] if _entry_name(e) == name)
            for node in entry.get("inbound_nodes", []):
                node.setdefault("kwargs", {})["training"] = False
        for name in dropped:
            bypass_layer(config, name)
        return not sequential

    def needs_pinning(self, config: dict, live: dict) -> bool:
        """Does a layer of this Sequential config default to training=True and not drop at inference?"""
        previous = None
        for entry in config["layers"]:
            layer = live.get(_entry_name(entry))
            if entry["class_name"] == "InputLayer":
                previous = (entry.get("config") or {}).get("dtype", previous)
                continue
            if layer is None or not hasattr(layer, "_flatten_layers"):
                continue
            dtypes = self.input_dtypes(entry, layer, previous, True)
            previous = str(getattr(layer, "compute_dtype", previous) or previous)
            if type(layer).__module__.startswith("keras.") and trains_by_default(layer) \
                    and not drops_at_inference(layer, dtypes):
                return True
        return False

    def input_dtypes(self, entry: dict, layer, previous: str | None, sequential: bool) -> list[str]:
        if not sequential:
            nodes = entry.get("inbound_nodes") or []
            return [str(t.get("dtype")) for t in _node_tensors(nodes[0])] if nodes else []
        nodes = getattr(layer, "_inbound_nodes", [])
        if nodes and nodes[0].arguments.keras_tensors:
            return [str(t.dtype) for t in nodes[0].arguments.keras_tensors]
        return [previous] if previous else []

    @staticmethod
    def keras_model(layer) -> str | None:
        import keras

        return "model" if isinstance(layer, keras.Model) else None

    @staticmethod
    def keras_container(layer) -> bool:
        """Keras's own ``Pipeline``: a list of layers called in turn (augmentation stacks), traced like a block."""
        import keras

        pipeline = getattr(keras.layers, "Pipeline", None)
        return pipeline is not None and type(layer) is pipeline

    def nested_model(self, model, entry: dict, path: Path, sequential: bool) -> None:
        import keras

        from bnfreeze.fold.graph import model_kind

        kind = model_kind(model)
        if kind in ("sequential", "functional"):
            if self.graph(model, entry["config"], path, sequential=kind == "sequential") and kind == "sequential":
                self.replace(entry, _functional_entry(model.name, entry["config"]), keep_nodes=True)
        elif sequential_like(model):
            config = copy.deepcopy(keras.Sequential.get_config(model))
            self.read_subclass_note(path, model, model.layers)
            if self.graph(model, config, path, sequential=True):
                self.replace(entry, _functional_entry(model.name, config), keep_nodes=True)
            else:
                self.replace(entry, _sequential_entry(config), keep_nodes=True)
        elif functional_like(model):
            saved = self.checkpoint()
            config = graph_config(model)
            self.read_subclass_note(path, model, model.operations)
            self.graph(model, config, path)
            inside = [why for name, why in self.unrebuildable.items() if name.startswith(self.qualified(path) + "/")]
            if inside:
                # a layer inside cannot be written from its own config: the class's own config (its
                # constructor arguments) rebuilds the whole, so the model stays as it is
                self.rollback(saved)
                self.sources[path] = model
                reason = f"a layer inside it cannot be rebuilt on its own: {inside[0]}"
                self.opaque[self.qualified(path)] = Opaque(reason, model)
                self.note(path, model, "opaque", f"kept as it is{_needs(model)}: {reason}")
                return
            self.replace(entry, _functional_entry(model.name, config), keep_nodes=True)
        else:
            self.custom_layer(model, entry, path, sequential)

    def checkpoint(self):
        return (len(self.notes), dict(self.sources), set(self.graphs), list(self.unused_bns), dict(self.opaque),
                dict(self.unrebuildable))

    def rollback(self, saved) -> None:
        notes, self.sources, self.graphs, self.unused_bns, self.opaque, self.unrebuildable = saved
        del self.notes[notes:]

    @staticmethod
    def replace(entry: dict, new: dict, keep_nodes: bool = False, nodes=None) -> None:
        name = entry.get("name")
        inbound = entry.get("inbound_nodes")
        entry.clear()
        entry.update(new)
        if name is not None:
            entry["name"] = name
        if inbound is not None:
            entry["inbound_nodes"] = inbound if keep_nodes else nodes

    # -- a layer with its own call ------------------------------------------------------------
    def template(self, layer, entry: dict, sequential: bool) -> CallTemplate:
        label = f"{layer.name} ({class_label(layer)})"
        if sequential:
            shape = (entry.get("build_config") or {}).get("input_shape")
            nodes = getattr(layer, "_inbound_nodes", [])
            dtype = str(nodes[0].arguments.keras_tensors[0].dtype) if nodes and nodes[0].arguments.keras_tensors \
                else str(getattr(layer, "input_dtype", "float32"))
            if shape is None:
                raise TraceRefused(f"{label} records no input shape")
            return template_from_shape(shape, dtype)
        nodes = entry.get("inbound_nodes") or []
        if not nodes:
            raise TraceRefused(f"{label} is never called")
        return merge_templates([template_from_node(node, label) for node in nodes], label)

    def custom_layer(self, layer, entry: dict, path: Path, sequential: bool) -> None:
        try:
            template = self.template(layer, entry, sequential)
            trace = trace_layer(layer, template)
        except TraceRefused as exc:
            reason = str(exc)
            self.sources[path] = layer
            self.opaque[self.qualified(path)] = Opaque(reason, layer)
            self.note(path, layer, "opaque", f"kept as it is{_needs(layer)}: {reason}")
            problem = _rebuild_problem(layer)
            if problem:
                self.unrebuildable[self.qualified(path)] = problem
            return
        saved = self.checkpoint()
        new = self.traced_entry(path, layer, trace, sequential)
        inside = [why for name, why in self.unrebuildable.items() if name.startswith(self.qualified(path) + "/")]
        if inside and _rebuild_problem(layer) is None:
            # a layer inside the trace cannot be written from its own config; the layer itself can
            self.rollback(saved)
            reason = f"a layer inside it cannot be rebuilt on its own: {inside[0]}"
            self.sources[path] = layer
            self.opaque[self.qualified(path)] = Opaque(reason, layer)
            self.note(path, layer, "opaque", f"kept as it is{_needs(layer)}: {reason}")
            return
        nodes = None
        pin = trains_by_default(layer)
        if pin:  # the original's default call model(x) runs it in training mode: the plain model's does not
            last = self.notes[-1]
            self.notes[-1] = StructureNote(last.layer, last.cls, last.action, last.detail + (
                "; its call defaults to training=True: traced at training=False, what predict, serving and "
                "every export do, so model(x) of the output is its inference call"))
            self.pinned_calls.append(last.layer)
        if not sequential:
            nodes = []
            # Keras records the default of a call that defaults to training=True (Pipeline) as if it were
            # passed: such a call is pinned to training=False, like a preprocessing layer
            for node in entry.get("inbound_nodes", []):
                tensors = [{"class_name": "__keras_tensor__", "config": t} for t in _node_tensors(node)]
                training = False if pin else (node.get("kwargs") or {}).get("training")
                nodes.append({"args": [tensors[0] if len(tensors) == 1 else tensors],
                              "kwargs": {} if training is None else {"training": training}})
        self.replace(entry, new, nodes=nodes)

    def traced_entry(self, path: Path, layer, trace: Trace, sequential: bool) -> dict:
        self.changed = True
        self.graph(trace.model, trace.config, path)
        unused = []
        for sub in trace.unused:
            for bn in ([sub] if is_batch_norm(sub) else []) + batch_norms_inside(sub):
                name = self.qualified(path + (bn.name,))
                unused.append(bn.name)
                self.unused_bns.append((name, f"{bn.name} is never called by {layer.name}.call "
                                              f"({class_label(layer)}): it computes nothing, and the output does "
                                              "not hold it"))
        counts = sum(1 for op in trace.model.operations if not type(op).__name__ == "InputLayer")
        detail = f"its call traced into {counts} layers and ops (checked against the layer on random inputs)"
        if unused:
            detail += f"; never called: {', '.join(unused)}"
        self.note(path, layer, "traced", detail)
        return _functional_entry(layer.name, trace.config)

    # -- state ---------------------------------------------------------------------------------
    def transfer(self, rebuilt) -> dict[int, Any]:
        """Give every layer of the rebuilt model the state of the layer it stands for; returns
        ``{id(rebuilt layer): the layer it stands for}`` for each (inner layers of a copied layer included)."""
        from bnfreeze.io.models import copy_state

        stands_for: dict[int, Any] = {}

        def walk(model, path: Path):
            for op in _live_operations(model).values():
                here = path + (op.name,)
                if type(op).__name__ == "InputLayer" or not hasattr(op, "_flatten_layers"):
                    continue  # operations (keras.ops, activations) hold no state
                if here in self.graphs and here in self.sources:
                    raise AssertionError(f"{here} is both a graph and a layer")  # an internal invariant
                if here in self.graphs:
                    walk(op, here)
                elif here in self.sources:
                    copy_state(self.sources[here], op)
                    for twin, mine in zip(op._flatten_layers(include_self=True, recursive=True),
                                          self.sources[here]._flatten_layers(include_self=True, recursive=True)):
                        stands_for[id(twin)] = mine

        walk(rebuilt, ())
        return stands_for


def plain_model(model) -> PlainModel:
    """Read ``model`` plainly (see the module). Raises :class:`InputError` for a top-level model it cannot read."""
    import keras

    reader = _Reader(model_label(model))
    entry = reader.top(model)
    unwritable = None
    if reader.unrebuildable:
        name, why = next(iter(reader.unrebuildable.items()))
        unwritable = f"{reader.label}: bnfreeze cannot write a model holding {name}: {why}"
    if not reader.changed:
        return PlainModel(model=model, original=model, notes=reader.notes, unused_bns=reader.unused_bns,
                          opaque=reader.opaque, unwritable=unwritable, pinned_calls=reader.pinned_calls)
    if unwritable:
        raise InputError(unwritable)
    from bnfreeze.fold.rewrite import name_every_layer

    name_every_layer(entry.get("config") or {})
    try:
        rebuilt = keras.saving.deserialize_keras_object(entry, safe_mode=False)
    except Exception as exc:
        why = ""
        if reader.reshaping_drops:  # the layers after it were built (and traced) for the recorded shape
            why = (f"; {reader.reshaping_drops[0]}, and the layers after it were built for that shape: at "
                   "inference the original runs them on the unchanged input")
        raise InputError(f"{reader.label}: its plain Keras graph does not rebuild "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}){why}") from exc
    sources = reader.transfer(rebuilt)
    return PlainModel(model=rebuilt, original=model, notes=reader.notes, unused_bns=reader.unused_bns,
                      opaque=reader.opaque, sources=sources, pinned_calls=reader.pinned_calls)


def input_specs_of(model) -> list:
    """The input specs of ``model`` (:func:`bnfreeze.io.signature.input_specs`); a subclassed model, which
    records no inputs, has those of its plain reading (its call traced on the shapes it was built with)."""
    from bnfreeze.io.signature import input_specs

    if not hasattr(model, "inputs"):
        return input_specs(plain_model(model).model)
    return input_specs(model)

