"""``bnfreeze recalibrate`` from the command line: outputs, chaining, data formats, bad input."""

import json
import re
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
        "complex.npy": (lambda p: np.save(p, good.astype(np.complex64)), "complex numbers"),
        "bool.npy": (lambda p: np.save(p, good > 0.5), "booleans"),
        "images.npz": (lambda p: np.savez(p, images=good), "needs arrays named"),
        "records.tfrecord": (lambda p: p.write_bytes(b"not a TFRecord file, only text" * 8), "not a readable TFRecord"),
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
    assert proc.returncode == 2 and "is an input of this command" in proc.stderr
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--eval-data", calib, "-o", tmp_path / "n.keras")
    assert proc.returncode == 2 and "labels" in proc.stderr and not (tmp_path / "n.keras").exists()
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--memory-budget", "lots")
    assert proc.returncode == 2 and "memory budget" in proc.stderr


def test_a_missing_data_file_is_reported_before_an_existing_output(model_copy, tmp_path):
    out = tmp_path / "out.keras"
    out.write_text("precious")
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", tmp_path / "absent.npy", "-o", out)
    assert proc.returncode == 2 and "absent.npy: no such file" in proc.stderr, proc.stderr
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib_path(), "--eval-data", tmp_path / "no.npz",
                    "-o", out)
    assert proc.returncode == 2 and "no.npz: no such file" in proc.stderr
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", str(tmp_path / "shards-*.tfrecord"), "-o", out)
    assert proc.returncode == 2 and "matches no files" in proc.stderr
    assert out.read_text() == "precious"


def calib_path():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "models" / "digits_calib.npy"


def test_one_sample_warns_and_strict_fails_with_nothing_written(model_copy, calib, tmp_path):
    one = tmp_path / "one.npy"
    np.save(one, np.load(calib)[:1])
    out, report = tmp_path / "o.keras", tmp_path / "o.json"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", one, "-o", out, "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert "(exact, 1 sample, 3 passes)" in " ".join(proc.stdout.split())
    text = " ".join(proc.stdout.split())
    assert "warning: only 1 calibration sample" in text and "warning: bn3: variance ratio" in text
    summary = json.loads(report.read_text())
    assert summary["samples"] == 1 and isinstance(summary["samples"], int)
    assert {w["kind"] for w in summary["warnings"]} == {"few_samples", "extreme_change"}
    assert all(bn["samples"] == 1 for bn in summary["batch_norms"]) and summary["batch_norms"][0]["values"] == 64
    out.unlink(), report.unlink()
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", one, "-o", out, "--report", report, "--strict", "--fold")
    assert proc.returncode == 1, proc.stderr
    assert "--strict" in proc.stderr and "only 1 calibration sample" in proc.stderr
    assert not out.exists() and not report.exists()
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", one, "--mode", "fixed-batch", "-o", out)
    assert "fixed-batch used 1 sample, fewer than --batch-size 32" in " ".join(proc.stdout.split())
    assert "(fixed-batch, 1 sample, 1 pass)" in " ".join(proc.stdout.split())


def test_progress_counts_passes_and_names_levels_like_the_table(model_copy, calib, tmp_path):
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", calib, "--max-samples", "100", "-o", tmp_path / "p.keras")
    assert proc.returncode == 0, proc.stderr
    assert "exact: pass 3/3 (BN level 2)" in proc.stderr  # a log shows the last bar only
    assert "BN level 3" not in proc.stderr
    levels = re.findall(r"^  \S+: level (\d+),", proc.stdout, re.M)  # one plain line per BN in a log
    assert sorted(levels) == ["0", "1", "2"], proc.stdout


def test_rescale_takes_a_fraction(model_copy, repo, tmp_path):
    import tensorflow as tf

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(np.load(repo / "models" / "digits_calib.npy")[:4]):
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(np.round(image * 255).astype(np.uint8)).numpy())
    reports = {}
    for scale in ("1/255", str(1 / 255)):
        report = tmp_path / f"{len(reports)}.json"
        proc = bnfreeze("recalibrate", model_copy, "--calib-data", folder, "--rescale", scale, "-o",
                        tmp_path / f"{len(reports)}.keras", "--report", report)
        assert proc.returncode == 0, proc.stderr
        reports[scale] = json.loads(report.read_text())["batch_norms"]
    assert reports["1/255"] == reports[str(1 / 255)]
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", folder, "--rescale", "1/0")
    assert proc.returncode == 2 and "fraction such as 1/255" in proc.stderr


def test_tfrecords_of_images_from_a_glob(model_copy, repo, tmp_path):
    import tensorflow as tf

    images = np.load(repo / "models" / "digits_calib.npy")[:40]
    (tmp_path / "shards").mkdir()
    for part in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / "shards" / f"train-{part}.tfrecord")) as writer:
            for image in images[part * 20:(part + 1) * 20]:
                png = tf.io.encode_png(np.round(image * 255).astype(np.uint8)).numpy()
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    report = tmp_path / "r.json"
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", str(tmp_path / "shards" / "*.tfrecord"),
                    "--feature", "image/encoded", "--feature-type", "image", "--rescale", "1/255",
                    "-o", tmp_path / "r.keras", "--report", report)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["samples"] == 40
    with tf.io.TFRecordWriter(str(tmp_path / "shards" / "train-2.tfrecord")) as writer:
        feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x89PNG broken"]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    proc = bnfreeze("recalibrate", model_copy, "--calib-data", str(tmp_path / "shards" / "*.tfrecord"),
                    "-o", tmp_path / "x.keras")
    assert proc.returncode == 2, proc.stderr
    assert "train-2.tfrecord: record 1: feature 'image/encoded' (an encoded image) is not a decodable image" in proc.stderr
    assert not (tmp_path / "x.keras").exists()


SUBCLASS = '''
import keras


@keras.saving.register_keras_serializable(package="cli_test")
class DoublingBN(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        return super().call(inputs * 2.0, training=training, mask=mask)
'''


def test_a_bn_subclass_is_named_with_its_reason_and_a_model_of_only_those_is_refused_by_file(tmp_path):
    """Every BN appears in the output: a subclass as 'not recalibrated' with its reason."""
    module = tmp_path / "custom.py"
    module.write_text(SUBCLASS)
    script = (f"import sys, keras; sys.path.insert(0, {str(tmp_path)!r}); from custom import DoublingBN\n"
              "i = keras.Input((4,)); h = DoublingBN(name='doubling')(keras.layers.Dense(3)(i))\n"
              f"keras.Model(i, keras.layers.BatchNormalization(name='bn')(h)).save({str(tmp_path / 'two.keras')!r})\n"
              f"keras.Model(i, h).save({str(tmp_path / 'one.keras')!r})\n")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(1, 2, (120, 4)).astype(np.float32))
    proc = bnfreeze("recalibrate", tmp_path / "two.keras", "--calib-data", tmp_path / "d.npy", "--custom-objects",
                    module, "--unsafe", "-o", tmp_path / "two.r.keras", "--report", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "not recalibrated: doubling is a subclass of BatchNormalization" in text
    assert json.loads((tmp_path / "r.json").read_text())["kept"][0]["name"] == "doubling"
    proc = bnfreeze("recalibrate", tmp_path / "one.keras", "--calib-data", tmp_path / "d.npy", "--custom-objects",
                    module, "--unsafe", "-o", tmp_path / "one.r.keras")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert f"{tmp_path / 'one.keras'}: has no BatchNormalization layer bnfreeze can reach; doubling is a subclass" in line
    assert not (tmp_path / "one.r.keras").exists()


@pytest.mark.parametrize("args,message", [
    (["--rescale", "0"], "Invalid value for '--rescale': '0': the factor must be a non-zero number"),
    (["--rescale", "nan"], "Invalid value for '--rescale': 'nan': the factor must be a non-zero number"),
    (["--rescale", "1e39"], "Invalid value for '--rescale': '1e39': the factor must be a non-zero number"),
    (["--fold", "--atol", "nan"], "tolerances must be >= 0 (atol=nan"),
    (["--fold", "--rtol", "-1"], "tolerances must be >= 0"),
])
def test_bad_numbers_are_refused_before_any_work(model_copy, calib, tmp_path, args, message):
    """One line, exit 2, before the model is even loaded (no 'loading' line, nothing written)."""
    from click.testing import CliRunner

    from bnfreeze.cli import main

    result = CliRunner().invoke(main, ["recalibrate", str(model_copy), "--calib-data", str(calib),
                                       "-o", str(tmp_path / "out.keras"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "loading" not in result.output, result.output
    assert not (tmp_path / "out.keras").exists()


def test_a_symbolic_link_loop_as_the_model_says_so(tmp_path):
    from click.testing import CliRunner

    from bnfreeze.cli import main

    loop = tmp_path / "loop.keras"
    loop.symlink_to(loop)
    result = CliRunner().invoke(main, ["fold", str(loop)])
    assert result.exit_code == 2
    assert f"{loop}: too many levels of symbolic links (a symbolic link that leads to no file)" in result.output
