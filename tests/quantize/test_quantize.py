"""``bnfreeze.quantize``: int8 TFLite and ONNX of the example model, read back tensor by tensor.

The artifacts are checked with the runtimes' own readers (the TFLite
interpreter's tensor details, the ONNX graph's initializers and
QuantizeLinear outputs), not only with bnfreeze's facts, and their agreement
with the float model is measured again by ``bnfreeze.verify``.
"""

import collections

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from keras import layers
from onnx import numpy_helper

import bnfreeze
from bnfreeze.compare import criteria
from bnfreeze.errors import InputError
from bnfreeze.quantize import QuantizeCheckError, QuantizeError
from bnfreeze.verify import verify
from support import randomize_bn

#: The top-1 bar on models/digits_test.npz (360 images). Measured here: 0.9944 for both files (2 of 360 differ).
MIN_TOP1 = 0.98


@pytest.fixture(scope="module")
def example(tmp_path_factory, example_model_path):
    folder = tmp_path_factory.mktemp("quantized")
    model = keras.models.load_model(example_model_path)
    weights = [w.copy() for w in model.get_weights()]
    result = bnfreeze.quantize(model, example_model_path.parent / "digits_calib.npy", tflite=folder / "m.tflite",
                               onnx=folder / "m.onnx", eval_data=example_model_path.parent / "digits_test.npz")
    return folder, model, weights, result


def _interpreter(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path))


def test_tflite_weights_and_activations_are_int8(example):
    folder, _model, _weights, result = example
    interpreter = _interpreter(folder / "m.tflite")
    ops = interpreter._get_ops_details()  # before allocation: the file's own ops, not XNNPACK's partitions
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    activations = {i for op in ops for i in op["outputs"]} | {d["index"] for d in interpreter.get_input_details()}
    float_tensors = [t["name"] for t in tensors.values() if t["dtype"] == np.float32]
    assert float_tensors == []
    kinds = collections.Counter(op["op_name"] for op in ops)
    assert kinds["CONV_2D"] == 2 and kinds["FULLY_CONNECTED"] == 2 and "QUANTIZE" not in kinds and "DEQUANTIZE" not in kinds
    for op in ops:
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            weight, bias = tensors[op["inputs"][1]], tensors[op["inputs"][2]]
            assert weight["dtype"] == np.int8 and bias["dtype"] == np.int32
            channels = weight["shape"][0]
            assert len(weight["quantization_parameters"]["scales"]) == channels  # per output channel
            assert tensors[op["outputs"][0]]["dtype"] == np.int8
    assert all(tensors[i]["dtype"] in (np.int8, np.int32) for i in activations)  # int32: the Flatten's shape
    (spec,) = interpreter.get_input_details()
    assert spec["dtype"] == np.int8 and interpreter.get_output_details()[0]["dtype"] == np.int8
    facts = next(a for a in result.artifacts if a.kind == "tflite").facts
    assert facts.weights == {"int8": 4} and facts.biases == {"int32": 4} and facts.per_channel_weights == 4
    assert facts.float_ops == [] and facts.bn_derived == []
    assert facts.ops == dict(kinds) and facts.bytes == (folder / "m.tflite").stat().st_size


def test_onnx_is_qdq_int8_with_per_channel_weights(example):
    folder, _model, _weights, result = example
    graph = onnx.load(str(folder / "m.onnx")).graph
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    linear = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert sorted(n.op_type for n in linear) == ["Conv", "Conv", "Gemm", "Gemm"]
    for node in linear:
        data, weight = producer[node.input[0]], producer[node.input[1]]
        assert data.op_type == weight.op_type == "DequantizeLinear"
        assert initializers[weight.input[0]].dtype == np.int8  # weights stored as int8
        assert initializers[weight.input[1]].size > 1  # one scale per output channel
        assert producer[data.input[0]].op_type == "QuantizeLinear"  # activations quantized before the layer
        if len(node.input) > 2:
            assert initializers[producer[node.input[2]].input[0]].dtype == np.int32
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            assert initializers[node.input[2]].dtype == np.int8  # every activation is int8
    assert not [i for i in initializers.values() if i.dtype == np.float32 and i.ndim >= 2]  # no float weights
    facts = next(a for a in result.artifacts if a.kind == "onnx").facts
    assert facts.float_compute == []  # onnxruntime runs no arithmetic in float
    assert all(op.exact for op in facts.float_ops)


def test_agreement_with_the_float_model(example, example_model_path):
    folder, _model, _weights, result = example
    test = example_model_path.parent / "digits_test.npz"
    report = verify(example_model_path, [folder / "m.tflite", folder / "m.onnx"], data=test,
                    tolerance=criteria(check=("top1",), min_top1=MIN_TOP1))
    assert report.passed, [(r.candidate, r.reason) for r in report.rows]
    rows = {r.candidate.rsplit("/", 1)[-1]: r for r in report.rows}
    entries = {a["path"].rsplit("/", 1)[-1]: a for a in result.report["artifacts"]}
    for name in ("m.tflite", "m.onnx"):
        assert rows[name].top1_agreement >= MIN_TOP1
        # the report's numbers are verify's numbers (same data, same comparator)
        assert entries[name]["top1_agreement"] == pytest.approx(rows[name].top1_agreement)
        assert entries[name]["snr_db"] == pytest.approx(rows[name].snr_db, abs=0.5)
        assert entries[name]["passed"] and entries[name]["accuracy"] > 0.97
    assert result.report["float_accuracy"] == pytest.approx(0.9917, abs=0.002)
    assert result.report["evaluation"]["samples"] == 360 and result.report["calibration"]["samples"] == 256
    assert [f["bn"] for f in result.report["fold"]["folded"]] == ["bn1", "bn2", "bn3"]


def test_the_input_model_is_not_modified(example):
    _folder, model, weights, result = example
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert result.model is not model


def seed_cnn(size: int = 16):
    """The seed article's CNN ('valid' padding; BN after the relu) on small inputs."""
    return keras.Sequential([
        keras.Input((size, size, 1), name="image"),
        layers.Conv2D(8, 3, activation="relu", name="conv_a"), layers.BatchNormalization(name="bn_a"),
        layers.MaxPooling2D(2, name="pool_a"),
        layers.Conv2D(8, 3, activation="relu", name="conv_b"), layers.BatchNormalization(name="bn_b"),
        layers.MaxPooling2D(2, name="pool_b"), layers.Flatten(name="flatten"),
        layers.Dense(16, activation="relu", name="fc"), layers.BatchNormalization(name="bn_c"),
        layers.Dense(4, activation="softmax", name="probs"),
    ])


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = seed_cnn()
    randomize_bn(model, seed=2, negative=False)
    folder = tmp_path_factory.mktemp("seed")
    data = np.random.default_rng(3).uniform(0, 1, (48, 16, 16, 1)).astype("float32")
    np.save(folder / "calib.npy", data)
    return model, folder


def test_bns_after_relu_stay_as_quantized_mul_and_add_without_the_fold(seed_model):
    model, folder = seed_model
    kinds = {}
    for fold in (False, True):
        # without the fold, onnxruntime runs the BNs' Mul and Add in float: allowed here to look at them
        result = bnfreeze.quantize(model, folder / "calib.npy", tflite=folder / f"fold{fold}.tflite",
                                   onnx=folder / f"fold{fold}.onnx", fold=fold, check="snr", min_snr=10,
                                   allow_float_ops=not fold)
        kinds[fold] = {a.kind: a.facts for a in result.artifacts}
    peer = kinds[False]["tflite"]
    # the TF Lite converter keeps (at least) the two BNs between a relu and max pooling as a MUL and an ADD each
    # (whether it folds the third into the last Dense depends on the weights: the trained seed CNN's, it does)
    assert {name.split("/")[1].rsplit("_", 1)[0] for name in peer.bn_derived} >= {"bn_a", "bn_b"}
    steps = collections.Counter(n.split("/")[-1] for n in peer.bn_derived)
    assert steps["mul_1"] == steps["add_1"] >= 2 and set(steps) == {"mul_1", "add_1"}
    assert peer.ops["MUL"] == peer.ops["ADD"] == steps["mul_1"] and peer.float_ops == []  # int8, more roundings
    onnx_peer = kinds[False]["onnx"]
    assert len(onnx_peer.bn_derived) == 6  # tf2onnx keeps all three BNs as Mul + Add
    assert sorted((op.op, op.layer) for op in onnx_peer.float_compute) == sorted(
        (op, bn) for op in ("Mul", "Add") for bn in ("bn_a", "bn_b", "bn_c"))
    assert all(op.where == "inside" for op in onnx_peer.float_compute)
    for kind in ("tflite", "onnx"):
        assert kinds[True][kind].bn_derived == [] and kinds[True][kind].float_compute == []
        assert kinds[True][kind].bytes < kinds[False][kind].bytes
    assert "MUL" not in kinds[True]["tflite"].ops and "Mul" not in kinds[True]["onnx"].ops


def sin_model():
    inputs = keras.Input((8,), name="x")
    hidden = layers.Dense(8, name="d1")(inputs)
    return keras.Model(inputs, layers.Dense(4, name="d2")(keras.ops.sin(hidden)))


def test_an_op_left_in_float_is_refused_and_named(tmp_path):
    keras.utils.set_random_seed(0)
    model = sin_model()
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((32, 8)).astype("float32"))
    for kind, op in (("tflite", "SIN"), ("onnx", "Sin")):
        out = tmp_path / f"m.{kind}"
        with pytest.raises(QuantizeError, match=rf"not fully int8: {op} \(.*Sin\); pass --allow-float-ops"):
            bnfreeze.quantize(model, tmp_path / "calib.npy", **{kind: out}, check="snr", min_snr=10)
        assert not out.exists()
        result = bnfreeze.quantize(model, tmp_path / "calib.npy", **{kind: out}, check="snr", min_snr=10,
                                   allow_float_ops=True)
        assert out.exists()
        (entry,) = result.report["artifacts"]
        assert [(f["op"], f["where"], f["exact"]) for f in entry["float_ops"]] == [(op, "inside", False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy", "m.onnx", "m.tflite"]


def test_a_converter_failure_names_the_file_it_was_to_write(tmp_path):
    from bnfreeze.errors import ExportError

    inputs = keras.Input((6, 3), name="x")
    model = keras.Model(inputs, layers.Dense(2)(layers.LSTM(4)(inputs)))  # a TensorList the converter rejects
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((8, 6, 3)).astype("float32"))
    with pytest.raises(ExportError, match=r"m\.tflite: the TF Lite converter cannot quantize this model: .*; "
                                          "nothing was written$"):
        bnfreeze.quantize(model, tmp_path / "calib.npy", tflite=tmp_path / "m.tflite", check="snr", min_snr=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy"]


def test_a_failed_check_writes_nothing(example_model_path, tmp_path):
    model = keras.models.load_model(example_model_path)
    with pytest.raises(QuantizeCheckError, match=r"m.tflite: the int8 TFLite model does not follow .* snr .* < 80 dB") as info:
        bnfreeze.quantize(model, example_model_path.parent / "digits_calib.npy", tflite=tmp_path / "m.tflite",
                          onnx=tmp_path / "m.onnx", check="snr", min_snr=80)  # int8 reaches about 44 dB here
    assert list(tmp_path.iterdir()) == []
    assert info.value.report["passed"] is False and len(info.value.report["artifacts"]) == 2


def test_io_types_and_per_tensor_weights(example_model_path, tmp_path):
    model = keras.models.load_model(example_model_path)
    calib = example_model_path.parent / "digits_calib.npy"
    result = bnfreeze.quantize(model, calib, tflite=tmp_path / "f.tflite", io="float", per_tensor=True,
                               max_samples=64)
    facts = result.artifacts[0].facts
    assert [i.dtype for i in facts.inputs] == ["float32"] and [o.dtype for o in facts.outputs] == ["float32"]
    assert facts.ops["QUANTIZE"] == 1 and facts.ops["DEQUANTIZE"] == 1 and facts.float_compute == []
    assert facts.per_tensor_weights == 4 and facts.per_channel_weights == 0
    assert result.report["calibration"]["samples"] == 64 and result.report["weights"] == "per-tensor"
    # per-tensor weights are equalized by default (measured in BENCHMARKS.md), exactly
    assert result.report["equalization"]["parity"]["passed"] and len(result.report["equalization"]["pairs"]) == 3
    interpreter = _interpreter(tmp_path / "f.tflite")
    assert all(len(t["quantization_parameters"]["scales"]) <= 1 for t in interpreter.get_tensor_details())
    result = bnfreeze.quantize(model, calib, tflite=tmp_path / "u.tflite", io="uint8", max_samples=64)
    (spec,) = result.artifacts[0].facts.inputs
    assert spec.dtype == "uint8" and spec.zero_point == 0 and spec.scale == pytest.approx(1 / 255, rel=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "nothing to write: give --tflite"),
    ({"onnx": "m.onnx", "io": "int8"}, "--io sets the TFLite file's"),
    ({"tflite": "m.tflite", "calibrate": "entropy"}, "--calibrate entropy applies to the ONNX file"),
    ({"tflite": "m.tflite", "check": "snr", "min_top1": 0.9}, "--min-top1 applies to --check top1"),
    ({"tflite": "m.tflite", "recalibrate": "ema"}, "unknown --recalibrate 'ema'"),
    ({"tflite": "m.txt"}, "a TFLite file must end in .tflite"),
])
def test_option_errors_before_any_work(example_model_path, tmp_path, kwargs, message):
    model = keras.models.load_model(example_model_path)
    kwargs = {k: (str(tmp_path / v) if k in ("tflite", "onnx") else v) for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message):
        bnfreeze.quantize(model, example_model_path.parent / "digits_calib.npy", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_the_report_names_every_bn_recalibration_measured_or_kept(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 8), name="x")
    hidden = layers.TimeDistributed(layers.BatchNormalization(name="tdbn"), name="td")(inputs)
    hidden = layers.BatchNormalization(name="bn")(layers.Dense(4, name="d1")(layers.Flatten()(hidden)))
    model = keras.Model(inputs, layers.Dense(4, name="d2")(hidden))
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((64, 3, 8)).astype("float32"))
    result = bnfreeze.quantize(model, tmp_path / "calib.npy", onnx=tmp_path / "m.onnx", recalibrate="precise",
                               check="snr", min_snr=10)
    entry = result.report["recalibration"]
    assert entry["recalibrated"] == ["bn"]
    assert [k["name"] for k in entry["kept"]] == ["td/tdbn"]  # one pass cannot copy its per-step training
    assert "TimeDistributed" in entry["kept"][0]["reason"]


def test_recalibrate_then_fold_then_quantize(example_model_path, tmp_path):
    model = keras.models.load_model(example_model_path)
    result = bnfreeze.quantize(model, example_model_path.parent / "digits_calib.npy", onnx=tmp_path / "m.onnx",
                               recalibrate="precise", calibrate="percentile",
                               eval_data=example_model_path.parent / "digits_test.npz", min_top1=MIN_TOP1)
    assert result.report["recalibration"]["mode"] == "precise" and result.recalibration is not None
    assert result.report["evaluation"]["reference"] == "the recalibrated float model"
    (entry,) = result.report["artifacts"]
    assert entry["calibration"] == "percentile" and entry["top1_agreement"] >= MIN_TOP1
    assert result.report["criteria"] == {"probs": "top-1 agreement >= 0.98"}
