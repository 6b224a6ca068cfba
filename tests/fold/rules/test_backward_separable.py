import keras
import numpy as np
import pytest
from keras import layers
from support import fold_and_check

SEPARABLE = {1: (layers.SeparableConv1D, (12, 3)), 2: (layers.SeparableConv2D, (9, 8, 3))}


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("strides", [1, 2])
def test_separable_then_bn_folds_into_pointwise(rank, multiplier, use_bias, strides):
    cls, shape = SEPARABLE[rank]
    inputs = keras.Input(shape)
    x = cls(5, 3, depth_multiplier=multiplier, use_bias=use_bias, strides=strides, padding="same", name="sep")(inputs)
    x = layers.BatchNormalization()(x)
    model = keras.Model(inputs, layers.ReLU()(x))
    result = fold_and_check(model, folded=1)
    before = model.get_layer("sep").depthwise_kernel.numpy()
    after = result.model.get_layer("sep").depthwise_kernel.numpy()
    np.testing.assert_array_equal(before, after)
