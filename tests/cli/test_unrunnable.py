"""A model this machine's TensorFlow cannot run, or data it cannot look up, is bad input in one line.

Issue 23, "also unclear": a channels_first Conv2D on a CPU where TensorFlow has no NCHW kernel (oneDNN off)
ended as exit 3 "internal error" in recalibrate and as "does not run on inputs of its declared shape" in fold.
TensorFlow turns oneDNN off with TF_ENABLE_ONEDNN_OPTS=0, as it is on many machines: each command runs in a
fresh process with it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def channels_first(tmp_path_factory):
    import keras
    from keras import layers

    folder = tmp_path_factory.mktemp("nchw")
    x = keras.Input((3, 8, 8), name="x")
    y = layers.BatchNormalization(axis=1, name="bn")(layers.Conv2D(4, 3, data_format="channels_first", name="c")(x))
    keras.Model(x, layers.Dense(2)(layers.Flatten()(y))).save(folder / "nchw.keras")
    np.save(folder / "calib.npy", np.random.default_rng(0).random((16, 3, 8, 8)).astype("float32"))
    return folder


def _without_onednn(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "bnfreeze.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("command", [
    ("recalibrate", "nchw.keras", "--calib-data", "calib.npy"),
    ("fold", "nchw.keras"),
    ("verify", "nchw.keras", "nchw.keras", "--json", "v.json"),
])
def test_a_model_tensorflow_cannot_run_here_is_one_line_and_exit_2(channels_first, command):
    before = sorted(p.name for p in channels_first.iterdir())
    proc = _without_onednn(*command, cwd=channels_first)
    if proc.returncode == 0:
        pytest.skip("this TensorFlow runs channels_first convolutions on the CPU even without oneDNN")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("bnfreeze")]  # not progress bars
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("bnfreeze: error: nchw.keras: cannot run on this machine"), lines[0]
    assert "NHWC" in lines[0]
    assert sorted(p.name for p in channels_first.iterdir()) == before


def test_ids_beyond_an_embedding_the_checks_cannot_see_are_one_line(tmp_path):
    import keras
    from click.testing import CliRunner
    from keras import layers

    from bnfreeze.cli import main

    tokens = keras.Input((6,), dtype="int32", name="tokens")
    hidden = layers.BatchNormalization(name="bn")(layers.Embedding(50, 4, name="emb")(tokens + 1))  # ids shifted
    keras.Model(tokens, layers.Dense(2)(layers.Flatten()(hidden))).save(tmp_path / "m.keras")
    np.save(tmp_path / "d.npy", np.full((40, 6), 49, "int32"))  # 49 + 1 is beyond the table
    result = CliRunner().invoke(main, ["recalibrate", str(tmp_path / "m.keras"), "--calib-data", str(tmp_path / "d.npy")])
    assert result.exit_code == 2, result.output
    assert "d.npy: holds an id the model cannot look up" in result.output and "= 50 is not in [0, 50)" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "m.keras"]
