"""Writers for each artifact format. Each writes to the path it is given
(bnfreeze passes a temporary path and renames it after the artifact passed
its parity check) and returns facts about what it wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bnfreeze.errors import ExportError, InputError
from bnfreeze.io.interrupts import import_native
from bnfreeze.export.onnx_graph import bn_derived_nodes, layer_of, op_counts, unsupported_nodes
from bnfreeze.export.tracing import plain_convolutions, serving_function, tracing_errors
from bnfreeze.verify.runners.base import native_stderr_silenced

DEFAULT_OPSET = 17


@dataclass
class Written:
    kind: str
    details: dict = field(default_factory=dict)


def _bn_layer_names(model) -> list[str]:
    from bnfreeze.fold.classes import is_batch_norm

    return [l.name for l in model._flatten_layers(include_self=False, recursive=True) if is_batch_norm(l)]


def _all_layer_names(model) -> list[str]:
    return [l.name for l in model._flatten_layers(include_self=False, recursive=True)]


def check_opset(opset: int) -> None:
    """The opsets tf2onnx can write (1..18 for tf2onnx 1.17); anything else is bad input.

    Read from tf2onnx's ``constants.py`` without importing tf2onnx (whose package imports TensorFlow: seconds
    for a one-line refusal); where that file cannot be read so, from the imported module."""
    opsets, version = _tf2onnx_opsets()
    low, high = min(opsets), max(opsets)
    if not low <= int(opset) <= high:
        raise InputError(f"--opset {opset}: tf2onnx {version} writes opsets {low} to {high}")


def _tf2onnx_opsets() -> tuple[list[int], str]:
    import ast
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec("tf2onnx")
        source = (Path(spec.origin).parent / "constants.py").read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OPSET_TO_IR_VERSION"
                                                    for t in node.targets):
                return sorted(ast.literal_eval(node.value)), importlib.metadata.version("tf2onnx")
    except (AttributeError, OSError, SyntaxError, ValueError, TypeError, importlib.metadata.PackageNotFoundError):
        pass
    constants = import_native("tf2onnx.constants")
    return sorted(constants.OPSET_TO_IR_VERSION), import_native("tf2onnx").__version__


def write_onnx(model, path: Path, *, opset: int = DEFAULT_OPSET, batch_size: int | None = None) -> Written:
    """ONNX through tf2onnx ``from_function`` (``from_keras`` is broken for Keras 3)."""
    import logging

    onnx = import_native("onnx")
    tf2onnx = import_native("tf2onnx")
    check_opset(opset)

    serving = serving_function(model, batch_size)
    quiet = logging.getLogger("tf2onnx")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its tracebacks of ops it cannot convert: the refusal below says it in a line
    try:
        with plain_convolutions():
            proto, _ = tf2onnx.convert.from_function(
                serving.function, input_signature=serving.signature, opset=opset, output_path=None
            )
    except Exception as exc:
        raise ExportError(f"tf2onnx cannot convert this model ({str(exc).strip().splitlines()[0][:200]})") from exc
    finally:
        quiet.setLevel(level)
    _inline_captured_constants(proto, serving.concrete, [spec.name for spec in serving.signature])
    bad = unsupported_nodes(proto)
    if bad:
        op_type, node = bad[0]
        layer = layer_of(node, _all_layer_names(model))
        where = f"layer {layer}" if layer else f"node {node}"
        raise ExportError(f"tf2onnx cannot convert {where} ({op_type})")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ExportError(f"tf2onnx produced an invalid ONNX graph: {str(exc).splitlines()[0]}") from exc
    onnx.save(proto, str(path))
    return Written(
        "onnx",
        {
            "opset": opset,
            "nodes": len(proto.graph.node),
            "ops": op_counts(proto),
            "bn_derived_nodes": len(bn_derived_nodes(proto, _bn_layer_names(model))),
            "inputs": [i.name for i in proto.graph.input],
            "outputs": [o.name for o in proto.graph.output],
        },
    )


def _inline_captured_constants(proto, concrete, input_names) -> None:
    """Turn captured constant tensors that tf2onnx left as graph inputs into initializers.

    Layers that keep state as plain tensors rather than variables (Keras's
    ``Normalization`` after ``adapt``, as in EfficientNet) are captured by the
    traced function; tf2onnx 1.17 freezes variables but exposes such captures
    as extra graph inputs, which no user can feed.
    """
    import numpy as np
    from onnx import numpy_helper

    constants = {
        internal.name: external
        for external, internal in concrete.graph.captures
        if external.dtype.name != "resource"
    }
    keep = []
    for graph_input in proto.graph.input:
        name = graph_input.name
        value = constants.get(name) if name not in input_names else None
        if value is None:
            value = constants.get(f"{name}:0") if name not in input_names else None
        if value is None:
            keep.append(graph_input)
            continue
        proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value.numpy()), name=name))
    del proto.graph.input[:]
    proto.graph.input.extend(keep)


def write_savedmodel(model, path: Path, *, batch_size: int | None = None) -> Written:
    """A SavedModel for TF Serving: a ``serving_default`` signature whose inputs and outputs carry the Keras
    input and output names (as the ONNX and TFLite files do; Keras's ``model.export`` names the outputs
    ``output_0``, ...), beside Keras's own ``serve`` endpoint (the model's call, its output structure).
    Both call the model with ``training=False``, what ``predict`` does.

    Keras's own tracing is kept here: TensorFlow runs grouped convolutions on
    the CPU only through the XLA function Keras emits for them.
    """
    import keras
    import tensorflow as tf

    from bnfreeze.io.signature import input_specs, output_names, pack_inputs

    specs = [tf.TensorSpec((batch_size,) + tuple(s.shape[1:]), s.dtype, name=s.name) for s in input_specs(model)]
    names = output_names(model)

    def serve(*args):
        outputs = model(pack_inputs(model, list(args)), training=False)
        return {name: value for name, value in zip(names, keras.tree.flatten(outputs))}

    archive = keras.export.ExportArchive()
    with tracing_errors(specs):
        archive.track(model)
        # one entry per positional argument of call(): the model's inputs in their own structure (list, dict)
        # at training=False, as serving_default: a model with augmentation layers would run them under its
        # default call (Keras's preprocessing layers default to training=True), giving random outputs
        archive.add_endpoint("serve", lambda inputs: model(inputs, training=False),
                             input_signature=[pack_inputs(model, specs)])
        archive.add_endpoint("serving_default", tf.function(serve, input_signature=specs, autograph=False))
        archive.write_out(str(path), verbose=False)
    return Written("savedmodel", {"signature": "serving_default", "outputs": names})


def write_tflite(model, path: Path, *, batch_size: int | None = None) -> Written:
    """A float32 TFLite flatbuffer through the TF Lite converter.

    The converter reads a SavedModel written with Keras's ``ExportArchive``
    (which tracks the variables so they are frozen into constants; converting
    the concrete function directly leaves READ_VARIABLE ops that XNNPACK reads
    as garbage). The endpoint is bnfreeze's serving function, so the
    signature uses the Keras input and output names.
    """
    import shutil
    import tempfile

    import keras
    import tensorflow as tf

    workdir = Path(tempfile.mkdtemp(prefix=".bnfreeze-tflite-", dir=Path(path).parent))
    try:
        with plain_convolutions():
            serving = serving_function(model, batch_size)
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serving_default", serving.function)
            archive.write_out(str(workdir / "savedmodel"), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir / "savedmodel"))
        converter.optimizations = []
        try:
            with native_stderr_silenced():  # the MLIR converter prints its errors before raising them
                flatbuffer = converter.convert()
        except Exception as exc:
            raise ExportError(f"the TFLite converter failed: {str(exc).strip().splitlines()[0][:200]}") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    Path(path).write_bytes(flatbuffer)
    return Written("tflite", {"bytes": len(flatbuffer)})
