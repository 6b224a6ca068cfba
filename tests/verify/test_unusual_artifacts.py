"""verify on artifacts that broke it once: fixed batch sizes, integer inputs, mixed precisions,
text outputs, damaged TFLite files, config files with the wrong types."""

import json

import keras
import numpy as np
import pytest
from keras import layers
from support import bnfreeze

import bnfreeze as api
from bnfreeze.compare import Tolerance


def _save(model, path):
    model.save(path)
    return path


def _token_model():
    """Six int32 tokens (vocabulary 100), embedded, pooled, one Dense head."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    pooled = layers.GlobalAveragePooling1D()(layers.Embedding(100, 8, name="emb")(tokens))
    return keras.Model(tokens, layers.Dense(4, name="head")(pooled))


def _with_embedding_changed(model, path, change):
    """Save ``model`` with ``change(table)`` applied to its layer ``emb``'s table (in place)."""
    table = model.get_layer("emb").get_weights()[0].copy()
    change(table)
    model.get_layer("emb").set_weights([table])
    return _save(model, path)


def test_a_fixed_batch_reference_compares_every_sample(tmp_path):
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    model = keras.Model(x, layers.Dense(2, name="out")(layers.Dense(8, activation="relu", name="h")(x)))
    good = _save(model, tmp_path / "m.keras")
    kernel, bias = model.get_layer("out").get_weights()
    kernel[3] *= 1.5
    model.get_layer("out").set_weights([kernel, bias])
    bad = _save(model, tmp_path / "bad.keras")
    assert bnfreeze("export", good, "--onnx", tmp_path / "b1.onnx", "--batch-size", "1").returncode == 0
    report = api.verify.verify(tmp_path / "b1.onnx", [bad], samples=50)
    assert not report.passed and report.rows[0].outputs[0].samples == 50


def test_a_batch_size_a_fixed_batch_artifact_cannot_run_says_which_to_pass(tmp_path):
    keras.utils.set_random_seed(1)
    x = keras.Input((4,), name="x")
    good = _save(keras.Model(x, layers.Dense(2, name="out")(x)), tmp_path / "m.keras")
    assert bnfreeze("export", good, "--onnx", tmp_path / "b1.onnx", "--batch-size", "1").returncode == 0
    with pytest.raises(api.InputError, match=r"b1\.onnx: onnxruntime failed to run it \(.*\); its input x fixes "
                                             r"the batch size at 1, it was given 3: pass --batch-size 1$"):
        api.verify.verify(good, [tmp_path / "b1.onnx"], batch_size=3)


def _scale_token_50(table):
    table[50] *= 1.5  # one token far from 0 and 1


def test_integer_inputs_span_the_vocabulary(tmp_path):
    model = _token_model()
    good = _save(model, tmp_path / "emb.keras")
    bad = _with_embedding_changed(model, tmp_path / "emb_bad.keras", _scale_token_50)
    assert not api.verify.verify(good, [bad]).passed


def test_an_integer_input_after_a_float_input_spans_its_vocabulary(tmp_path):
    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = layers.Flatten()(layers.Embedding(30, 2, name="emb")(tokens))
    model = keras.Model([features, tokens], layers.Dense(3, name="head")(layers.Concatenate()([features, embedded])))
    good = _save(model, tmp_path / "two.keras")

    def shift_tokens_from_2(table):
        table[2:] += 0.5  # every token but 0 and 1

    bad = _with_embedding_changed(model, tmp_path / "two_bad.keras", shift_tokens_from_2)
    assert not api.verify.verify(good, [bad]).passed


def test_integer_inputs_span_the_vocabulary_of_a_keras_candidate(tmp_path):
    model = _token_model()
    good = _save(model, tmp_path / "emb.keras")
    assert bnfreeze("export", good, "--onnx", tmp_path / "emb.onnx").returncode == 0
    bad = _with_embedding_changed(model, tmp_path / "emb_bad.keras", _scale_token_50)
    # the ONNX reference does not say which ids it takes; the Keras candidate's vocabulary does
    assert not api.verify.verify(tmp_path / "emb.onnx", [bad]).passed


def test_each_output_is_held_to_its_own_precision(tmp_path):
    keras.utils.set_random_seed(0)
    x = keras.Input((16,), name="x")
    h = layers.Dense(32, activation="relu", name="h")(x)
    model = keras.Model(x, [layers.Dense(10, name="main")(h), layers.Dense(1, name="aux", dtype="float16")(h)])
    good = _save(model, tmp_path / "m.keras")
    kernel, bias = model.get_layer("main").get_weights()
    model.get_layer("main").set_weights([kernel * 1.005, bias])
    bad = _save(model, tmp_path / "bad.keras")
    report = api.verify.verify(good, [bad])
    main = next(o for o in report.rows[0].outputs if o.name == "main")
    assert not main.passed  # float32 head: 1e-4, not the float16 side branch's 1e-2
    tolerance = Tolerance().resolved(model)
    assert tolerance.for_output("main").rel_limit == 1e-4 and tolerance.for_output("aux").rel_limit == 1e-2


def test_text_outputs_of_a_savedmodel_are_compared_exactly(tmp_path):
    import tensorflow as tf

    class Labels(tf.Module):
        def __init__(self, names):
            self.w = tf.Variable(np.random.default_rng(0).standard_normal((4, 3)).astype("float32"))
            self.names = tf.constant(names)

        @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="x")])
        def serve(self, x):
            p = tf.nn.softmax(x @ self.w)
            return {"probs": p, "label": tf.gather(self.names, tf.argmax(p, axis=1))}

    for name, names in (("sm", ["cat", "dog", "eel"]), ("renamed", ["cat", "dog", "owl"])):
        module = Labels(names)
        tf.saved_model.save(module, str(tmp_path / name), signatures={"serving_default": module.serve})
    assert api.verify.verify(tmp_path / "sm", [tmp_path / "sm"]).passed
    report = api.verify.verify(tmp_path / "sm", [tmp_path / "renamed"], samples=64)
    label = next(o for o in report.rows[0].outputs if o.name == "label")
    probs = next(o for o in report.rows[0].outputs if o.name == "probs")
    assert probs.passed and not label.passed and "must be equal" in label.reason


@pytest.mark.slow
def test_damaged_tflite_files_are_refused_not_crashed_on(example_model_path, tmp_path):
    good = tmp_path / "d.tflite"
    assert bnfreeze("export", example_model_path, "--tflite", good).returncode == 0
    data = good.read_bytes()
    damaged = {"truncated.tflite": data[: len(data) // 2]}
    flipped = bytearray(data)
    for j in range(200, len(flipped), 997):
        flipped[j] ^= 0x40
    damaged["flipped.tflite"] = bytes(flipped)
    rng = np.random.default_rng(1)
    header = bytearray(data)
    for j in rng.integers(8, 4000, size=3):
        header[j] ^= 1 << int(rng.integers(8))
    damaged["header.tflite"] = bytes(header)
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        proc = bnfreeze("verify", example_model_path, tmp_path / name)
        assert proc.returncode in (0, 1, 2), (name, proc.returncode, proc.stderr[-500:])  # never a signal
        assert "Traceback" not in proc.stderr
        if proc.returncode == 2:
            # one message; the other lines are the steps that ran before it (progress, as in a CI log)
            messages = [line for line in proc.stderr.splitlines() if line.startswith("bnfreeze: ")]
            assert len(messages) == 1 and name in messages[0], proc.stderr
            assert all(line.endswith(" ...") for line in proc.stderr.splitlines() if line not in messages)


@pytest.mark.parametrize("text,message", [
    ('[[check]]\nreference = 5\ncandidates = ["a.onnx"]\n', "reference must be a path"),
    ('[[check]]\nreference = "m.keras"\ncandidates = [1]\n', "candidates must be a path"),
    ('[default]\natol = 1.0\n[[check]]\nreference = "m.keras"\ncandidates = ["a.onnx"]\n', "unknown top-level"),
])
def test_config_files_with_wrong_types_are_bad_input(tmp_path, text, message):
    config = tmp_path / "parity.toml"
    config.write_text(text)
    proc = bnfreeze("verify", "--config", config)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
