"""Make a full-integer int8 TFLite file from a SavedModel, as a project outside bnfreeze would.

    python docs/ci/quantize_tflite.py build/digits_cnn_savedmodel models/digits_calib.npy build/digits_cnn_int8.tflite

The TF Lite converter's post-training quantization with a representative
dataset (the calibration images, one at a time); inputs and outputs int8.
``bnfreeze verify`` feeds it quantized and dequantizes its outputs, and its
``[[check]]`` in parity.toml judges it by top-1 agreement and SNR.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's and the converter's chatter out of CI logs

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(savedmodel: str, calibration: str, output: str) -> None:
    images = np.load(calibration, allow_pickle=False).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_saved_model(savedmodel)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with open(output, "wb") as handle:
        handle.write(converter.convert())


if __name__ == "__main__":
    main(*sys.argv[1:4])
