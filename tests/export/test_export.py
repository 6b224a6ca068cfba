"""Export: every artifact loads, matches the Keras model, and is written atomically."""

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from keras import layers
from support import randomize_bn

import bnfreeze
from bnfreeze.export import ExportError, export
from bnfreeze.export import formats as formats_module
from bnfreeze.export.onnx_graph import bn_derived_nodes
from bnfreeze.verify.runners import OnnxRunner


@pytest.fixture(scope="module")
def folded_digits(example_model_path):
    return bnfreeze.fold(keras.models.load_model(example_model_path)).model


def test_all_three_formats(folded_digits, tmp_path):
    artifacts = export(folded_digits, onnx=tmp_path / "m.onnx", savedmodel=tmp_path / "sm", tflite=tmp_path / "m.tflite")
    assert [a.kind for a in artifacts] == ["onnx", "savedmodel", "tflite"]
    assert all(a.passed and a.max_abs < 1e-5 for a in artifacts)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["digits"]
    assert [o.name for o in proto.graph.output] == ["probs"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value")  # dynamic batch
    assert artifacts[0].details["bn_derived_nodes"] == 0
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert "serving_default" in loaded.signatures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.tflite", "sm"]


def test_savedmodel_serving_outputs_carry_the_keras_names(tmp_path):
    """Like the ONNX and TFLite files: TF Serving clients read ``probs``/``box``, not ``output_0``/``output_1``."""
    x = keras.Input((6,), name="features")
    h = layers.BatchNormalization()(layers.Dense(8)(x))
    model = keras.Model(x, {"box": layers.Dense(4, name="box")(h), "probs": layers.Dense(3, activation="softmax",
                                                                                     name="probs")(h)})
    randomize_bn(model)
    (artifact,) = export(model, savedmodel=tmp_path / "sm")
    assert artifact.passed
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    serving = loaded.signatures["serving_default"]
    assert sorted(serving.structured_outputs) == ["box", "probs"]
    assert list(serving.structured_input_signature[1]) == ["features"]
    data = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    got = serving(features=tf.constant(data))
    expected = model(data, training=False)
    for name in ("box", "probs"):
        np.testing.assert_allclose(got[name].numpy(), np.asarray(expected[name]), rtol=1e-5, atol=1e-6)
    assert hasattr(loaded, "serve")  # Keras's own endpoint (the model's call) is there too


def test_fixed_batch_size(folded_digits, tmp_path):
    export(folded_digits, onnx=tmp_path / "m.onnx", batch_size=2)
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 2


def test_existing_outputs_need_force(folded_digits, tmp_path):
    target = tmp_path / "m.onnx"
    target.write_text("old")
    with pytest.raises(bnfreeze.InputError, match="--force"):
        export(folded_digits, onnx=target)
    assert target.read_text() == "old"
    export(folded_digits, onnx=target, force=True)
    onnx.checker.check_model(onnx.load(str(target)))


def _grouped_model():
    inputs = keras.Input((8, 8, 4), name="x")
    x = layers.Conv2D(6, 3, groups=2, name="gconv")(inputs)
    x = layers.BatchNormalization()(x)
    model = keras.Model(inputs, layers.ReLU()(x))
    randomize_bn(model)
    return bnfreeze.fold(model).model


def test_grouped_convolution_becomes_a_grouped_onnx_conv(tmp_path):
    model = _grouped_model()
    artifacts = export(model, onnx=tmp_path / "g.onnx", tflite=tmp_path / "g.tflite", savedmodel=tmp_path / "g_sm")
    assert all(a.passed for a in artifacts)
    convs = [n for n in onnx.load(str(tmp_path / "g.onnx")).graph.node if n.op_type == "Conv"]
    assert [a.i for n in convs for a in n.attribute if a.name == "group"] == [2]


def test_unconvertible_layer_fails_naming_it_and_writes_nothing(tmp_path, monkeypatch):
    """Without bnfreeze's tracing fix tf2onnx meets Keras's XLA call: it must fail clearly."""
    import contextlib

    monkeypatch.setattr(formats_module, "plain_convolutions", contextlib.nullcontext)
    monkeypatch.setattr("bnfreeze.export.tracing.plain_convolutions", contextlib.nullcontext)
    with pytest.raises(ExportError, match="layer gconv"):
        export(_grouped_model(), onnx=tmp_path / "g.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_artifact_is_not_written(folded_digits, tmp_path, monkeypatch):
    real = formats_module.write_onnx

    def scaled_onnx(model, path, **kwargs):
        written = real(model, path, **kwargs)
        proto = onnx.load(str(path))
        for init in proto.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2:
                values = onnx.numpy_helper.to_array(init) * np.float32(1.01)
                init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
        onnx.save(proto, str(path))
        return written

    monkeypatch.setitem(__import__("bnfreeze.export", fromlist=["FORMATS"]).FORMATS, "onnx", (scaled_onnx, OnnxRunner))
    with pytest.raises(bnfreeze.ParityError) as caught:
        export(folded_digits, onnx=tmp_path / "m.onnx", tflite=tmp_path / "m.tflite")
    message = str(caught.value)
    assert "m.onnx: the onnx artifact differs from the Keras model" in message and "not written" in message
    assert message.endswith(f"written: {tmp_path / 'm.tflite'} (they passed)"), message
    assert "\n" not in message
    # the artifact that passed is not thrown away with the one that did not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]
    with pytest.raises(bnfreeze.ParityError, match="nothing was written"):
        export(folded_digits, onnx=tmp_path / "only.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_a_converter_that_fails_costs_only_its_own_artifact(folded_digits, tmp_path, monkeypatch):
    """A SavedModel its writer cannot make is refused (ExportError, exit 2); the ONNX and TF Lite files that
    passed are written, and fold's other outputs (the folded model, the report) too."""
    import json

    from bnfreeze.cli.operations import ExportOptions, fold_file
    from bnfreeze.export import FORMATS

    def broken(model, path, **kwargs):
        raise ExportError("the SavedModel exporter failed (a stand-in for a converter error)")

    monkeypatch.setitem(FORMATS, "savedmodel", (broken, FORMATS["savedmodel"][1]))
    with pytest.raises(ExportError) as caught:
        export(folded_digits, onnx=tmp_path / "a.onnx", savedmodel=tmp_path / "a_saved", tflite=tmp_path / "a.tflite")
    assert "a_saved: the SavedModel exporter failed" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "a.tflite"]

    source = tmp_path / "digits.keras"
    folded_digits.save(source)
    out = tmp_path / "out"
    out.mkdir()
    exports = ExportOptions(onnx=out / "m.onnx", savedmodel=out / "m_saved", tflite=out / "m.tflite")
    with pytest.raises(ExportError) as caught:
        fold_file(source, out / "m.keras", report=out / "report.json", exports=exports, atol=1e-5, rtol=1e-4)
    assert "written:" in str(caught.value) and str(out / "m.keras") in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == ["m.keras", "m.onnx", "m.tflite", "report.json"]
    report = json.loads((out / "report.json").read_text())
    refused = [a for a in report["artifacts"] if a.get("written") is False]
    assert [a["kind"] for a in refused] == ["savedmodel"] and "exporter failed" in refused[0]["error"]
    assert keras.models.load_model(out / "m.keras") is not None


def test_peer_leaves_bn_nodes_that_bnfreeze_folds(tmp_path):
    """tf2onnx alone keeps a BN after a Dense as Mul+Add; the folded export has none."""
    inputs = keras.Input((6,), name="x")
    x = layers.Dense(5, name="d")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, layers.ReLU(name="act")(x))
    randomize_bn(model)
    unfolded = export(model, onnx=tmp_path / "peer.onnx")[0]
    assert unfolded.details["bn_derived_nodes"] >= 2
    proto = onnx.load(str(tmp_path / "peer.onnx"))
    assert len(bn_derived_nodes(proto, ["bn"])) >= 2
    folded = export(bnfreeze.fold(model).model, onnx=tmp_path / "folded.onnx")[0]
    assert folded.details["bn_derived_nodes"] == 0


def test_a_model_that_cannot_run_at_its_declared_shape_is_bad_input(tmp_path):
    # the outer input has None spatial dims, the nested model accepts only 8x8: an internal error before
    a = keras.Input((8, 8, 3))
    inner = keras.Model(a, layers.Conv2D(4, 3)(a), name="inner")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, inner(inputs), name="outer")
    with pytest.raises(bnfreeze.InputError, match=r"outer does not run on inputs of its declared shape"):
        export(model, onnx=tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind,name", [("onnx", "m.onnx"), ("tflite", "m.tflite"), ("savedmodel", "m_sm")])
def test_a_model_keras_cannot_trace_is_refused_in_one_line(tmp_path, kind, name):
    # bilinear UpSampling2D with unknown spatial dims cannot be traced as a graph (Keras tests a symbolic
    # shape as a Python bool): an internal error before
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.UpSampling2D(2, interpolation="bilinear")(inputs))
    with pytest.raises(ExportError, match=r"Keras cannot trace the model .* \(in UpSampling2D\.call\)"):
        export(model, **{kind: tmp_path / name})
    assert list(tmp_path.iterdir()) == []
