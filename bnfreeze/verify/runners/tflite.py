"""TFLite flatbuffers on the TFLite interpreter (CPU), through their signature.

bnfreeze's TFLite files carry a ``serving_default`` signature whose inputs and
outputs have the Keras names; the signature runner resizes the batch
dimension as needed.
"""

from __future__ import annotations

import warnings

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import Runner
from bnfreeze.io.signature import TensorSpec


class TFLiteRunner(Runner):
    backend = "tflite"
    devices = ("cpu",)

    def load(self) -> None:
        import tensorflow as tf

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's move to ai_edge_litert
                self.interpreter = tf.lite.Interpreter(model_path=str(self.path), num_threads=1)
        except Exception as exc:
            raise InputError(f"{self.path}: the TFLite interpreter cannot load it ({type(exc).__name__})") from exc
        signatures = self.interpreter.get_signature_list()
        if not signatures:
            raise InputError(f"{self.path}: the TFLite file has no signature to call")
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        self.signature = self.interpreter.get_signature_runner(key)
        self.provider = "tflite-cpu"

    def input_specs(self):
        return [
            TensorSpec(name, tuple(int(x) if x >= 0 else None for x in d["shape_signature"]), np.dtype(d["dtype"]).name)
            for name, d in self.signature.get_input_details().items()
        ]

    def infer(self, feed):
        outputs = self.signature(**{name: np.ascontiguousarray(value) for name, value in feed.items()})
        return {name: np.array(value) for name, value in outputs.items()}

    def close(self) -> None:
        self.interpreter = self.signature = None
