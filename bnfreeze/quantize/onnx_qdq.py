"""Static int8 quantization of the ONNX that ``export`` writes, with onnxruntime's ``quantize_static``.

The float graph comes from :func:`bnfreeze.export.formats.write_onnx`
(tf2onnx from a traced serving function). It goes through onnxruntime's
``quant_pre_process`` (ONNX shape inference and onnxruntime's basic graph
optimizations, e.g. MatMul + Add -> Gemm, so that a bias is quantized as
int32 inside its layer rather than added after a rounding; symbolic shape
inference is skipped, it needs sympy) and then ``quantize_static`` in QDQ
format: int8 weights (symmetric, per output channel unless ``per_tensor``)
and int8 activations calibrated on the samples by ``minmax``, ``entropy``
or ``percentile``. ``ForceQuantizeNoInputCheck`` makes the quantizer put
ops whose input is not yet quantized (the final Softmax) between
QuantizeLinear and DequantizeLinear too. The model takes and gives float;
everything between is int8.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

from bnfreeze.export.formats import ExportError, write_onnx
from bnfreeze.io.interrupts import import_native
from bnfreeze.quantize.calibration import onnx_reader

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime's quantization tools log advice on the root logger; keep it off the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(model, data, destination: Path, *, per_tensor: bool = False, calibrate: str = "minmax",
                  opset: int = 17, limit: int | None = None, workdir: Path | None = None,
                  batch_size: int | None = None) -> None:
    """Write the QDQ int8 ONNX of ``model`` to ``destination`` (``batch_size``: a fixed batch dimension)."""
    quantization = import_native("onnxruntime.quantization")
    onnx = import_native("onnx")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibrate not in CALIBRATION_METHODS:
        raise ExportError(f"unknown --calibrate {calibrate!r}; choose one of {', '.join(CALIBRATION_METHODS)}")
    method = {"minmax": quantization.CalibrationMethod.MinMax, "entropy": quantization.CalibrationMethod.Entropy,
              "percentile": quantization.CalibrationMethod.Percentile}[calibrate]
    folder = Path(tempfile.mkdtemp(prefix=".bnfreeze-int8-", dir=workdir))
    try:
        write_onnx(model, folder / "float.onnx", opset=opset, batch_size=batch_size)
        names = [i.name for i in onnx.load(str(folder / "float.onnx")).graph.input]
        with _quiet_logging():
            try:
                quant_pre_process(str(folder / "float.onnx"), str(folder / "prepared.onnx"), skip_symbolic_shape=True)
            except Exception as exc:
                raise ExportError(f"onnxruntime's quant_pre_process failed on the exported graph ({_first(exc)})") from exc
            try:
                quantization.quantize_static(
                    str(folder / "prepared.onnx"), str(destination), onnx_reader(data, names, limit, batch_size),
                    quant_format=quantization.QuantFormat.QDQ, per_channel=not per_tensor,
                    activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
                    calibrate_method=method, extra_options={"ForceQuantizeNoInputCheck": True},
                    calibration_providers=["CPUExecutionProvider"],
                )
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"onnxruntime's quantize_static failed ({_first(exc)})") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _first(exc: Exception) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
