import keras
import pytest
from keras import layers
import bnfreeze
from support import fold_and_check, fold_channels_first_and_check

CONVS = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}
SPATIAL = {1: (11,), 2: (9, 10), 3: (6, 7, 5)}


def _model(rank, *, data_format="channels_last", bn_axis=-1, **conv_kwargs):
    channels = 4
    shape = SPATIAL[rank] + (channels,) if data_format == "channels_last" else (channels,) + SPATIAL[rank]
    inputs = keras.Input(shape)
    x = CONVS[rank](6, 3, data_format=data_format, **conv_kwargs)(inputs)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=0.01)(x)
    return keras.Model(inputs, layers.ReLU()(x))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2])
def test_conv_then_bn_folds(rank, use_bias, padding, strides):
    fold_and_check(_model(rank, use_bias=use_bias, padding=padding, strides=strides), folded=1)


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("groups", [2])
@pytest.mark.parametrize("dilation", [1, 2])
def test_grouped_and_dilated(rank, groups, dilation):
    fold_and_check(_model(rank, groups=groups, dilation_rate=dilation, padding="same"), folded=1)


def test_causal_padding():
    fold_and_check(_model(1, padding="causal", dilation_rate=2), folded=1)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2])
def test_channels_first(rank, groups):
    model = _model(rank, data_format="channels_first", bn_axis=1, padding="same", groups=groups)
    fold_channels_first_and_check(model)


def test_channels_first_with_bn_on_last_axis_is_kept():
    result = bnfreeze.fold(_model(2, data_format="channels_first", bn_axis=-1), check=False)
    assert "channels are on axis 1" in result.report["kept"][0]["reason"]


@pytest.mark.parametrize("center,scale", [(False, True), (True, False), (False, False)])
def test_center_scale_options(center, scale):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(5, 3, use_bias=False)(inputs)
    x = layers.BatchNormalization(center=center, scale=scale, renorm=True)(x)
    fold_and_check(keras.Model(inputs, x), folded=1)


@pytest.mark.parametrize("shape,size", [((3, 6, 6), "4, the channel count"), ((3, None, None), "unknown")])
def test_channels_first_bias_on_the_last_axis_keeps_the_bn(shape, size):
    """Keras's TensorFlow backend adds a channels_first bias along the last axis when that axis is as
    long as the channel count (keras.ops.add -> bias_add NHWC): a folded bias would land there."""
    import numpy as np

    from support import assert_parity, randomize_bn

    inputs = keras.Input(shape)
    x = layers.Conv2D(4, 3, data_format="channels_first", use_bias=False, name="conv")(inputs)
    model = keras.Model(inputs, layers.BatchNormalization(axis=1, name="bn")(x))
    randomize_bn(model)
    result = bnfreeze.fold(model)  # parity at 64 and 37 too: passes because nothing was folded
    [kept] = result.report["kept"]
    assert kept["reason"].startswith(f"conv is channels_first with a last axis of size {size}: Keras's "
                                     "TensorFlow backend adds a channels_first bias along the last axis")
    # the fact the rule relies on: at a 4x4 output, a 4-filter conv's bias goes along the width
    conv = layers.Conv2D(4, 3, data_format="channels_first")
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 6)).astype("float32")
    conv.build(x.shape)
    conv.bias.assign(np.arange(1, 5, dtype="float32") * 10)
    without = np.asarray(conv(x)) - np.arange(1, 5, dtype="float32").reshape(1, 1, 1, 4) * 10
    conv.bias.assign(np.zeros(4, "float32"))
    np.testing.assert_allclose(without, np.asarray(conv(x)), atol=1e-4)
    assert_parity(model, result.model)
