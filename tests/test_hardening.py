"""Odd models, determinism, interrupted runs and user code only on request."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import bnfreeze
from support import assert_parity, bn_count, bnfreeze as cli, digest, randomize_bn, randomize_weights


def test_several_hundred_bns_fold():
    import keras
    from keras import layers

    stack = [keras.Input((6,))]
    for i in range(300):
        stack += [layers.Dense(6, name=f"d{i}"), layers.BatchNormalization(name=f"bn{i}"), layers.Activation("tanh")]
    model = keras.Sequential(stack)
    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 300 and bn_count(result.model) == 0


def test_zero_gamma_and_near_zero_variance_fold_exactly():
    import keras
    from keras import layers

    model = keras.Sequential([keras.Input((5, 5, 2)), layers.Conv2D(4, 3, name="conv"), layers.BatchNormalization(name="bn"),
                              layers.ReLU(), layers.Flatten(), layers.Dense(3, name="dense"),
                              layers.BatchNormalization(name="bn2", epsilon=1e-12)])
    randomize_weights(model)
    randomize_bn(model)
    bn = model.get_layer("bn")
    bn.gamma.assign(np.array([0.0, 1.2, -0.7, 0.0], np.float32))
    model.get_layer("bn2").moving_variance.assign(np.array([1e-12, 0.5, 1e-9], np.float32))
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 2
    assert_parity(model, result.model, atol=1e-4)


def test_bn_inside_a_nested_model_used_twice_folds_inside_it():
    import keras
    from keras import layers

    block = keras.Sequential([keras.Input((4,)), layers.Dense(4, name="inner"), layers.BatchNormalization(name="inner_bn"),
                              layers.ReLU()], name="block")
    x = keras.Input((4,))
    model = keras.Model(x, layers.Add()([block(x), block(layers.Dense(4)(x))]))
    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model)
    assert len(result.report["folded"]) == 1 and result.report["folded"][0]["bn"].endswith("inner_bn")
    assert bn_count(result.model) == 0
    assert_parity(model, result.model)


def test_folding_twice_gives_identical_weights(example_model_path, tmp_path):
    for name in ("a.keras", "b.keras"):
        assert cli("fold", example_model_path, "-o", tmp_path / name).returncode == 0
    a = bnfreeze.load_model(tmp_path / "a.keras")
    b = bnfreeze.load_model(tmp_path / "b.keras")
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_leaves_nothing(example_model_path, tmp_path, signum, code):
    data = tmp_path / "big.npy"
    np.save(data, np.random.default_rng(0).random((60000, 8, 8, 1), dtype=np.float32))
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.Popen([sys.executable, "-m", "bnfreeze.cli", "recalibrate", str(example_model_path),
                             "--calib-data", str(data), "--memory-budget", "0", "--batch-size", "8",
                             "-o", str(tmp_path / "out.keras"), "--fold", "--report", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(9)
    assert proc.poll() is None, "finished before the signal: make the run longer"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and "nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_custom_objects_need_unsafe_and_are_imported(tmp_path):
    import keras

    module = tmp_path / "my_layers.py"
    module.write_text(
        "import keras\n"
        "class Twice(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return 2 * x\n"
        "CUSTOM_OBJECTS = {'Twice': Twice}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import my_layers
    finally:
        sys.path.remove(str(tmp_path))
    with keras.saving.custom_object_scope({"Twice": my_layers.Twice}):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="dense"),
                                  keras.layers.BatchNormalization(name="bn"), my_layers.Twice(name="twice")])
        randomize_bn(model)
        model.save(tmp_path / "custom.keras")
    source = tmp_path / "custom.keras"
    before = digest(source)
    proc = cli("fold", source, "-o", tmp_path / "a.keras")
    assert proc.returncode == 2 and "Twice" in proc.stderr
    proc = cli("fold", source, "--custom-objects", module, "-o", tmp_path / "a.keras")
    assert proc.returncode == 2 and "--unsafe" in proc.stderr and not (tmp_path / "a.keras").exists()
    proc = cli("fold", source, "--custom-objects", module, "--unsafe", "-o", tmp_path / "a.keras")
    assert proc.returncode == 0, proc.stderr
    assert digest(source) == before


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
def test_an_interrupt_at_any_point_says_truly_what_was_written(example_model_path, tmp_path, delay):
    """SIGINT while TensorFlow or onnx is imported, while the model loads, while artifacts are
    converted or renamed into place: exit 130 with a true account, or 0 with everything written."""
    outputs = [tmp_path / "f.keras", tmp_path / "m.onnx", tmp_path / "m.tflite", tmp_path / "r.json"]
    proc = subprocess.Popen([sys.executable, "-m", "bnfreeze.cli", "fold", str(example_model_path),
                             "-o", str(outputs[0]), "--onnx", str(outputs[1]), "--tflite", str(outputs[2]),
                             "--report", str(outputs[3])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert "Traceback" not in err and "terminate called" not in err, err[-2000:]
    present = [p for p in outputs if p.exists()]
    leftovers = [p.name for p in tmp_path.iterdir() if p not in outputs]
    assert not leftovers, leftovers  # no temporary file survives
    if proc.returncode == 0:
        assert present == outputs
        return
    assert proc.returncode == 130, err[-2000:]
    if present:  # written before the signal arrived: the message must say so, naming each
        assert "interrupted after writing" in err and all(str(p) in err for p in present), err
    else:
        assert "interrupted; nothing was written" in err, err
    assert present in ([], outputs), "outputs are committed together or not at all"
