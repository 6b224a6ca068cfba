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
