"""One interface for every backend: load, infer on a feed, close.

A runner is made for one artifact and one device. ``load`` may raise
:class:`Unavailable` when the device or runtime is not present here (no GPU,
say): ``verify`` then marks the row skipped with that reason. Heavy imports
happen inside ``load``, so listing runners costs nothing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from bnfreeze.io.signature import TensorSpec


class Unavailable(Exception):
    """This backend cannot run on the requested device here (the reason is the message)."""


class Runner(ABC):
    #: Backend label shown in reports ("keras", "savedmodel", "onnxruntime", "tflite").
    backend: str = ""
    #: Devices this backend can use.
    devices: tuple[str, ...] = ("cpu",)

    def __init__(self, path: str | Path, device: str = "cpu"):
        if device not in self.devices:
            raise Unavailable(f"{self.backend} does not run on {device}")
        self.path = Path(path)
        self.device = device
        #: What really ran (an onnxruntime provider, a TF device), set by ``load``.
        self.provider: str = ""

    @abstractmethod
    def load(self) -> None:
        """Load the artifact on ``self.device``; raise Unavailable if the device is missing."""

    @abstractmethod
    def input_specs(self) -> list[TensorSpec]:
        """The artifact's inputs, in the order ``infer`` expects them in a feed."""

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on ``feed`` (input name -> array); outputs by name, in the artifact's order."""

    def close(self) -> None:
        """Release the artifact (sessions, interpreters)."""

    def __enter__(self) -> "Runner":
        self.load()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tf_device(device: str) -> str:
    """The TF device string for ``device``; raise Unavailable when there is no GPU."""
    import tensorflow as tf

    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise Unavailable("no GPU visible to TensorFlow")
        tf.config.experimental.enable_tensor_float_32_execution(False)
        return "/GPU:0"
    return "/CPU:0"
