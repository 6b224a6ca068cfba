"""``bnfreeze report``: a self-contained page with its plots, rendered by headless Chromium."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from support import bnfreeze


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
    return out


def test_page_is_self_contained_with_every_section(page):
    text = page.read_text()
    assert re.findall(r'(?:src|href)\s*=\s*"(?!#|data:)', text) == []  # nothing fetched from elsewhere
    assert "<script" not in text
    plots = re.findall(r'data-plot="(\w+)"', text)
    assert plots == ["histogram", "bars", "bars", "histogram"]  # scales, min variance, mean shift, parity
    for needle in ("Fold plan", "fold backward into conv1", "negative scale", "Recalibration", "Parity", "bn3"):
        assert needle in text
    assert len(re.findall(r'class="bar"', text)) > 20


def test_bad_output_and_existing_file(page, repo, tmp_path):
    model = repo / "models" / "digits_cnn.keras"
    proc = bnfreeze("report", model, "-o", tmp_path / "r.txt")
    assert proc.returncode == 2 and ".html" in proc.stderr
    existing = tmp_path / "r.html"
    existing.write_text("mine")
    proc = bnfreeze("report", model, "-o", existing)
    assert proc.returncode == 2 and existing.read_text() == "mine"


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("BNFREEZE_REQUIRE_CHROMIUM"):
        pytest.fail("BNFREEZE_REQUIRE_CHROMIUM is set but no chromium is installed")
    pytest.skip("headless Chromium not installed (.ci/run installs Debian's chromium)")


def test_page_renders_in_headless_chromium(page, tmp_path):
    import tensorflow as tf

    chromium = _chromium()
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 4 and "Parity: original vs folded" in dom.stdout
    shot = tmp_path / "shot.png"
    proc = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1000,2600", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = tf.io.decode_png(shot.read_bytes(), channels=3).numpy()
    blue = np.all(np.abs(pixels.astype(int) - [0x3B, 0x6E, 0xA8]) < 12, axis=-1)
    assert blue.sum() > 5000  # the plots' bars were drawn
    rows = np.nonzero(blue.any(axis=1))[0]
    assert rows.max() - rows.min() > 1200  # in several plots down the page
