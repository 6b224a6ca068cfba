"""The TFLite flatbuffer walk: damage the interpreter would read through is refused first."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.tflite_check import check_flatbuffer


@pytest.fixture(scope="module")
def tflite_bytes() -> bytes:
    import tensorflow as tf

    kernel = tf.constant(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def serve(x):
        return tf.nn.relu(tf.matmul(x, kernel))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], serve)
    return converter.convert()


def _string_start(data: bytes, field: str) -> int:
    """Where the length word of a string field of the model lies (metadata 0's name, tensor 0's name)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    table, slot = {"metadata": (model.Metadata(0), 4), "tensor": (model.Subgraphs(0).Tensors(0), 10)}[field]
    where = table._tab.Pos + table._tab.Offset(slot)
    return where + struct.unpack_from("<I", data, where)[0]


def test_a_sound_file_passes(tmp_path, tflite_bytes):
    path = tmp_path / "ok.tflite"
    path.write_bytes(tflite_bytes)
    check_flatbuffer(path)


@pytest.mark.parametrize("field", ["metadata", "tensor"])
@pytest.mark.parametrize("length", [2**31 - 1, "to the end"])
def test_a_string_running_past_the_end_is_refused(tmp_path, tflite_bytes, field, length):
    """Python's reader shortens such a string quietly; the interpreter read on and crashed (SIGSEGV)."""
    data = bytearray(tflite_bytes)
    start = _string_start(tflite_bytes, field)
    declared = len(data) - start - 4 if length == "to the end" else length  # no room left for the NUL
    struct.pack_into("<I", data, start, declared)
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"bad\.tflite: not a usable TFLite model \(.*runs past the end"):
        check_flatbuffer(path)
