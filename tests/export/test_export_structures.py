"""Exports of models whose inputs and outputs are not one plain tensor: each artifact must match."""

import json

import keras
import pytest
from keras import layers
from support import bnfreeze


def _models(tmp_path):
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    yield "two_inputs", keras.Model([a, b], layers.Dense(2, name="o")(layers.Concatenate()([a, b])))
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    yield "dict_inputs", keras.Model({"b": b, "a": a}, layers.Dense(2, name="o")(layers.Concatenate()([a, b])))
    x = keras.Input((4,), name="v")
    yield "input_as_output", keras.Model(x, [x, layers.Dense(4, name="d")(x)])
    x = keras.Input((6,), name="x")
    h = layers.Dense(8, activation="relu", name="h")(x)
    yield "dict_outputs", keras.Model(x, {"z_out": layers.Dense(3, name="layer_zz")(h),
                                           "a_out": layers.Dense(3, name="layer_aa")(h)})


@pytest.mark.slow
def test_structured_models_export_and_verify(tmp_path):
    for name, model in _models(tmp_path):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        sm, onnx, tflite = tmp_path / f"{name}_sm", tmp_path / f"{name}.onnx", tmp_path / f"{name}.tflite"
        proc = bnfreeze("export", path, "--savedmodel", sm, "--onnx", onnx, "--tflite", tflite)
        assert proc.returncode == 0, (name, proc.stderr)
        report = tmp_path / f"{name}.json"
        proc = bnfreeze("verify", path, sm, onnx, tflite, "--json", report)
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
        assert json.loads(report.read_text())["passed"]


def test_an_opset_tf2onnx_cannot_write_is_bad_input(example_model_path, tmp_path):
    proc = bnfreeze("export", example_model_path, "--onnx", tmp_path / "m.onnx", "--opset", "21")
    assert proc.returncode == 2 and "--opset 21: tf2onnx" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()


def test_usage_errors_are_one_line():
    for args in (("fold", "--no-such-option"), ("fold",), ("no-such-command",)):
        proc = bnfreeze(*args)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bnfreeze: error:") and "--help" in lines[0], proc.stderr
