"""bnfreeze verify, as CI uses it: exit codes, JSON, JUnit, devices, config files."""

import json
import xml.etree.ElementTree as ET

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from click.testing import CliRunner
from keras import layers

import bnfreeze
from bnfreeze.cli import main
from bnfreeze.export import export

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, example_model_path):
    folder = tmp_path_factory.mktemp("verify")
    reference = folder / "digits.keras"
    reference.write_bytes(example_model_path.read_bytes())
    folded = bnfreeze.fold(keras.models.load_model(reference)).model
    folded.save(folder / "folded.keras")
    export(folded, onnx=folder / "folded.onnx", savedmodel=folder / "folded_sm", tflite=folder / "folded.tflite")
    # a candidate whose weights were scaled by 1.01
    proto = onnx.load(str(folder / "folded.onnx"))
    for init in proto.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * np.float32(1.01), init.name))
    onnx.save(proto, str(folder / "scaled.onnx"))
    bad = keras.models.load_model(folder / "folded.keras")
    layer = bad.get_layer("conv2")
    layer.kernel.assign(layer.kernel.numpy() * 1.01)
    bad.save(folder / "scaled.keras")
    return folder


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_all_artifacts_pass(built, example_model_path, tmp_path):
    b = built
    result = run("verify", b / "digits.keras", b / "folded.keras", b / "folded.onnx", b / "folded_sm", b / "folded.tflite",
                 "--data", example_model_path.parent / "digits_calib.npy", "--json", tmp_path / "v.json",
                 "--junit", tmp_path / "v.xml")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["passed"] is True
    assert {r["backend"] for r in data["results"]} == {"keras", "onnxruntime", "savedmodel", "tflite"}
    for row in data["results"]:
        assert {"candidate", "backend", "device", "batch_size", "max_abs", "max_rel", "passed", "skipped", "reason"} <= set(row)
        assert row["batch_size"] == 1 and row["passed"] and row["max_abs"] < 1e-5
        assert row["top1_agreement"] == 1.0
    suite = ET.parse(tmp_path / "v.xml").getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "0"


def test_scaled_weights_fail_with_exit_1_and_a_junit_failure(built, tmp_path):
    b = built
    result = run("verify", b / "digits.keras", b / "scaled.onnx", b / "folded.onnx", "--junit", tmp_path / "v.xml")
    assert result.exit_code == 1
    suite = ET.parse(tmp_path / "v.xml").getroot()
    assert suite.get("failures") == "1"
    failed = [case for case in suite.iter("testcase") if case.find("failure") is not None]
    assert len(failed) == 1 and "scaled.onnx" in failed[0].get("name")


def test_locate_names_the_first_diverging_layer(built, tmp_path):
    b = built
    result = run("verify", b / "digits.keras", b / "scaled.keras", "--locate", "--json", tmp_path / "v.json")
    assert result.exit_code == 1
    row = json.loads((tmp_path / "v.json").read_text())["results"][0]
    assert "first diverging layer: conv2" in row["reason"]
    assert "first diverging layer: conv2" in result.output  # the terminal says it too


def test_elementwise_check_is_stricter(built):
    b = built
    assert run("verify", b / "digits.keras", b / "folded.onnx", "--atol", "1e-6", "--rtol", "1e-4").exit_code == 0
    result = run("verify", b / "digits.keras", b / "folded.onnx", "--atol", "1e-9", "--rtol", "1e-9", "--check", "elementwise")
    assert result.exit_code == 1


def test_batched_verification(built):
    b = built
    result = run("verify", b / "digits.keras", b / "folded.tflite", b / "folded.onnx", "--samples", "10", "--batch-size", "4")
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU; the skip path is for machines without one")
def test_gpu_rows_are_skipped_visibly_and_require_gpu_fails(built, tmp_path):
    b = built
    result = run("verify", b / "digits.keras", b / "folded.onnx", b / "folded.tflite", "--device", "all",
                 "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "v.json").read_text())["results"]
    gpu = [r for r in rows if r["device"] == "gpu"]
    assert len(gpu) == 1 and gpu[0]["skipped"] and gpu[0]["reason"]  # tflite has no GPU row
    assert gpu[0]["passed"] is None  # not run: neither passed nor failed
    result = run("verify", b / "digits.keras", b / "folded.onnx", "--device", "gpu", "--require-gpu",
                 "--json", tmp_path / "required.json", "--junit", tmp_path / "required.xml")
    assert result.exit_code == 1
    rows = json.loads((tmp_path / "required.json").read_text())["results"]
    assert [r["passed"] for r in rows if r["device"] == "gpu"] == [False]
    assert 'value="None"' not in (tmp_path / "required.xml").read_text()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow on this machine: GPU rows are skipped")
def test_gpu_rows_run(built, tmp_path):
    b = built
    result = run("verify", b / "digits.keras", b / "folded.onnx", b / "folded_sm", b / "folded.keras", "--device", "gpu",
                 "--require-gpu", "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "v.json").read_text())["results"]
    assert {r["provider"] for r in rows if r["backend"] == "onnxruntime"} == {"CUDAExecutionProvider"}


def test_bad_input_exit_2(built, tmp_path, example_model_path):
    b = built
    nan = np.load(example_model_path.parent / "digits_calib.npy")
    nan[5, 1, 1, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "wrong.npy", nan[:, :4])
    np.save(tmp_path / "obj.npy", np.array([object()] * 3, dtype=object), allow_pickle=True)
    other = keras.Sequential([keras.Input((5,), name="features"), layers.Dense(2)])
    export(other, onnx=tmp_path / "other.onnx")
    cases = [
        ((b / "folded.onnx", "--data", tmp_path / "nan.npy"), "NaN or Inf"),
        ((b / "folded.onnx", "--data", tmp_path / "wrong.npy"), "shape"),
        ((b / "folded.onnx", "--data", tmp_path / "obj.npy"), "pickled or object array"),
        ((tmp_path / "other.onnx",), "input features has shape"),
        ((tmp_path / "missing.onnx",), "no such file"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["verify", str(b / "digits.keras"), *map(str, args)])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_config_file(built, tmp_path, example_model_path):
    b = built
    config = tmp_path / "parity.toml"
    config.write_text(
        "[defaults]\natol = 1e-5\nrtol = 1e-4\n\n"
        f"[[check]]\nreference = '{b / 'digits.keras'}'\n"
        f"candidates = ['{b / 'folded.onnx'}', '{b / 'folded.tflite'}']\n"
        f"data = '{example_model_path.parent / 'digits_calib.npy'}'\n\n"
        f"[[check]]\nreference = '{b / 'digits.keras'}'\ncandidates = ['{b / 'scaled.onnx'}']\nbatch_size = 2\n"
    )
    result = run("verify", "--config", config, "--junit", tmp_path / "v.xml")
    assert result.exit_code == 1
    suite = ET.parse(tmp_path / "v.xml").getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    (tmp_path / "broken.toml").write_text("[[check]]\nreference = 'x.keras'\n")
    result = CliRunner().invoke(main, ["verify", "--config", str(tmp_path / "broken.toml")])
    assert result.exit_code == 2 and "needs a reference and a non-empty candidates list" in result.output


def test_the_documented_ci_config_parses(repo):
    from bnfreeze.verify.config import load_config

    jobs = load_config(repo / "docs" / "ci" / "parity.toml")
    assert len(jobs) == 2 and len(jobs[0].candidates) == 4
    assert jobs[0].reference.resolve() == (repo / "models" / "digits_cnn.keras").resolve()
    float_check, int8_check = (job.verify_kwargs()["tolerance"] for job in jobs)
    assert float_check.checks == ("max",) and float_check.abs_limit == 1e-5
    # the quantized check does not inherit atol/rtol, which top1/snr would not use
    assert int8_check.checks == ("top1", "snr") and int8_check.atol is None and int8_check.top1_limit == 0.98
