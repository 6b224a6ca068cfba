"""Apply a fold plan: edit a copy of the model's config, rebuild, move weights.

The input model is never touched. The new model is built from an edited copy
of the config (so it holds only standard Keras layers, with the original
names), then every layer gets its weights: untouched layers a bit-for-bit copy
of the original's, fold targets the weights their rules computed.

Untouched layers get their state the way ``keras.saving`` restores it, layer
by layer (``save_own_variables``/``load_own_variables`` and assets): a layer's
load hooks rebuild what is not a variable of it (an adapted ``Normalization``
derives its mean and variance from its variables, a ``StringLookup`` keeps its
vocabulary as an asset), so the copy computes what the original and the saved
file compute.

A folded BN is removed and its consumers read the BN's input instead. When
the BN's output is a model output, the BN is replaced by a Keras ``Identity``
layer of the same name, so the model's output names do not change. A fold
whose rule leaves a per-channel shift (:class:`~bnfreeze.fold.rules.ShiftAdd`)
puts a ``keras.ops.add`` of that constant in the BN's place instead: the node
Keras itself records for ``x + constant`` in a Functional graph, so the model
loads in plain Keras and converts to one Add.
"""

from __future__ import annotations

import copy

import numpy as np

from bnfreeze.fold.graph import model_kind_of_layer, tensor_configs, walk_histories
from bnfreeze.io.models import copy_state
from bnfreeze.fold.rules import Match, ShiftAdd

Key = tuple[tuple[str, ...], str]


def _entry_name(entry: dict) -> str:
    return entry.get("name") or entry["config"]["name"]


def _scope_config(config: dict, path: tuple[str, ...]) -> dict:
    for name in path:
        config = next(e for e in config["layers"] if _entry_name(e) == name)["config"]
    return config


def _identity_entry(entry: dict, name: str) -> dict:
    """A Keras Identity layer standing where a BN was (keeps output names)."""
    new = {
        "module": "keras.layers",
        "class_name": "Identity",
        "config": {"name": name, "trainable": True, "dtype": entry["config"].get("dtype")},
        "registered_name": None,
    }
    if "build_config" in entry:
        new["build_config"] = entry["build_config"]
    if "name" in entry:
        new["name"] = name
    if "inbound_nodes" in entry:
        # the BN's one tensor, whether it was passed by position or as ``inputs=``
        new["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__", "config": tensor}], "kwargs": {}}
                                for tensor in (_only_tensor(node) for node in entry["inbound_nodes"])]
    return new


def _only_tensor(node: dict) -> dict:
    """The single tensor config of a one-input call (args or kwargs)."""
    (tensor,) = list(tensor_configs([node.get("args", []), node.get("kwargs", {})]))
    return tensor


def _is_model_output(scope: dict, name: str, is_sequential: bool) -> bool:
    if is_sequential:
        return _entry_name(scope["layers"][-1]) == name
    return any(h[0] == name for h in walk_histories(scope["output_layers"]))


def bypass_layer(scope: dict, name: str) -> None:
    """Remove single-input layer ``name`` from a scope config; consumers read its input."""
    is_sequential = "output_layers" not in scope
    layers = scope["layers"]
    index = next(i for i, e in enumerate(layers) if _entry_name(e) == name)
    entry = layers[index]
    if _is_model_output(scope, name, is_sequential):
        layers[index] = _identity_entry(entry, name)
        return
    del layers[index]
    if is_sequential:
        return
    source = list(_only_tensor(entry["inbound_nodes"][0])["keras_history"])
    for other in layers:
        for tensor in tensor_configs(other.get("inbound_nodes", [])):
            if tensor["keras_history"][0] == name:
                tensor["keras_history"] = list(source)


def replace_with_add(scope: dict, name: str, stand_in: ShiftAdd) -> None:
    """Put ``x + stand_in.shift`` (a ``keras.ops.add`` node) where single-input layer ``name`` was.

    The node's entry is written the way Keras serializes the op and its
    constant (``__numpy__``), so the saved model needs nothing but Keras.
    Consumers of ``name`` read the new node.
    """
    import keras
    from keras.src.ops.numpy import Add

    if "output_layers" not in scope:
        raise ValueError(f"a Sequential model cannot hold the add that replaces {name}")
    layers = scope["layers"]
    index = next(i for i, e in enumerate(layers) if _entry_name(e) == name)
    source = _only_tensor(layers[index]["inbound_nodes"][0])
    entry = keras.saving.serialize_keras_object(Add(name=stand_in.name))
    entry["name"] = stand_in.name
    args = [{"class_name": "__keras_tensor__", "config": copy.deepcopy(source)},
            keras.saving.serialize_keras_object(np.asarray(stand_in.shift))]
    entry["inbound_nodes"] = [{"args": args[::-1] if stand_in.constant_first else args, "kwargs": {}}]
    layers[index] = entry
    for other in layers:
        for tensor in tensor_configs(other.get("inbound_nodes", [])):
            if tensor["keras_history"][0] == name:
                tensor["keras_history"] = [stand_in.name, 0, tensor["keras_history"][2]]
    for history in walk_histories(scope["output_layers"]):
        if history[0] == name:
            history[0] = stand_in.name


def _update_layer_config(scope: dict, name: str, changes: dict, path: tuple[str, ...] = ()) -> None:
    entry = next(e for e in scope["layers"] if _entry_name(e) == name)
    config = entry["config"]
    for key in path:
        config = config[key]
    config.update(changes)


def _layer_weights(layer) -> dict[str, np.ndarray]:
    return {v.name: np.asarray(v.numpy()) for v in layer.weights}


def apply_plan(model, folds: list[Match]):
    """Return a new model with every fold in ``folds`` applied.

    Folds that rewrite the same layer compose: each rule computes from the
    weights the folds before it left.
    """
    config = copy.deepcopy(model.get_config())
    new_weights: dict[Key, dict[str, np.ndarray]] = {}
    for match in folds:
        path, graph = match.site.graph.path, match.site.graph

        def weights_of(name: str, path=path, graph=graph) -> dict[str, np.ndarray]:
            current = new_weights.get((path, name))
            return current if current is not None else _layer_weights(graph.layer(name))

        scope = _scope_config(config, path)
        for name, update in match.rule.rewrite_layers(match, weights_of).items():
            new_weights[(path, name)] = update.weights
            if update.config:
                _update_layer_config(scope, name, update.config, update.config_path)
        stand_in = match.rule.replacement(match)
        if stand_in is None:
            bypass_layer(scope, match.site.name)
        else:
            replace_with_add(scope, match.site.name, stand_in)
    rebuilt = rebuild(model, config)
    changed_paths = {path[:i] for path, _name in new_weights for i in range(len(path) + 1)}
    _transfer_weights(model, rebuilt, (), new_weights, changed_paths)
    return rebuilt


def rebuild(model, config):
    """A new model of ``model``'s class from ``config``.

    ``model`` is already in memory, so whatever code it holds (a ``Lambda``
    layer loaded with ``--unsafe``) was trusted when it was loaded; rebuilding
    it must not ask again.
    """
    import keras

    serialized = keras.saving.serialize_keras_object(model)
    serialized["config"] = copy.deepcopy(config)
    name_every_layer(serialized["config"])
    serialized.pop("build_config", None)
    serialized.pop("compile_config", None)
    return keras.saving.deserialize_keras_object(serialized, safe_mode=False)


def name_every_layer(config: dict) -> None:
    """Give each layer entry of a graph config (nested graphs included) its node name in its own config,
    where the class's ``get_config`` leaves the name out and its constructor takes one: rebuilt without
    it, the layer would get Keras's next automatic name (``blk_1``), and be found by no name."""
    import keras

    for entry in config.get("layers", []) if isinstance(config, dict) else []:
        inner = entry.get("config")
        if not isinstance(inner, dict):
            continue
        if "layers" in inner:
            name_every_layer(inner)
        if "name" in inner or "name" not in entry:
            continue
        cls = keras.saving.get_registered_object(entry.get("registered_name") or entry.get("class_name"))
        if takes_a_name(cls):
            inner["name"] = entry["name"]


def takes_a_name(cls) -> bool:
    """Does ``cls``'s constructor take ``name`` (by name or as one of its ``**kwargs``)?"""
    import inspect

    try:
        parameters = inspect.signature(cls.__init__).parameters.values() if cls is not None else []
    except (TypeError, ValueError):
        return False
    return any(p.name == "name" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _transfer_weights(old, new, path, new_weights, changed_paths) -> None:
    for layer in new.layers:
        key = (path, layer.name)
        if key in new_weights:
            values = new_weights[key]
            for variable in layer.weights:
                variable.assign(values[variable.name])
            continue
        source = old.get_layer(layer.name)
        if type(source) is not type(layer):
            continue  # the Identity standing where a folded BN was a model output: no state
        if path + (layer.name,) in changed_paths and model_kind_of_layer(layer) in ("sequential", "functional"):
            _transfer_weights(source, layer, path + (layer.name,), new_weights, changed_paths)
        else:
            copy_state(source, layer)


def copy_model(model):
    """A new model with ``model``'s config and a bit-for-bit copy of its weights.

    A model of Keras's own Functional or Sequential class is rebuilt from its graph config. Any other
    class (a KerasHub backbone, a user's subclass) is rebuilt the way loading its saved file would: from
    its own config, then every layer, in the order the class builds them, loads its twin's state. Its
    config is its constructor's arguments, not a graph, so its layers may get other automatic names.
    """
    import keras

    from bnfreeze.errors import InputError
    from bnfreeze.fold.graph import model_kind
    from bnfreeze.io.models import model_label

    if model_kind(model) != "subclassed":
        return apply_plan(model, [])

    serialized = keras.saving.serialize_keras_object(model)
    serialized.pop("compile_config", None)
    if isinstance(serialized.get("config"), dict) and "name" not in serialized["config"] and takes_a_name(type(model)):
        serialized["config"]["name"] = model.name  # else the twin is Keras's next automatic name (net_1)
    twin = keras.saving.deserialize_keras_object(serialized, safe_mode=False)
    mine = model._flatten_layers(include_self=True, recursive=True)
    theirs = twin._flatten_layers(include_self=True, recursive=True)
    if [type(layer) for layer in mine] != [type(layer) for layer in theirs]:
        raise InputError(f"{model_label(model)}: a model rebuilt from its config does not hold the same layers "
                         f"({type(model).__name__}.get_config does not describe it)")
    copy_state(model, twin)
    # an input the class makes without a name gets Keras's next automatic one in the twin: give it the
    # original's, by which data and artifacts are paired with the model
    for mine, theirs in zip(getattr(model, "inputs", None) or [], getattr(twin, "inputs", None) or []):
        if getattr(theirs, "name", None) != getattr(mine, "name", None):
            theirs.name = mine.name
    return twin


def without_layers(model, names: list[str]):
    """A copy of a model with the single-input layers ``names`` bypassed (weights copied).

    A name inside a nested model is qualified (``block/bn``). With every BN
    named, this is the *limit* a fold can reach: the same network built without
    BN (used by the benchmarks).
    """
    config = copy.deepcopy(model.get_config())
    changed: set[tuple[str, ...]] = {()}
    for qualified in names:
        *path, name = qualified.split("/")
        bypass_layer(_scope_config(config, tuple(path)), name)
        changed |= {tuple(path[:i]) for i in range(len(path) + 1)}
    rebuilt = rebuild(model, config)
    _transfer_weights(model, rebuilt, (), {}, changed)
    return rebuilt
