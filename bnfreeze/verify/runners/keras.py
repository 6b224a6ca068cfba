"""Keras ``.keras`` (and legacy ``.h5``) models on TensorFlow's CPU or GPU."""

from __future__ import annotations

import numpy as np

from bnfreeze.compare import compute_dtype
from bnfreeze.io.signature import input_specs, output_specs, pack_inputs
from bnfreeze.verify.runners.base import Runner, plain, tf_device


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
        modes = sorted({str(mode) for layer in self.model._flatten_layers(include_self=False, recursive=True)
                        if (mode := getattr(layer, "quantization_mode", None))})
        self.quantization = f"keras {'/'.join(modes)}" if modes else None

    def input_specs(self):
        return [plain(s) for s in input_specs(self.model)]

    def output_specs(self):
        return [plain(s) for s in output_specs(self.model)]

    def compute_dtype(self) -> str:
        return compute_dtype(self.model)

    def infer(self, feed):
        import keras
        import tensorflow as tf

        arrays = [feed[spec.name] for spec in self.input_specs()]
        with tf.device(self._device):
            outputs = self.model(pack_inputs(self.model, arrays), training=False)
        flat = [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]
        return dict(zip([s.name for s in self.output_specs()], flat))

    def close(self) -> None:
        self.model = None
