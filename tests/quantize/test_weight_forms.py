"""Layers that carry their own weight form (Keras int8, LoRA) are left alone by every weight rewrite.

Issue 23, class 4: quantize's scale moves and --equalize wrote into a kernel that Keras computes (LoRA:
``kernel + a @ b``, an AttributeError, exit 3) or holds as integers (``layer.quantize("int8")``: the
equalized model was refused as inexact, exit 1). Every rewrite now skips such a layer, says why in the report,
and quantize goes on with the rest.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers

from bnfreeze.cli import main
from bnfreeze.fold.api import fold
from bnfreeze.io.sources import as_data
from bnfreeze.io.signature import input_specs
from bnfreeze.quantize.datafree import correct_bias, equalize, weights_problem
from bnfreeze.quantize.placement import place_scales
from support import randomize_bn


def _cnn(kind: str | None, which=("c2", "d1")):
    """Conv(relu) -> BN -> MaxPool -> Conv -> Flatten -> Dense(relu) -> BN -> Dense: scale moves, CLE pairs and
    bias corrections for every linear layer; ``which`` get ``kind`` (lora / int8)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1), name="x")
    y = layers.Conv2D(4, 3, activation="relu", name="c1")(x)
    y = layers.BatchNormalization(name="bn1")(y)
    y = layers.MaxPooling2D(name="pool")(y)
    y = layers.Conv2D(6, 3, activation="relu", name="c2")(y)
    y = layers.Flatten(name="flat")(y)
    y = layers.Dense(12, activation="relu", name="d1")(y)
    y = layers.BatchNormalization(name="bn2")(y)
    model = keras.Model(x, layers.Dense(5, name="d2")(y))
    randomize_bn(model, negative=False)
    for name in which:
        layer = model.get_layer(name)
        if kind == "lora":
            layer.enable_lora(2)
            for variable in (layer.lora_kernel_a, layer.lora_kernel_b):  # non-zero adapters: the kernel moves
                variable.assign(np.random.default_rng(1).normal(0, 0.1, variable.shape).astype("float32"))
        elif kind == "int8":
            layer.quantize("int8")
    return model


def _calibration(model, rows=48):
    rng = np.random.default_rng(0)
    return as_data(rng.random((rows, 8, 8, 1)).astype("float32"), input_specs(model))


def _weights(model, names):
    return {name: [np.array(v) for v in model.get_layer(name).weights] for name in names}


@pytest.mark.parametrize("kind,names", [("lora", ("c2", "d1")), ("lora", ("c1",)), ("int8", ("d1",)),
                                        ("int8", ("d1", "d2"))])
def test_every_rewrite_leaves_such_layers_as_they_are_and_says_why(kind, names):
    model = _cnn(kind, names)
    expected = "has LoRA adapters" if kind == "lora" else "is quantized (int8)"
    for name in names:
        assert expected in weights_problem(model.get_layer(name))
    folded = fold(model)
    skipped: list = []
    placed, moved = place_scales(folded, skipped)
    equalized, report = equalize(placed)
    corrected, bias = correct_bias(equalized, _calibration(model))
    every = skipped + report["not_rewritten"] + bias["not_rewritten"]
    assert {entry["layer"] for entry in every} <= set(names)
    assert all(expected in entry["reason"] for entry in every)
    assert {entry["layer"] for entry in bias["not_rewritten"]} == set(names)  # each is a bias-correction layer
    for name in names:  # bit for bit as the fold left them
        for before, after in zip(_weights(folded.model, [name])[name], _weights(corrected, [name])[name]):
            np.testing.assert_array_equal(before, after)
    # the rewrites that did run kept what the model computes (equalization) or moved only biases
    sample = np.random.default_rng(2).random((3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(placed(sample)), np.asarray(folded.model(sample)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(equalized(sample)), np.asarray(placed(sample)), rtol=1e-4, atol=1e-4)


def test_a_plain_model_loses_nothing_to_these_checks():
    model = _cnn(None)
    skipped: list = []
    _, moved = place_scales(fold(model), skipped)
    assert skipped == [] and [m["bn"] for m in moved] == ["bn1", "bn2"]
    _, report = equalize(model)
    assert report["not_rewritten"] == [] and report["pairs"]


def _quantize(model_path, calib, out, *extra):
    return CliRunner().invoke(main, ["quantize", str(model_path), "--calib-data", str(calib), *map(str, extra),
                                     "--check", "snr", "--min-snr", "5", "--report", str(out / "r.json"), "--force"])


@pytest.mark.parametrize("extra", [(), ("--equalize",), ("--bias-correction",), ("--equalize", "--per-tensor")])
def test_quantize_a_lora_model_with_every_rewrite(tmp_path, extra):
    model = _cnn("lora", ("c1", "c2", "d1"))
    model.save(tmp_path / "lora.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((48, 8, 8, 1)).astype("float32"))
    result = _quantize(tmp_path / "lora.keras", tmp_path / "calib.npy", tmp_path, "--tflite", tmp_path / "m.tflite",
                       *extra)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["not_rewritten"], report
    assert all("LoRA" in entry["reason"] for entry in report["not_rewritten"])
    assert "left as it is by" in result.output and (tmp_path / "m.tflite").exists()


def test_quantize_a_keras_int8_model_says_why_in_one_line_and_writes_nothing(tmp_path):
    model = _cnn("int8", ("d1",))
    model.save(tmp_path / "int8.keras")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((48, 8, 8, 1)).astype("float32"))
    for extra in ((), ("--equalize",), ("--bias-correction",)):
        for target in (("--tflite", tmp_path / "m.tflite"), ("--onnx", tmp_path / "m.onnx")):
            result = _quantize(tmp_path / "int8.keras", tmp_path / "calib.npy", tmp_path, *target, *extra)
            assert result.exit_code in (1, 2), (extra, target, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            assert "d1 (int8) is already quantized by Keras" in result.output, result.output
            assert "internal error" not in result.output
            assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy", "int8.keras"]
