"""Data and tensors reach a model's (and a nested model's) inputs the way Keras pairs them.

Issue 23, class 1: a nested model called with a dict was fed by the dict's sorted order, so its BNs got the
statistics of swapped tensors (exit 0). Each case gives every input data of its own mean, so the BN that
reads it must end with that mean; the expectation is what Keras itself computes (``model(dict)``).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from keras import layers

import bnfreeze
from bnfreeze.errors import InputError
from bnfreeze.io.signature import call_arguments, input_specs, select_inputs

MEANS = {"first": 10.0, "second": -3.0, "third": 40.0}


def _data(names, rows: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal((rows, 4)) + MEANS[name]).astype("float32") for name in names}


def _bn_means(model) -> dict[str, float]:
    return {layer.name: float(np.mean(layer.moving_mean.numpy()))
            for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, layers.BatchNormalization)}


def _inner_list(order):
    """A nested model with list inputs named a and b (in ``order``), a BN on each."""
    ins = {name: keras.Input((4,), name=name) for name in ("a", "b")}
    out = layers.Concatenate()([layers.BatchNormalization(name="bn_a")(ins["a"]),
                                layers.BatchNormalization(name="bn_b")(ins["b"])])
    return keras.Model([ins[n] for n in order], out, name="inner")


@pytest.mark.parametrize("order", [("b", "a"), ("a", "b")])
def test_a_nested_model_called_with_a_dict_gets_each_tensor_by_its_input_name(order):
    inner = _inner_list(order)
    first, second = keras.Input((4,), name="first"), keras.Input((4,), name="second")
    model = keras.Model([first, second], inner({"b": first, "a": second}))  # Keras: b <- first, a <- second
    result = bnfreeze.recalibrate(model, _data(["first", "second"]), batch_size=16)
    means = _bn_means(result.model)
    assert means["bn_b"] == pytest.approx(MEANS["first"], abs=0.2)
    assert means["bn_a"] == pytest.approx(MEANS["second"], abs=0.2)


def test_a_nested_model_called_with_a_list_in_another_order_follows_the_list():
    inner = _inner_list(("b", "a"))
    first, second = keras.Input((4,), name="first"), keras.Input((4,), name="second")
    model = keras.Model([first, second], inner([second, first]))  # positional: b <- second, a <- first
    result = bnfreeze.recalibrate(model, _data(["first", "second"]), batch_size=16)
    means = _bn_means(result.model)
    assert means["bn_b"] == pytest.approx(MEANS["second"], abs=0.2)
    assert means["bn_a"] == pytest.approx(MEANS["first"], abs=0.2)


def test_a_nested_model_with_dict_inputs_keyed_unlike_its_tensors_gets_them_by_key():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that the keys are not the tensors' names
        p, q = keras.Input((4,), name="q"), keras.Input((4,), name="p")  # key p -> the tensor named q
        inner = keras.Model({"p": p, "q": q}, layers.Concatenate()([
            layers.BatchNormalization(name="bn_key_p")(p), layers.BatchNormalization(name="bn_key_q")(q)]),
            name="inner")
        first, second, third = (keras.Input((4,), name=n) for n in ("first", "second", "third"))
        model = keras.Model([first, second, third],
                            layers.Concatenate()([inner({"q": first, "p": second}), third]))
    result = bnfreeze.recalibrate(model, _data(["first", "second", "third"]), batch_size=7)
    means = _bn_means(result.model)
    assert means["bn_key_p"] == pytest.approx(MEANS["second"], abs=0.2)
    assert means["bn_key_q"] == pytest.approx(MEANS["first"], abs=0.2)


def test_a_nested_model_twice_deep_with_dicts_at_both_levels():
    innermost = _inner_list(("b", "a"))
    x, y = keras.Input((4,), name="x"), keras.Input((4,), name="y")
    middle = keras.Model([y, x], innermost({"a": x, "b": y}), name="middle")  # a <- x, b <- y
    first, second = keras.Input((4,), name="first"), keras.Input((4,), name="second")
    model = keras.Model([first, second], middle({"x": first, "y": second}))  # x <- first, y <- second
    data = _data(["first", "second"])
    result = bnfreeze.recalibrate(model, data, batch_size=32)
    means = _bn_means(result.model)
    assert means["bn_a"] == pytest.approx(MEANS["first"], abs=0.2)
    assert means["bn_b"] == pytest.approx(MEANS["second"], abs=0.2)
    # Keras's own run of the recalibrated model: every BN output (gamma 1, beta 0) is centred and scaled
    outputs = np.asarray(result.model([data["first"], data["second"]], training=False))
    np.testing.assert_allclose(outputs.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(outputs.var(axis=0), 1.0, rtol=1e-2)


@pytest.fixture(scope="module")
def swapped_keys_model():
    """Top-level dict inputs whose keys are the other tensor's name: Keras pairs data by key."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = keras.Input((4,), name="second"), keras.Input((4,), name="first")  # key first -> tensor "second"
        return keras.Model({"first": a, "second": b}, layers.Concatenate()([
            layers.BatchNormalization(name="bn_key_first")(a), layers.BatchNormalization(name="bn_key_second")(b)]))


def test_top_level_dict_inputs_take_data_by_key_in_every_data_form(swapped_keys_model, tmp_path):
    import tensorflow as tf

    data = _data(["first", "second"])
    np.savez(tmp_path / "d.npz", **data)
    forms = {
        "npz": bnfreeze.open_data(tmp_path / "d.npz", input_specs(swapped_keys_model)),
        "dict of arrays": data,
        "tf.data of dicts": tf.data.Dataset.from_tensor_slices(data),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = keras.Model(swapped_keys_model.input, [swapped_keys_model.get_layer(n).input
                                                       for n in ("bn_key_first", "bn_key_second")])
    keras_first, keras_second = (np.asarray(v).mean() for v in probe(data))  # Keras's own pairing
    assert keras_first == pytest.approx(MEANS["first"], abs=0.2)
    assert keras_second == pytest.approx(MEANS["second"], abs=0.2)
    for form, source in forms.items():
        result = bnfreeze.recalibrate(swapped_keys_model, source, batch_size=50)
        means = _bn_means(result.model)
        assert means["bn_key_first"] == pytest.approx(MEANS["first"], abs=0.2), form
        assert means["bn_key_second"] == pytest.approx(MEANS["second"], abs=0.2), form


def test_select_inputs_prefers_keys_and_accepts_unambiguous_tensor_names():
    x, y = keras.Input((1,), name="tensor_x"), keras.Input((1,), name="tensor_y")
    model = keras.Model({"kx": x, "ky": y}, x + y)
    specs = input_specs(model)
    assert [(s.name, s.key) for s in specs] == [("tensor_x", "kx"), ("tensor_y", "ky")]
    assert select_inputs({"kx": 1, "ky": 2}, specs) == {"tensor_x": 1, "tensor_y": 2}
    assert select_inputs({"tensor_x": 1, "tensor_y": 2}, specs) == {"tensor_x": 1, "tensor_y": 2}
    assert select_inputs({"kx": 1}, specs) is None


def test_call_arguments_refuse_what_keras_refuses():
    a, b = keras.Input((1,), name="a"), keras.Input((1,), name="b")
    inner = keras.Model([a, b], a - b)
    p, q = keras.Input((1,), name="p"), keras.Input((1,), name="q")
    assert call_arguments(inner, {"b": p, "a": q}) == [q, p]
    assert call_arguments(inner, [p, q]) == [p, q]
    with pytest.raises(InputError, match="not the names of its inputs"):
        call_arguments(inner, {"x": p, "y": q})


def test_quantize_calibration_feeds_pair_converter_inputs_by_name():
    from bnfreeze.quantize.calibration import pairing

    class Data:
        source = "d.npz"
        specs = [type("S", (), {"name": n})() for n in ("beta", "alpha")]

    assert pairing(Data, ["serving_default_alpha:0", "beta"], "the graph") == {
        "serving_default_alpha:0": "alpha", "beta": "beta"}
    with pytest.raises(InputError, match="has an input gamma"):
        pairing(Data, ["gamma"], "the graph")


def test_locate_feeds_each_model_its_own_inputs_by_name():
    from bnfreeze.verify.locate import first_divergence

    def build(order):
        ins = {n: keras.Input((4,), name=n) for n in ("a", "b")}
        hidden = layers.Dense(3, name="mix")(layers.Concatenate(name="cat")([ins["a"], ins["b"] * 2.0]))
        return keras.Model([ins[n] for n in order], layers.BatchNormalization(name="bn")(hidden))

    reference, candidate = build(("a", "b")), build(("b", "a"))
    candidate.set_weights(reference.get_weights())
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((2, 4)).astype("float32"), "b": rng.standard_normal((2, 4)).astype("float32")}
    assert first_divergence(reference, candidate, feed, candidate_feed=feed) is None
