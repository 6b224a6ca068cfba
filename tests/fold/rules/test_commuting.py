"""The ops a BN's affine map is moved through, checked numerically with Keras itself."""

import numpy as np
import pytest
from keras import layers

from bnfreeze.fold.affine import BNAffine
from bnfreeze.fold.rules.commuting import Layout, Step, commuting_op_for

RNG = np.random.default_rng(0)
SCALE = np.array([0.7, 1.3, 0.5, 1.1])
SHIFT = np.array([0.4, -0.8, 1.5, -0.2])


def _affine(x):
    return BNAffine(SCALE, SHIFT).apply(x, axis=-1).astype("float32")


def _run(layer, x):
    return np.asarray(layer(x))


@pytest.mark.parametrize(
    "layer",
    [
        layers.AveragePooling2D(3, strides=2, padding="same"),
        layers.AveragePooling2D(2, padding="valid"),
        layers.AveragePooling1D(3, strides=2, padding="same"),
        layers.AveragePooling3D(2, padding="same"),
        layers.GlobalAveragePooling2D(),
        layers.MaxPooling2D(3, strides=2, padding="same"),
        layers.GlobalMaxPooling2D(),
    ],
    ids=lambda l: f"{type(l).__name__}-{getattr(l, 'padding', '')}",
)
def test_pooling_commutes_with_positive_affine_maps(layer):
    """pool(s*x + t) == s*pool(x) + t, at the borders too ('same' averages valid elements only)."""
    rank = int(type(layer).__name__[-2]) if type(layer).__name__[-2].isdigit() else 2
    x = RNG.standard_normal((2,) + (7,) * rank + (4,)).astype("float32")
    np.testing.assert_allclose(_run(layer, _affine(x)), _affine(_run(layer, x)), atol=1e-5)
    assert commuting_op_for(layer) is not None


def test_max_pooling_does_not_commute_with_a_negative_scale():
    layer = layers.MaxPooling2D(2)
    x = RNG.standard_normal((1, 4, 4, 4)).astype("float32")
    negative = BNAffine(-SCALE, SHIFT)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(
            _run(layer, negative.apply(x).astype("float32")), negative.apply(_run(layer, x)), atol=1e-5
        )
    step = Step("pool", layer, None, Layout(shape=(4, 4, 4), axis=3), -SCALE, "bn")
    assert commuting_op_for(layer).transfer(step) == "negative scale on channel 0 does not commute with max pooling (pool)"


def test_flatten_tracks_channels_for_both_data_formats():
    last = layers.Flatten()
    step = Step("flat", last, None, Layout(shape=(2, 3, 4), axis=3), SCALE, "bn")
    assert commuting_op_for(last).transfer(step).features.tolist() == [0, 1, 2, 3] * 6
    first = layers.Flatten(data_format="channels_first")
    step = Step("flat", first, None, Layout(shape=(4, 2, 3), axis=1), SCALE, "bn")
    # Keras moves channels last before flattening
    assert commuting_op_for(first).transfer(step).features.tolist() == [0, 1, 2, 3] * 6


def test_non_linear_activation_is_not_commuting():
    assert commuting_op_for(layers.Activation("relu")) is None
    assert commuting_op_for(layers.ReLU()) is None
    assert commuting_op_for(layers.ZeroPadding2D()) is None
    assert commuting_op_for(layers.Activation("linear")) is not None


def test_pooling_on_the_wrong_axis_stops():
    layer = layers.AveragePooling1D(2)
    step = Step("pool", layer, None, Layout(shape=(4, 6), axis=1), SCALE, "bn")
    assert "does not pool over" in commuting_op_for(layer).transfer(step)
