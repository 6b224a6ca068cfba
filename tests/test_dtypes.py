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
    keras.utils.set_random_seed(3)  # the kernels too: their float16 rounding is what the checks meet
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


def _tampered(result, factor: float):
    """The folded model with one output channel of its first convolution scaled by ``factor``."""
    import keras

    conv = next(l for l in result.model.layers if isinstance(l, keras.layers.Conv2D))
    kernel = conv.kernel.numpy()
    kernel[..., 2] *= factor
    conv.kernel.assign(kernel)
    return result.model


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_low_precision_fold_is_judged_in_its_float32_reading_where_one_channel_shows(policy):
    """One channel off by 1% hides under float16's rounding and 1e-2 tolerance; the float32 reading,
    held to float32's 1e-5 / 1e-4, shows it."""
    from bnfreeze.parity import check_models

    model = build(policy)
    result = bnfreeze.fold(model)
    readings = [r for r in result.report["parity"]["runs"] if r["inputs"].endswith(", float32 reading")]
    own = [r for r in result.report["parity"]["runs"] if not r["inputs"].endswith(", float32 reading")]
    assert len(readings) == len(own) >= 5 and all(r["max_abs"] < 1e-5 for r in readings)
    assert result.report["parity"]["float32_reading_tolerance"]["atol"] == DTYPE_TOLERANCES["float32"][0]
    assert result.report["parity"]["samples"] == sum(r["batch"] for r in own)
    tampered = _tampered(result, 1.01)
    unit = ((False, 8, 1.0),)  # a batch of standard-normal inputs, where float16 rounding stays small
    assert check_models(model, tampered, Tolerance(*DTYPE_TOLERANCES[dtype_of(policy)]), runs=unit).passed
    parity = check_models(model, tampered, runs=unit)
    assert not parity.passed
    assert "float32 reading" in parity.failure() and "float32 defaults" in parity.failure()
    failed = [r for r in parity.runs if not r.passed]
    assert failed and all(r.inputs.endswith(", float32 reading") for r in failed)
    assert [l.dtype_policy.name for l in model.layers] == [l.dtype_policy.name for l in build(policy).layers]


def dtype_of(policy: str) -> str:
    return policy.split("_")[-1]


def test_low_precision_rounding_at_large_inputs_is_reported_not_judged():
    """Softmax outputs over float16 logits of 100s differ by 1e-2 between two exact orders of the same sums:
    where the original's own rounding (against its float32 reading) passes a quarter of the tolerance, the
    run is judged in the float32 reading only, and its float16 figures stay in the report."""
    model = build("mixed_float16")
    result = bnfreeze.fold(model)
    runs = {r["inputs"] + f"/{r['batch']}/{r['call']}": r for r in result.report["parity"]["runs"]}
    large = runs["random x100/8/training=False"]
    assert large["passed"] and large["note"].startswith("float16 figures reported, not judged: the original's own")
    assert large["max_abs"] > 0.005  # this seed: 0.01 between the exact fold and its original (the tolerance)
    assert runs["random x100, float32 reading/8/training=False"]["note"] is None
    assert all(r["note"] is None for k, r in runs.items() if k.startswith("random x1/"))


def test_explicit_tolerances_are_the_users_word_without_a_float32_reading():
    model = build("mixed_float16")
    given = bnfreeze.fold(model, atol=0.05, rtol=0.05)
    assert not [r for r in given.report["parity"]["runs"] if "float32 reading" in r["inputs"]]
    assert "float32_reading_tolerance" not in given.report["parity"]


def test_a_pure_float16_model_is_read_in_float32_held_to_its_stored_precision():
    """The float16 policy stores float16 weights: a folded weight is rounded to float16, so the float32
    reading is held to float16's bounds (which no longer grow with the inputs there)."""
    result = bnfreeze.fold(build("float16"))
    parity = result.report["parity"]
    assert parity["float32_reading_tolerance"]["dtype"] == "float16"
    readings = [r for r in parity["runs"] if r["inputs"].endswith(", float32 reading")]
    assert len(readings) >= 5 and all(r["passed"] for r in readings)
    assert all(str(w.dtype) == "float16" for w in result.model.weights if "moving" not in w.path)


def test_a_float16_head_the_fold_does_not_touch_leaves_the_reading_at_float32():
    """Only the weights a fold rewrote decide the reading's bounds: an unrelated float16 head does not
    loosen the check of the mixed-precision convolutions."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(4)
    x = keras.Input((8, 8, 3))
    h = layers.BatchNormalization(dtype="mixed_float16")(layers.Conv2D(6, 3, dtype="mixed_float16")(x))
    h = layers.Flatten(dtype="mixed_float16")(layers.ReLU(dtype="mixed_float16")(h))
    model = keras.Model(x, [layers.Dense(4, name="main")(h), layers.Dense(2, dtype="float16", name="aux")(h)])
    randomize_bn(model, 4)
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 1
    assert result.report["parity"]["float32_reading_tolerance"]["dtype"] == "float32"


def test_under_the_float16_policy_a_fold_right_only_in_a_clip_range_is_refused():
    """ReLU6 widened to 60 agrees at x1; at x10 the float32 reading, held to float16's bounds there because
    the weights are stored in float16, shows it (its own rounding is small enough to judge by)."""
    import keras
    from keras import layers

    from bnfreeze.parity import check_models

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float16")
    keras.utils.set_random_seed(0)
    try:
        x = keras.Input((8, 8, 3))
        h = layers.ReLU(max_value=6.0, name="relu6")(layers.BatchNormalization()(layers.Conv2D(8, 3)(x)))
        model = keras.Model(x, layers.Dense(4, dtype="float32")(layers.GlobalAveragePooling2D()(h)))
    finally:
        keras.config.set_dtype_policy(previous)
    randomize_bn(model, 0)
    wrong = bnfreeze.fold(model).model
    wrong.get_layer("relu6").max_value = 60.0
    parity = check_models(model, wrong)
    assert not parity.passed and "random x10" in parity.failure()


def test_a_rewritten_copy_that_does_not_run_is_one_line_naming_the_cause():
    """A Lambda whose function uses its module's names runs in memory; rebuilt from its config it does not."""
    import keras
    from keras import layers

    from bnfreeze.errors import InputError

    x = keras.Input((6, 6, 3))
    h = layers.BatchNormalization()(layers.Conv2D(4, 3)(x))
    h = layers.Lambda(lambda t: keras.ops.relu(t), output_shape=(4, 4, 4), name="relu")(h)
    model = keras.Model(x, layers.Flatten()(h))
    randomize_bn(model, 2)
    with pytest.raises(InputError, match=r"its rewritten copy does not run .*such as a Lambda whose function uses names of its module"):
        bnfreeze.fold(model)
