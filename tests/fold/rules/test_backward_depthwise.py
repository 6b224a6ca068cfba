import keras
import pytest
from keras import layers
from support import fold_and_check, fold_channels_first_and_check

DEPTHWISE = {1: (layers.DepthwiseConv1D, (12, 3)), 2: (layers.DepthwiseConv2D, (9, 8, 3))}


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("multiplier", [1, 3])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "valid")])
def test_depthwise_then_bn_folds(rank, multiplier, use_bias, strides, padding):
    cls, shape = DEPTHWISE[rank]
    inputs = keras.Input(shape)
    x = cls(3, depth_multiplier=multiplier, use_bias=use_bias, strides=strides, padding=padding)(inputs)
    x = layers.BatchNormalization()(x)
    fold_and_check(keras.Model(inputs, layers.ReLU()(x)), folded=1)


def test_depthwise_channels_first():
    inputs = keras.Input((3, 9, 10))  # output (6, 7, 8): the last size is not the channel count
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, data_format="channels_first")(inputs)
    x = layers.BatchNormalization(axis=1)(x)
    model = keras.Model(inputs, x)
    fold_channels_first_and_check(model)
