"""TFLite flatbuffers on the TFLite interpreter (CPU), with or without a signature.

With a SignatureDef the signature runner is used (``serving_default``, the
``--signature`` name, or the file's only signature); its inputs and outputs
carry the signature's names (bnfreeze's own files use the Keras names).
Without one — most ``.tflite`` files in the wild, everything converted from a
concrete function or by older converters — the interpreter's input and output
details are used directly: tensors by index, named by their tensor names
(``serving_default_digits:0``, ``StatefulPartitionedCall:1``, ``Identity``),
and the batch dimension resized to each feed.

Quantized tensors (int8/uint8/int16 with a scale) are fed quantized and read
dequantized by :meth:`Runner.run`; :attr:`quantization` says how the file is
quantized, read from the tensor types: int8 activations make it
*full-integer*, int8 constants with float activations *dynamic-range*, float16
constants *float16 weights*.
"""

from __future__ import annotations

import warnings

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import IOSpec, Quantization, Runner, first_line, native_stderr_silenced

_INTEGER_TYPES = ("int8", "uint8", "int16")


class TFLiteRunner(Runner):
    backend = "tflite"
    devices = ("cpu",)
    #: a signature's outputs are a map and a file without one may have reordered them
    outputs_in_model_order = False

    def __init__(self, path, device="cpu", *, signature: str | None = None):
        super().__init__(path, device)
        self.signature_name = signature

    def load(self) -> None:
        with native_stderr_silenced():  # the runtime's INFO line about XNNPACK
            self._load()

    def _load(self) -> None:
        import tensorflow as tf

        from bnfreeze.verify.runners.tflite_check import check_flatbuffer

        check_flatbuffer(self.path)  # a damaged file would crash the interpreter (SIGSEGV), not raise

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's move to ai_edge_litert
                self.interpreter = tf.lite.Interpreter(model_path=str(self.path), num_threads=1)
        except Exception as exc:
            raise InputError(f"{self.path}: the TFLite interpreter cannot load it ({first_line(exc)})") from exc
        # read before any allocation: once XNNPACK is applied, the op list shows its partitions instead
        self.quantization = self._describe_quantization()
        signatures = self.interpreter.get_signature_list()
        self.signature = None
        if signatures:
            key = self._signature_key(signatures)
            self.signature = self.interpreter.get_signature_runner(key)
            inputs = self.signature.get_input_details()
            outputs = self.signature.get_output_details()
            self._inputs = [_spec(name, d) for name, d in inputs.items()]
            self._outputs = [_spec(name, d) for name, d in outputs.items()]
            self.provider = f"tflite-cpu {key}"
        else:
            try:
                self.interpreter.allocate_tensors()
            except Exception as exc:
                raise InputError(f"{self.path}: the TFLite interpreter cannot allocate it ({first_line(exc)})") from exc
            self._input_details = self.interpreter.get_input_details()
            self._output_details = self.interpreter.get_output_details()
            self._inputs = [_spec(d["name"], d) for d in self._input_details]
            self._outputs = [_spec(d["name"], d) for d in self._output_details]
            if len({s.name for s in self._inputs}) != len(self._inputs):
                self._inputs = [_spec(f"{s.name}#{i}", d) for i, (s, d) in enumerate(zip(self._inputs, self._input_details))]
            if len({s.name for s in self._outputs}) != len(self._outputs):
                self._outputs = [_spec(f"{s.name}#{i}", d) for i, (s, d) in enumerate(zip(self._outputs, self._output_details))]
            self.provider = "tflite-cpu (no signature)"

    def _signature_key(self, signatures: dict) -> str:
        wanted = self.signature_name
        if wanted and wanted in signatures:
            return wanted
        if len(signatures) == 1:
            return next(iter(signatures))
        if "serving_default" in signatures and not wanted:
            return "serving_default"
        raise InputError(f"{self.path}: the TFLite file has signatures {', '.join(signatures)}, "
                         f"none named {wanted or 'serving_default'}; choose one with --signature")

    def _describe_quantization(self) -> str | None:
        interpreter = self.interpreter
        details = [*interpreter.get_input_details(), *interpreter.get_output_details()]
        io_quantized = any(_spec(d["name"], d).quantization is not None for d in details)
        try:
            tensors = {t["index"]: t for t in self.interpreter.get_tensor_details()}
        except Exception:  # a file whose tensors cannot be listed: judge by its inputs and outputs
            tensors = {}
        try:
            activations = {i for op in self.interpreter._get_ops_details() for i in op.get("outputs", [])}
        except Exception:  # a private API; without it, every tensor is judged by its type alone
            activations = None

        def dtype(t):
            return np.dtype(t["dtype"]).name

        def scaled(t):
            params = t.get("quantization_parameters") or {}
            scales = params.get("scales")
            if scales is not None and len(scales):
                return bool(np.any(np.asarray(scales)))
            quantization = t.get("quantization", (0.0, 0))
            return bool(quantization and quantization[0])

        integer = [t for t in tensors.values() if dtype(t) in _INTEGER_TYPES and scaled(t)]
        if activations is not None:
            integer_activations = [t for t in integer if t["index"] in activations]
            integer_constants = [t for t in integer if t["index"] not in activations]
        else:
            integer_activations, integer_constants = ([], integer) if not io_quantized else (integer, [])
        if integer_activations or io_quantized:
            kinds = {dtype(t) for t in integer_activations} or {"int8"}
            kind = "int16x8" if "int16" in kinds else ("uint8" if kinds == {"uint8"} else "int8")
            io = "quantized I/O" if io_quantized else "float I/O"
            return f"full-integer {kind} ({io})"
        if integer_constants:
            return f"dynamic-range {'int8' if any(dtype(t) == 'int8' for t in integer_constants) else 'integer'}"
        if any(dtype(t) == "float16" for t in tensors.values()):
            return "float16 weights"
        return None

    def input_specs(self):
        return list(self._inputs)

    def output_specs(self):
        return list(self._outputs)

    def infer(self, feed):
        with native_stderr_silenced():  # XNNPACK announces itself on the first invoke
            return self._infer(feed)

    def _infer(self, feed):
        if self.signature is not None:
            outputs = self.signature(**{name: np.ascontiguousarray(value) for name, value in feed.items()})
            return {spec.name: np.array(outputs[spec.name]) for spec in self._outputs}
        interpreter = self.interpreter
        resized = False
        current = interpreter.get_input_details()
        for position, (spec, detail) in enumerate(zip(self._inputs, self._input_details)):
            value = np.asarray(feed[spec.name])
            if tuple(current[position]["shape"]) != value.shape:
                interpreter.resize_tensor_input(detail["index"], list(value.shape), strict=False)
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for spec, detail in zip(self._inputs, self._input_details):
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(feed[spec.name]))
        interpreter.invoke()
        return {spec.name: np.array(interpreter.get_tensor(detail["index"]))
                for spec, detail in zip(self._outputs, self._output_details)}

    def close(self) -> None:
        self.interpreter = self.signature = None


def _spec(name: str, detail: dict) -> IOSpec:
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    dtype = np.dtype(detail["dtype"]).name
    quantization = None
    if dtype in _INTEGER_TYPES:
        params = detail.get("quantization_parameters") or {}
        if params.get("scales") is not None and len(params["scales"]):
            quantization = Quantization.of(params["scales"], params.get("zero_points", []),
                                           params.get("quantized_dimension", 0))
        else:
            scale, zero = detail.get("quantization", (0.0, 0))
            quantization = Quantization.of([scale], [zero])
    return IOSpec(name, tuple(int(x) if x >= 0 else None for x in shape), dtype, quantization)
