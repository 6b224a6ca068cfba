"""Keras ``.keras`` models on TensorFlow's CPU or GPU."""

from __future__ import annotations

import numpy as np

from bnfreeze.verify.runners.base import Runner, tf_device
from bnfreeze.io.signature import input_specs, output_names


class KerasRunner(Runner):
    backend = "keras"
    devices = ("cpu", "gpu")

    def __init__(self, path, device="cpu", *, unsafe: bool = False, model=None):
        super().__init__(path, device)
        self.unsafe = unsafe
        self.model = model

    def load(self) -> None:
        self._device = tf_device(self.device)
        if self.model is None:
            from bnfreeze.io.models import load_model

            self.model = load_model(self.path, unsafe=self.unsafe)
        self.provider = self._device

    def input_specs(self):
        return input_specs(self.model)

    def infer(self, feed):
        import keras
        import tensorflow as tf

        arrays = [feed[spec.name] for spec in self.input_specs()]
        with tf.device(self._device):
            outputs = self.model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        flat = [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]
        return dict(zip(output_names(self.model), flat))

    def close(self) -> None:
        self.model = None
