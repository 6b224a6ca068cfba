"""One interface for every backend: load, input/output specs, infer on a feed, close.

A runner is made for one artifact and one device. ``load`` may raise
:class:`Unavailable` when the device or runtime is not present here (no GPU,
say): ``verify`` then marks the row skipped with that reason. Heavy imports
happen inside ``load``, so listing runners costs nothing.

Specs are :class:`IOSpec`: a name, a shape (batch first, None where free), the
dtype the artifact takes or gives, and its quantization parameters where the
tensor is quantized (TFLite int8/uint8 inputs and outputs, ONNX inputs read by
a ``DequantizeLinear`` and outputs written by a ``QuantizeLinear``).
:meth:`Runner.run` takes and gives real (float) values: it quantizes such
inputs with their scale and zero point and dequantizes such outputs, around
the runner's raw :meth:`Runner.infer`.
"""

from __future__ import annotations

import contextlib
import os
import sys

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnfreeze.compare import lowest_precision
from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec


class Unavailable(Exception):
    """This backend cannot run on the requested device here (the reason is the message)."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantization ``real = (q - zero_point) * scale`` (per tensor, or per channel along ``axis``)."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    @classmethod
    def of(cls, scales, zero_points, axis: int | None = None) -> "Quantization | None":
        """None when there are no scales or every scale is 0 (TFLite's "not quantized")."""
        scales = tuple(float(s) for s in np.ravel(scales))
        zero_points = tuple(int(z) for z in np.ravel(zero_points)) or (0,) * len(scales)
        if not scales or not any(scales):
            return None
        if len(zero_points) == 1 and len(scales) > 1:
            zero_points = zero_points * len(scales)
        return cls(scales, zero_points, axis if len(scales) > 1 else None)

    def _broadcast(self, values, ndim: int):
        array = np.asarray(values, dtype=np.float64)
        if self.axis is None or array.size == 1:
            return array.reshape(())
        shape = [1] * ndim
        shape[self.axis] = array.size
        return array.reshape(shape)

    def quantize(self, real: np.ndarray, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        info = np.iinfo(dtype)
        scale = self._broadcast(self.scale, real.ndim)
        zero = self._broadcast(self.zero_point, real.ndim)
        q = np.round(np.asarray(real, dtype=np.float64) / scale) + zero
        return np.clip(q, info.min, info.max).astype(dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q)
        scale = self._broadcast(self.scale, q.ndim)
        zero = self._broadcast(self.zero_point, q.ndim)
        return ((q.astype(np.float64) - zero) * scale).astype(np.float32)

    def describe(self) -> str:
        if len(self.scale) == 1:
            return f"scale {self.scale[0]:.6g}, zero point {self.zero_point[0]}"
        return f"{len(self.scale)} scales along axis {self.axis}"


@dataclass(frozen=True)
class IOSpec(TensorSpec):
    """A runner's input or output: name, shape, the artifact's dtype and its quantization."""

    quantization: Quantization | None = None

    @property
    def real_dtype(self) -> str:
        """The dtype of the real values fed or compared: float32 for a quantized tensor."""
        return "float32" if self.quantization is not None else self.dtype


def plain(spec: TensorSpec) -> IOSpec:
    if isinstance(spec, IOSpec):
        return spec
    return IOSpec(spec.name, tuple(spec.shape), spec.dtype, key=spec.key, values=spec.values)


class Runner(ABC):
    #: Backend label shown in reports ("keras", "savedmodel", "onnxruntime", "tflite").
    backend: str = ""
    #: Devices this backend can use.
    devices: tuple[str, ...] = ("cpu",)
    #: Whether :meth:`output_specs` lists the outputs in the source model's order (a TFLite file
    #: without a signature may not: its converter can reorder them).
    outputs_in_model_order: bool = True

    def __init__(self, path: str | Path, device: str = "cpu"):
        if device not in self.devices:
            raise Unavailable(f"{self.backend} does not run on {device}")
        self.path = Path(path)
        self.device = device
        #: What really ran (an onnxruntime provider, a TF device), set by ``load``.
        self.provider: str = ""
        #: How the artifact is quantized ("full-integer int8 (int8 I/O)", "dynamic-range int8", "QDQ int8",
        #: ...), or None for a float model; set by ``load``.
        self.quantization: str | None = None

    @abstractmethod
    def load(self) -> None:
        """Load the artifact on ``self.device``; raise Unavailable if the device is missing."""

    @abstractmethod
    def input_specs(self) -> list[IOSpec]:
        """The artifact's inputs, in the order the artifact lists them."""

    @abstractmethod
    def output_specs(self) -> list[IOSpec]:
        """The artifact's outputs, in the order the artifact lists them (the model's order)."""

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on ``feed`` (input name -> array in the input's own dtype); raw outputs by name."""

    def close(self) -> None:
        """Release the artifact (sessions, interpreters)."""

    def compute_dtype(self) -> str:
        """The lowest float precision the artifact is seen to compute in (picks default tolerances)."""
        return lowest_precision(s.real_dtype for s in [*self.input_specs(), *self.output_specs()])

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on real values: quantize quantized inputs, cast others to the input's dtype, dequantize outputs."""
        specs = {s.name: s for s in self.input_specs()}
        raw = {}
        for name, value in feed.items():
            spec = specs.get(name)
            try:
                raw[name] = to_input(value, spec) if spec is not None else value
            except InputError as exc:
                raise InputError(f"{self.path}: {exc}") from exc
        outputs = self.infer(raw)
        quantized = {s.name: s.quantization for s in self.output_specs() if s.quantization is not None}
        return {name: quantized[name].dequantize(value) if name in quantized else value
                for name, value in outputs.items()}

    def __enter__(self) -> "Runner":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def to_input(value: np.ndarray, spec: IOSpec) -> np.ndarray:
    """``value`` (real) as the input ``spec`` takes it: quantized, or cast to its dtype."""
    value = np.asarray(value)
    if spec.quantization is not None:
        return np.ascontiguousarray(spec.quantization.quantize(value, spec.dtype))
    try:
        dtype = np.dtype(spec.dtype)
    except TypeError:
        return np.ascontiguousarray(value)
    if value.dtype == dtype:
        return np.ascontiguousarray(value)
    if np.issubdtype(value.dtype, np.floating) and not np.issubdtype(dtype, np.floating) and dtype != np.bool_:
        raise InputError(f"input {spec.name} takes {spec.dtype} without quantization parameters; "
                         f"real (float) data cannot be fed to it")
    from bnfreeze.io.ranges import problem

    found = problem(value, spec)  # a cast would wrap it (300 in a uint8 input) or overflow it (float16)
    if found is not None:
        sample, bad, what = found
        raise InputError(f"input {spec.name} cannot take {bad} (sample {sample} of the batch); {what}")
    return np.ascontiguousarray(value.astype(dtype))


def tf_device(device: str) -> str:
    """The TF device string for ``device``; raise Unavailable when there is no GPU."""
    import tensorflow as tf

    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise Unavailable("no GPU visible to TensorFlow")
        tf.config.experimental.enable_tensor_float_32_execution(False)
        return "/GPU:0"
    return "/CPU:0"


def first_line(exc: BaseException) -> str:
    from bnfreeze.errors import message_line

    return message_line(exc)[:200]


@contextlib.contextmanager
def native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for the block.

    The TFLite runtime prints ``INFO: Created TensorFlow Lite XNNPACK delegate
    for CPU.`` from C++ when it applies its default delegate, and no flag or
    environment variable turns that off. Python errors are raised as
    exceptions, so nothing a user needs is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
