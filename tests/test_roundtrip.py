"""fold -> export -> verify round trips on the CPU: the example model (CLI) and the zoo (API)."""

import json

import keras
import pytest
from click.testing import CliRunner
from support import randomize_bn

import bnfreeze
from bnfreeze.cli import main
from bnfreeze.compare import Tolerance
from bnfreeze.export import export
from bnfreeze.verify import verify


def test_example_model_one_command(tmp_path, example_model_path):
    model = tmp_path / "digits.keras"
    model.write_bytes(example_model_path.read_bytes())
    result = CliRunner().invoke(main, [
        "fold", str(model), "--onnx", str(tmp_path / "d.onnx"), "--savedmodel", str(tmp_path / "d_sm"),
        "--tflite", str(tmp_path / "d.tflite"), "--report", str(tmp_path / "r.json"),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [a["kind"] for a in report["artifacts"]] == ["onnx", "savedmodel", "tflite"]
    assert all(a["passed"] for a in report["artifacts"])
    result = CliRunner().invoke(main, [
        "verify", str(model), str(tmp_path / "digits.folded.keras"), str(tmp_path / "d.onnx"), str(tmp_path / "d_sm"),
        str(tmp_path / "d.tflite"), "--data", str(example_model_path.parent / "digits_calib.npy"),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def test_export_refuses_existing_outputs_before_any_work(tmp_path, example_model_path):
    (tmp_path / "d.onnx").write_text("keep me")
    result = CliRunner().invoke(main, ["export", str(example_model_path), "--onnx", str(tmp_path / "d.onnx")])
    assert result.exit_code == 2 and "--force" in result.output
    assert (tmp_path / "d.onnx").read_text() == "keep me"


#: one of each kind of graph (InceptionV3's asymmetric convolutions and concatenations are folded in
#: tests/fold/test_zoo.py; their export is the same code as Xception's and DenseNet's, and the suite must stay
#: under 30 minutes on 2 cores)
ROUND_TRIP = ["ResNet50", "MobileNetV2", "EfficientNetB0", "Xception", "DenseNet121"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_zoo_round_trip(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    randomize_bn(model, seed=3)
    model.save(tmp_path / "reference.keras")
    folded = bnfreeze.fold(model, atol=1e-4, rtol=1e-4)
    folded.model.save(tmp_path / "folded.keras")
    tolerance = Tolerance(atol=1e-4, rtol=1e-4)
    artifacts = export(folded.model, onnx=tmp_path / "m.onnx", tflite=tmp_path / "m.tflite", tolerance=tolerance)
    kept = len(folded.report["kept"])
    # every BN-derived node left in the ONNX graph belongs to a BN that bnfreeze kept
    assert artifacts[0].details["bn_derived_nodes"] <= 2 * kept
    if kept == 0:
        assert artifacts[0].details["bn_derived_nodes"] == 0
    report = verify(tmp_path / "reference.keras", [tmp_path / "folded.keras", tmp_path / "m.onnx", tmp_path / "m.tflite"],
                    samples=2, tolerance=tolerance)
    assert report.passed, [(r.candidate, r.max_rel, r.reason) for r in report.rows]
