"""Pre-activation fold with the shift moved into an earlier bias: nothing of the BN stays.

Each test builds the BN's input from layers that can take the shift (a
convolution branch of an Add, the inputs of a Concatenate, through pooling,
a -inf ``keras.ops.pad``, a BN) and checks that the shift lands there, that
nothing else in the model changes (every other consumer of those tensors
sees what it saw), and that where a tensor on the way goes elsewhere the
shift stays as an add instead.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops
from support import assert_parity, bn_count, randomize_bn, randomize_weights

import bnfreeze


def fold_exactly(model, negative=False):
    randomize_weights(model)
    randomize_bn(model, negative=negative)
    result = bnfreeze.fold(model)
    for batch in (1, 3):
        assert_parity(model, result.model, atol=2e-5, batch=batch, seed=batch)
    return result


def entry(result, name="bn"):
    return next(e for e in result.report["folded"] if e["bn"] == name)


def _tail(x):
    x = layers.ReLU(name="relu")(x)
    return layers.Conv2D(5, 3, padding="same", name="conv")(x)


@pytest.mark.parametrize("use_bias", [True, False])
def test_into_a_convolution_branch_of_an_add(use_bias):
    """ResNet v2 between stacks: Add(shortcut conv, residual conv) feeds the next block's BN alone."""
    inputs = keras.Input((9, 9, 3))
    a = layers.Conv2D(4, 3, padding="same", use_bias=use_bias, name="branch_a")(inputs)
    b = layers.Conv2D(4, 1, name="branch_b")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Add(name="add")([a, b]))
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    folded = entry(result)
    assert folded["rule"] == "pre-activation-bias" and folded["shift_into"] == ["branch_a"]
    assert folded["shift_through"] == ["add"]
    assert "shift into branch_a's bias (through add)" in folded["detail"]
    assert result.model.get_layer("branch_a").use_bias
    assert not any(type(op).__name__ == "Add" and op.name.endswith("_shift") for op in result.model.operations)
    assert bn_count(result.model) == 0


def test_a_branch_whose_output_goes_elsewhere_is_passed_over():
    inputs = keras.Input((9, 9, 3))
    a = layers.Conv2D(4, 3, padding="same", name="branch_a")(inputs)
    b = layers.Conv2D(4, 1, name="branch_b")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Add()([a, b]))
    out = layers.Concatenate()([_tail(x), a])  # branch_a's output is read again: it cannot take the shift
    result = fold_exactly(keras.Model(inputs, out))
    assert entry(result)["shift_into"] == ["branch_b"]


def test_an_input_the_add_broadcasts_cannot_take_it():
    inputs = keras.Input((9, 9, 3))
    a = layers.Conv2D(1, 3, padding="same", name="narrow")(inputs)  # (.., 1): broadcast over the channels
    b = layers.Conv2D(4, 1, name="wide")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Add()([a, b]))
    assert entry(fold_exactly(keras.Model(inputs, _tail(x))))["shift_into"] == ["wide"]


def test_a_residual_stream_read_again_keeps_the_add():
    """ResNet v2 inside a stack: the block's output feeds the next BN and the next identity shortcut."""
    inputs = keras.Input((9, 9, 3))
    a = layers.Conv2D(3, 3, padding="same", name="residual")(inputs)
    x = layers.Add(name="add")([inputs, a])
    y = _tail(layers.BatchNormalization(name="bn")(x))
    result = fold_exactly(keras.Model(inputs, layers.Add()([layers.Conv2D(3, 1)(y), x])))
    assert entry(result)["rule"] == "pre-activation-add" and entry(result)["shift_add"] == "bn_shift"


def test_into_every_input_of_a_concatenate():
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(2, 3, padding="same", name="a")(inputs)
    b = layers.SeparableConv2D(3, 3, padding="same", name="b")(inputs)
    c = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="c")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Concatenate(name="cat")([a, b, c]))
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    assert entry(result)["shift_into"] == ["a", "b", "c"] and entry(result)["shift_through"] == ["cat"]


def test_a_concatenate_input_that_cannot_take_it_keeps_the_add():
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(2, 3, padding="same", name="a")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Concatenate()([a, inputs]))  # the model input takes nothing
    assert entry(fold_exactly(keras.Model(inputs, _tail(x))))["rule"] == "pre-activation-add"


@pytest.mark.parametrize("make", [
    lambda: layers.MaxPooling2D(3, strides=2, padding="same", name="op"),
    lambda: layers.MaxPooling2D(2, name="op"),
    lambda: layers.AveragePooling2D(3, strides=2, padding="same", name="op"),
    lambda: layers.UpSampling2D(2, interpolation="bilinear", name="op"),
    lambda: layers.Cropping2D(((1, 0), (2, 1)), name="op"),
], ids=["max-same", "max-valid", "avg-same", "upsampling", "cropping"])
def test_through_ops_that_commute_with_a_constant(make):
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="bn")(make()(x))
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    assert entry(result)["shift_into"] == ["stem"] and entry(result)["shift_through"] == ["op"]


def test_through_dropout_and_pooling():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = layers.Dropout(0.3, name="drop")(layers.AveragePooling2D(2, name="pool")(x))
    x = layers.BatchNormalization(name="bn")(x)
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    assert entry(result)["shift_into"] == ["stem"] and entry(result)["shift_through"] == ["pool", "drop"]


def test_through_global_pooling_into_a_dense():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(5, 3, name="stem")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.GlobalAveragePooling2D(name="gap")(x))
    out = layers.Dense(3, name="head")(layers.ReLU()(x))
    result = fold_exactly(keras.Model(inputs, out))
    assert entry(result)["shift_into"] == ["stem"] and entry(result)["scale_into"] == ["head"]


def test_into_a_dense_through_an_add():
    inputs = keras.Input((6,))
    x = layers.Add()([layers.Dense(5, name="d1")(inputs), layers.Dense(5, name="d2")(inputs)])
    x = layers.BatchNormalization(name="bn")(x)
    result = fold_exactly(keras.Model(inputs, layers.Dense(2, name="head")(layers.LeakyReLU(0.1)(x))))
    assert entry(result)["shift_into"] == ["d1"]


def test_zero_padding_on_the_way_keeps_the_add():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = layers.MaxPooling2D(3, strides=2)(layers.ZeroPadding2D(1)(x))  # keras.applications ResNet50V2's stem
    x = layers.BatchNormalization(name="bn")(x)
    assert entry(fold_exactly(keras.Model(inputs, _tail(x))))["rule"] == "pre-activation-add"


def test_through_an_infinite_pad_before_max_pooling():
    """KerasHub's ResNet v2 stem: ops.pad(-inf) then MaxPooling2D; -inf + a = -inf."""
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=float("-inf"))
    x = layers.BatchNormalization(name="bn")(layers.MaxPooling2D(3, strides=2, name="pool")(x))
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    assert entry(result)["shift_into"] == ["stem"] and "pool" in entry(result)["shift_through"]


def test_a_finite_pad_keeps_the_add():
    inputs = keras.Input((10, 10, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-100.0)
    x = layers.BatchNormalization(name="bn")(layers.MaxPooling2D(3, strides=2)(x))
    assert entry(fold_exactly(keras.Model(inputs, _tail(x))))["rule"] == "pre-activation-add"


def test_a_layer_with_an_activation_cannot_take_it():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.MaxPooling2D(2)(x))
    assert entry(fold_exactly(keras.Model(inputs, _tail(x))))["rule"] == "pre-activation-add"


def test_into_the_beta_of_a_bn_that_stays():
    """A BN that is kept itself (nothing after it folds it) can still take a later BN's shift in its beta;
    once that BN is gone, the kept one has new neighbours and folds on the next round."""
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="first")(inputs)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.BatchNormalization(name="bn")(x)
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    assert entry(result)["shift_into"] == ["first"]
    assert "shift into first's beta" in entry(result)["detail"]
    assert entry(result, "first")["direction"] == "pre-activation"  # the second round
    assert bn_count(result.model) == 0


def test_waits_for_a_bn_that_folds_in_the_same_round():
    """conv -> BN_a -> Add -> BN_b: BN_a folds into conv first; BN_b's shift then goes into conv's bias."""
    inputs = keras.Input((8, 8, 3))
    a = layers.BatchNormalization(name="bn_a")(layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv_a")(inputs))
    b = layers.Conv2D(4, 1, use_bias=False, name="conv_b")(inputs)
    b = layers.BatchNormalization(name="bn_c")(b)
    x = layers.BatchNormalization(name="bn")(layers.Add(name="add")([a, b]))
    result = fold_exactly(keras.Model(inputs, _tail(x)))
    assert entry(result)["shift_into"] == ["conv_a"]
    assert bn_count(result.model) == 0


def test_a_channels_first_layer_whose_last_size_is_its_channel_count_keeps_the_add():
    """Keras's TF backend would add a channels_first bias along the last axis there (the backward rule's
    bias_layout_problem): the shift stays as an add. Planned only: TF runs channels_first convolutions on GPUs."""
    inputs = keras.Input((4, 6, 4))
    x = layers.Conv2D(4, 3, padding="same", data_format="channels_first", name="stem")(inputs)
    x = layers.BatchNormalization(axis=1, name="bn")(layers.MaxPooling2D(1, data_format="channels_first")(x))
    x = layers.Conv2D(3, 1, data_format="channels_first")(layers.ReLU()(x))
    model = keras.Model(inputs, x)
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model, check=False)
    assert entry(result)["rule"] == "pre-activation-add"


def test_a_sequential_model_folds_when_the_shift_has_an_earlier_bias():
    """A Sequential model cannot hold an add, but needs none here (and its pooling layers record no shapes)."""
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, padding="same", name="stem"),
                              layers.MaxPooling2D(2), layers.BatchNormalization(name="bn"), layers.ReLU(),
                              layers.Conv2D(2, 3, padding="same")])
    result = fold_exactly(model)
    assert entry(result)["shift_into"] == ["stem"] and bn_count(result.model) == 0


def test_a_sequential_model_through_global_pooling():
    model = keras.Sequential([keras.Input((6, 6, 3)), layers.Conv2D(4, 3, name="stem"), layers.GlobalMaxPooling2D(),
                              layers.BatchNormalization(name="bn"), layers.ReLU(), layers.Dense(2)])
    assert entry(fold_exactly(model))["shift_into"] == ["stem"]
