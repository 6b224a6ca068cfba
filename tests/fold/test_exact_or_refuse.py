"""The long tail of real graphs: every BN folded exactly or kept with a reason, never a wrong model.

One test per defect class of issue 12 and per op bnfreeze learnt to move a BN
through, with BN statistics far from identity (a third of the gammas
negative, unless a test needs positive scales) and non-zero biases. Every
parity is checked here independently of bnfreeze's own check, under the
default call and ``training=False``, at two input magnitudes.
"""

import keras
import numpy as np
import pytest
from keras import layers, ops
from support import bn_count, randomize_bn, randomize_weights, rules_without_preactivation

import bnfreeze
from bnfreeze.errors import KeptError


@keras.saving.register_keras_serializable(package="bnfreeze_tests")
class ClippedBN(layers.BatchNormalization):
    """A BN subclass that clips its output: folding it as a plain BN is wrong beyond |y| > 2."""

    def call(self, inputs, training=None, mask=None):
        return ops.clip(super().call(inputs, training=training, mask=mask), -2.0, 2.0)


@keras.saving.register_keras_serializable(package="bnfreeze_tests")
class ScaledDense(layers.Dense):
    def call(self, inputs):
        return super().call(inputs) * 3.0


def _outputs(model, arrays, training):
    feed = arrays[0] if len(arrays) == 1 else arrays
    out = model(feed) if training is None else model(feed, training=training)
    return [np.asarray(o, np.float64) for o in keras.tree.flatten(out)]


def assert_same_function(original, folded, atol=1e-4):
    """Same outputs under training=False and the default call, at x1 and x10 (relative to max |ref|)."""
    rng = np.random.default_rng(7)
    for magnitude in (1.0, 10.0):
        arrays = [(rng.standard_normal((3, *[d or 8 for d in t.shape[1:]])) * magnitude).astype("float32")
                  for t in original.inputs]
        for training in (False, None):
            for ref, got in zip(_outputs(original, arrays, training), _outputs(folded, arrays, training)):
                scale = max(1.0, float(np.max(np.abs(ref))))
                error = float(np.max(np.abs(ref - got))) / scale
                assert error <= atol, f"training={training} x{magnitude}: {error:.3g}"


def fold(model, *, positive=False, **kwargs):
    randomize_weights(model)
    randomize_bn(model, negative=not positive)
    result = bnfreeze.fold(model, **kwargs)
    entries = result.report["folded"] + result.report["kept"]
    assert len(entries) == bn_count(model), "every BN must appear in the report"
    assert_same_function(model, result.model)
    return result


def _named(entry, name) -> bool:
    """``name`` is the BN's name or one of the path segments reports use (``td/inner``, ``nested/bn``)."""
    return entry["bn"] == name or name in entry["bn"].split("/") or entry["bn"].endswith("/" + name)


def kept_reason(result, name):
    for entry in result.report["kept"]:
        if _named(entry, name):
            return entry["reason"]
    raise AssertionError(f"{name} is not kept: {result.report}")


def folded_entry(result, name):
    for entry in result.report["folded"]:
        if _named(entry, name):
            return entry
    raise AssertionError(f"{name} is not folded: {result.report}")


# -- defect 1: subclasses ------------------------------------------------------------------
def test_a_bn_subclass_is_kept_with_its_class_named():
    inputs = keras.Input((6,))
    x = layers.Dense(8)(inputs)
    x = ClippedBN(name="clipped")(x)
    result = fold(keras.Model(inputs, layers.Dense(3)(x)))
    assert kept_reason(result, "clipped") == (
        "clipped is a subclass of BatchNormalization (bnfreeze_tests>ClippedBN); its call may differ")


def test_a_subclass_of_a_target_is_not_folded_into():
    inputs = keras.Input((6,))
    x = ScaledDense(8, name="scaled")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    assert "scaled (bnfreeze_tests>ScaledDense)" in kept_reason(result, "bn")


# -- defect 2: training flags through nested models --------------------------------------------
def _inner(name="inner"):
    a = keras.Input((6,))
    x = layers.Dense(6)(a)
    x = layers.BatchNormalization(name="inner_bn")(x)
    return keras.Model(a, layers.Activation("tanh")(x), name=name)


@pytest.mark.parametrize("depth", [1, 2])
def test_a_bn_in_a_nested_model_called_with_training_true_is_kept(depth):
    inner = _inner()
    if depth == 2:
        b = keras.Input((6,))
        inner = keras.Model(b, inner(b), name="middle")
    inputs = keras.Input((6,))
    x = inner(inputs, training=True)
    result = fold(keras.Model(inputs, layers.Dense(2)(x)))
    assert "which is called with training=True" in kept_reason(result, "inner_bn")
    assert "batch statistics" in kept_reason(result, "inner_bn")


def test_a_nested_model_called_with_training_false_folds():
    inputs = keras.Input((6,))
    x = _inner()(inputs, training=False)
    result = fold(keras.Model(inputs, layers.Dense(2)(x)))
    assert folded_entry(result, "inner_bn")["direction"] == "backward"


def test_training_true_passed_on_to_later_layers_keeps_them():
    """Keras 3 passes an explicit training=True on to the layers called after it in the default call."""
    inputs = keras.Input((6,))
    x = layers.Dense(6)(inputs)
    x = layers.BatchNormalization(name="first")(x, training=True)
    x = layers.Dense(6)(x)
    x = layers.BatchNormalization(name="second")(x)
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    assert "called with training=True" in kept_reason(result, "first")
    assert "default call" in kept_reason(result, "second")


def test_active_dropout_on_the_forward_path_stops_the_walk():
    inputs = keras.Input((6,))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Dropout(0.5, name="drop")(x, training=True)
    model = keras.Model(inputs, layers.Dense(2)(x))
    randomize_bn(model)
    result = bnfreeze.fold(model)  # the default call is random: the parity check says so instead of failing
    assert "drop" in kept_reason(result, "bn")
    assert any(run["note"] for run in result.report["parity"]["runs"])


# -- defect 3: keras.ops nodes ----------------------------------------------------------------
def test_keras_ops_nodes_never_crash_and_are_followed_where_exact():
    inputs = keras.Input((4, 6, 3))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(name="bn_reshape")(x)
    x = ops.reshape(x, (-1, 24, 3))
    x = ops.transpose(x, (0, 2, 1))
    x = layers.Flatten()(x)
    y = layers.Dense(5, name="dense")(x)
    z = layers.BatchNormalization(name="bn_mul")(layers.Activation("tanh")(y))
    z = z * 2.0
    w = layers.BatchNormalization(name="bn_slice")(layers.Activation("tanh")(z))
    w = w[:, 1:]
    out = layers.Dense(2, name="head")(w + 1.0)
    result = fold(keras.Model(inputs, out))
    assert folded_entry(result, "bn_reshape")["into"] == "dense"
    assert "(keras.ops Multiply) after bn_mul" in kept_reason(result, "bn_mul")
    assert "(keras.ops GetItem) after bn_slice" in kept_reason(result, "bn_slice")


def test_keras_ops_before_a_bn_are_named():
    inputs = keras.Input((6,))
    x = layers.Dense(6)(inputs) * 2.0
    x = layers.BatchNormalization(name="bn")(x)
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    assert "(keras.ops Multiply), not a layer bnfreeze folds into" in kept_reason(result, "bn")


# -- defect 4: wrappers ------------------------------------------------------------------------
def test_time_distributed_dense_then_bn_folds_per_step():
    inputs = keras.Input((5, 6))
    x = layers.TimeDistributed(layers.Dense(4), name="td_dense")(inputs)
    x = layers.TimeDistributed(layers.BatchNormalization(), name="td_bn")(x)
    x = layers.TimeDistributed(layers.Conv1D(3, 3, padding="same"), name="td_conv")(
        layers.Reshape((5, 4, 1))(layers.Activation("tanh")(x)))
    x = layers.TimeDistributed(layers.BatchNormalization(), name="td_bn2")(x)
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    assert folded_entry(result, "td_bn")["into"] == "td_dense"
    assert folded_entry(result, "td_bn2")["into"] == "td_conv"
    assert bn_count(result.model) == 0


def test_bns_inside_wrappers_and_custom_layers_are_reported():
    inputs = keras.Input((5, 6))
    x = layers.TimeDistributed(keras.Sequential([layers.Dense(4), layers.BatchNormalization(name="deep_bn")]),
                               name="td_seq")(inputs)
    x = layers.Bidirectional(layers.LSTM(3, return_sequences=True), name="bi")(x)
    x = layers.TimeDistributed(ClippedBN(name="clip"), name="td_clip")(x)
    result = fold(keras.Model(inputs, x))
    assert "inside td_seq (TimeDistributed)" in kept_reason(result, "deep_bn")
    assert "subclass of BatchNormalization" in kept_reason(result, "td_clip")
    rows = bnfreeze.inspect(result.model)
    assert {r.layer for r in rows} >= {"td_seq/deep_bn", "td_clip/clip"}


# -- exact folds real models need ---------------------------------------------------------------
def test_pitch_tracker_permute_flatten_dense_folds_forward():
    """Conv2D(relu) -> BN -> MaxPool -> Dropout, then Permute((2, 1, 3)) -> Flatten -> Dense."""
    inputs = keras.Input((16, 8, 1))
    x = inputs
    for i in range(2):
        x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.MaxPooling2D((2, 1))(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(6, name="classifier")(x))
    result = fold(model, positive=True, rules=rules_without_preactivation())
    assert folded_entry(result, "bn1")["into"] == "classifier"
    # the first BN meets a 'same' convolution: its shift would not reach the zero-padded border
    assert "zero padding" in kept_reason(result, "bn0")
    # the pre-activation rule keeps that shift as an add before the padding, exact at the border
    result = fold(model, positive=True)
    assert folded_entry(result, "bn0")["rule"] == "pre-activation-add" and not result.report["kept"]


@pytest.mark.parametrize("op", [
    lambda: layers.Cropping2D(((1, 0), (0, 2))),
    lambda: layers.UpSampling2D(2, interpolation="bilinear"),
    lambda: layers.UpSampling2D(2),
    lambda: layers.Permute((2, 1, 3)),
], ids=["cropping", "bilinear", "nearest", "permute"])
def test_forward_folds_through_data_movement_into_a_valid_conv(op):
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = op()(x)
    result = fold(keras.Model(inputs, layers.Conv2D(2, 3, name="conv")(x)))
    assert folded_entry(result, "bn")["into"] == "conv"


def test_repeat_vector_then_dense():
    inputs = keras.Input((5,))
    x = layers.Dense(4, activation="relu")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.RepeatVector(3)(x)
    result = fold(keras.Model(inputs, layers.Dense(2, name="dense")(x)))
    assert folded_entry(result, "bn")["through"] == ["repeat_vector"] or folded_entry(result, "bn")["into"] == "dense"


def test_zero_padding_keeps_a_shifted_bn_with_the_reason():
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ZeroPadding2D(1, name="pad")(x)
    model = keras.Model(inputs, layers.Conv2D(2, 3)(x))
    result = fold(model, rules=rules_without_preactivation())
    assert "zero padding pad pads zeros after bn" in kept_reason(result, "bn")
    result = fold(model)  # the pre-activation rule: the shift stays as an add before the padding
    assert folded_entry(result, "bn")["rule"] == "pre-activation-add"


def test_bn_after_bn_merges_and_the_result_folds():
    inputs = keras.Input((6,))
    x = layers.Dense(5, name="dense")(inputs)
    x = layers.BatchNormalization(name="a")(x)
    x = layers.BatchNormalization(name="b")(x)
    x = layers.Activation("tanh")(x)
    x = layers.BatchNormalization(name="c", center=False, scale=False)(x)
    x = layers.BatchNormalization(name="d")(x)
    x = layers.Activation("tanh")(x)
    result = fold(keras.Model(inputs, x))
    assert folded_entry(result, "a")["into"] == "dense"
    assert folded_entry(result, "b")["into"] == "dense"  # merged on the second round
    assert folded_entry(result, "d")["into"] == "c" and folded_entry(result, "d")["rule"] == "bn-merge-backward"
    assert [e["bn"] for e in result.report["kept"]] == ["c"]


def test_identities_between_a_linear_layer_and_its_bn_are_crossed():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.Dropout(0.3, name="drop")(x)
    x = layers.Activation("linear", name="lin")(x)
    x = layers.Identity(name="ident")(x)
    x = layers.BatchNormalization(name="bn")(x)
    result = fold(keras.Model(inputs, layers.Activation("relu")(x)))
    entry = folded_entry(result, "bn")
    assert entry["into"] == "conv" and entry["direction"] == "backward"
    assert entry["through"] == ["drop", "lin", "ident"]


@pytest.mark.parametrize("kernel,strides,center,folds", [
    (1, 1, True, True), (3, 2, False, True), (3, 1, True, False), (2, 2, True, False)])
def test_forward_into_conv_transpose_only_where_exact(kernel, strides, center, folds):
    inputs = keras.Input((5, 5, 3))
    x = layers.Activation("tanh")(inputs)
    x = layers.BatchNormalization(name="bn", center=center)(x)
    model = keras.Model(inputs, layers.Conv2DTranspose(4, kernel, strides=strides, padding="same", name="up")(x))
    randomize_weights(model)
    randomize_bn(model)
    if not center:  # a scale-only BN: zero moving mean too
        bn = model.get_layer("bn")
        bn.moving_mean.assign(np.zeros(3, "float32"))
    result = bnfreeze.fold(model, rules=rules_without_preactivation())
    assert_same_function(model, result.model)
    if folds:
        assert folded_entry(result, "bn")["into"] == "up"
    else:
        assert "varying number of kernel taps" in kept_reason(result, "bn")
        # the pre-activation rule folds the scale alone into the kernel; the shift stays as an add before it
        result = bnfreeze.fold(model)
        assert_same_function(model, result.model)
        assert folded_entry(result, "bn")["rule"] == "pre-activation-add"


# -- for CI -------------------------------------------------------------------------------------
def test_max_kept_fails_with_the_kept_bns_named():
    inputs = keras.Input((6,))
    x = layers.Dense(5, activation="relu")(inputs)
    x = layers.BatchNormalization(name="stuck")(x)
    model = keras.Model(inputs, layers.Activation("tanh")(x))
    with pytest.raises(KeptError, match="1 of 1 BatchNormalization layer stays.*stuck") as info:
        bnfreeze.fold(model, max_kept=0)
    assert info.value.report["kept"][0]["bn"] == "stuck"
    assert bnfreeze.fold(model, max_kept=1).report["kept"]


def test_parity_check_uses_real_data_when_given(example_model_path, repo):
    from bnfreeze.io.signature import input_specs
    from bnfreeze.io.sources import open_data

    model = bnfreeze.load_model(example_model_path)
    data = open_data(repo / "models" / "digits_calib.npy", input_specs(model))
    runs = bnfreeze.fold(model, data=data).report["parity"]["runs"]
    real = [r for r in runs if "digits_calib.npy" in r["inputs"]]
    assert real and all(r["passed"] for r in real)
    assert {r["call"] for r in real} == {"training=False", "default call"}


# -- found by attacking the change with unseen models ------------------------------------------------
def test_a_frozen_bn_called_with_training_true_stays_for_the_layers_after_it():
    """Folding it away would stop Keras passing training=True on to the BN called after it."""
    inputs = keras.Input((6,))
    frozen = layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    x = frozen(layers.Dense(4)(inputs), training=True)
    x = layers.BatchNormalization(name="later")(layers.Dense(4)(x))
    result = fold(keras.Model(inputs, layers.Dense(3)(x)))
    assert "frozen but called with training=True" in kept_reason(result, "frozen")
    assert "default call" in kept_reason(result, "later")


@pytest.mark.parametrize("flag", [1, 1.0])
def test_a_truthy_training_value_counts_as_true(flag):
    inputs = keras.Input((6,))
    x = layers.GaussianNoise(1.0, name="noise")(layers.Dense(4, name="dense")(inputs), training=flag)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, layers.Activation("tanh")(x))
    randomize_bn(model)
    result = bnfreeze.fold(model)
    assert "batch statistics" in kept_reason(result, "bn")


def test_training_false_on_a_bn_is_folded_unless_later_layers_could_see_the_difference():
    inputs = keras.Input((6,))
    x = layers.BatchNormalization(name="plain")(layers.Dense(4)(inputs), training=False)
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    folded_entry(result, "plain")
    inputs = keras.Input((6,))
    x = layers.Dropout(0.0)(layers.Dense(4)(inputs), training=True)
    x = layers.BatchNormalization(name="resetting")(layers.Dense(4)(x), training=False)
    x = layers.BatchNormalization(name="after")(layers.Dense(4)(x))
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    assert "folding it away would change what they receive" in kept_reason(result, "resetting")


def test_a_bn_is_not_folded_into_a_layer_of_another_precision():
    inputs = keras.Input((6,))
    x = layers.Dense(4, dtype="mixed_float16", name="half")(inputs)
    x = layers.BatchNormalization(dtype="float32", name="bn")(x)
    model = keras.Model(inputs, layers.Activation("tanh", dtype="float32")(x))
    randomize_bn(model)
    result = bnfreeze.fold(model)
    assert "computes in float32, but half computes in float16" in kept_reason(result, "bn")


def test_a_bn_called_with_inputs_as_a_keyword_folds():
    inputs = keras.Input((6,))
    x = layers.Dense(4, name="dense")(inputs)
    x = layers.BatchNormalization(name="bn")(inputs=x)
    y = layers.BatchNormalization(name="out_bn")(inputs=layers.Dense(3, name="head")(x))
    result = fold(keras.Model(inputs, y))
    assert folded_entry(result, "bn")["into"] == "dense" and folded_entry(result, "out_bn")["into"] == "head"
    assert result.model.output_names == ["out_bn"]


def test_a_fixed_batch_size_is_used_for_the_checks():
    inputs = keras.Input(batch_shape=(2, 5, 3))
    x = layers.LSTM(4, stateful=True, return_sequences=True)(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    result = bnfreeze.fold(keras.Model(inputs, layers.Dense(2, name="dense")(x)))
    assert folded_entry(result, "bn")["into"] == "dense"
    assert {run["batch"] for run in result.report["parity"]["runs"]} == {2}


def test_a_bn_over_the_batch_axis_stays():
    inputs = keras.Input(batch_shape=(4, 4))
    x = layers.BatchNormalization(axis=0, name="bn")(layers.Dense(4)(inputs))
    result = bnfreeze.fold(keras.Model(inputs, x))
    assert "normalizes the batch axis" in kept_reason(result, "bn")


def test_text_inputs_are_checked_with_words():
    inputs = keras.Input((3,), dtype="string")
    x = layers.StringLookup(vocabulary=["the", "model", "folds"])(inputs)
    x = layers.Flatten()(layers.Embedding(5, 4)(x))
    x = layers.BatchNormalization(name="bn")(layers.Dense(4, name="dense")(x))
    model = keras.Model(inputs, x)
    randomize_bn(model)
    assert folded_entry(bnfreeze.fold(model), "bn")["into"] == "dense"


def test_nan_at_the_same_places_is_the_same_function():
    inputs = keras.Input((6,))
    x = layers.BatchNormalization(name="bn")(layers.Dense(4, name="dense")(inputs))
    model = keras.Model(inputs, ops.sqrt(x))
    randomize_bn(model)
    result = bnfreeze.fold(model)  # half the outputs are NaN, in both models alike
    assert folded_entry(result, "bn")["into"] == "dense"


def test_a_time_distributed_bn_is_reported_by_both_names():
    inputs = keras.Input((5, 6))
    x = layers.TimeDistributed(layers.Dense(4), name="td_dense")(inputs)
    x = layers.TimeDistributed(layers.BatchNormalization(name="inner"), name="td_bn")(x)
    result = fold(keras.Model(inputs, layers.Activation("tanh")(x)))
    assert folded_entry(result, "td_bn/inner")["into"] == "td_dense"


def test_a_merged_bn_meets_its_new_neighbours_on_the_next_round():
    inputs = keras.Input((6,))
    x = layers.BatchNormalization(name="bn_a")(inputs)
    x = layers.BatchNormalization(name="bn_b")(x)
    result = fold(keras.Model(inputs, layers.Dense(3, name="dense")(x)))
    assert folded_entry(result, "bn_b")["into"] == "bn_a"
    assert folded_entry(result, "bn_a")["into"] == "dense" and not result.report["kept"]


# -- attack round 3 ----------------------------------------------------------------------------
def test_a_nested_model_trusts_no_size_its_parent_does_not_give_it():
    # A Sequential built for 8x8 and used where the input has None spatial dims runs on any size
    # (Keras checks no input spec there): a 'same' convolution with kernel 2, stride 2 pads nothing at
    # 8x8 (and at bnfreeze's parity size 64), but pads a row and a column at odd sizes, where the BN's
    # shift folded into the convolution would be wrong.
    inner = keras.Sequential([keras.Input((8, 8, 3)), layers.BatchNormalization(name="bn"),
                              layers.Conv2D(4, 2, strides=2, padding="same", name="conv")], name="inner")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, inner(inputs))
    result = fold(model)
    assert "zero padding of conv makes the shift position dependent" in kept_reason(result, "bn")
    odd = np.random.default_rng(0).standard_normal((2, 5, 5, 3)).astype("float32")
    np.testing.assert_allclose(_outputs(result.model, [odd], False)[0], _outputs(model, [odd], False)[0], atol=1e-5)


def test_a_nested_model_called_on_its_recorded_sizes_still_folds_by_them():
    inner = keras.Sequential([keras.Input((8, 8, 3)), layers.BatchNormalization(name="bn"),
                              layers.Conv2D(4, 2, strides=2, padding="same", name="conv")], name="inner")
    inputs = keras.Input((8, 8, 3))
    result = fold(keras.Model(inputs, inner(inputs)))
    assert folded_entry(result, "bn")["into"] == "inner/conv"


def test_a_model_that_cannot_run_at_its_declared_shape_is_bad_input():
    # the outer input has None spatial dims, the nested Functional accepts only 8x8: the parity inputs
    # (unknown dims at 64) cannot run the original model, which is the model's problem, not an internal error
    a = keras.Input((8, 8, 3))
    inner = keras.Model(a, layers.Conv2D(4, 3)(layers.BatchNormalization()(a)), name="inner")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, inner(inputs), name="outer")
    with pytest.raises(bnfreeze.InputError, match=r"outer does not run on inputs of its declared shape .*"
                                                  r"expected shape=\(None, 8, 8, 3\)"):
        bnfreeze.fold(model)


def test_a_time_distributed_bn_on_axis_0_normalizes_the_batch_of_each_step():
    # TimeDistributed calls the BN on (batch, features) per step: axis 0 is the batch, not the time axis
    inputs = keras.Input((4, 3), batch_size=2)
    x = layers.TimeDistributed(layers.BatchNormalization(axis=0, name="inner"), name="td_bn")(inputs)
    model = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))
    randomize_bn(model)
    result = bnfreeze.fold(model)  # before: an internal error (a 2-channel map on the 4 time steps)
    assert "normalizes the batch axis of each step" in kept_reason(result, "td_bn/inner")


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_a_bn_that_casts_an_integer_input_to_float_stays(dtype):
    # before: folded forward, the convolution received the uint8 image itself (an internal error in the parity
    # run); through pooling or reshaping, integer tensors would be rounded or refused
    inputs = keras.Input((8, 8, 3), dtype=dtype)
    x = layers.BatchNormalization(name="bn")(inputs)
    model = keras.Model(inputs, layers.Conv2D(4, 3, name="conv")(x))
    randomize_bn(model)
    result = bnfreeze.fold(model)
    assert f"bn's input is {dtype}: the BN also makes it float, and folded away conv would receive {dtype}" in \
        kept_reason(result, "bn")
