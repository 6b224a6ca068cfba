"""Full-integer int8 TFLite through the TF Lite converter's post-training quantization.

The converter reads a SavedModel whose ``serving_default`` signature is
bnfreeze's serving function (Keras input and output names; see
:func:`bnfreeze.export.formats.write_tflite`), with the calibration samples
as its representative dataset: int8 weights (per channel unless
``per_tensor``), int8 activations, and inputs/outputs of the type ``io`` asks
for. Only the int8 builtin op set is offered — but the converter still leaves
an op it has no int8 kernel for in float, between a DEQUANTIZE and a
QUANTIZE, without saying so: the caller reads the result with
:func:`bnfreeze.quantize.facts.tflite_facts` and refuses it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

from bnfreeze.export.formats import ExportError
from bnfreeze.export.tracing import plain_convolutions, serving_function
from bnfreeze.quantize.calibration import representative_dataset
from bnfreeze.verify.runners.base import native_stderr_silenced

IO_TYPES = ("float", "int8", "uint8")


def _tf_type(io: str):
    import tensorflow as tf

    return {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]


def convert_tflite(model, data, *, io: str = "int8", per_tensor: bool = False, allow_float_ops: bool = False,
                   limit: int | None = None, workdir: Path | None = None, batch_size: int | None = None) -> bytes:
    """The full-integer TFLite flatbuffer of ``model``, calibrated on ``data`` (a bnfreeze data source);
    ``batch_size`` fixes the batch dimension (a fixed-shape file, as microcontroller runtimes need)."""
    import keras
    import tensorflow as tf

    if io not in IO_TYPES:
        raise ExportError(f"unknown --io {io!r}; choose one of {', '.join(IO_TYPES)}")
    folder = Path(tempfile.mkdtemp(prefix=".bnfreeze-int8-", dir=workdir))
    try:
        with plain_convolutions():
            serving = serving_function(model, batch_size)
            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serving_default", serving.function)
            archive.write_out(str(folder / "savedmodel"), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(folder / "savedmodel"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(data, [s.name for s in serving.inputs], limit,
                                                                  batch_size)
        if allow_float_ops:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = _tf_type(io)
        converter.inference_output_type = _tf_type(io)
        if per_tensor:
            # the converter's only switch for per-tensor weights (a private attribute, stable since TF 2.4)
            converter._experimental_disable_per_channel = True
        try:
            with native_stderr_silenced(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the C++ progress lines; tf.lite.Interpreter's deprecation
                return converter.convert()
        except Exception as exc:
            raise ExportError(f"the TF Lite converter cannot quantize this model: {_converter_problem(exc)}") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _converter_problem(exc: Exception) -> str:
    """One line from the converter's (long, MLIR) error: the op it could not handle, where it says so."""
    text = str(exc)
    match = re.search(r"TF Select ops: ([^\n]+)", text)
    if match:
        return f"op {match.group(1).strip()} has no TFLite builtin kernel (it needs TF Select, which int8 models cannot use)"
    match = re.search(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op", text)
    if match:
        return f"op {match.group(1)} has no TFLite builtin kernel"
    match = re.search(r"Quantization not yet supported for op: '?([A-Za-z0-9_]+)'?", text)
    if match:
        return f"op {match.group(1)} has no int8 kernel"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "note:" not in line]
    return (lines[0] if lines else type(exc).__name__)[:200]
