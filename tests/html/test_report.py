"""``bnfreeze report`` end to end: a self-contained page whose charts are read back and rendered in Chromium."""

import re
import subprocess

import numpy as np
import pytest

from chartcheck import CHROME_FLAGS, charts, chromium_path, measure, outside, overlaps, texts
from support import bnfreeze

KINDS = ["scale-histogram", "min-variance", "recalibration", "parity-histogram"]


@pytest.fixture(scope="module")
def page(tmp_path_factory, repo):
    tmp = tmp_path_factory.mktemp("report")
    model = repo / "models" / "digits_cnn.keras"
    recalibrated = tmp / "recal.keras"
    assert bnfreeze("recalibrate", model, "--calib-data", repo / "models" / "digits_calib.npy", "-o",
                    recalibrated).returncode == 0
    out = tmp / "report.html"
    proc = bnfreeze("report", model, "-o", out, "--compare", recalibrated, "--data", repo / "models" / "digits_test.npz")
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr  # every BN of the model is in its recalibrated copy
    assert f"wrote {out}" in proc.stdout.replace("\n", "")
    return out


def test_page_is_self_contained_with_every_section(page, repo):
    text = page.read_text()
    assert re.findall(r'(?:src|href)\s*=\s*"(?!#|data:)', text) == []  # nothing fetched from elsewhere
    assert "<script" not in text and "url(http" not in text
    assert re.findall(r'data-chart="([\w-]+)"', text) == KINDS
    for needle in ("Fold plan", "fold backward into conv1", "negative scale", "Recalibration", "Parity", "bn3"):
        assert needle in text
    data = repo / "models" / "digits_test.npz"
    assert f"360 samples from {data}, 3600 output elements" in text  # not "360 samples (<...>)"
    assert "the fold <span class='pass'>passes</span>" in text


def test_charts_name_every_bn_and_mark_the_tolerance(page):
    found = charts(page.read_text())
    for kind in ("min-variance", "recalibration"):
        labels = [t.text for t in texts(found[kind])]
        assert [n for n in labels if n.startswith("bn")] == ["bn1", "bn2", "bn3"], kind
    parity = [t.text for t in texts(found["parity-histogram"])]
    assert "atol 1e-05" in parity  # float32 defaults
    assert any(label.startswith("rtol 0.0001 × largest |output|") for label in parity)


def test_compare_without_shared_names_warns_and_pages_are_reproducible(repo, tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(name="other_bn")])
    other.save(tmp_path / "other.keras")
    model = repo / "models" / "digits_cnn.keras"
    outputs = [tmp_path / "a.html", tmp_path / "b.html"]
    for out in outputs:
        proc = bnfreeze("report", model, "-o", out, "--compare", tmp_path / "other.keras", "--samples", 3, "--seed", 4)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.startswith(f"bnfreeze: warning: {tmp_path / 'other.keras'} shares no BatchNormalization "
                                      f"name with {model}: expected bn1, bn2 and bn3; it has other_bn"), proc.stderr
    text = outputs[0].read_text()
    assert outputs[1].read_bytes() == outputs[0].read_bytes()  # two runs, the same page
    assert "Warning: " in text and "expected bn1, bn2 and bn3" in text
    assert re.findall(r'data-chart="([\w-]+)"', text) == ["scale-histogram", "min-variance", "parity-histogram"]
    assert "3 random samples (seed 4), 30 output elements" in text


def test_bad_output_and_existing_file(page, repo, tmp_path):
    model = repo / "models" / "digits_cnn.keras"
    proc = bnfreeze("report", model, "-o", tmp_path / "r.txt")
    assert proc.returncode == 2 and ".html" in proc.stderr
    existing = tmp_path / "r.html"
    existing.write_text("mine")
    proc = bnfreeze("report", model, "-o", existing)
    assert proc.returncode == 2 and existing.read_text() == "mine"


def test_page_renders_in_headless_chromium(page, tmp_path):
    from PIL import Image

    chromium = chromium_path()
    dom = subprocess.run([chromium, *CHROME_FLAGS, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 4 and "Parity: original vs folded" in dom.stdout
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium, *CHROME_FLAGS, f"--screenshot={shot}", "--window-size=1400,2600", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = np.all(np.abs(pixels - [0x3B, 0x6E, 0xA8]) < 12, axis=-1)
    assert blue.sum() > 5000  # the charts' bars were drawn
    rows = np.nonzero(blue.any(axis=1))[0]
    assert rows.max() - rows.min() > 1200  # in several charts down the page
    for chart in measure(page, tmp_path):
        assert chart["right"] - chart["left"] >= 1000, chart["chart"]
        assert overlaps(chart["texts"]) == [] and outside(chart) == [], chart["chart"]


def test_a_model_with_a_fixed_batch_size_is_run_at_that_size(tmp_path):
    # before: the page ran 8 random samples (or --samples N) as one batch: an internal error for a model
    # whose input fixes the batch size
    import keras
    from keras import layers

    inputs = keras.Input((6,), batch_size=4)
    model = keras.Model(inputs, layers.BatchNormalization()(layers.Dense(3)(inputs)))
    model.save(tmp_path / "fixed.keras")
    for samples in ("8", "3"):
        proc = bnfreeze("report", tmp_path / "fixed.keras", "-o", tmp_path / "r.html", "--samples", samples, "--force")
        assert proc.returncode == 0, proc.stderr
    np.save(tmp_path / "three.npy", np.zeros((3, 6), "float32"))
    proc = bnfreeze("report", tmp_path / "fixed.keras", "-o", tmp_path / "r.html", "--data", tmp_path / "three.npy",
                    "--force")
    assert proc.returncode == 2 and "fewer samples than the batch size 4" in proc.stderr
