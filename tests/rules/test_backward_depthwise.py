import keras
import pytest
from keras import layers
import bnfreeze
from support import assert_parity, channels_last_twin, fold_and_check, randomize_bn, randomize_weights

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
    inputs = keras.Input((3, 9, 8))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, data_format="channels_first")(inputs)
    x = layers.BatchNormalization(axis=1)(x)
    model = keras.Model(inputs, x)
    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model, check=False)  # TF runs channels_first convs on GPUs only
    assert len(result.report["folded"]) == 1
    assert_parity(channels_last_twin(model), channels_last_twin(result.model))
