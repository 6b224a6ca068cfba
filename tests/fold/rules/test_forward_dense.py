import keras
import numpy as np
import pytest
from keras import layers
from support import fold_and_check

import bnfreeze


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("input_shape", [(6,), (4, 6)])
def test_bn_then_dense(use_bias, center, scale, input_shape):
    inputs = keras.Input(input_shape)
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(center=center, scale=scale, epsilon=0.02)(x)
    outputs = layers.Dense(5, use_bias=use_bias)(x)
    result = fold_and_check(keras.Model(inputs, outputs), folded=1)
    assert result.report["folded"][0]["direction"] == "forward"
    assert result.report["folded"][0]["through"] == []


@pytest.mark.parametrize(
    "between",
    [
        lambda: layers.Dropout(0.5),
        lambda: layers.GaussianNoise(0.3),
        lambda: layers.GaussianDropout(0.3),
        lambda: layers.AlphaDropout(0.3),
        lambda: layers.ActivityRegularization(0.01),
        lambda: layers.Activation("linear"),
        lambda: layers.Identity(),
    ],
)
def test_through_inference_identities(between):
    inputs = keras.Input((6,))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization()(x)
    op = between()
    x = op(x)
    result = fold_and_check(keras.Model(inputs, layers.Dense(4)(x)), folded=1)
    assert result.report["folded"][0]["through"] == [op.name]


def test_bn_on_a_model_input_folds_forward():
    inputs = keras.Input((6,), name="raw")
    x = layers.BatchNormalization()(inputs)
    x = layers.Dropout(0.2)(x)
    result = fold_and_check(keras.Model(inputs, layers.Dense(3)(x)), folded=1)
    assert result.model.inputs[0].name == "raw"


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_through_flatten(data_format):
    shape = (5, 4, 3) if data_format == "channels_last" else (3, 5, 4)
    axis = -1 if data_format == "channels_last" else 1
    inputs = keras.Input(shape)
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(axis=axis)(x)
    x = layers.Flatten(data_format=data_format)(x)
    fold_and_check(keras.Model(inputs, layers.Dense(4)(x)), folded=1)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_through_pooling_then_flatten(data_format):
    shape = (6, 6, 3) if data_format == "channels_last" else (3, 6, 6)
    axis = -1 if data_format == "channels_last" else 1
    inputs = keras.Input(shape)
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(axis=axis)(x)
    x = layers.AveragePooling2D(2, data_format=data_format)(x)
    x = layers.Flatten(data_format=data_format)(x)
    fold_and_check(keras.Model(inputs, layers.Dense(4)(x)), folded=1)


@pytest.mark.parametrize("target_shape", [(60,), (20, 3), (4, 15)])
def test_through_reshape(target_shape):
    inputs = keras.Input((4, 5, 3))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Reshape(target_shape)(x)
    fold_and_check(keras.Model(inputs, layers.Dense(4)(x)), folded=1)


def test_reshape_that_mixes_channels_is_kept():
    inputs = keras.Input((2, 2, 3))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Reshape((3, 4), name="mixer")(x)
    result = fold_and_check(keras.Model(inputs, layers.Dense(4, name="dense")(x)), folded=0)
    assert "dense does not read" in result.report["kept"][0]["reason"]


@pytest.mark.parametrize("pool", [layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D])
def test_through_global_pooling(pool):
    inputs = keras.Input((5, 5, 4))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization()(x)
    model = keras.Model(inputs, layers.Dense(3)(pool()(x)))
    fold_and_check(model, folded=1) if pool is layers.GlobalAveragePooling2D else None
    if pool is layers.GlobalMaxPooling2D:
        from support import randomize_bn

        randomize_bn(model, negative=False)
        assert len(bnfreeze.fold(model).report["folded"]) == 1


def test_bn_output_used_twice_is_kept():
    inputs = keras.Input((6,))
    x = layers.Activation("tanh")(inputs)
    b = layers.BatchNormalization(name="bn")(x)
    out = layers.Add()([layers.Dense(6, name="d1")(b), b])
    result = fold_and_check(keras.Model(inputs, out), folded=0)
    assert "bn's output feeds both" in result.report["kept"][0]["reason"]


def test_shared_dense_is_kept():
    a, b = keras.Input((6,)), keras.Input((6,))
    dense = layers.Dense(3, name="shared")
    x = dense(layers.BatchNormalization()(layers.Activation("tanh")(a)))
    y = dense(b)
    result = fold_and_check(keras.Model([a, b], [x, y]), folded=0)
    assert "shared is called at 2 places" in result.report["kept"][0]["reason"]


def test_dropout_called_in_training_mode_stops_the_walk():
    inputs = keras.Input((6,))
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = layers.Dropout(0.5, name="mc_dropout")(x, training=True)
    model = keras.Model(inputs, layers.Dense(3)(x))
    result = bnfreeze.fold(model, check=False)
    assert "mc_dropout is called with training=True" in result.report["kept"][0]["reason"]


def test_backward_is_preferred_when_both_directions_are_possible():
    inputs = keras.Input((6,))
    x = layers.Dense(5, name="before")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Dense(4, name="after")(x)
    result = fold_and_check(keras.Model(inputs, x), folded=1)
    assert result.report["folded"][0]["into"] == "before"
    assert result.report["folded"][0]["direction"] == "backward"


def test_forward_and_backward_into_the_same_layer_compose():
    inputs = keras.Input((6,))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(name="in_bn")(x)
    x = layers.Dense(5, name="middle")(x)
    x = layers.BatchNormalization(name="out_bn")(x)
    out = layers.Activation("tanh")(x)
    result = fold_and_check(keras.Model(inputs, out), folded=2)
    assert {f["into"] for f in result.report["folded"]} == {"middle"}
    np.testing.assert_equal(len(result.model.layers), 4)
