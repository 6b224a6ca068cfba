"""``bnfreeze recalibrate`` from the command line: outputs, chaining, data formats, bad input."""

import json
import shutil

import numpy as np
import pytest

from support import bnfreeze, digest, loads_without_bnfreeze


@pytest.fixture()
def model_copy(tmp_path, example_model_path):
    target = tmp_path / "digits_cnn.keras"
    shutil.copy(example_model_path, target)
    return target


@pytest.fixture()
def calib(repo):
    return repo / "models" / "digits_calib.npy"


def test_recalibrate_fold_export_in_one_command(model_copy, calib, repo, tmp_path):
    before = digest(model_copy)
    report = tmp_path / "report.json"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--eval-data", repo / "models" / "digits_test.npz",
                    "--fold", "--onnx", tmp_path / "m.onnx", "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert digest(model_copy) == before
    recalibrated = tmp_path / "digits_cnn.recalibrated.keras"
    folded = tmp_path / "digits_cnn.recalibrated.folded.keras"
    assert recalibrated.exists() and folded.exists() and (tmp_path / "m.onnx").exists()
    summary = json.loads(report.read_text())
    assert summary["mode"] == "exact" and summary["samples"] == 256 and summary["passes"] == 3
    assert [bn["name"] for bn in summary["batch_norms"]] == ["bn1", "bn2", "bn3"]
    assert summary["accuracy"]["after"] > 0.95
    assert len(summary["fold"]["folded"]) == 3
    assert summary["artifacts"][0]["bn_derived_nodes"] == 0
    assert "samples/s" in proc.stderr
    for path in (recalibrated, folded):
        assert "(1, 10)" in loads_without_bnfreeze(path, (8, 8, 1))


@pytest.mark.parametrize("mode", ["precise", "ema", "fixed-batch"])
def test_other_modes(model_copy, calib, tmp_path, mode):
    out = tmp_path / f"{mode}.keras"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--mode", mode, "--batch-size", "64",
                    "--max-samples", "100", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    assert f"({mode}" in proc.stdout


def test_distribute_mirrored_on_the_local_devices(model_copy, calib, tmp_path):
    report = tmp_path / "r.json"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--distribute", "mirrored", "--max-samples", "64",
                    "-o", tmp_path / "m.keras", "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["replicas"] >= 1


def test_image_folder_with_rescale(model_copy, repo, tmp_path):
    import tensorflow as tf

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    images = np.load(repo / "models" / "digits_calib.npy")[:20]
    for i, image in enumerate(images):
        png = tf.io.encode_png(tf.constant(np.round(image * 255).astype(np.uint8)))
        (folder / ("sub" if i % 2 else "") / f"{i:03d}.png").write_bytes(png.numpy())
    out = tmp_path / "from_images.keras"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", folder, "--rescale", str(1 / 255), "-o", out,
                    "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["samples"] == 20
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", folder, "-o", tmp_path / "x.keras")
    assert proc.returncode == 2
    assert "broken.png: not a readable image" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.keras").exists()


def bad_data(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.random((10, 8, 8, 1)).astype(np.float32)
    nan = good.copy()
    nan[7, 3, 3, 0] = np.nan
    cases = {
        "shape.npy": (lambda p: np.save(p, rng.random((10, 9, 9, 1)).astype(np.float32)), "shape"),
        "nan.npy": (lambda p: np.save(p, nan), "NaN or Inf"),
        "empty.npy": (lambda p: np.save(p, good[:0]), "no samples"),
        "object.npy": (lambda p: np.save(p, np.array([{"a": 1}] * 10, dtype=object), allow_pickle=True),
                       "pickled or object"),
        "strings.npz": (lambda p: np.savez(p, x=np.array(["a"] * 10)), "not numbers"),
        "zero.npy": (lambda p: p.write_bytes(b""), "empty"),
        "truncated.npy": (lambda p: p.write_bytes(b"\x93NUMPY\x01\x00"), "not a readable NumPy file"),
        "names.npz": (lambda p: np.savez(p, a=good, b=good), "needs arrays named"),
        "labels.npz": (lambda p: np.savez(p, x=good, y=np.zeros(3)), "labels"),
    }
    for name, (write, message) in cases.items():
        path = tmp_path / name
        write(path)
        yield path, message


def test_bad_calibration_data_exits_2_and_writes_nothing(model_copy, tmp_path):
    for path, message in bad_data(tmp_path):
        out = tmp_path / "out.keras"
        proc = bnfreeze("recalibrate", model_copy, "--calib-data", path, "-o", out)
        assert proc.returncode == 2, (path.name, proc.stderr)
        line = proc.stderr.strip().splitlines()[-1]
        assert str(path) in line and message in line, (path.name, line)
        assert "Traceback" not in proc.stderr
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".keras") == ["digits_cnn.keras"]


def test_refusals(model_copy, calib, tmp_path, repo):
    out = tmp_path / "out.keras"
    out.write_text("precious")
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "-o", out)
    assert proc.returncode == 2 and "--force" in proc.stderr and out.read_text() == "precious"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "-o", model_copy, "--force")
    assert proc.returncode == 2 and "input model" in proc.stderr
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--eval-data", calib, "-o", tmp_path / "n.keras")
    assert proc.returncode == 2 and "labels" in proc.stderr and not (tmp_path / "n.keras").exists()
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--memory-budget", "lots")
    assert proc.returncode == 2 and "memory budget" in proc.stderr
