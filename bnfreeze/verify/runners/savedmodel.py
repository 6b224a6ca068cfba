"""SavedModel folders (``serving_default`` signature) on TensorFlow's CPU or GPU."""

from __future__ import annotations

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import Runner, tf_device
from bnfreeze.io.signature import TensorSpec


class SavedModelRunner(Runner):
    backend = "savedmodel"
    devices = ("cpu", "gpu")

    def load(self) -> None:
        import tensorflow as tf

        self._device = tf_device(self.device)
        with tf.device(self._device):
            try:
                self._loaded = tf.saved_model.load(str(self.path))
            except Exception as exc:
                raise InputError(f"{self.path}: cannot be loaded as a SavedModel ({type(exc).__name__})") from exc
        signatures = getattr(self._loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise InputError(f"{self.path}: the SavedModel has no serving_default signature")
        self._function = signatures["serving_default"]
        self.provider = self._device

    def input_specs(self):
        _, kwargs = self._function.structured_input_signature
        return [
            TensorSpec(name, tuple(spec.shape), spec.dtype.name)
            for name, spec in sorted(kwargs.items(), key=lambda item: _input_order(item[1]))
        ]

    def infer(self, feed):
        import tensorflow as tf

        with tf.device(self._device):
            outputs = self._function(**{name: tf.constant(value) for name, value in feed.items()})
        return {name: np.asarray(outputs[name]) for name in sorted(outputs, key=_output_order)}

    def close(self) -> None:
        self._loaded = self._function = None


def _input_order(spec) -> str:
    return spec.name or ""


def _output_order(name: str):
    # Keras names outputs output_0, output_1, ... in model order
    suffix = name.rsplit("_", 1)[-1]
    return (0, int(suffix), name) if suffix.isdigit() else (1, 0, name)
