"""A ``tf.function`` that serves a Keras model, traced so converters can read it.

Keras 3's TensorFlow backend runs grouped convolutions (and channels_first 3D
convolutions) through a nested ``tf.function(jit_compile=True)``, which
appears in the traced graph as one opaque ``StatefulPartitionedCall``:
tf2onnx cannot convert it and the TFLite converter cannot either. While
tracing for export, :func:`plain_convolutions` makes the backend emit the
plain ``Conv2D``/``Conv3D`` op instead, which both converters map to a grouped
convolution. The traced function computes the same thing; the exported
artifact is checked against the Keras model before it is written.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from bnfreeze.io.signature import TensorSpec, input_specs, output_names, pack_inputs


@contextlib.contextmanager
def plain_convolutions() -> Iterator[None]:
    """Trace Keras convolutions as plain TF ops (no nested XLA function)."""
    import tensorflow as tf

    try:
        from keras.src.backend.tensorflow import nn as tf_nn
    except ImportError:  # another Keras layout: leave it; the export check will tell
        yield
        return
    original = tf_nn.conv
    if not hasattr(tf_nn, "_convert_data_format"):
        yield
        return

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        data_format = tf_nn.backend.standardize_data_format(data_format)
        return tf.nn.convolution(
            inputs,
            kernel,
            strides,
            padding.upper(),
            data_format=tf_nn._convert_data_format(data_format, len(inputs.shape)),
            dilations=dilation_rate,
        )

    tf_nn.conv = conv
    try:
        yield
    finally:
        tf_nn.conv = original


@contextlib.contextmanager
def tracing_errors(signature) -> Iterator[None]:
    """A model Keras cannot trace as a TensorFlow graph for ``signature`` cannot be exported: one line, naming
    the layer (bilinear UpSampling2D with unknown spatial dims, say, tests a symbolic shape as a Python bool)."""
    import re

    from bnfreeze.errors import BnfreezeError, ExportError, message_line

    try:
        yield
    except BnfreezeError:
        raise
    except Exception as exc:

        layer = re.search(r"when calling (\w+)\.call\(\)", str(exc))
        where = f" (in {layer.group(1)}.call)" if layer else ""
        shapes = ", ".join(str(tuple(spec.shape)) for spec in signature)
        raise ExportError(f"Keras cannot trace the model as a TensorFlow graph for inputs of shape {shapes}{where}: "
                          f"{message_line(exc)}") from exc


@dataclass
class ServingFunction:
    function: object  # the tf.function
    concrete: object  # its concrete function, traced
    signature: list  # tf.TensorSpec per input
    inputs: list[TensorSpec]
    outputs: list[str]


def serving_function(model, batch_size: int | None = None) -> ServingFunction:
    """Trace ``model(x, training=False)`` with the Keras input names and a dynamic
    (or fixed) batch dimension; outputs are a dict keyed by the Keras output names."""
    import keras
    import tensorflow as tf

    specs = input_specs(model)
    names = output_names(model)
    signature = [tf.TensorSpec((batch_size,) + tuple(s.shape[1:]), s.dtype, name=s.name) for s in specs]

    @tf.function(input_signature=signature, autograph=False)
    def serve(*args):
        outputs = model(pack_inputs(model, list(args)), training=False)

        def node(value):
            # an output that is an input as it is (Model(x, [x, f(x)])) needs an op of its own, or tf2onnx
            # loses it ("graph input not exist"); a reshape to its own shape is one every converter keeps
            return tf.reshape(value, tf.shape(value)) if any(value is arg for arg in args) else value

        return {name: node(value) for name, value in zip(names, keras.tree.flatten(outputs))}

    with plain_convolutions(), tracing_errors(signature):
        concrete = serve.get_concrete_function()
    return ServingFunction(serve, concrete, signature, specs, names)
