"""Pre-activation fold with the shift kept as an add: what stands where the BN was.

The add is Keras's own ``keras.ops.add`` node with a constant: the folded
model loads with plain ``keras.models.load_model`` in a process that never
imported bnfreeze and computes what the original did there, and tf2onnx and
the TF Lite converter make exactly one Add of it (no Mul, nothing else of
the BN).
"""

import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers
from support import assert_parity, bn_count, inputs_for, randomize_bn, randomize_weights, run

import bnfreeze


def preact_model(channels_first_bn=False):
    """MaxPool -> BN -> ReLU -> two convolutions; the pooled tensor also feeds the residual Add, so the shift
    cannot move into the convolution before the pooling and stays as an add."""
    inputs = keras.Input((10, 10, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    x = layers.MaxPooling2D(2, name="pool")(x)
    y = layers.BatchNormalization(name="bn")(x)
    y = layers.ReLU(name="relu")(y)
    a = layers.Conv2D(6, 3, padding="same", name="conv_a")(y)
    b = layers.Conv2D(6, 1, name="conv_b")(y)
    out = layers.Add(name="residual")([x, a, b])
    return keras.Model(inputs, layers.Dense(4, name="head")(layers.GlobalAveragePooling2D()(out)))


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    model = preact_model()
    randomize_weights(model)
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model)
    folder = tmp_path_factory.mktemp("preact_add")
    return model, result, folder


def test_the_shift_stays_as_one_keras_add(folded):
    model, result, _ = folded
    (entry,) = result.report["folded"]
    assert entry["rule"] == "pre-activation-add" and entry["shift_add"] == "bn_shift"
    assert sorted(entry["scale_into"]) == ["conv_a", "conv_b"]
    add = next(op for op in result.model.operations if op.name == "bn_shift")
    assert type(add).__name__ == "Add" and type(add).__module__.startswith("keras.")
    assert bn_count(result.model) == 0
    # the shift is t / s of the BN, in float32, the second operand of the add
    (constant,) = [arg for arg in add._inbound_nodes[0].arguments.args if isinstance(arg, np.ndarray)]
    bn = model.get_layer("bn")
    scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    shift = bn.beta.numpy() - bn.moving_mean.numpy() * scale
    assert constant.dtype == np.float32 and constant.shape == (6,)
    np.testing.assert_allclose(constant, shift / scale, rtol=1e-6)


def test_it_loads_and_computes_the_same_in_plain_keras(folded):
    model, result, folder = folded
    path = folder / "folded.keras"
    result.model.save(path)
    x = inputs_for(model, batch=3, seed=4)[0]
    np.save(folder / "x.npy", x)
    np.save(folder / "expected.npy", run(model, [x])[0])
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        "assert not any(k.startswith('bnfreeze') for k in sys.modules), 'bnfreeze was imported'\n"
        f"x = np.load({str(folder / 'x.npy')!r}); expected = np.load({str(folder / 'expected.npy')!r})\n"
        "got = np.asarray(m(x, training=False), np.float64)\n"
        "print(float(np.max(np.abs(got - expected)) / max(1.0, float(np.max(np.abs(expected))))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5


def test_onnx_and_tflite_hold_one_add_for_it(folded, tmp_path):
    """The same network without the BN (the benchmarks' limit) exported alike: one Add fewer, nothing else
    differs (no Mul, no BatchNormalization; TF Lite even fuses the ReLU into the add)."""
    import collections

    import onnx
    import tensorflow as tf

    from bnfreeze.export import export
    from bnfreeze.fold.rewrite import without_layers

    model, result, _ = folded
    limit = without_layers(model, ["bn"])
    ops = {}
    for label, candidate in (("folded", result.model), ("limit", limit)):
        export(candidate, onnx=tmp_path / f"{label}.onnx", tflite=tmp_path / f"{label}.tflite", force=True)
        onnx_ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / f"{label}.onnx")).graph.node)
        interpreter = tf.lite.Interpreter(str(tmp_path / f"{label}.tflite"))
        interpreter.allocate_tensors()
        tflite_ops = collections.Counter(op["op_name"] for op in interpreter._get_ops_details())
        ops[label] = onnx_ops, tflite_ops
    (onnx_folded, tflite_folded), (onnx_limit, tflite_limit) = ops["folded"], ops["limit"]
    assert onnx_folded - onnx_limit == collections.Counter({"Add": 1}) and onnx_limit - onnx_folded == {}
    # the TF Lite converter fuses the ReLU after the add into it (an ADD with a fused RELU)
    assert tflite_folded - tflite_limit == collections.Counter({"ADD": 1})
    assert tflite_limit - tflite_folded == collections.Counter({"RELU": 1})
    assert "Mul" not in onnx_folded and "BatchNormalization" not in onnx_folded and "MUL" not in tflite_folded


def test_a_zero_shift_leaves_nothing():
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(center=False, name="bn")(layers.Activation("tanh")(inputs))
    model = keras.Model(inputs, layers.Conv2D(4, 3, padding="same")(layers.ReLU()(x)))
    randomize_bn(model, negative=False)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.zeros(3, "float32"))
    result = bnfreeze.fold(model)
    assert result.report["folded"][0]["shift"] == "none"
    assert not any(type(op).__name__ == "Add" for op in result.model.operations)
    assert_parity(model, result.model)


def test_a_sequential_model_cannot_hold_the_add():
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.MaxPooling2D(2), layers.BatchNormalization(name="bn"),
                              layers.ReLU(), layers.Conv2D(4, 3, padding="same")])
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model)
    assert "a Sequential model cannot hold" in result.report["kept"][0]["reason"]
    assert_parity(model, result.model)


def test_the_add_gets_a_name_no_layer_has():
    inputs = keras.Input((8, 8, 3))
    x = layers.Activation("tanh", name="bn_shift")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, layers.Conv2D(4, 3, padding="same")(layers.ReLU()(x)))
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model)
    assert result.report["folded"][0]["shift_add"] == "bn_shift_1"
    assert {op.name for op in result.model.operations} >= {"bn_shift", "bn_shift_1"}
    assert_parity(model, result.model)


def test_a_bfloat16_bn_is_kept():
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn", dtype="bfloat16")(layers.MaxPooling2D(2)(inputs))
    x = layers.Conv2D(4, 3, padding="same")(layers.ReLU()(x))
    model = keras.Model(inputs, x)
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model, check=False)
    assert "computes in bfloat16" in result.report["kept"][0]["reason"]


def test_a_float16_bn_folds_in_float16():
    inputs = keras.Input((8, 8, 3))
    x = layers.BatchNormalization(name="bn", dtype="float16")(layers.MaxPooling2D(2, dtype="float16")(inputs))
    x = layers.Conv2D(4, 3, padding="same", dtype="float16", name="conv")(layers.ReLU(dtype="float16")(x))
    model = keras.Model(inputs, x)
    randomize_bn(model, negative=False)
    result = bnfreeze.fold(model, atol=1e-2, rtol=1e-2)
    assert result.report["folded"][0]["rule"] == "pre-activation-add"
    add = next(op for op in result.model.operations if op.name == "bn_shift")
    (constant,) = [arg for arg in add._inbound_nodes[0].arguments.args if isinstance(arg, np.ndarray)]
    assert constant.dtype == np.float16
    assert result.model(np.zeros((1, 8, 8, 3), "float32")).dtype == "float16"
