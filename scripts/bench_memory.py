"""Peak memory of ``bnfreeze recalibrate`` for 1x and 10x the calibration samples.

A small CNN (32x32x3, Conv-BN-ReLU x3, pooling, Dense-BN) is recalibrated by
the command line in a fresh process per run, on a ``.npy`` file and on a glob
of TFRecord files of PNG images, each with N and 10 N samples, in ``exact``
mode (with ``--memory-budget``: the activations kept between passes are
bounded by it) and in ``precise`` mode. The peak resident set size of each
process (``ru_maxrss`` from ``wait4``) is printed as a Markdown table with the
ratio 10x / 1x per row. Goal: within 10 %.

Run: ``python scripts/bench_memory.py [--samples 4096] [--budget 32MiB]``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def build_model(path: Path) -> None:
    import keras
    from keras import layers

    x_in = keras.Input((32, 32, 3), name="image")
    x = x_in
    for filters in (16, 32, 32):
        x = layers.Conv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x) if filters != 16 else x
    x = layers.Flatten()(x)
    x = layers.Dense(32)(x)
    x = layers.BatchNormalization()(x)
    out = layers.Dense(10)(layers.ReLU()(x))
    keras.Model(x_in, out).save(path)


def write_npy(path: Path, samples: int) -> None:
    """Written in chunks: this process stays small too."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(samples, 32, 32, 3))
    rng = np.random.default_rng(0)
    for start in range(0, samples, 4096):
        stop = min(start + 4096, samples)
        array[start:stop] = rng.random((stop - start, 32, 32, 3), dtype=np.float32)
    array.flush()
    del array


def write_records(folder: Path, samples: int, per_file: int = 4096) -> str:
    import tensorflow as tf

    folder.mkdir()
    rng = np.random.default_rng(1)
    pngs = [tf.io.encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).numpy() for _ in range(64)]
    for number, start in enumerate(range(0, samples, per_file)):
        with tf.io.TFRecordWriter(str(folder / f"part-{number:04d}.tfrecord")) as writer:
            for i in range(start, min(start + per_file, samples)):
                feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pngs[i % 64]]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(folder / "*.tfrecord")


_WRAPPER = """
import atexit, os, runpy, sys

def report():
    with open("/proc/self/status") as status:
        peak = next(line for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(peak.split()[1])

atexit.register(report)
sys.argv = ["bnfreeze", "recalibrate", *sys.argv[1:]]
runpy.run_module("bnfreeze.cli", run_name="__main__")
"""


def peak_rss(args: list[str], tmp: Path) -> tuple[float, int]:
    """Run the command line in a fresh process; its peak RSS in MiB and its exit code.

    The peak is the process's own ``VmHWM`` (read at exit): ``ru_maxrss`` of a
    child would include the RSS of this (parent) process at the fork.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", BENCH_PEAK_FILE=str(tmp / "peak"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        print(proc.stderr.decode()[-2000:], file=sys.stderr)
    return int((tmp / "peak").read_text()) / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="N: the 1x run's samples (10x: 10 N).")
    parser.add_argument("--budget", default="32MiB", help="--memory-budget of the exact runs.")
    parser.add_argument("--modes", default="exact,precise")
    args = parser.parse_args()
    import tensorflow as tf

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / "cnn.keras"
        build_model(model)
        sources = {}
        for scale in (1, 10):
            n = args.samples * scale
            write_npy(tmp / f"x{scale}.npy", n)
            sources[(".npy", scale)] = [str(tmp / f"x{scale}.npy")]
            sources[("TFRecord PNG", scale)] = [write_records(tmp / f"records{scale}", n), "--rescale", "1/255"]
        for kind in (".npy", "TFRecord PNG"):
            for mode in args.modes.split(","):
                peaks = []
                for scale in (1, 10):
                    extra = ["--memory-budget", args.budget] if mode == "exact" else []
                    out = tmp / f"out-{mode}-{scale}.keras"
                    peak, code = peak_rss([str(model), "--calib-data", *sources[(kind, scale)], "--mode", mode,
                                           "--batch-size", "64", "-o", str(out), "--force", *extra], tmp)
                    if code != 0:
                        raise SystemExit(f"run failed ({kind}, {mode}, {scale}x)")
                    peaks.append(peak)
                rows.append((kind, mode, peaks))
                print(f"{kind} {mode}: {peaks[0]:.0f} / {peaks[1]:.0f} MiB", file=sys.stderr, flush=True)
    print(f"Peak RSS (VmHWM) of `bnfreeze recalibrate` (fresh process per run); N = {args.samples} samples of 32x32x3, "
          f"batch 64, exact with --memory-budget {args.budget}; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"TF {tf.__version__}\n")
    print("| data | mode | peak RSS, N samples (MiB) | peak RSS, 10 N samples (MiB) | 10x / 1x |")
    print("|---|---|---|---|---|")
    for kind, mode, (small, large) in rows:
        print(f"| {kind} | {mode} | {small:.0f} | {large:.0f} | {large / small:.3f} |")


if __name__ == "__main__":
    main()
