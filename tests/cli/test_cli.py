"""The command line, run as a user runs it: exit codes, outputs, bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import bnfreeze, digest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def model_copy(tmp_path, example_model_path):
    target = tmp_path / "digits_cnn.keras"
    shutil.copy(example_model_path, target)
    return target


def test_fold_writes_default_output_and_report(model_copy, tmp_path):
    before = digest(model_copy)
    report = tmp_path / "report.json"
    proc = bnfreeze("fold", model_copy, "--report", report)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "digits_cnn.folded.keras"
    assert out.exists()
    assert digest(model_copy) == before
    data = json.loads(report.read_text())
    assert set(data) == {"model", "output", "folded", "kept", "dropped", "structure", "default_call", "parity"}
    assert data["output"] == str(out)
    assert [f["bn"] for f in data["folded"]] == ["bn1", "bn2", "bn3"]
    assert all(f["direction"] == "backward" for f in data["folded"])
    assert set(data["parity"]) == {"max_abs", "max_rel", "samples", "passed", "tolerance", "runs"}
    assert data["parity"]["tolerance"] == {"atol": 1e-5, "rtol": 1e-4, "check": "max", "dtype": "float32"}
    assert data["parity"]["passed"] and data["parity"]["max_abs"] < 1e-5
    assert "folded 3 of 3" in proc.stdout
    # refuses to replace without --force, and leaves the file as it was
    stamp = digest(out)
    proc = bnfreeze("fold", model_copy)
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert digest(out) == stamp
    assert bnfreeze("fold", model_copy, "--force").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_cnn.folded.keras", "digits_cnn.keras", "report.json"]


def test_folded_model_loads_without_bnfreeze(model_copy, tmp_path):
    out = tmp_path / "plain.keras"
    assert bnfreeze("fold", model_copy, "-o", out).returncode == 0
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({str(out)!r})\n"
        "assert not any(k.startswith('bnfreeze') for k in sys.modules), 'bnfreeze was imported'\n"
        "assert not any(type(l).__name__ == 'BatchNormalization' for l in m.layers)\n"
        "print(m(np.zeros((1, 8, 8, 1), 'float32')).shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "(1, 10)" in proc.stdout


def test_parity_failure_writes_nothing_and_exits_1(model_copy, tmp_path):
    proc = bnfreeze("fold", model_copy, "--atol", 0, "--rtol", 0, "--report", tmp_path / "r.json")
    assert proc.returncode == 1
    assert "differs" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_cnn.keras"]


def test_output_equal_to_input_is_refused(model_copy):
    before = digest(model_copy)
    proc = bnfreeze("fold", model_copy, "-o", model_copy, "--force")
    assert proc.returncode == 2 and "never overwrites its input" in proc.stderr
    assert digest(model_copy) == before


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("missing.keras", None, "no such file"),
        ("text.keras", b"not a model", "not a Keras model archive"),
        ("weights.h5", b"not hdf5 at all", "not an HDF5 file"),
        ("model.onnx", b"x", "is an ONNX file; this command needs the Keras model"),
        ("model.pt", b"x", "unknown model format"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    proc = bnfreeze("fold", path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if content is not None else [])


def test_truncated_model(tmp_path, example_model_path):
    path = tmp_path / "cut.keras"
    path.write_bytes(example_model_path.read_bytes()[:4000])
    proc = bnfreeze("fold", path)
    assert proc.returncode == 2 and "cut.keras" in proc.stderr and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = bnfreeze("--debug", "fold", tmp_path / "missing.keras")
    assert proc.returncode == 2 and "Traceback" in proc.stderr  # the same exit code as without --debug
    assert proc.stderr.strip().splitlines()[-1].startswith("bnfreeze: error: ")


def _save_with_lambda(path):
    code = (
        "import keras\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),"
        " keras.layers.Lambda(lambda x: x * 2.0)])\n"
        f"m.save({str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)


def test_lambda_needs_unsafe(tmp_path):
    path = tmp_path / "lam.keras"
    _save_with_lambda(path)
    proc = bnfreeze("fold", path)
    assert proc.returncode == 2 and "--unsafe" in proc.stderr
    proc = bnfreeze("fold", path, "--unsafe")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lam.folded.keras").exists()


def test_unknown_custom_layer(tmp_path):
    path = tmp_path / "custom.keras"
    code = (
        "import keras\n"
        "@keras.saving.register_keras_serializable('t')\n"
        "class Twice(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2 * x\n"
        "m = keras.Sequential([keras.Input((4,)), Twice(), keras.layers.Dense(2)])\n"
        f"m.save({str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    proc = bnfreeze("fold", path)
    assert proc.returncode == 2 and "Twice" in proc.stderr and "custom.keras" in proc.stderr


def test_legacy_h5(tmp_path):
    path = tmp_path / "legacy.h5"
    code = (
        "import keras\n"
        "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])\n"
        f"m.save({str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300)
    proc = bnfreeze("fold", path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "legacy.folded.keras").exists()


def test_inspect(example_model_path, tmp_path):
    proc = bnfreeze("inspect", example_model_path, "--json", tmp_path / "plan.json")
    assert proc.returncode == 0, proc.stderr
    assert "fold backward into conv1" in proc.stdout
    rows = json.loads((tmp_path / "plan.json").read_text())
    assert [r["layer"] for r in rows] == ["bn1", "bn2", "bn3"]


def test_an_output_naming_a_folder_never_deletes_it(model_copy, tmp_path):
    # before: the folder was removed with everything in it (the input model too), and the output put in its place
    notes = tmp_path / "notes.txt"
    notes.write_text("precious")
    before = digest(model_copy)
    for args in (("fold", model_copy, "-o", tmp_path / "o.keras", "--report", tmp_path, "--force"),
                 ("export", model_copy, "--savedmodel", tmp_path, "--force"),
                 ("verify", model_copy, model_copy, "--json", tmp_path)):
        proc = bnfreeze(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert ("holds the input" in proc.stderr or "is a folder" in proc.stderr), proc.stderr
        assert digest(model_copy) == before and notes.read_text() == "precious"


def test_two_outputs_at_one_path_are_refused(model_copy, tmp_path):
    # before: the report was renamed into place, then the model's rename found it and failed (exit 2, a file
    # written), or with --force the model silently replaced the report (exit 0, no report)
    out = tmp_path / "a.keras"
    for extra in ((), ("--force",)):
        proc = bnfreeze("fold", model_copy, "-o", out, "--report", out, *extra)
        assert proc.returncode == 2 and "given for two outputs" in proc.stderr, proc.stderr
        assert not out.exists()
    proc = bnfreeze("verify", model_copy, model_copy, "--json", tmp_path / "r.x", "--junit", tmp_path / "r.x")
    assert proc.returncode == 2 and "given for two outputs" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [model_copy.name]


def test_no_output_ever_replaces_an_input(model_copy, tmp_path, repo):
    # before: verify --json REF replaced the reference model by JSON (exit 0); recalibrate --report DATA --force
    # replaced the calibration data
    data = tmp_path / "calib.npy"
    shutil.copy(repo / "models" / "digits_calib.npy", data)
    onnx = tmp_path / "m.onnx"
    assert bnfreeze("export", model_copy, "--onnx", onnx).returncode == 0
    inputs = {path: digest(path) for path in (model_copy, data, onnx)}
    for args in (("verify", model_copy, onnx, "--json", model_copy),
                 ("verify", model_copy, onnx, "--junit", onnx, "--force"),
                 ("recalibrate", model_copy, "--calib-data", data, "--report", data, "--force"),
                 ("recalibrate", model_copy, "--calib-data", tmp_path / "*.npy", "-o", tmp_path / "r.keras",
                  "--report", data, "--force"),
                 ("inspect", model_copy, "--json", model_copy, "--force"),
                 ("fold", model_copy, "--data", data, "--report", data, "--force")):
        proc = bnfreeze(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("bnfreeze: error: ") and "is an input of this command" in proc.stderr
        assert {path: digest(path) for path in inputs} == inputs
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in inputs)


def test_verify_replaces_an_existing_report_only_with_force(model_copy, tmp_path):
    report = tmp_path / "r.json"
    report.write_text("old")
    proc = bnfreeze("verify", model_copy, model_copy, "--json", report)
    assert proc.returncode == 2 and "already exists; pass --force" in proc.stderr and report.read_text() == "old"
    proc = bnfreeze("verify", model_copy, model_copy, "--json", report, "--force")
    assert proc.returncode == 0 and json.loads(report.read_text())


def test_an_internal_error_is_one_line(monkeypatch, model_copy):
    # Keras wraps a layer's error in a header and the layer's arguments (whole arrays): the message printed
    # for exit 3 was dozens of lines of numbers; now the line with the reason
    from click.testing import CliRunner

    import bnfreeze.cli.operations as operations
    from bnfreeze.cli.main import main

    def fails(*args, **kwargs):
        raise ValueError("Exception encountered when calling Conv2D.call().\n\nthe real reason\n\n"
                         "Arguments received by Conv2D.call():\n  • inputs=tf.Tensor(\n[[1 2]\n [3 4]])")

    monkeypatch.setattr(operations, "fold_file", fails)
    result = CliRunner().invoke(main, ["fold", str(model_copy)])
    assert result.exit_code == 3
    assert result.output.strip() == ("bnfreeze: internal error: ValueError: the real reason (rerun with --debug)")


def test_the_command_list_is_not_cut_at_80_columns():
    from click.testing import CliRunner

    from bnfreeze.cli.main import main

    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    commands = result.output.split("Commands:")[1].strip().splitlines()
    assert len(commands) == 7 and not any(line.rstrip().endswith("...") for line in commands), result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
