"""Pre-activation folds from the command line: fold, inspect, recalibrate --fold, and the outputs in plain Keras."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from support import bnfreeze, loads_without_bnfreeze, randomize_bn, randomize_weights


def preact_model():
    """A ResNet v2 block: the BN after the stem's pooling feeds a ReLU and two convolutions; the pooled tensor
    is the identity shortcut too, so the BN's shift stays as an add; the final BN's goes into conv_c's bias."""
    inputs = keras.Input((12, 12, 3), name="image")
    x = layers.MaxPooling2D(2, name="pool")(layers.Conv2D(8, 3, padding="same", name="stem")(inputs))
    y = layers.ReLU(name="preact_relu")(layers.BatchNormalization(name="preact_bn")(x))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv_a")(y)
    y = layers.ReLU()(layers.BatchNormalization(name="mid_bn")(y))
    y = layers.Conv2D(8, 3, padding="same", name="conv_c")(y)
    x = layers.Add(name="out")([x, y])
    x = layers.ReLU(name="post_relu")(layers.BatchNormalization(name="post_bn")(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(5, name="logits")(x))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = preact_model()
    randomize_weights(model)
    randomize_bn(model, negative=False)
    path = tmp_path_factory.mktemp("preact") / "preact.keras"
    model.save(path)
    return path


def test_fold_prints_and_reports_where_scale_and_shift_went(model_file, tmp_path):
    out, report = tmp_path / "folded.keras", tmp_path / "report.json"
    proc = bnfreeze("fold", model_file, "-o", out, "--report", report)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert ("preact_bn: folded pre-activation scale into conv_a (through preact_relu); shift stays as an add "
            "(preact_bn_shift)") in text
    assert "shift into conv_c's bias (through out)" in text
    assert "folded 3 of 3 BatchNormalization layers" in text
    data = json.loads(report.read_text())
    kinds = {f["bn"]: (f["direction"], f.get("shift")) for f in data["folded"]}
    assert kinds == {"preact_bn": ("pre-activation", "add"), "mid_bn": ("backward", None),
                     "post_bn": ("pre-activation", "bias")}
    assert "(1, 5)" in loads_without_bnfreeze(out, (12, 12, 3))


def test_inspect_names_the_fold_kind(model_file):
    proc = bnfreeze("inspect", model_file)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "fold pre-activation into conv_a" in text and "fold pre-activation into logits" in text


def test_recalibrate_then_fold_uses_the_pre_activation_rules(model_file, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(0.3, 1.2, (64, 12, 12, 3)).astype("float32"))
    report = tmp_path / "r.json"
    proc = bnfreeze("recalibrate", model_file, "--calib-data", calib, "--fold", "-o", tmp_path / "r.keras",
                    "--report", report)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(report.read_text())
    assert {f["bn"] for f in summary["fold"]["folded"]} == {"preact_bn", "mid_bn", "post_bn"}
    assert summary["fold"]["parity"]["passed"]
    folded = tmp_path / "r.folded.keras"
    assert "(1, 5)" in loads_without_bnfreeze(folded, (12, 12, 3))
