import keras
import numpy as np
import pytest
from keras import layers
from support import (assert_parity, fold_and_check, fold_channels_first_and_check, randomize_bn, randomize_weights,
                     rules_without_preactivation)

import bnfreeze

CONVS = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}
FORWARD_RULES = rules_without_preactivation()
SPATIAL = {1: (13,), 2: (9, 10), 3: (6, 7, 5)}


def _model(rank, *, bn_kwargs=None, between=(), **conv_kwargs):
    inputs = keras.Input(SPATIAL[rank] + (4,))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(**(bn_kwargs or {}))(x)
    for op in between:
        x = op(x)
    x = CONVS[rank](8, 3, name="target", **conv_kwargs)(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (1, 2)])
def test_valid_padding_folds(rank, use_bias, strides, dilation):
    model = _model(rank, use_bias=use_bias, strides=strides, dilation_rate=dilation, padding="valid")
    result = fold_and_check(model, folded=1)
    assert result.report["folded"][0] == {"bn": result.report["folded"][0]["bn"], "into": "target", "direction": "forward", "rule": "conv-forward", "through": []}


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_targets(rank, groups):
    fold_and_check(_model(rank, groups=groups, padding="valid"), folded=1)


@pytest.mark.parametrize("padding", ["same", "causal"])
def test_zero_padding_with_a_shift_is_kept(padding):
    """The forward rule declines; the pre-activation rule (tried after it) folds the scale and keeps the shift
    as an add before the padding, exact at the borders."""
    rank = 1 if padding == "causal" else 2
    model = _model(rank, padding=padding)
    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model, rules=FORWARD_RULES)
    assert "zero padding of target makes the shift position dependent" in result.report["kept"][0]["reason"]
    result = bnfreeze.fold(model)
    assert [f["rule"] for f in result.report["folded"]] == ["pre-activation-add"]
    assert_parity(model, result.model)


@pytest.mark.parametrize("rank,padding", [(2, "same"), (1, "causal"), (3, "same")])
def test_zero_padding_with_scale_only_folds(rank, padding):
    """t = 0 (center=False, zero mean): the padded zeros stay zeros, exact at the borders."""
    model = _model(rank, padding=padding, bn_kwargs={"center": False})
    randomize_weights(model)
    randomize_bn(model)
    bn = next(l for l in model.layers if isinstance(l, layers.BatchNormalization))
    bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 1
    assert_parity(model, result.model)


def test_same_padding_that_pads_nothing_folds():
    """A 1x1 'same' convolution pads nothing, whatever the stride."""
    inputs = keras.Input((7, 7, 4))
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = layers.Conv2D(5, 1, strides=2, padding="same")(x)
    fold_and_check(keras.Model(inputs, x), folded=1)


def test_same_padding_on_an_exactly_divisible_input_folds():
    # 9 wide, kernel 3, stride 3: the windows tile the input, no padding
    inputs = keras.Input((9, 9, 4))
    x = layers.BatchNormalization()(layers.Activation("tanh")(inputs))
    x = layers.Conv2D(5, 3, strides=3, padding="same")(x)
    fold_and_check(keras.Model(inputs, x), folded=1)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_through_average_pooling(padding):
    between = (layers.AveragePooling2D(3, strides=2, padding=padding, name="pool"), layers.Dropout(0.3, name="drop"))
    result = fold_and_check(_model(2, between=between, padding="valid"), folded=1)
    assert result.report["folded"][0]["through"] == ["pool", "drop"]


def test_through_max_pooling_needs_positive_scales():
    model = _model(2, between=(layers.MaxPooling2D(2, name="max_pooling2d"),), padding="valid")
    randomize_weights(model)
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 1
    assert_parity(model, result.model)
    bn = next(l for l in model.layers if isinstance(l, layers.BatchNormalization))
    gamma = bn.gamma.numpy()
    gamma[2] = -abs(gamma[2])
    bn.gamma.assign(gamma)
    result = bnfreeze.fold(model)
    assert result.report["folded"] == []
    assert "negative scale on channel 2 does not commute with max pooling (max_pooling2d)" in result.report["kept"][0]["reason"]


def test_channels_first_target():
    inputs = keras.Input((4, 9, 8))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(axis=1)(x)
    x = layers.AveragePooling2D(2, data_format="channels_first")(x)
    x = layers.Conv2D(6, 3, data_format="channels_first", groups=2)(x)
    model = keras.Model(inputs, x)
    fold_channels_first_and_check(model)


def test_relu_between_stops_the_walk():
    """The forward walk stops at a ReLU (the pre-activation rules, tested in test_preactivation, go on)."""
    model = _model(2, between=(layers.ReLU(name="act"),), padding="valid")
    randomize_bn(model)
    result = bnfreeze.fold(model, rules=FORWARD_RULES)
    assert "act applies relu after" in result.report["kept"][0]["reason"]


def test_channels_first_target_whose_last_axis_is_as_long_as_its_channels_keeps_the_bn():
    """The folded shift becomes the target's bias, which Keras's TensorFlow backend would add along the
    last axis here (see test_backward_conv: the same fact)."""
    import bnfreeze

    inputs = keras.Input((4, 8, 8))
    x = layers.BatchNormalization(axis=1, name="bn")(layers.Activation("tanh")(inputs))
    x = layers.Conv2D(6, 3, data_format="channels_first", name="conv")(x)  # output (6, 6, 6)
    model = keras.Model(inputs, x)
    randomize_bn(model)
    result = bnfreeze.fold(model, rules=FORWARD_RULES)
    [kept] = result.report["kept"]
    assert "conv is channels_first with a last axis of size 6, the channel count" in kept["reason"]
    # the pre-activation rule leaves the bias alone (the scale goes into the kernel, the shift stays as an add)
    result = bnfreeze.fold(model)
    assert [f["rule"] for f in result.report["folded"]] == ["pre-activation-add"]
