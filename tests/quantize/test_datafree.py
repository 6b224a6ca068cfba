"""The rewrites before int8: scales moved back through ReLUs, cross-layer equalization, bias correction."""

from pathlib import Path

import keras
import numpy as np
from keras import layers

import bnfreeze
from bnfreeze.fold.affine import BNAffine
from bnfreeze.io.arrays import ArrayData
from bnfreeze.io.signature import input_specs
from bnfreeze.quantize.datafree import correct_bias, equalization_pairs, equalize, quantized_weights
from bnfreeze.quantize.placement import place_scales
from support import assert_parity, inputs_for, randomize_bn, randomize_weights
from test_quantize import seed_cnn


def _seed_model(negative: bool):
    keras.utils.set_random_seed(4)
    model = seed_cnn()
    randomize_weights(model, seed=4)
    randomize_bn(model, seed=5, negative=negative)
    return model


def test_forward_folded_scales_move_back_into_the_layer_before_the_relu():
    model = _seed_model(negative=False)
    folded = bnfreeze.fold(model)
    assert [f["direction"] for f in folded.report["folded"]] == ["forward"] * 3
    moved_model, moved = place_scales(folded)
    assert [(m["bn"], m["scale_into"], m["shift_into"], m["channels"]) for m in moved] == [
        ("bn_a", "conv_a", "conv_b", 8), ("bn_b", "conv_b", "fc", 8), ("bn_c", "fc", "probs", 16)]
    assert_parity(model, moved_model)
    # conv_a now carries bn_a's scale per output channel; conv_b's kernel is its own again (bn_b's scale on its
    # outputs), and the shift of bn_a stays in conv_b's bias
    s_a = BNAffine.from_layer(model.get_layer("bn_a")).scale
    s_b = BNAffine.from_layer(model.get_layer("bn_b")).scale
    np.testing.assert_allclose(moved_model.get_layer("conv_a").kernel.numpy(),
                               model.get_layer("conv_a").kernel.numpy() * s_a, rtol=1e-5)
    np.testing.assert_allclose(moved_model.get_layer("conv_b").kernel.numpy(),
                               model.get_layer("conv_b").kernel.numpy() * s_b, rtol=1e-5)
    assert not np.allclose(moved_model.get_layer("conv_b").bias.numpy(), model.get_layer("conv_b").bias.numpy() * s_b)
    assert folded.model.get_layer("conv_a").kernel.numpy() is not None  # the fold result itself is untouched
    np.testing.assert_array_equal(folded.model.get_layer("conv_a").kernel.numpy(), model.get_layer("conv_a").kernel.numpy())


def test_negative_scales_stay_forward():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6,))
    hidden = layers.BatchNormalization(name="bn")(layers.Dense(5, activation="relu", name="first")(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="second")(hidden))
    randomize_weights(model)
    randomize_bn(model, seed=1, negative=True)
    scale = BNAffine.from_layer(model.get_layer("bn")).scale
    assert (scale < 0).any() and (scale > 0).any()
    folded = bnfreeze.fold(model)
    moved_model, (entry,) = place_scales(folded)
    assert entry["channels"] == int((scale > 0).sum()) and entry["of"] == 5
    assert_parity(model, moved_model)
    kept = np.flatnonzero(scale < 0)
    np.testing.assert_array_equal(moved_model.get_layer("first").kernel.numpy()[:, kept],
                                  model.get_layer("first").kernel.numpy()[:, kept])


def mobilenet_block(activation):
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(12, 1, use_bias=False, name="expand")(inputs)
    x = layers.BatchNormalization(name="expand_bn")(x)
    x = activation("expand_act")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = activation("dw_act")(x)
    x = layers.Conv2D(6, 1, use_bias=False, name="project")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(x))


def test_equalization_is_exact_and_narrows_the_channel_ranges():
    keras.utils.set_random_seed(7)
    model = mobilenet_block(lambda name: layers.ReLU(name=name))
    randomize_bn(model, seed=8, negative=True)
    folded = bnfreeze.fold(model).model
    pairs = [(p.first, p.second, p.through) for p in equalization_pairs(folded)]
    assert pairs == [("expand", "dw", ["expand_act"]), ("dw", "project", ["dw_act"]), ("project", "head", ["gap"])]
    equalized, report = equalize(folded)
    assert_parity(folded, equalized, atol=2e-5)
    for entry in report["pairs"]:
        assert entry["range_spread_after"] <= entry["range_spread_before"] * (1 + 1e-9)
    # per-tensor rounding of the depthwise kernel loses much less after equalization
    def error(m):
        kernel = m.get_layer("dw").kernel.numpy().astype(np.float64)
        return np.abs(quantized_weights("depthwise", kernel, per_tensor=True) - kernel).max(axis=(0, 1, 3)) / np.abs(
            kernel).max(axis=(0, 1, 3))
    assert np.median(error(equalized)) < np.median(error(folded))


def test_relu6_is_not_crossed():
    model = mobilenet_block(lambda name: layers.ReLU(6.0, name=name))
    folded = bnfreeze.fold(model).model
    assert [(p.first, p.second) for p in equalization_pairs(folded)] == [("project", "head")]


def test_bias_correction_cancels_the_mean_shift_of_rounded_weights():
    keras.utils.set_random_seed(9)
    inputs = keras.Input((16,), name="x")
    model = keras.Model(inputs, layers.Dense(4, name="dense")(layers.Dense(32, activation="relu", name="hidden")(inputs)))
    x = np.random.default_rng(0).uniform(0, 2, (256, 16)).astype("float32")  # inputs with a non-zero mean
    data = ArrayData(Path("x"), {"x": x}, input_specs(model))
    corrected, report = correct_bias(model, data, per_tensor=True)
    assert [e["layer"] for e in report["layers"]] == ["hidden", "dense"] and report["samples"] == 256

    def with_rounded_weights(m):
        rounded = keras.models.clone_model(m)
        rounded.set_weights(m.get_weights())
        for name in ("hidden", "dense"):
            layer = rounded.get_layer(name)
            layer.kernel.assign(quantized_weights("dense", layer.kernel.numpy().astype(np.float64), True))
        return rounded

    reference = model(x).numpy().mean(axis=0)
    plain = with_rounded_weights(model)(x).numpy().mean(axis=0)
    fixed = with_rounded_weights(corrected)(x).numpy().mean(axis=0)
    assert np.abs(fixed - reference).max() < 0.2 * np.abs(plain - reference).max()


def test_the_pipeline_records_what_it_rewrote(tmp_path):
    model = _seed_model(negative=False)
    data = np.random.default_rng(3).uniform(0, 1, (32, 16, 16, 1)).astype("float32")
    np.save(tmp_path / "calib.npy", data)
    result = bnfreeze.quantize(model, tmp_path / "calib.npy", tflite=tmp_path / "m.tflite", per_tensor=True,
                               equalize=True, bias_correction=True, check="snr", min_snr=10)
    report = result.report
    assert [m["bn"] for m in report["scales_moved_back"]] == ["bn_a", "bn_b", "bn_c"]
    assert report["equalization"]["parity"]["passed"] and len(report["equalization"]["pairs"]) == 3
    assert report["bias_correction"]["weights"] == "per-tensor" and len(report["bias_correction"]["layers"]) == 4
    x = inputs_for(model, batch=4)[0]
    assert np.abs(result.model(x).numpy() - model(x).numpy()).max() < 0.05  # bias correction moves it a little
