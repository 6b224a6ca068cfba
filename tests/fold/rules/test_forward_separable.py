import keras
import pytest
from keras import layers
from support import fold_and_check, randomize_bn, randomize_weights, rules_without_preactivation

import bnfreeze

SEPARABLE = {1: (layers.SeparableConv1D, (12, 3)), 2: (layers.SeparableConv2D, (9, 8, 3))}


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("strides", [1, 2])
def test_bn_then_separable(rank, multiplier, use_bias, strides):
    cls, shape = SEPARABLE[rank]
    inputs = keras.Input(shape)
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = layers.Dropout(0.1)(x)
    x = cls(5, 3, depth_multiplier=multiplier, use_bias=use_bias, strides=strides, padding="valid")(x)
    result = fold_and_check(keras.Model(inputs, x), folded=1)
    assert result.report["folded"][0]["rule"] == "separable-forward"


def test_same_padding_with_shift_is_kept():
    inputs = keras.Input((9, 8, 3))
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = layers.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    model = keras.Model(inputs, x)
    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model, rules=rules_without_preactivation())
    assert "zero padding of sep" in result.report["kept"][0]["reason"]
    # the pre-activation rule folds it: the scale into the kernel, the shift as an add before the padding
    result = fold_and_check(model, folded=1)
    assert result.report["folded"][0]["rule"] == "pre-activation-add"
