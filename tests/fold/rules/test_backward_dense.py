import keras
import pytest
from keras import layers
from support import fold_and_check


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("input_shape", [(6,), (5, 6), (3, 4, 6)])
def test_dense_then_bn_folds(use_bias, center, scale, input_shape):
    inputs = keras.Input(input_shape)
    x = layers.Dense(7, use_bias=use_bias)(inputs)
    x = layers.BatchNormalization(center=center, scale=scale, epsilon=0.05)(x)
    outputs = layers.Activation("tanh")(x)
    result = fold_and_check(keras.Model(inputs, outputs), folded=1)
    dense = result.model.get_layer(result.report["folded"][0]["into"])
    assert dense.use_bias and len(dense.weights) == 2


@pytest.mark.parametrize("options", [{"renorm": True}, {"synchronized": True}, {"epsilon": 0.5}, {"epsilon": 1e-7}])
def test_bn_options(options):
    inputs = keras.Input((6,))
    x = layers.Dense(5)(inputs)
    x = layers.BatchNormalization(**options)(x)
    fold_and_check(keras.Model(inputs, layers.ReLU()(x)), folded=1)


def test_bn_as_model_output_keeps_output_name():
    inputs = keras.Input((6,), name="features")
    x = layers.Dense(5, name="logits_dense")(inputs)
    outputs = layers.BatchNormalization(name="scores")(x)
    model = keras.Model(inputs, outputs)
    result = fold_and_check(model, folded=1)
    assert result.model.output_names == ["scores"]
    assert result.model.get_layer("scores").__class__.__name__ == "Identity"


def test_bn_on_a_non_channel_axis_is_kept():
    inputs = keras.Input((4, 6))
    x = layers.Dense(6)(inputs)
    x = layers.BatchNormalization(axis=1)(x)
    result = fold_and_check(keras.Model(inputs, x), folded=0)
    assert "normalizes axis 1" in result.report["kept"][0]["reason"]


def test_float64_dense_stays_float64():
    inputs = keras.Input((6,), dtype="float64")
    x = layers.Dense(5, dtype="float64")(inputs)
    x = layers.BatchNormalization(dtype="float64")(x)
    model = keras.Model(inputs, x)
    result = fold_and_check(model, folded=1)
    assert result.model.layers[1].kernel.dtype == "float64"
