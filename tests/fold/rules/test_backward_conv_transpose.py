import keras
import pytest
from keras import layers
from support import fold_and_check, fold_channels_first_and_check

TRANSPOSED = {
    1: (layers.Conv1DTranspose, (7, 3)),
    2: (layers.Conv2DTranspose, (5, 6, 3)),
    3: (layers.Conv3DTranspose, (4, 3, 5, 3)),
}


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("strides,padding", [(1, "valid"), (2, "same"), (2, "valid")])
def test_transposed_conv_then_bn_folds(rank, use_bias, strides, padding):
    cls, shape = TRANSPOSED[rank]
    inputs = keras.Input(shape)
    x = cls(4, 3, strides=strides, padding=padding, use_bias=use_bias)(inputs)
    x = layers.BatchNormalization()(x)
    fold_and_check(keras.Model(inputs, layers.ReLU()(x)), folded=1)


def test_output_padding():
    # (TF's CPU kernels do not run transposed convolutions with dilation > 1.)
    inputs = keras.Input((6, 6, 2))
    x = layers.Conv2DTranspose(3, 3, strides=2, output_padding=1, padding="valid")(inputs)
    x = layers.BatchNormalization()(x)
    fold_and_check(keras.Model(inputs, x), folded=1)


def test_channels_first():
    inputs = keras.Input((3, 5, 6))
    x = layers.Conv2DTranspose(4, 3, strides=2, data_format="channels_first")(inputs)
    x = layers.BatchNormalization(axis=1)(x)
    model = keras.Model(inputs, x)
    fold_channels_first_and_check(model)
