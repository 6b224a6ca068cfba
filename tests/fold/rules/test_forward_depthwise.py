import keras
import pytest
from keras import layers
from support import fold_and_check, randomize_bn, randomize_weights, rules_without_preactivation

import bnfreeze

DEPTHWISE = {1: (layers.DepthwiseConv1D, (12, 3)), 2: (layers.DepthwiseConv2D, (9, 8, 3))}


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("multiplier", [1, 3])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("strides", [1, 2])
def test_bn_then_depthwise(rank, multiplier, use_bias, strides):
    cls, shape = DEPTHWISE[rank]
    inputs = keras.Input(shape)
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = cls(3, depth_multiplier=multiplier, use_bias=use_bias, strides=strides, padding="valid")(x)
    result = fold_and_check(keras.Model(inputs, x), folded=1)
    assert result.report["folded"][0]["rule"] == "depthwise-forward"


def test_same_padding_with_shift_is_kept():
    inputs = keras.Input((9, 8, 3))
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    model = keras.Model(inputs, x)
    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model, rules=rules_without_preactivation())
    assert "zero padding of dw" in result.report["kept"][0]["reason"]
    # the pre-activation rule folds it: the scale into the kernel, the shift as an add before the padding
    result = fold_and_check(model, folded=1)
    assert result.report["folded"][0]["rule"] == "pre-activation-add"
