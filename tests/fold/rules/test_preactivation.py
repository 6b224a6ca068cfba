"""The pre-activation folds' shared part: a BN's scale through its activation into every linear layer after it.

The BN reads ``tanh(input)`` here, so no earlier layer can take its shift:
the shift stays as an add (:mod:`bnfreeze.fold.rules.preactivation_add`).
Every fold is compared with the original at several input scales, at batch 1
and 3, on inputs with borders (zero padding after the activation, 'same'
padding of the consumers), with BN statistics far from identity; what is not
exact is kept with a reason.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops
from support import assert_parity, bn_count, inputs_for, randomize_bn, randomize_weights, run

import bnfreeze

SPATIAL = {1: (11,), 2: (9, 10), 3: (6, 7, 5)}
CONV = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}


def _head(shape, channels=4):
    inputs = keras.Input(shape + (channels,))
    return inputs, layers.BatchNormalization(name="bn")(layers.Activation("tanh")(inputs))


def fold_exactly(model, *, negative=False, seed=0, rules=None, tweak=None):
    """Randomize (then ``tweak(model)``), fold, and compare at batch 1 and 3 and at input scales 1, 10 and 100
    (explicit tolerances)."""
    randomize_weights(model, seed)
    randomize_bn(model, seed, negative=negative)
    if tweak is not None:
        tweak(model)
    result = bnfreeze.fold(model) if rules is None else bnfreeze.fold(model, rules=rules)
    for batch in (1, 3):
        assert_parity(model, result.model, atol=2e-5, batch=batch, seed=seed + batch)
    for factor in (10.0, 100.0):
        arrays = [factor * a for a in inputs_for(model, batch=2, seed=seed + 7)]
        for ref, got in zip(run(model, arrays), run(result.model, arrays)):
            np.testing.assert_allclose(got, ref, atol=2e-5 * max(1.0, float(np.max(np.abs(ref)))), rtol=0)
    return result


def entry(result, name="bn"):
    return next(e for e in result.report["folded"] if e["bn"] == name)


def kept_nothing(result):
    return result.report["kept"] == []


def kept(result, name="bn"):
    return next(e["reason"] for e in result.report["kept"] if e["bn"] == name)


# -- the consumers ----------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (1, 2)])
def test_convolution_consumers_fold_at_every_padding_stride_and_dilation(rank, padding, strides, dilation):
    inputs, x = _head(SPATIAL[rank])
    x = layers.ReLU(name="relu")(x)
    x = CONV[rank](6, 3, padding=padding, strides=strides, dilation_rate=dilation, name="conv")(x)
    result = fold_exactly(keras.Model(inputs, x))
    assert entry(result)["rule"] == "pre-activation-add" and entry(result)["scale_into"] == ["conv"]
    assert bn_count(result.model) == 0


def test_causal_padding():
    inputs, x = _head((13,))
    x = layers.ReLU()(x)
    x = layers.Conv1D(5, 4, padding="causal", dilation_rate=2, name="conv")(x)
    assert fold_exactly(keras.Model(inputs, x)).report["kept"] == []


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_convolution(rank, groups):
    inputs, x = _head(SPATIAL[rank], channels=8)
    x = layers.ReLU()(x)
    x = CONV[rank](8, 3, padding="same", groups=groups, name="conv")(x)
    assert fold_exactly(keras.Model(inputs, x)).report["kept"] == []


@pytest.mark.parametrize("make", [
    lambda: layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="conv"),
    lambda: layers.DepthwiseConv2D(3, strides=2, padding="same", name="conv"),
    lambda: layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, name="conv"),
    lambda: layers.Conv2DTranspose(5, 3, strides=2, padding="same", name="conv"),
    lambda: layers.Conv2DTranspose(5, 2, padding="valid", name="conv"),
    lambda: layers.Dense(5, name="conv"),
], ids=["depthwise-x2", "depthwise-stride", "separable", "transpose-stride", "transpose-valid", "dense"])
def test_other_linear_consumers(make):
    inputs, x = _head((7, 8))
    x = make()(layers.ReLU()(x))
    result = fold_exactly(keras.Model(inputs, x))
    assert entry(result)["scale_into"] == ["conv"]


@pytest.mark.parametrize("make", [
    lambda: layers.DepthwiseConv1D(3, padding="same", depth_multiplier=3, name="conv"),
    lambda: layers.SeparableConv1D(5, 3, padding="same", name="conv"),
    lambda: layers.Conv1DTranspose(5, 3, strides=2, padding="same", name="conv"),
], ids=["depthwise1d", "separable1d", "transpose1d"])
def test_one_dimensional_consumers(make):
    inputs, x = _head((12,))
    x = make()(layers.LeakyReLU(0.3)(x))
    assert fold_exactly(keras.Model(inputs, x)).report["kept"] == []


def test_several_consumers_all_take_the_scale():
    """ResNet v2's conv shortcut, and more: four consumers of different kinds, through different ops."""
    inputs, x = _head((10, 10))
    x = layers.ReLU(name="relu")(x)
    a = layers.Conv2D(6, 3, padding="same", name="a")(x)
    b = layers.Conv2D(6, 1, strides=2, name="b")(x)
    c = layers.Conv2D(6, 3, name="c")(layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x))
    d = layers.Dense(3, name="d")(layers.GlobalAveragePooling2D(name="gap")(x))
    e = layers.DepthwiseConv2D(3, padding="same", name="e")(layers.ZeroPadding2D(2, name="pad")(x))
    model = keras.Model(inputs, [a, b, c, d, e])
    result = fold_exactly(model)
    assert sorted(entry(result)["scale_into"]) == ["a", "b", "c", "d", "e"]
    assert sorted(entry(result)["through"]) == ["gap", "pad", "pool", "relu"]


def test_a_consumer_that_is_not_linear_keeps_the_bn():
    inputs, x = _head((8, 8))
    relu = layers.ReLU(name="relu")(x)
    a = layers.Conv2D(4, 3, padding="same", name="a")(relu)
    out = layers.Add(name="merge")([a, relu])  # the ReLU's output also goes to an Add: its scale cannot move there
    result = fold_exactly(keras.Model(inputs, out))
    assert "merge (Add) after relu is neither a layer bnfreeze scales" in kept(result)
    assert bn_count(result.model) == 1


def test_an_activation_that_is_a_model_output_keeps_the_bn():
    inputs, x = _head((8, 8))
    relu = layers.ReLU(name="relu")(x)
    result = fold_exactly(keras.Model(inputs, [layers.Conv2D(3, 1)(relu), relu]))
    assert "relu's output is a model output" in kept(result)


def test_a_shared_consumer_keeps_the_bn():
    inputs, x = _head((8, 8))
    shared = layers.Conv2D(4, 3, padding="same", name="shared")
    x = layers.ReLU()(x)
    y = shared(x)
    out = shared(layers.Activation("tanh")(y))
    result = fold_exactly(keras.Model(inputs, out))
    assert "shared is called at 2 places" in kept(result)


def test_an_op_in_training_mode_keeps_the_bn():
    inputs, x = _head((8, 8))
    x = layers.Dropout(0.5, name="drop")(layers.ReLU()(x), training=True)
    model = keras.Model(inputs, layers.Conv2D(3, 3)(x))
    randomize_bn(model)
    result = bnfreeze.fold(model, check=False)
    assert "drop is called with training=True" in kept(result)


# -- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: layers.ReLU(),
    lambda: layers.ReLU(negative_slope=0.1),
    lambda: layers.Activation("relu"),
    lambda: layers.Activation("leaky_relu"),
    lambda: layers.LeakyReLU(0.25),
    lambda: layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(-0.5, 0.5)),
    lambda: layers.PReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.RandomUniform(-0.5, 0.5)),
], ids=["relu", "relu-slope", "activation-relu", "activation-leaky", "leaky", "prelu", "prelu-shared"])
def test_positively_homogeneous_activations_fold(make):
    inputs, x = _head((8, 9))
    x = layers.Conv2D(5, 3, padding="same", name="conv")(make()(x))
    assert fold_exactly(keras.Model(inputs, x)).report["kept"] == []


def test_two_activations_and_pooling_between():
    inputs, x = _head((12, 12))
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same")(x)
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)
    x = layers.Conv2D(3, 3, padding="same")(layers.Cropping2D(1)(x))
    assert fold_exactly(keras.Model(inputs, x)).report["kept"] == []


@pytest.mark.parametrize("make,words", [
    (lambda: layers.ReLU(max_value=6.0), "caps at max_value=6"),
    (lambda: layers.ReLU(max_value=2.5), "caps at max_value=2.5"),
    (lambda: layers.ReLU(threshold=0.5), "threshold=0.5"),
    (lambda: layers.Activation("relu6"), "relu6, capped at 6"),
    (lambda: layers.Activation("swish"), "not positively homogeneous"),
    (lambda: layers.Activation("gelu"), "gelu, which is not positively homogeneous"),
    (lambda: layers.ELU(), "elu, which is not positively homogeneous"),
    (lambda: layers.Activation("tanh"), "tanh, which is not positively homogeneous"),
], ids=["relu6", "max-value", "threshold", "activation-relu6", "swish", "gelu", "elu", "tanh"])
def test_activations_that_are_not_positively_homogeneous_keep_the_bn(make, words):
    inputs, x = _head((8, 8))
    x = layers.Conv2D(4, 3, padding="same")(make()(x))
    model = keras.Model(inputs, x)
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model)
    assert words in kept(result), kept(result)


# -- signs and zeros ------------------------------------------------------------------------------
def test_a_negative_scale_before_an_activation_keeps_the_bn():
    inputs, x = _head((8, 8))
    model = keras.Model(inputs, layers.Conv2D(4, 3, padding="same")(layers.ReLU(name="relu")(x)))
    randomize_bn(model, negative=False)
    bn = model.get_layer("bn")
    gamma = bn.gamma.numpy()
    gamma[2] = -0.7  # one channel
    bn.gamma.assign(gamma)
    result = bnfreeze.fold(model)
    assert "scale is negative on channel 2" in kept(result) and "relu needs a positive scale" in kept(result)


def test_a_negative_scale_before_max_pooling_keeps_the_bn():
    inputs, x = _head((8, 8))
    x = layers.ZeroPadding2D(1)(x)
    model = keras.Model(inputs, layers.Conv2D(4, 3)(layers.MaxPooling2D(2, name="pool")(x)))
    randomize_bn(model, negative=False)
    _set_channel(model, 1, -0.8, 0.3)
    assert "pool needs a positive scale" in kept(bnfreeze.fold(model))
    _set_channel(model, 1, 0.8, 0.3)
    assert kept_nothing(bnfreeze.fold(model))


def test_negative_scales_on_a_way_of_linear_ops_fold():
    """No activation: zero padding, average pooling and a 'same' convolution are linear, any sign passes
    (the forward rule declines here: the padding makes its shift position dependent)."""
    inputs, x = _head((9, 9))
    x = layers.ZeroPadding2D(((1, 2), (0, 1)))(x)
    x = layers.AveragePooling2D(2, padding="same")(x)
    x = layers.Conv2D(5, 3, padding="same", name="conv")(x)
    model = keras.Model(inputs, x)
    result = fold_exactly(model, negative=True, tweak=lambda m: _set_channel(m, 2, -1.2, 0.4))
    assert np.any(model.get_layer("bn").gamma.numpy() < 0)
    assert entry(result)["rule"] == "pre-activation-add"
    assert np.any(result.model.get_layer("conv").kernel.numpy() != 0)


def _zero_scale_model(activation):
    inputs, x = _head((8, 8))
    if activation is not None:
        x = activation(x)
    model = keras.Model(inputs, layers.Conv2D(4, 3, padding="same", name="conv")(x))
    randomize_weights(model)
    randomize_bn(model, negative=False)
    return model


def _set_channel(model, channel, gamma, beta):
    bn = model.get_layer("bn")
    for variable, value in ((bn.gamma, gamma), (bn.beta, beta)):
        array = variable.numpy()
        array[channel] = value
        variable.assign(array)


@pytest.mark.parametrize("beta", [-0.6, 0.0])
def test_a_zero_scale_that_the_relu_maps_to_zero_folds(beta):
    model = _zero_scale_model(layers.ReLU(name="relu"))
    _set_channel(model, 1, 0.0, beta)
    result = bnfreeze.fold(model)
    assert result.report["kept"] == []
    assert np.all(result.model.get_layer("conv").kernel.numpy()[:, :, 1, :] == 0)
    assert_parity(model, result.model)
    assert_parity(model, result.model, batch=1)


def test_a_zero_scale_with_a_positive_shift_keeps_the_bn():
    model = _zero_scale_model(layers.ReLU(name="relu"))
    _set_channel(model, 3, 0.0, 0.8)
    reason = kept(bnfreeze.fold(model))
    assert "scale is 0 on channel 3: the channel is the constant 0.8" in reason and "relu maps it to relu(0.8)" in reason


def test_a_zero_scale_without_an_activation_keeps_the_bn_unless_its_shift_is_zero():
    model = _zero_scale_model(None)
    _set_channel(model, 0, 0.0, -0.4)
    assert "conv comes before any activation" in kept(bnfreeze.fold(model))
    _set_channel(model, 0, 0.0, 0.0)
    result = bnfreeze.fold(model)
    assert result.report["kept"] == []
    assert_parity(model, result.model)


# -- layouts ----------------------------------------------------------------------------------
def test_concatenate_after_the_activation_scales_the_bn_block_only():
    inputs = keras.Input((8, 8, 4))
    other = layers.Conv2D(3, 1, name="other")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Activation("tanh")(inputs))
    x = layers.ReLU()(x)
    x = layers.Concatenate(name="cat")([other, x, other])
    x = layers.Conv2D(5, 3, padding="same", name="conv")(x)
    result = fold_exactly(keras.Model(inputs, x))
    assert "cat" in entry(result)["through"]


def test_concatenate_joining_two_ways_of_the_bn_keeps_it():
    inputs, x = _head((8, 8))
    x = layers.ReLU()(x)
    x = layers.Concatenate()([layers.MaxPooling2D(1)(x), layers.AveragePooling2D(1)(x)])
    model = keras.Model(inputs, layers.Conv2D(3, 3)(x))
    randomize_bn(model, negative=False)
    assert "joins two ways from bn" in kept(bnfreeze.fold(model))


def test_flatten_into_dense():
    inputs, x = _head((3, 4))
    x = layers.Flatten()(layers.ReLU()(x))
    assert fold_exactly(keras.Model(inputs, layers.Dense(6)(x))).report["kept"] == []


def test_a_bn_on_the_first_axis_whose_last_size_is_its_channel_count():
    """BN(axis=1) on (batch, 5, 5): an add of a (5, 1) constant written x + c would become tf.nn.bias_add along
    the last axis (Keras's TF backend); the fold writes c + x."""
    inputs = keras.Input((5, 5))
    x = layers.BatchNormalization(axis=1, name="bn")(layers.Activation("tanh")(inputs))
    x = layers.Permute((2, 1))(layers.ReLU()(x))
    x = layers.Conv1D(4, 3, padding="same")(x)
    result = fold_exactly(keras.Model(inputs, x))
    assert entry(result)["rule"] == "pre-activation-add"


def test_a_bn_inside_a_nested_model():
    inner_in = keras.Input((8, 8, 4))
    y = layers.BatchNormalization(name="bn")(layers.Activation("tanh")(inner_in))
    y = layers.Conv2D(4, 3, padding="same", name="conv")(layers.ReLU()(y))
    inner = keras.Model(inner_in, y, name="inner")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, layers.Flatten()(inner(inputs)))
    result = fold_exactly(model)
    assert entry(result, "inner/bn")["scale_into"] == ["inner/conv"]


def test_zero_padding_after_the_activation_is_exact_at_the_border():
    """The padded zeros stay zeros under the scale; the shift acts before the padding, on real elements only."""
    inputs, x = _head((6, 6))
    x = layers.ZeroPadding2D(3)(layers.ReLU()(x))
    x = layers.Conv2D(4, 5, name="conv")(x)  # the border outputs see mostly padding
    fold_exactly(keras.Model(inputs, x))


def test_a_padding_that_is_not_zero_keeps_the_bn():
    inputs, x = _head((6, 6))
    x = layers.ReLU(name="relu")(x)
    x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    model = keras.Model(inputs, layers.Conv2D(4, 3)(x))
    randomize_bn(model, negative=False)
    reason = kept(bnfreeze.fold(model))
    assert "keras.ops Pad" in reason and "neither a layer bnfreeze scales" in reason


def test_a_constant_padding_that_is_not_zero_keeps_the_bn():
    inputs, x = _head((6, 6))
    x = ops.pad(layers.ReLU()(x), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=1.0)
    model = keras.Model(inputs, layers.Conv2D(4, 3)(x))
    randomize_bn(model, negative=False)
    assert "keras.ops Pad" in kept(bnfreeze.fold(model))


# -- reports ------------------------------------------------------------------------------------
def test_inspect_and_the_report_name_the_fold_kind():
    inputs, x = _head((8, 8))
    x = layers.ReLU(name="relu")(x)
    model = keras.Model(inputs, [layers.Conv2D(3, 3, name="conv_a")(x), layers.Conv2D(3, 1, name="conv_b")(x)])
    randomize_bn(model, negative=False)
    (row,) = [r for r in bnfreeze.inspect(model) if r.layer == "bn"]
    assert row.action == "fold pre-activation into conv_a, conv_b"
    assert row.detail == "scale into conv_a, conv_b (through relu); shift stays as an add (bn_shift)"
    result = bnfreeze.fold(model)
    assert entry(result)["direction"] == "pre-activation" and entry(result)["shift_add"] == "bn_shift"


def test_verify_locate_finds_no_divergence_in_a_correct_fold():
    """verify --locate skips the tensors a pre-activation fold changes on purpose (the activation's output is
    the original divided by the scale; the layer that took the shift computes more), and finds a broken one."""
    from bnfreeze.verify.locate import first_divergence

    inputs = keras.Input((8, 8, 3), name="x")
    a = layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = layers.Conv2D(4, 1, name="b")(inputs)
    x = layers.BatchNormalization(name="bn")(layers.Add(name="add")([a, b]))
    x = layers.MaxPooling2D(2, name="pool")(layers.ReLU(name="relu")(x))
    model = keras.Model(inputs, layers.Conv2D(3, 3, padding="same", name="conv")(x))
    result = fold_exactly(model)
    assert entry(result)["shift_into"] == ["a"]
    feed = {"x": inputs_for(model, batch=2)[0]}
    assert first_divergence(model, result.model, feed) is None
    conv = result.model.get_layer("conv")
    conv.kernel.assign(conv.kernel.numpy() * 1.01)
    assert first_divergence(model, result.model, feed) == "conv"
