"""ONNX files on onnxruntime's CPU or CUDA execution provider.

On CUDA, TF32 is turned off (``use_tf32=0``) so that float32 means float32,
and the provider that really runs is read back from the session: onnxruntime
silently falls back to the CPU when CUDA cannot start, and that must not be
reported as a GPU result.

Quantized graphs are recognised by their operators: ``QuantizeLinear`` /
``DequantizeLinear`` pairs (QDQ), ``QLinear*`` / ``*Integer`` operators
(QOperator) or ``DynamicQuantizeLinear`` (dynamic). A graph input of an
integer type read only by ``DequantizeLinear`` nodes with constant scale and
zero point is fed quantized with them, and a graph output written by a
``QuantizeLinear`` is dequantized with its parameters.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import IOSpec, Quantization, Runner, Unavailable, first_line

_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(int16)": "int16", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(uint16)": "uint16", "tensor(bool)": "bool"}
_QOPERATORS = ("QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "ConvInteger", "MatMulInteger",
               "QGemm", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat")


class OnnxRunner(Runner):
    backend = "onnxruntime"
    devices = ("cpu", "gpu")

    def __init__(self, path, device="cpu", *, optimization: str = "all"):
        super().__init__(path, device)
        self.optimization = optimization

    def load(self) -> None:
        from bnfreeze.io.interrupts import import_native

        ort = import_native("onnxruntime")

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        options.log_severity_level = 3
        if self.device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise Unavailable("this onnxruntime build has no CUDAExecutionProvider")
            providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        if self.device == "gpu":
            ort.set_default_logger_severity(4)  # a missing CUDA is reported as a skipped row instead
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:
            raise InputError(f"{self.path}: onnxruntime cannot load it ({first_line(exc)})") from exc
        finally:
            ort.set_default_logger_severity(2)
        active = self.session.get_providers()
        self.provider = active[0]
        if self.device == "gpu" and self.provider != "CUDAExecutionProvider":
            self.close()
            raise Unavailable(f"CUDAExecutionProvider could not start (no usable GPU); onnxruntime fell back to {active[0]}")
        self._read_quantization()

    def _read_quantization(self) -> None:
        """The graph's quantization style and its quantized inputs and outputs (see the module doc)."""
        from bnfreeze.io.interrupts import import_native

        onnx = import_native("onnx")
        from onnx import numpy_helper

        self._io_quantization: dict[str, Quantization] = {}
        try:
            graph = onnx.load(str(self.path), load_external_data=False).graph
        except Exception:  # onnxruntime loaded it; a proto we cannot re-read has no quantization facts
            return
        ops = {node.op_type for node in graph.node}
        if {"QuantizeLinear", "DequantizeLinear"} <= ops:
            self.quantization = "QDQ"
        elif ops & set(_QOPERATORS):
            self.quantization = "QOperator"
        elif "DynamicQuantizeLinear" in ops:
            self.quantization = "dynamic-range"
        elif "DequantizeLinear" in ops:
            self.quantization = "quantized weights"
        constants = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute:
                constants[node.output[0]] = node.attribute[0].t

        def value(name):
            if name not in constants:
                return None
            return numpy_helper.to_array(constants[name])

        def params(node):
            scale = value(node.input[1]) if len(node.input) > 1 else None
            zero = value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.int64)
            if scale is None or zero is None:
                return None
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            return Quantization.of(scale, zero, axis)

        consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        for graph_input in graph.input:
            readers = consumers.get(graph_input.name, [])
            if readers and all(n.op_type == "DequantizeLinear" and n.input[0] == graph_input.name for n in readers):
                found = {params(n) for n in readers}
                if len(found) == 1 and None not in found:
                    self._io_quantization[graph_input.name] = found.pop()
        for node in graph.node:
            if node.op_type == "QuantizeLinear" and node.output[0] in {o.name for o in graph.output}:
                found = params(node)
                if found is not None:
                    self._io_quantization[node.output[0]] = found
        if self._io_quantization and self.quantization:
            self.quantization += " (quantized I/O)"

    def _specs(self, tensors) -> list[IOSpec]:
        return [
            IOSpec(t.name, tuple(d if isinstance(d, int) else None for d in t.shape), _ORT_TYPES.get(t.type, t.type),
                   self._io_quantization.get(t.name) if _ORT_TYPES.get(t.type) in ("int8", "uint8", "int16", "uint16") else None)
            for t in tensors
        ]

    def input_specs(self):
        return self._specs(self.session.get_inputs())

    def output_specs(self):
        return self._specs(self.session.get_outputs())

    def infer(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {name: np.ascontiguousarray(value) for name, value in feed.items()})
        return dict(zip(names, values))

    def close(self) -> None:
        self.session = None

