"""The float32 reading of a low-precision model (bnfreeze.compare.precision)."""

from __future__ import annotations

import numpy as np
import pytest

from bnfreeze.parity import check_models
from bnfreeze.compare.precision import NoReading, float32_twin, low_precision_layers, stored_precision
from support import randomize_bn


def _net(policy: str, seed: int = 0):
    import keras
    from keras import layers

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(seed)
    try:
        x = keras.Input((6, 6, 3), name="image")
        h = layers.BatchNormalization(name="bn")(layers.Conv2D(4, 3, name="conv")(x))
        h = keras.ops.cast(layers.ReLU(name="relu")(h), "float16")  # a cast recorded in the graph
        y = layers.Dense(3, name="head", dtype="float32")(layers.GlobalAveragePooling2D(name="pool")(h))
        model = keras.Model(x, y, name="net")
    finally:
        keras.config.set_dtype_policy(previous)
    randomize_bn(model, seed)
    return model


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "float16"])
def test_the_twin_computes_in_float32_with_the_stored_weights(policy):
    import keras

    model = _net(policy)
    assert low_precision_layers(model)
    twin = float32_twin(model)
    assert not low_precision_layers(twin) and twin.name == "net" and [i.name for i in twin.inputs] == ["image"]
    for mine, theirs in zip(model.weights, twin.weights):
        assert str(theirs.dtype) == "float32"
        np.testing.assert_array_equal(np.asarray(mine.numpy(), np.float32), theirs.numpy())  # cast up exactly
    assert stored_precision(model) == ("float16" if policy == "float16" else "float32")
    # the twin is what the network computes in float32: a float32 build holding the same weights
    plain = _net("float32")
    plain.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    x = np.random.default_rng(0).standard_normal((4, 6, 6, 3)).astype("float32")
    expected = np.asarray(keras.Model(plain.inputs, plain.get_layer("relu").output)(x))
    got = np.asarray(keras.Model(twin.inputs, twin.get_layer("relu").output)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    low = np.asarray(keras.Model(model.inputs, model.get_layer("relu").output)(x), np.float32)
    assert np.abs(low - expected).max() > 1e-5  # while the model itself rounds
    assert [l.dtype_policy.name for l in model.layers] == [l.dtype_policy.name for l in _net(policy).layers]


def test_the_twin_ignores_a_global_low_precision_policy_and_leaves_it_set():
    import keras

    model = _net("mixed_float16")
    keras.config.set_dtype_policy("mixed_float16")
    try:
        twin = float32_twin(model)
        assert keras.config.dtype_policy().name == "mixed_float16"
    finally:
        keras.config.set_dtype_policy("float32")
    assert not low_precision_layers(twin)


def test_a_model_without_a_config_has_no_reading_and_is_judged_in_its_own_precision():
    import keras

    class Scale(keras.layers.Layer):  # takes an argument get_config does not return
        def __init__(self, factor):
            super().__init__(dtype="mixed_float16")
            self.factor = factor

        def call(self, x):
            return x * self.factor

    x = keras.Input((3,))
    model = keras.Model(x, Scale(2.0)(keras.layers.Dense(3, dtype="mixed_float16")(x)))
    with pytest.raises(NoReading, match="does not rebuild from its config"):
        float32_twin(model)
    parity = check_models(model, model)
    assert parity.passed and "does not rebuild" in parity.reading_unavailable
    assert not [r for r in parity.runs if r.inputs.endswith(", float32 reading")]
    assert "float32_reading_unavailable" in parity.as_dict()


def test_a_quantized_layer_has_no_reading():
    import keras

    x = keras.Input((4,))
    dense = keras.layers.Dense(3, dtype="mixed_bfloat16")
    model = keras.Model(x, dense(x))
    dense.quantize("int8")
    with pytest.raises(NoReading, match="quantized"):
        float32_twin(model)


def test_an_overflow_the_original_does_not_have_is_judged_at_every_scale():
    """Equal in float32, the candidate's float16 values pass 65504 at x100 inputs: no rounding, a failure."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((4,), name="x")
    dense = keras.layers.Dense(3, dtype="mixed_float16", name="d")
    reference = keras.Model(x, dense(x))
    y = keras.Input((4,), name="x")
    big = keras.layers.Dense(3, dtype="mixed_float16", name="d")
    candidate = keras.Model(y, keras.layers.Rescaling(1 / 2000, dtype="mixed_float16")(big(y)))
    big.set_weights([w * 2000 for w in dense.get_weights()])
    parity = check_models(reference, candidate)
    assert not parity.passed
    failed = [r for r in parity.runs if not r.passed]
    assert failed and all(not r.inputs.endswith(", float32 reading") for r in failed)
    assert any("NaN or Inf" in (c.reason or "") for c in parity.outputs if not c.passed)
    assert all(r.passed for r in parity.runs if r.inputs == "random x1")


def test_a_cast_the_config_does_not_describe_leaves_no_reading():
    """A layer whose own call casts to float16 rounds inside the twin too: no reading, judged as before."""
    import keras

    @keras.saving.register_keras_serializable("bnfreeze_test")
    class Half(keras.layers.Layer):
        def call(self, x):
            return keras.ops.cast(x * 3.0, "float16")

    x = keras.Input((4,), name="x")
    model = keras.Model(x, Half(dtype="mixed_float16")(keras.layers.Dense(3, dtype="mixed_float16")(x)))
    with pytest.raises(NoReading, match=r"outputs float16 whatever its policy"):
        float32_twin(model)
    parity = check_models(model, model)
    assert parity.passed and "outputs float16" in parity.reading_unavailable


def test_an_adapted_lookup_keeps_its_vocabulary_in_the_twin():
    import keras

    lookup = keras.layers.StringLookup(name="words")
    lookup.adapt(np.array(["cat", "dog", "bird"]))
    x = keras.Input((1,), dtype="string", name="w")
    ids = keras.ops.cast(lookup(x), "float32")
    model = keras.Model(x, keras.layers.Dense(2, dtype="mixed_float16", name="d")(ids))
    twin = float32_twin(model)
    words = np.array([["dog"], ["cat"], ["fish"]])
    np.testing.assert_allclose(np.asarray(twin(words)), np.asarray(model(words), np.float32), atol=1e-2)
    assert check_models(model, model).reading_unavailable is None
