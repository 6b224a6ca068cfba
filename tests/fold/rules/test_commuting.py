"""The ops a BN's affine map is moved through, checked numerically with Keras itself.

For every op family the test computes ``f(s * x + t)`` and ``s_c * f(x) + t_c``
with ``c`` the channel the op's :class:`Layout` says each output element
carries: they must agree everywhere (borders included), and an op that does
not commute must be refused with a reason.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops

from bnfreeze.fold.affine import BNAffine
from bnfreeze.fold.rules.commuting import Layout, Step, commuting_op_for

RNG = np.random.default_rng(0)
SCALE = np.array([0.7, -1.3, 0.5, 1.1])
SHIFT = np.array([0.4, -0.8, 1.5, -0.2])
AFFINE = BNAffine(SCALE, SHIFT)
POSITIVE = BNAffine(np.abs(SCALE), SHIFT)


def _run(layer, x):
    return np.asarray(layer(x))


def _transfer(layer, in_shape, axis, affine=AFFINE, out_shape=None):
    op = commuting_op_for(layer)
    assert op is not None, f"{type(layer).__name__} is not recognised"
    return op.transfer(Step("op", layer, None, Layout(shape=tuple(in_shape), axis=axis), affine, "bn", out_shape))


def _check_commutes(layer, x, axis, affine=AFFINE):
    """f(s x + t) == s_c f(x) + t_c with c from the op's layout, element by element."""
    after = _transfer(layer, x.shape[1:], axis, affine)
    assert isinstance(after, Layout), after
    channel = after.channel_map(affine.channels)
    assert channel is not None
    moved = _run(layer, affine.apply(x, axis=axis).astype("float32"))
    expected = _run(layer, x) * affine.scale[channel] + affine.shift[channel]
    assert moved.shape[1:] == channel.shape
    np.testing.assert_allclose(moved, expected, atol=2e-5, rtol=1e-5)
    return after


@pytest.mark.parametrize(
    "layer",
    [
        layers.AveragePooling2D(3, strides=2, padding="same"),
        layers.AveragePooling2D(2, padding="valid"),
        layers.AveragePooling1D(3, strides=2, padding="same"),
        layers.AveragePooling3D(2, padding="same"),
        layers.GlobalAveragePooling2D(),
        layers.GlobalAveragePooling2D(keepdims=True),
    ],
    ids=lambda l: f"{type(l).__name__}-{getattr(l, 'padding', '')}",
)
def test_average_pooling_commutes_with_any_affine_map(layer):
    """avg(s*x + t) == s*avg(x) + t, at the borders too ('same' averages valid elements only)."""
    rank = int(type(layer).__name__[-2]) if type(layer).__name__[-2].isdigit() else 2
    x = RNG.standard_normal((2,) + (7,) * rank + (4,)).astype("float32")
    _check_commutes(layer, x, rank + 1)


@pytest.mark.parametrize("layer", [layers.MaxPooling2D(3, strides=2, padding="same"), layers.GlobalMaxPooling2D()],
                         ids=lambda l: type(l).__name__)
def test_max_pooling_commutes_with_positive_scales(layer):
    x = RNG.standard_normal((2, 7, 7, 4)).astype("float32")
    _check_commutes(layer, x, 3, POSITIVE)


def test_max_pooling_does_not_commute_with_a_negative_scale():
    layer = layers.MaxPooling2D(2)
    x = RNG.standard_normal((1, 4, 4, 4)).astype("float32")
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(_run(layer, AFFINE.apply(x).astype("float32")), AFFINE.apply(_run(layer, x)),
                                   atol=1e-5)
    assert _transfer(layer, (4, 4, 4), 3) == "negative scale on channel 1 does not commute with max pooling (op)"


def test_flatten_tracks_channels_for_both_data_formats():
    x = RNG.standard_normal((2, 2, 3, 4)).astype("float32")
    after = _check_commutes(layers.Flatten(), x, 3)
    assert after.features.tolist() == [0, 1, 2, 3] * 6
    first = layers.Flatten(data_format="channels_first")
    after = _transfer(first, (4, 2, 3), 1)
    assert after.features.tolist() == [0, 1, 2, 3] * 6  # Keras moves channels last before flattening


@pytest.mark.parametrize("dims,axis_after", [((2, 1, 3), 3), ((3, 1, 2), 1), ((1, 3, 2), 2)])
def test_permute_moves_the_channel_axis(dims, axis_after):
    layer = layers.Permute(dims)
    x = RNG.standard_normal((2, 3, 5, 4)).astype("float32")
    after = _check_commutes(layer, x, 3)
    assert after.axis == axis_after


def test_permute_follows_the_axis_when_dims_are_unknown():
    after = _transfer(layers.Permute((3, 1, 2)), (None, None, 4), 3)
    assert after.axis == 1 and after.shape == (4, None, None)


def test_reshape_then_permute_then_flatten_tracks_every_element():
    x = RNG.standard_normal((2, 6, 4)).astype("float32")
    reshape = layers.Reshape((3, 8))  # mixes channels along the last axis
    after = _check_commutes(reshape, x, 2)
    assert after.axis is None and after.mapping.shape == (3, 8)


def test_repeat_vector_keeps_each_feature_channel():
    x = RNG.standard_normal((2, 4)).astype("float32")
    after = _check_commutes(layers.RepeatVector(3), x, 1)
    assert after.axis == 2 and after.shape == (3, 4)


@pytest.mark.parametrize(
    "layer,shape,axis",
    [
        (layers.Cropping1D((1, 2)), (7, 4), 2),
        (layers.Cropping2D(((1, 0), (2, 1))), (6, 7, 4), 3),
        (layers.Cropping3D(1), (4, 5, 6, 4), 4),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, (tuple, int)) else "",
)
def test_cropping_commutes(layer, shape, axis):
    x = RNG.standard_normal((2,) + shape).astype("float32")
    _check_commutes(layer, x, axis)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area"])
def test_upsampling2d_commutes_for_every_averaging_interpolation(interpolation):
    x = RNG.standard_normal((2, 5, 6, 4)).astype("float32")
    _check_commutes(layers.UpSampling2D((2, 3), interpolation=interpolation), x, 3)


@pytest.mark.parametrize("layer,shape,axis", [(layers.UpSampling1D(3), (5, 4), 2),
                                              (layers.UpSampling3D(2), (3, 2, 4, 4), 4)],
                         ids=["1d", "3d"])
def test_upsampling_1d_3d_commute(layer, shape, axis):
    x = RNG.standard_normal((2,) + shape).astype("float32")
    _check_commutes(layer, x, axis)


def test_zero_padding_commutes_only_without_a_shift():
    layer = layers.ZeroPadding2D(1)
    x = RNG.standard_normal((2, 4, 4, 4)).astype("float32")
    scale_only = BNAffine(SCALE, np.zeros(4))
    _check_commutes(layer, x, 3, scale_only)
    reason = _transfer(layer, (4, 4, 4), 3)
    assert "pads zeros after bn" in reason and "channel 0" in reason
    with pytest.raises(AssertionError):  # and it really does not commute
        np.testing.assert_allclose(_run(layer, AFFINE.apply(x).astype("float32")), AFFINE.apply(_run(layer, x)),
                                   atol=1e-5)


def _op_layer(fn, shape):
    inputs = keras.Input(shape)
    outputs = fn(inputs)
    model = keras.Model(inputs, outputs)
    return model.operations[-1]


def test_keras_ops_reshape_and_transpose_are_followed():
    reshape = _op_layer(lambda t: ops.reshape(t, (-1, 3, 8)), (6, 4))
    x = RNG.standard_normal((2, 6, 4)).astype("float32")
    after = _transfer(reshape, (6, 4), 2, out_shape=(3, 8))
    assert after.mapping.shape == (3, 8)
    moved = np.asarray(reshape(AFFINE.apply(x, axis=2).astype("float32")))
    expected = np.asarray(reshape(x)) * SCALE[after.mapping] + SHIFT[after.mapping]
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    transpose = _op_layer(lambda t: ops.transpose(t, (0, 2, 1)), (6, 4))
    assert _transfer(transpose, (6, 4), 2).axis == 1


def test_keras_ops_that_may_move_the_batch_axis_stop():
    reshape = _op_layer(lambda t: ops.reshape(t, (2, -1)), (6, 4))
    assert "does not provably keep the batch axis" in _transfer(reshape, (6, 4), 2)
    transpose = _op_layer(lambda t: ops.transpose(t, (1, 0, 2)), (6, 4))
    assert "moves the batch axis" in _transfer(transpose, (6, 4), 2)
    assert commuting_op_for(_op_layer(lambda t: t * 2.0, (6, 4))) is None
    assert commuting_op_for(_op_layer(lambda t: t[:, 1:], (6, 4))) is None


def test_the_reshape_op_is_not_the_reshape_layer():
    """keras.ops.reshape's class is also named Reshape and lives in a keras module."""
    op = _op_layer(lambda t: ops.reshape(t, (-1, 24)), (6, 4))
    assert type(op).__name__ == "Reshape" and type(op).__module__.startswith("keras")
    assert type(commuting_op_for(op)).__name__ == "OpsReshape"


def test_subclasses_of_commuting_layers_are_not_trusted():
    class Doubling(layers.Dropout):
        def call(self, inputs, training=None):
            return inputs * 2.0

    class Clipping(layers.AveragePooling2D):
        pass

    assert commuting_op_for(Doubling(0.1)) is None
    assert commuting_op_for(Clipping(2)) is None


def test_non_linear_activation_is_not_commuting():
    assert commuting_op_for(layers.Activation("relu")) is None
    assert commuting_op_for(layers.ReLU()) is None
    assert commuting_op_for(layers.Activation("linear")) is not None


def test_pooling_on_the_wrong_axis_stops():
    assert "does not pool over" in _transfer(layers.AveragePooling1D(2), (4, 6), 1)
