"""The model-vs-model parity check: unknown sizes are also tried at an odd size."""

from __future__ import annotations

import numpy as np

from bnfreeze.parity import DEFAULT_FREE_DIM, ODD_FREE_DIM, check_models


def _same_and_padded_twin():
    """'same' padding with stride 2 pads (0, 1) at even sizes and (1, 1) at odd ones: a twin that pads
    (0, 1) explicitly agrees at 64 and differs at 37."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 2))
    conv = keras.layers.Conv2D(3, 3, strides=2, padding="same", name="conv")
    reference = keras.Model(x, conv(x))
    y = keras.Input((None, None, 2))
    twin_conv = keras.layers.Conv2D(3, 3, strides=2, padding="valid", name="conv")
    candidate = keras.Model(y, twin_conv(keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(y)))
    twin_conv.set_weights(conv.get_weights())
    return reference, candidate


def test_a_difference_only_at_odd_sizes_fails():
    reference, candidate = _same_and_padded_twin()
    x = np.random.default_rng(0).standard_normal((1, DEFAULT_FREE_DIM, DEFAULT_FREE_DIM, 2)).astype("float32")
    np.testing.assert_allclose(reference(x), candidate(x), atol=1e-6)  # equal at the default size
    result = check_models(reference, candidate)
    assert not result.passed
    odd = [run for run in result.runs if f"unknown dims {ODD_FREE_DIM}" in run.inputs]
    assert len(odd) == 1 and not odd[0].passed
    assert all(run.passed for run in result.runs if run is not odd[0])


def test_a_model_that_cannot_run_at_the_odd_size_is_not_compared_there():
    import keras

    x = keras.Input((None, 4))
    reshaped = keras.layers.Reshape((-1, 8))(x)  # needs an even number of steps
    model = keras.Model(x, keras.layers.Dense(2)(reshaped))
    result = check_models(model, model)
    assert result.passed
    odd = [run for run in result.runs if f"unknown dims {ODD_FREE_DIM}" in run.inputs]
    assert len(odd) == 1 and odd[0].note and "not compared" in odd[0].note and odd[0].batch == 0


def test_known_sizes_add_no_run():
    import keras

    x = keras.Input((5, 4))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    assert not any("unknown dims" in run.inputs for run in check_models(model, model).runs)


def test_random_samples_beyond_memory_are_bad_input():
    import pytest

    from bnfreeze.errors import InputError
    from bnfreeze.io.signature import TensorSpec
    from bnfreeze.parity import random_data

    spec = TensorSpec("x", (None, 8, 8, 1), "float32")
    assert random_data([spec], 16, 0).arrays["x"].shape == (16, 8, 8, 1)
    with pytest.raises(InputError, match=r"--samples 100000000000: .* GiB of memory; give at most [0-9]+ samples"):
        random_data([spec], 10**11, 0)


def _clipped_twin(clip: float):
    """A model and a twin that agrees with it while its pre-activations stay below ``clip``: what a fold
    that moved a BN through a ReLU6-like cap, or lost a bound, computes: right for small inputs only."""
    import keras

    def build(activation):
        x = keras.Input((16,))
        dense = keras.layers.Dense(16, kernel_initializer="identity", bias_initializer="zeros", name="dense")
        return keras.Model(x, activation(dense(x)))

    return build(keras.layers.ReLU()), build(keras.layers.ReLU(max_value=clip))


def test_a_fold_off_only_for_large_inputs_fails_the_check():
    """Standard-normal inputs times 1 and 10 never reach 40; times 100 they do: the x100 run catches it."""
    reference, candidate = _clipped_twin(40.0)
    result = check_models(reference, candidate)
    assert not result.passed
    by_input = {(run.inputs, run.batch): run for run in result.runs if run.call == "training=False"}
    assert by_input[("random x1", 1)].passed and by_input[("random x1", 8)].passed
    assert by_input[("random x10", 8)].passed  # the old check (x1 and x10) let this through
    assert not by_input[("random x100", 8)].passed
    assert result.samples >= 28  # one sample, three batches of 8 and the default call


def test_outputs_that_overflow_at_large_inputs_are_not_compared_there():
    """exp overflows float32 at x100: the original itself has no finite answer, so that run is noted, not failed."""
    import keras

    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Activation("exponential")(keras.layers.Dense(4, kernel_initializer="ones")(x)))
    result = check_models(model, model)
    assert result.passed
    noted = [run for run in result.runs if run.note]
    assert [run.inputs for run in noted] == ["random x100"] and "overflow" in noted[0].note
