"""Mixed precision and float64: fold and recalibrate with tolerances suited to the dtype."""

import numpy as np
import pytest

import bnfreeze
from bnfreeze.compare import DTYPE_TOLERANCES, Tolerance, compute_dtype
from bnfreeze.io.arrays import ArrayData
from support import randomize_bn, randomize_weights


def build(policy: str):
    import keras
    from keras import layers

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = keras.Sequential([
            keras.Input((8, 8, 3)), layers.Conv2D(6, 3, use_bias=False), layers.BatchNormalization(), layers.ReLU(),
            layers.DepthwiseConv2D(3), layers.BatchNormalization(), layers.Flatten(), layers.Dense(5),
            layers.BatchNormalization(),
            layers.Activation("softmax", dtype="float32" if policy.startswith("mixed") else None),
        ])
    finally:
        keras.config.set_dtype_policy(previous)
    randomize_weights(model, 3)
    randomize_bn(model, 3)
    return model


@pytest.mark.parametrize("policy,dtype", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16"),
                                          ("float64", "float64"), ("float32", "float32")])
def test_fold_uses_the_dtype_tolerance_and_says_so(policy, dtype):
    model = build(policy)
    assert compute_dtype(model) == dtype
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 3
    tolerance = result.report["parity"]["tolerance"]
    assert (tolerance["atol"], tolerance["rtol"]) == DTYPE_TOLERANCES[dtype] and tolerance["dtype"] == dtype
    assert result.parity.passed
    for old, new in zip(model.weights, result.model.weights):
        assert new.dtype == old.dtype or "moving" in old.path
    if dtype == "float64":
        assert result.parity.max_rel < 1e-12  # fold math in float64 is exact to rounding


def test_explicit_tolerance_overrides_the_dtype_default():
    model = build("mixed_float16")
    tolerance = Tolerance(atol=1e-9, rtol=1e-9).resolved(model)
    assert (tolerance.abs_limit, tolerance.rel_limit, tolerance.dtype) == (1e-9, 1e-9, "float16")
    with pytest.raises(bnfreeze.ParityError, match="float16"):
        bnfreeze.fold(model, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("policy,stat_dtype", [("mixed_float16", "float32"), ("mixed_bfloat16", "float32"),
                                               ("float64", "float64")])
def test_recalibrate_keeps_statistics_in_the_variable_dtype(policy, stat_dtype):
    import keras

    model = build(policy)
    specs = bnfreeze.input_specs(model)
    x = np.random.default_rng(0).normal(0.5, 2, (40, 8, 8, 3)).astype(np.float32)
    result = bnfreeze.recalibrate(model, ArrayData(None, {specs[0].name: x}, specs), batch_size=16)
    first = [l for l in result.model.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    assert str(first.moving_mean.dtype) == stat_dtype
    probe = keras.Model(result.model.inputs, first.input)
    seen = np.asarray(probe([x]), np.float64)
    rtol = 1e-5 if policy == "float64" else 1e-2
    np.testing.assert_allclose(first.moving_mean.numpy(), seen.mean(axis=(0, 1, 2)), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(first.moving_variance.numpy(), seen.var(axis=(0, 1, 2)), rtol=rtol, atol=rtol)
