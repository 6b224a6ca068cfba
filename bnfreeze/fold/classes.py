"""Which Keras class a layer or graph operation is, exactly.

A fold is exact only for the computation bnfreeze knows: Keras's own
classes. A subclass (a registered ``ClippedBN(BatchNormalization)``, a
``MyDense(Dense)``) may change ``call``, and a ``keras.ops`` operation can
share a class *name* and a ``keras`` module with a layer
(``keras.src.ops.numpy.Reshape`` is not ``keras.layers.Reshape``). So every
rule, every op a BN is moved through and every BN itself is recognised by
class identity, never by name.
"""

from __future__ import annotations


def keras_layer_class(name: str):
    """``keras.layers.<name>``, or None where this Keras has no such layer."""
    import keras

    return getattr(keras.layers, name, None)


def is_exactly(obj, *names: str) -> bool:
    """True when ``type(obj)`` is one of ``keras.layers.<name>`` itself (not a subclass)."""
    cls = type(obj)
    return any(cls is keras_layer_class(name) for name in names)


def is_batch_norm(layer) -> bool:
    """Any BatchNormalization, Keras's own or a subclass: a layer every report must list."""
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def batch_norms_inside(layer) -> list:
    """Every BN (of any class) ``layer`` holds, at any depth; none for a layer that holds no layers."""
    if getattr(layer, "_flatten_layers", None) is None:
        return []
    return [inner for inner in layer._flatten_layers(include_self=False, recursive=True) if is_batch_norm(inner)]


def is_exact_batch_norm(layer) -> bool:
    """Keras's own BatchNormalization: the only BN whose inference map bnfreeze knows."""
    return is_exactly(layer, "BatchNormalization")


#: Normalizations that use each sample's own statistics: nothing to fold.
PER_SAMPLE_NORMALIZATIONS = (
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "RMSNormalization",
    "SpectralNormalization",
)


def is_keras_op(obj) -> bool:
    """A ``keras.ops`` operation recorded in a Functional graph (``x * 2``, ``ops.reshape``)."""
    import keras

    # ``keras.ops`` functions record operations of keras.src.ops; activations such as
    # ``keras.activations.relu`` record their own (keras.src.activations ReLU)
    return not isinstance(obj, keras.layers.Layer) and type(obj).__module__.startswith(("keras.src.ops",
                                                                                         "keras.src.activations"))


def is_keras_op_class(obj, name: str) -> bool:
    """``obj`` is exactly the ``keras.ops`` operation class ``name`` (e.g. ``Reshape``, ``Transpose``)."""
    from keras.src.ops import numpy as ops_numpy

    return type(obj) is getattr(ops_numpy, name, None)


def class_label(obj) -> str:
    """How a report names ``obj``'s class: ``Dense``, ``keras.ops Reshape``, ``my_pkg>ClippedBN``."""
    import keras

    cls = type(obj)
    if is_keras_op(obj):
        return f"keras.ops {cls.__name__}"
    if cls.__module__.startswith("keras.") and keras_layer_class(cls.__name__) is cls:
        return cls.__name__
    registered = keras.saving.get_registered_name(cls)
    if registered and registered != cls.__name__:
        return registered
    return f"{cls.__module__}.{cls.__qualname__}"


def subclass_reason(name: str, layer, base: str) -> str:
    """The reason a subclass of a Keras layer is not treated as that layer."""
    return f"{name} is a subclass of {base} ({class_label(layer)}); its call may differ"


def activation_name(layer) -> str:
    """The name of a layer's activation as the user wrote it."""
    import keras

    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    try:
        serialized = keras.activations.serialize(activation)
    except Exception:  # an unregistered callable
        return getattr(activation, "__name__", type(activation).__name__)
    if isinstance(serialized, str):
        return serialized
    if isinstance(serialized, dict):
        config = serialized.get("config")
        if isinstance(config, str):
            return config
        return str(serialized.get("class_name", "a custom activation"))
    return str(serialized)
