"""``bnfreeze quantize`` from the command line: outputs, report, exit codes, refusals."""

import json
import re
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from keras import layers

from bnfreeze.cli import main
from support import bnfreeze, digest


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory, example_model_path):
    target = tmp_path_factory.mktemp("model") / "digits_cnn.keras"
    shutil.copy(example_model_path, target)
    return target


def test_quantize_writes_both_files_and_the_report(model_copy, repo, tmp_path):
    before = digest(model_copy)
    proc = bnfreeze("quantize", model_copy, "--calib-data", repo / "models" / "digits_calib.npy",
                    "--tflite", tmp_path / "m.tflite", "--onnx", tmp_path / "m.onnx",
                    "--eval-data", repo / "models" / "digits_test.npz", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert digest(model_copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.tflite", "r.json"]
    lines = proc.stdout.splitlines()
    assert lines[-3:] == [f"wrote {tmp_path / 'm.tflite'}", f"wrote {tmp_path / 'm.onnx'}", f"wrote {tmp_path / 'r.json'}"]
    for name in ("m.tflite", "m.onnx"):  # a CI log cuts nothing: each file, its verdict and its figures on one line
        row = next(line for line in lines if line.startswith(f"  {tmp_path / name} ("))
        assert "passed" in row and "top-1 agreement" in row and "BN-derived ops left 0" in row, row
    assert "folded 3 of 3 BatchNormalization layers" in proc.stdout
    assert "accuracy on 360 labelled samples: float 0.99" in proc.stdout
    assert "criterion: probs: top-1 agreement >= 0.99: passed" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"] == str(model_copy) and report["passed"] is True
    assert [a["kind"] for a in report["artifacts"]] == ["tflite", "onnx"]
    for artifact in report["artifacts"]:
        assert artifact["bn_derived_ops"] == 0 and artifact["top1_agreement"] >= 0.98
        assert artifact["bytes"] == (tmp_path / f"m.{artifact['kind']}").stat().st_size
        assert artifact["weights"] == {"int8": 4} and artifact["per_channel_weights"] == 4
    assert report["artifacts"][0]["io"] == "int8" and report["artifacts"][0]["ops"]["CONV_2D"] == 2
    assert len(report["fold"]["folded"]) == 3 and report["float_accuracy"] > 0.98


def test_a_failed_check_exits_1_and_writes_nothing(model_copy, repo, tmp_path):
    result = run("quantize", model_copy, "--calib-data", repo / "models" / "digits_calib.npy",
                 "--tflite", tmp_path / "m.tflite", "--report", tmp_path / "r.json", "--check", "snr", "--min-snr", 80)
    assert result.exit_code == 1, result.output
    assert "does not follow the float model" in result.output and "< 80 dB" in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--calib-data", "missing.npy", "--tflite", "{tmp}/m.tflite"], "missing.npy: no such file or folder"),
    (["--calib-data", "{repo}/models/digits_test.npz", "--tflite", "{tmp}/m.tflite", "--eval-data", "{tmp}/bad.npy"],
     "bad.npy: digits has shape (3, 5), the model expects (N, 8, 8, 1)"),
    (["--calib-data", "{tmp}/truncated.npy", "--onnx", "{tmp}/m.onnx"], "truncated.npy: not a readable NumPy file"),
    (["--calib-data", "{repo}/models/digits_calib.npy"], "nothing to write: give --tflite"),
    (["--calib-data", "{repo}/models/digits_calib.npy", "--onnx", "{tmp}/m.onnx", "--io", "uint8"], "--io sets the TFLite"),
    (["--calib-data", "{repo}/models/digits_calib.npy", "--tflite", "{tmp}/m.tflite", "--check", "snr",
      "--min-top1", "0.9"], "--min-top1 applies to --check top1"),
    (["--calib-data", "{repo}/models/digits_calib.npy", "--tflite", "{tmp}/exists.tflite"],
     "exists.tflite: already exists; pass --force"),
])
def test_bad_input_exits_2_with_one_line(model_copy, repo, tmp_path, args, message):
    np.save(tmp_path / "bad.npy", np.zeros((3, 5), np.float32))
    (tmp_path / "truncated.npy").write_bytes((repo / "models" / "digits_calib.npy").read_bytes()[:100])
    (tmp_path / "exists.tflite").write_bytes(b"old")
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(tmp=tmp_path, repo=repo) for a in args]
    result = run("quantize", model_copy, *args)
    assert result.exit_code == 2, result.output
    # one message; before it, in a log, only the lines of the steps that ran (loading the model reads its inputs)
    lines = result.output.splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("bnfreeze: error:") and message in lines[-1], result.output
    assert all(line.endswith(" ...") for line in lines[:-1]), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "exists.tflite").read_bytes() == b"old"


def test_a_damaged_model_exits_2(tmp_path, repo):
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 not really a zip")
    proc = bnfreeze("quantize", tmp_path / "broken.keras", "--calib-data", repo / "models" / "digits_calib.npy",
                    "--tflite", tmp_path / "m.tflite")
    assert proc.returncode == 2 and "broken.keras" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.keras"]


@pytest.fixture(scope="module")
def sin_model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("sin")
    inputs = keras.Input((8,), name="x")
    hidden = layers.BatchNormalization(name="bn")(layers.Dense(8, name="d1")(inputs))
    keras.Model(inputs, layers.Dense(4, name="d2")(keras.ops.sin(hidden))).save(folder / "sin.keras")
    np.save(folder / "calib.npy", np.random.default_rng(0).standard_normal((32, 8)).astype("float32"))
    return folder


def test_a_model_the_converter_cannot_fully_quantize_is_refused_unless_allowed(sin_model_path, tmp_path):
    model, calib = sin_model_path / "sin.keras", sin_model_path / "calib.npy"
    result = run("quantize", model, "--calib-data", calib, "--tflite", tmp_path / "m.tflite", "--check", "snr")
    assert result.exit_code == 1, result.output  # the result misses the gate (fully int8): a failed check
    assert "left 1 op in float, so the model is not fully int8: SIN" in result.output
    assert "--allow-float-ops" in result.output and list(tmp_path.iterdir()) == []
    result = run("quantize", model, "--calib-data", calib, "--tflite", tmp_path / "m.tflite", "--check", "snr",
                 "--allow-float-ops", "--min-snr", 20, "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert re.search(r"SIN \(\w+/Sin\) computes in float, between quantized ops", " ".join(result.output.split()))
    (artifact,) = json.loads((tmp_path / "r.json").read_text())["artifacts"]
    assert [op["op"] for op in artifact["float_ops"]] == ["SIN"]
    assert (tmp_path / "m.tflite").exists()


def test_batch_size_fixes_the_files_batch_dimension(model_copy, repo, tmp_path):
    """A fixed-shape int8 file (what a microcontroller runtime needs), like export --batch-size; 256
    calibration samples are not a multiple of 3: the last batch is filled up, every sample is compared."""
    import onnx
    import tensorflow as tf

    proc = bnfreeze("quantize", model_copy, "--calib-data", repo / "models" / "digits_calib.npy",
                    "--tflite", tmp_path / "m.tflite", "--onnx", tmp_path / "m.onnx", "--batch-size", 3,
                    "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    interpreter = tf.lite.Interpreter(str(tmp_path / "m.tflite"))
    (detail,) = interpreter.get_input_details()
    assert list(detail["shape_signature"]) == [3, 8, 8, 1] and list(detail["shape"]) == [3, 8, 8, 1]
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 3
    report = json.loads((tmp_path / "r.json").read_text())
    assert [a["batch_size"] for a in report["artifacts"]] == [3, 3]
    assert report["evaluation"]["samples"] == 256 and report["passed"]
    assert "(tflite, int8 I/O, batch 3," in proc.stdout


def test_a_float16_model_is_refused_in_one_line_before_any_work(tmp_path):
    """onnxruntime's QuantizeLinear takes float32: a mixed_float16 model was an invalid graph (exit 3)."""
    x = keras.Input((6, 6, 3), name="image")
    h = layers.BatchNormalization(dtype="mixed_float16")(layers.Conv2D(4, 3, dtype="mixed_float16", name="conv")(x))
    model = keras.Model(x, layers.Dense(3, dtype="float32")(layers.Flatten()(h)))
    path = tmp_path / "half.keras"
    model.save(path)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).normal(size=(8, 6, 6, 3)).astype("float32"))
    result = run("quantize", path, "--calib-data", tmp_path / "calib.npy", "--onnx", tmp_path / "q.onnx")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"bnfreeze: error: {path}: conv computes in float16 (mixed_float16 policy)"), line
    assert not (tmp_path / "q.onnx").exists()
