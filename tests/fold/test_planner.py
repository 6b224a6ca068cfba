"""Where fold declines, and the reasons it gives."""

import keras
import numpy as np
from keras import layers
import pytest
from support import bn_count, fold_and_check, randomize_bn

import bnfreeze


def _kept_reasons(model):
    result = bnfreeze.fold(model)
    return [k["reason"] for k in result.report["kept"]]


def assert_kept(model, expected):
    reasons = _kept_reasons(model)
    assert len(reasons) == 1 and expected in reasons[0], reasons


def test_activation_before_bn_is_kept():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, activation="relu", name="conv2d_3")(inputs)
    x = layers.BatchNormalization()(x)
    assert_kept(keras.Model(inputs, x), "conv2d_3 applies relu before the BN")


def test_output_feeding_another_layer_is_kept():
    inputs = keras.Input((8, 8, 4))
    c = layers.Conv2D(4, 3, padding="same", name="conv2d_3")(inputs)
    b = layers.BatchNormalization()(c)
    out = layers.Add(name="add_1")([b, c])
    assert_kept(keras.Model(inputs, out), "conv2d_3's output also feeds add_1")


def test_output_that_is_also_a_model_output_is_kept():
    inputs = keras.Input((6,))
    d = layers.Dense(4, name="dense_a")(inputs)
    b = layers.BatchNormalization()(d)
    assert_kept(keras.Model(inputs, [b, d]), "dense_a's output also feeds the model output")


def test_shared_layer_is_kept():
    a, b = keras.Input((6,)), keras.Input((6,))
    shared = layers.Dense(4, name="conv2d_3")
    x = layers.BatchNormalization()(shared(a))
    y = shared(b)
    assert_kept(keras.Model([a, b], [x, y]), "conv2d_3 is called at 2 places")


def test_shared_bn_is_kept():
    a = keras.Input((6,))
    bn = layers.BatchNormalization(name="bn_shared")
    x = bn(layers.Dense(6)(a))
    y = bn(layers.Dense(6)(a))
    assert_kept(keras.Model(a, [x, y]), "bn_shared is called at 2 places")


def test_bn_called_in_training_mode_is_kept():
    a = keras.Input((6,))
    x = layers.Dense(6)(a)
    x = layers.BatchNormalization(name="bn_train")(x, training=True)
    model = keras.Model(a, x)
    result = bnfreeze.fold(model, check=False)
    assert "training=True" in result.report["kept"][0]["reason"]


def test_bn_after_pooling_names_the_producer():
    a = keras.Input((8, 8, 3))
    x = layers.MaxPooling2D(name="pool")(a)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(a, x)
    reasons = bnfreeze.fold(model).report["kept"]
    assert reasons and "pool (MaxPooling2D)" in reasons[0]["reason"]


def test_custom_subclass_of_conv_is_not_folded():
    class ScaledConv(layers.Conv2D):
        def call(self, x):
            return super().call(x) * 2.0

    a = keras.Input((8, 8, 3))
    x = ScaledConv(4, 3)(a)
    x = layers.BatchNormalization()(x)
    plan = bnfreeze.inspect(keras.Model(a, x))
    assert plan[0].action == "keep"


def test_untouched_layers_keep_names_and_weights_bit_for_bit():
    a = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(4, 3, name="c1")(a)
    x = layers.BatchNormalization(name="b1")(x)
    x = layers.ReLU(name="r1")(x)
    x = layers.Conv2D(5, 3, activation="relu", name="c2")(x)
    x = layers.BatchNormalization(name="b2")(x)
    x = layers.Activation("tanh", name="squash")(x)
    x = layers.Flatten(name="flat")(x)
    out = layers.Dense(3, name="head")(x)
    model = keras.Model(a, out)
    result = fold_and_check(model, folded=1)
    new = result.model
    assert [t.name for t in new.inputs] == [t.name for t in model.inputs]
    assert new.output_names == model.output_names
    for name in ("c2", "b2", "head"):
        for before, after in zip(model.get_layer(name).get_weights(), new.get_layer(name).get_weights()):
            assert before.dtype == after.dtype
            np.testing.assert_array_equal(before, after)
    assert [l.name for l in new.layers] == ["image", "c1", "r1", "c2", "b2", "squash", "flat", "head"]


def test_input_model_is_not_modified():
    a = keras.Input((6,))
    x = layers.BatchNormalization()(layers.Dense(4)(a))
    model = keras.Model(a, x)
    before = [w.copy() for w in model.get_weights()]
    config = model.get_config()
    fold_and_check(model, folded=1)
    # fold_and_check randomized the stats first; take the state after that
    before = [w.copy() for w in model.get_weights()]
    bnfreeze.fold(model)
    assert model.get_config() == config
    for b, a_ in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, a_)


def test_sequential():
    model = keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            layers.Conv2D(4, 3, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Flatten(),
            layers.Dense(5),
            layers.BatchNormalization(),
        ]
    )
    result = fold_and_check(model, folded=2)
    assert isinstance(result.model, keras.Sequential)
    assert result.model.layers[-1].name == model.layers[-1].name
    assert result.model.inputs[0].shape == model.inputs[0].shape


def test_branches_multiple_inputs_and_outputs():
    a = keras.Input((8, 8, 3), name="left")
    b = keras.Input((8, 8, 3), name="right")
    x = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(a))
    y = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same")(b))
    s = layers.Add()([x, y])
    z1 = layers.BatchNormalization()(layers.Conv2D(2, 1)(s))
    z2 = layers.BatchNormalization(name="flat_bn")(layers.Dense(3)(layers.Flatten()(s)))
    model = keras.Model([a, b], {"map": z1, "vec": z2})
    result = fold_and_check(model, folded=4)
    assert bn_count(result.model) == 0
    assert sorted(result.model.output_names) == sorted(model.output_names)


def _block(name):
    a = keras.Input((8, 8, 4))
    x = layers.Conv2D(4, 3, padding="same", use_bias=False)(a)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    return keras.Model(a, x, name=name)


def test_nested_models_to_any_depth():
    inner = _block("inner")
    a = keras.Input((8, 8, 4))
    middle = keras.Model(a, layers.BatchNormalization()(layers.Conv2D(4, 1)(inner(a))), name="middle")
    seq = keras.Sequential([keras.Input((8, 8, 4)), _block("in_seq"), layers.Conv2D(4, 3, padding="same"), layers.BatchNormalization()], name="seq")
    x = keras.Input((8, 8, 4))
    out = seq(middle(x))
    outer = keras.Model(x, layers.BatchNormalization()(layers.Dense(2)(layers.Flatten()(out))))
    result = fold_and_check(outer, folded=5)
    folded_names = {entry["bn"] for entry in result.report["folded"]}
    assert any(name.startswith("middle/inner/") for name in folded_names)
    assert any(name.startswith("seq/in_seq/") for name in folded_names)


def test_subclassed_model_is_traced_and_folded():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3, name="dense")
            self.bn = layers.BatchNormalization(name="bn")

        def call(self, x):
            return self.bn(self.dense(x))

    model = Net()
    model(np.zeros((1, 4), "float32"))
    randomize_bn(model, seed=4)
    result = bnfreeze.fold(model)
    assert [e["into"] for e in result.report["folded"]] == ["dense"]
    assert [n["action"] for n in result.report["structure"]] == ["traced"]
    assert type(result.model).__name__ == "Functional" and result.parity.passed
    x = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)


def test_subclassed_model_that_cannot_be_traced_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3, name="dense")
            self.bn = layers.BatchNormalization(name="bn")

        def build(self, shape):
            self.dense.build(shape)
            self.bn.build((None, 3))
            self.scale = self.add_weight(shape=(3,), initializer="ones", name="scale")

        def call(self, x):
            return self.bn(self.dense(x)) * self.scale  # a weight used outside a layer

    model = Net()
    model(np.ones((1, 4), "float32"))
    with pytest.raises(bnfreeze.InputError, match="subclassed model .*Net.* cannot trace: .*weight .*scale outside a layer"):
        bnfreeze.fold(model)


def test_per_sample_normalizations_are_listed():
    a = keras.Input((8, 6))
    x = layers.LayerNormalization()(a)
    x = layers.GroupNormalization(groups=2)(x)
    x = layers.UnitNormalization()(x)
    x = layers.RMSNormalization()(x)
    x = layers.Dense(4)(x)
    rows = bnfreeze.inspect(keras.Model(a, x))
    assert [r.kind for r in rows] == ["per-sample"] * 4
    assert all(r.action == "nothing to fold" for r in rows)


def test_a_bn_a_keras_mask_reaches_is_kept_naming_the_mask():
    inputs = keras.Input((5,), dtype="int32")
    x = layers.Dense(4, name="d")(layers.Embedding(10, 4, mask_zero=True, name="emb")(inputs))
    model = keras.Model(inputs, layers.LSTM(3)(layers.BatchNormalization(name="bn")(x)))
    assert_kept(model, "bn receives a Keras mask as well as its input (from not_equal")
