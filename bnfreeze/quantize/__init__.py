"""The quantize wing, and ``bnfreeze.quantize(model, data, ...)`` itself.

``tflite_int8`` drives the TF Lite converter's full-integer quantization,
``onnx_qdq`` onnxruntime's static QDQ quantization, ``calibration`` feeds both
the same samples, ``facts`` reads what a quantized artifact holds (ops per
type, ops left in float, BN-derived ops, tensor types), ``agreement``
compares an artifact with the float model, and ``pipeline`` holds
:func:`~bnfreeze.quantize.pipeline.quantize`.

Like :mod:`bnfreeze.fold`, the package object is callable and forwards to
:func:`bnfreeze.quantize.pipeline.quantize`, so ``bnfreeze.quantize(model,
data, tflite="m.tflite")`` works and ``import bnfreeze.quantize.facts`` keeps
working.
"""

import inspect as _inspect
import sys as _sys
import types as _types

from bnfreeze.quantize.pipeline import (
    QuantizeCheckError,
    QuantizedArtifact,
    QuantizeError,
    QuantizeResult,
    quantize as _quantize,
)


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs) -> QuantizeResult:
        return _quantize(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
__signature__ = _inspect.signature(_quantize)
__wrapped__ = _quantize

__all__ = ["QuantizeCheckError", "QuantizeError", "QuantizeResult", "QuantizedArtifact"]
