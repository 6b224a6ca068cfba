"""ONNX files on onnxruntime's CPU or CUDA execution provider.

On CUDA, TF32 is turned off (``use_tf32=0``) so that float32 means float32,
and the provider that really runs is read back from the session: onnxruntime
silently falls back to the CPU when CUDA cannot start, and that must not be
reported as a GPU result.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import Runner, Unavailable
from bnfreeze.io.signature import TensorSpec

_ORT_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


class OnnxRunner(Runner):
    backend = "onnxruntime"
    devices = ("cpu", "gpu")

    def __init__(self, path, device="cpu", *, optimization: str = "all"):
        super().__init__(path, device)
        self.optimization = optimization

    def load(self) -> None:
        import onnxruntime as ort

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
            raise InputError(f"{self.path}: onnxruntime cannot load it ({_first_line(exc)})") from exc
        finally:
            ort.set_default_logger_severity(2)
        active = self.session.get_providers()
        self.provider = active[0]
        if self.device == "gpu" and self.provider != "CUDAExecutionProvider":
            self.close()
            raise Unavailable(f"CUDAExecutionProvider could not start (no usable GPU); onnxruntime fell back to {active[0]}")

    def input_specs(self):
        return [
            TensorSpec(i.name, tuple(d if isinstance(d, int) else None for d in i.shape), _ORT_TYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        ]

    def infer(self, feed):
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {name: np.ascontiguousarray(value) for name, value in feed.items()})
        return dict(zip(names, values))

    def close(self) -> None:
        self.session = None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
