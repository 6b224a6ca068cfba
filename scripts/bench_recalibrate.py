"""Time recalibration against one plain inference pass, side by side in one run.

ResNet50 (weights=None, randomised BN statistics) on 256 random calibration
images: one inference pass over the data with ``model.predict`` (graph mode,
the fastest standard Keras path), then each recalibration mode on the same
data and batch size. Prints a Markdown table with the ratios to the inference
pass; the goals are ``precise`` <= 1.5x and ``exact`` <= 3x.

Run: ``python scripts/bench_recalibrate.py [--model ResNet50] [--images 256] [--size 224]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="Each timing is the best of this many runs.")
    parser.add_argument("--uncached", action="store_true",
                        help="Also time exact mode with --memory-budget 0 (one pass per BN level from the data: slow).")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from bnfreeze.io.arrays import ArrayData
    from bnfreeze.recalibration import recalibrate
    from bnfreeze.io.signature import input_specs
    from support import randomize_bn

    model = getattr(keras.applications, args.model)(weights=None, input_shape=(args.size, args.size, 3))
    randomize_bn(model, seed=0)
    x = np.random.default_rng(0).normal(0, 1, (args.images, args.size, args.size, 3)).astype(np.float32)
    specs = input_specs(model)
    data = ArrayData(Path("<random images>"), {specs[0].name: x}, specs)

    def best(fn):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    # warm up both paths (tracing, oneDNN primitive creation) before anything is timed
    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)
    recalibrate(model, data, mode="precise", batch_size=args.batch_size, max_samples=args.batch_size)
    rows = [("inference pass (model.predict)", best(lambda: model.predict(x, batch_size=args.batch_size, verbose=0)), 1)]
    details = {}
    for label, kwargs in (("precise", {"mode": "precise"}), ("exact", {"mode": "exact"}),
                          ("exact, no activation cache", {"mode": "exact", "memory_budget": 0}),
                          ("ema", {"mode": "ema"}), ("fixed-batch", {"mode": "fixed-batch"})):
        if label.startswith("exact, no") and not args.uncached:
            continue
        result = {}

        def run():
            result["r"] = recalibrate(model, data, batch_size=args.batch_size, **kwargs)

        seconds = best(run)
        rows.append((label, seconds, result["r"].passes))
        details[label] = result["r"].details
    base = rows[0][1]
    print(f"{args.model} {args.size}x{args.size}, {args.images} images, batch {args.batch_size}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}\n")
    print("| run | passes over the data | seconds | ratio to one inference pass |")
    print("|---|---|---|---|")
    for label, seconds, passes in rows:
        print(f"| {label} | {passes} | {seconds:.1f} | {seconds / base:.2f}x |")
    exact = details.get("exact", {})
    if exact:
        print(f"\nexact: {exact['levels']} BN levels, activations kept for {exact['cached_passes']} passes, "
              f"peak cache {exact['peak_cache_bytes'] / 2**30:.2f} GiB (budget {exact['memory_budget'] / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
