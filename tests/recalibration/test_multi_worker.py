"""``--distribute multi-worker``: two worker processes on localhost against one process.

Each test starts real ``bnfreeze recalibrate`` processes with a ``TF_CONFIG``
cluster on free loopback ports, one thread each, under a deadline; every
process it starts is killed in ``finally`` if it is still running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from test_recalibrate import bn_statistics

DEADLINE = 300  # seconds for a whole cluster run


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def command(*args) -> list[str]:
    return [sys.executable, "-m", "bnfreeze.cli", "recalibrate", *map(str, args), "--threads", "1"]


def run_cluster(tmp_path: Path, args_per_worker: list[list], timeout: float = DEADLINE) -> list[dict]:
    """Run one process per worker; return each one's exit code, stdout and stderr."""
    ports = free_ports(len(args_per_worker))
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs, logs = [], []
    try:
        for index, args in enumerate(args_per_worker):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
            out = open(tmp_path / f"worker{index}.out", "w+")
            err = open(tmp_path / f"worker{index}.err", "w+")
            logs.append((out, err))
            procs.append(subprocess.Popen(command(*args), stdout=out, stderr=err, text=True, env=env))
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
        results = []
        for proc, (out, err) in zip(procs, logs):
            out.seek(0)
            err.seek(0)
            results.append({"rc": proc.returncode, "stdout": out.read(), "stderr": err.read()})
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for out, err in logs:
            out.close()
            err.close()


def run_single(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return subprocess.run(command(*args), capture_output=True, text=True, env=env, timeout=DEADLINE)


def assert_same_statistics(a_path: Path, b_path: Path) -> None:
    """Means within 1e-6 of a standard deviation, variances within 1e-6 relative."""
    import keras

    a = bn_statistics(keras.models.load_model(a_path))
    b = bn_statistics(keras.models.load_model(b_path))
    assert set(a) == set(b) and a
    for name in a:
        (mean_a, var_a), (mean_b, var_b) = a[name], b[name]
        assert np.max(np.abs(mean_a - mean_b) / np.sqrt(var_a)) <= 1e-6, name
        assert np.max(np.abs(var_a - var_b) / var_a) <= 1e-6, name


@pytest.fixture()
def model_path(tmp_path, example_model_path):
    return example_model_path


def write_records(folder: Path, x: np.ndarray, sizes: list[int]) -> str:
    """Serialized-tensor TFRecord files with ``sizes`` samples each (uneven shards)."""
    import tensorflow as tf

    folder.mkdir()
    start = 0
    for number, size in enumerate(sizes):
        with tf.io.TFRecordWriter(str(folder / f"part-{number}.tfrecord")) as writer:
            for sample in x[start:start + size]:
                feature = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.serialize_tensor(tf.constant(sample)).numpy()]))
                writer.write(tf.train.Example(features=tf.train.Features(
                    feature={"x": feature})).SerializeToString())
        start += size
    return str(folder / "*.tfrecord")


@pytest.mark.parametrize("mode", ["exact", "precise"])
def test_two_workers_equal_one_process_on_arrays(tmp_path, model_path, repo, mode):
    """45 samples, batch 16: worker 0 reads batch 0 (16 samples), worker 1 batches 1-2 (29): uneven."""
    data = tmp_path / "calib.npy"
    np.save(data, np.load(repo / "models" / "digits_calib.npy")[:45])
    single = run_single(model_path, "--calib-data", data, "--mode", mode, "--batch-size", 16, "-o",
                        tmp_path / "single.keras")
    assert single.returncode == 0, single.stderr
    results = run_cluster(tmp_path, [
        [model_path, "--calib-data", data, "--mode", mode, "--batch-size", 16, "--distribute", "multi-worker",
         "-o", tmp_path / f"worker{i}.keras", "--report", tmp_path / f"worker{i}.json"] for i in range(2)])
    for i, result in enumerate(results):
        assert result["rc"] == 0, (i, result["stderr"][-3000:])
    assert_same_statistics(tmp_path / "single.keras", tmp_path / "worker0.keras")
    assert not (tmp_path / "worker1.keras").exists() and not (tmp_path / "worker1.json").exists()
    report = json.loads((tmp_path / "worker0.json").read_text())
    assert report["workers"] == 2 and report["samples"] == 45
    assert "worker 2 of 2: done" in results[1]["stdout"]


def test_two_workers_equal_one_process_on_uneven_tfrecord_shards(tmp_path, model_path, repo):
    """Files of 100, 37 and 119 samples: worker 0 reads files 0 and 2 (219), worker 1 file 1 (37)."""
    x = np.load(repo / "models" / "digits_calib.npy")
    pattern = write_records(tmp_path / "shards", x, [100, 37, 119])
    single = run_single(model_path, "--calib-data", pattern, "-o", tmp_path / "single.keras")
    assert single.returncode == 0, single.stderr
    results = run_cluster(tmp_path, [
        [model_path, "--calib-data", pattern, "--distribute", "multi-worker", "-o", tmp_path / f"worker{i}.keras",
         "--report", tmp_path / f"worker{i}.json"] for i in range(2)])
    for i, result in enumerate(results):
        assert result["rc"] == 0, (i, result["stderr"][-3000:])
    assert_same_statistics(tmp_path / "single.keras", tmp_path / "worker0.keras")
    assert json.loads((tmp_path / "worker0.json").read_text())["samples"] == 256
    assert not (tmp_path / "worker1.keras").exists()


def test_a_worker_that_dies_fails_the_run_and_nothing_is_written(tmp_path, model_path, repo):
    """Worker 1 stops at its first batch (its copy of the data holds a NaN); the chief fails too."""
    x = np.load(repo / "models" / "digits_calib.npy")[:64]
    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, x)
    broken = x.copy()
    broken[40, 2, 2, 0] = np.nan
    np.save(bad, broken)
    start = time.monotonic()
    results = run_cluster(tmp_path, [
        [model_path, "--calib-data", data, "--distribute", "multi-worker", "-o", tmp_path / f"worker{i}.keras",
         "--report", tmp_path / f"worker{i}.json", "--worker-timeout", 120]
        for i, data in enumerate([good, bad])])
    assert time.monotonic() - start < 200
    assert results[1]["rc"] == 2 and "NaN or Inf" in results[1]["stderr"]
    chief = results[0]
    assert chief["rc"] == 2, chief["stderr"][-3000:]
    line = chief["stderr"].strip().splitlines()[-1]
    assert line.startswith("bnfreeze: error: TF_CONFIG cluster:") and "nothing was written" in line, line
    assert "task:1" in line
    assert not any(p.suffix in (".keras", ".json") and p.stem.startswith("worker") for p in tmp_path.iterdir())


def test_a_cluster_that_never_starts_times_out(tmp_path, model_path, repo):
    """Only one of two workers starts: after --worker-timeout a watchdog says so and ends it; nothing written."""
    ports = free_ports(2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", TF_CONFIG=json.dumps(
        {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": 0}}))
    start = time.monotonic()
    proc = subprocess.Popen(command(model_path, "--calib-data", repo / "models" / "digits_calib.npy", "--distribute",
                                    "multi-worker", "--worker-timeout", 5, "-o", tmp_path / "out.keras"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL  # TensorFlow waits holding the GIL: only a kill ends it
    assert "did not all start within 5 s" in stderr and "nothing was written" in stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "out.keras").exists()


def test_multi_worker_refusals(tmp_path, model_path, repo):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run(command(model_path, "--calib-data", repo / "models" / "digits_calib.npy", "--distribute",
                                  "multi-worker", "-o", tmp_path / "o.keras"),
                          capture_output=True, text=True, env=env, timeout=DEADLINE)
    assert proc.returncode == 2 and "needs TF_CONFIG" in proc.stderr
