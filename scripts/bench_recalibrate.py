"""Time recalibration against one plain inference pass, side by side in one run.

ResNet50 (weights=None, randomised BN statistics) on 256 random calibration
images: one inference pass over the data with ``model.predict`` (graph mode,
the fastest standard Keras path, warmed up: its tracing is not counted), and
each recalibration mode on the same data and batch size (everything counted:
copying the model, tracing every pass, the passes, writing the statistics).
The runs are interleaved round by round (the order rotates), and each mode's
ratio is taken to the predict pass of the same round, so that a busy machine
slows both sides of a ratio; the table gives medians and ranges over the
rounds, of wall time and of CPU time (all threads). Goals: ``precise`` <=
1.15x and ``exact`` <= 1.3x.

``--phases`` instead times the phases of one exact and one precise run
(copy, flatten, tracing and first call of each pass, the other batches).

``--floor`` measures what any exact recalibration must add to an inference
pass, batch by batch on the same graph (no copy, no tracing counted): the
model's layers alone as ``predict`` runs them, then the same call also reading
one value of every BN input (so the pre-BN tensors must exist: Grappler
can no longer fuse a convolution with the BN after it), then the per-channel sums of every BN input (the means), then the sums and the
centred sums of squares as bnfreeze takes them, then both fused into one XLA
kernel per BN input (the fastest exact reduction TensorFlow offers on CPU).
Every recalibration mode needs at least the last of these, so its ratio to
the layers alone is a lower bound on the one-pass cost.

Run: ``python scripts/bench_recalibrate.py [--model ResNet50] [--images 256] [--size 224] [--rounds 5]``
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def describe(values) -> str:
    values = np.asarray(values)
    return f"{np.median(values):.2f} ({values.min():.2f}-{values.max():.2f})"


def phases(model, data, batch_size: int) -> None:
    """Where the time of one exact and one precise run goes (wall and CPU seconds of this process)."""
    from bnfreeze.fold import rewrite
    from bnfreeze.recalibration import execution, recalibrate

    first = "first call of each pass (trace + graph optimisation + 1 batch)"
    for mode in ("precise", "exact"):
        totals = {"copy model": [0.0, 0.0], first: [0.0, 0.0], "other batches": [0.0, 0.0]}
        counts = {"first": 0, "other": 0}
        copy, run = rewrite.copy_model, execution.Executor.run

        def account(key, wall, cpu):
            totals[key][0] += time.perf_counter() - wall
            totals[key][1] += time.process_time() - cpu

        def copy_timed(m):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return copy(m)
            finally:
                account("copy model", wall, cpu)

        def run_timed(self, fn, args):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return run(self, fn, args)
            finally:
                is_first = not getattr(fn, "_seen", False)
                fn._seen = True
                account(first if is_first else "other batches", wall, cpu)
                counts["first" if is_first else "other"] += 1

        rewrite.copy_model, execution.Executor.run = copy_timed, run_timed
        try:
            wall, cpu, result = timed(lambda: recalibrate(model, data, mode=mode, batch_size=batch_size))
        finally:
            rewrite.copy_model, execution.Executor.run = copy, run
        print(f"\n{mode}: {wall:.2f} s wall, {cpu:.2f} s CPU; {result.passes} passes, {counts['first']} first calls, "
              f"{counts['other']} other batches")
        for key, (w, c) in totals.items():
            print(f"  {key}: {w:.2f} s wall, {c:.2f} s CPU")
        print(f"  rest (flatten, sizes, merges, assign, report): {wall - sum(w for w, _ in totals.values()):.2f} s wall, "
              f"{cpu - sum(c for _, c in totals.values()):.2f} s CPU")
    wall, cpu, _ = timed(lambda: model.predict(data.arrays[data.specs[0].name], batch_size=batch_size, verbose=0))
    print(f"\npredict: {wall:.2f} s wall, {cpu:.2f} s CPU")


def floor(model, x, batch_size: int, rounds: int) -> None:
    """Per-batch CPU cost of the moments any exact recalibration takes, against the layers alone."""
    import keras
    import tensorflow as tf

    from bnfreeze.recalibration.moments import local_moments

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    taps = keras.Model(model.inputs, [model.output] + [bn.input for bn in bns])
    batch = tf.constant(x[:batch_size])

    def flat(t):
        return tf.reshape(t, [t.shape[0], -1, t.shape[-1]])

    @tf.function(jit_compile=True, autograph=False)
    def fused_moments(t):
        rows = flat(t)
        mean = tf.reduce_sum(tf.cast(tf.reduce_sum(rows, 1), tf.float64), 0) / (rows.shape[0] * rows.shape[1])
        centred = tf.math.squared_difference(rows, tf.cast(mean, tf.float32))
        return mean, tf.reduce_sum(tf.cast(tf.reduce_sum(centred, 1), tf.float64), 0)

    def with_taps(reduce):
        return tf.function(lambda v: [(o := taps(v, training=False))[0]] + [reduce(t) for t in o[1:]],
                           autograph=False)

    runs = {
        "model.predict (the same batch)": lambda v: model.predict(v, batch_size=batch_size, verbose=0),
        "layers alone (inference BN, as predict runs them)": tf.function(
            lambda v: model(v, training=False), autograph=False),
        "+ one value of every BN input (its pre-BN tensor exists)": with_taps(lambda t: t[0, 0, 0]),
        "+ per-channel sums of every BN input": with_taps(
            lambda t: tf.reduce_sum(tf.matmul(tf.ones([1, flat(t).shape[1]]), flat(t)), [0, 1])),
        "+ sums and centred squares (bnfreeze's moments)": with_taps(lambda t: local_moments(t, [0, 1, 2])),
        "+ sums and centred squares, one XLA kernel per BN": with_taps(fused_moments),
    }
    for fn in runs.values():  # tracing, XLA compilation, oneDNN set-up: not counted
        fn(batch)
    cpus = {label: [] for label in runs}
    for _ in range(rounds):
        for label, fn in runs.items():
            cpu = time.process_time()
            [np.asarray(v) for v in tf.nest.flatten(fn(batch))]
            cpus[label].append(time.process_time() - cpu)
    volume = sum(int(np.prod(bn.input.shape[1:])) for bn in bns) * batch_size * 4
    print(f"{len(bns)} BN inputs, {volume / 1e9:.2f} GB per batch of {batch_size}; CPU s per batch, median (range) "
          f"of {rounds} interleaved rounds\n")
    print("| per batch | CPU s | ratio to the layers alone |")
    print("|---|---|---|")
    base = np.asarray(cpus["layers alone (inference BN, as predict runs them)"])
    for label, values in cpus.items():
        print(f"| {label} | {describe(values)} | {describe(np.asarray(values) / base)}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; medians and ranges over them.")
    parser.add_argument("--modes", default="precise,exact", help="Comma-separated modes to time (also ema, fixed-batch).")
    parser.add_argument("--uncached", action="store_true",
                        help="Also time exact mode with --memory-budget 0 (one pass per BN level from the data: slow).")
    parser.add_argument("--phases", action="store_true", help="Time the phases of one exact and one precise run.")
    parser.add_argument("--floor", action="store_true",
                        help="Per-batch cost of exact moments alone against the layers alone (a lower bound).")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from bnfreeze.io.arrays import ArrayData
    from bnfreeze.io.signature import input_specs
    from bnfreeze.recalibration import recalibrate
    from support import randomize_bn

    model = getattr(keras.applications, args.model)(weights=None, input_shape=(args.size, args.size, 3))
    randomize_bn(model, seed=0)
    x = np.random.default_rng(0).normal(0, 1, (args.images, args.size, args.size, 3)).astype(np.float32)
    specs = input_specs(model)
    data = ArrayData(Path("<random images>"), {specs[0].name: x}, specs)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"{'GPU' if tf.config.list_physical_devices('GPU') else 'no GPU'}, TF {tf.__version__}")

    if args.floor:
        print(f"{args.model} {args.size}x{args.size}, batch {args.batch_size}; {machine}")
        floor(model, x, args.batch_size, args.rounds)
        return
    # warm up both paths (predict's tracing, oneDNN primitive creation) before anything is timed
    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)
    recalibrate(model, data, mode="precise", batch_size=args.batch_size, max_samples=args.batch_size)
    if args.phases:
        print(f"{args.model} {args.size}x{args.size}, {args.images} images, batch {args.batch_size}; {machine}")
        phases(model, data, args.batch_size)
        return

    runs = {"inference pass (model.predict)": lambda: model.predict(x, batch_size=args.batch_size, verbose=0)}
    for mode in args.modes.split(","):
        runs[mode] = lambda mode=mode: recalibrate(model, data, mode=mode, batch_size=args.batch_size)
    if args.uncached:
        runs["exact, no activation cache"] = lambda: recalibrate(model, data, batch_size=args.batch_size,
                                                                 memory_budget=0)
    labels = list(runs)
    walls = {k: [] for k in labels}
    cpus = {k: [] for k in labels}
    passes, details = {}, {}
    for round_ in range(args.rounds):
        order = labels[round_ % len(labels):] + labels[: round_ % len(labels)]
        for label in order:
            wall, cpu, value = timed(runs[label])
            walls[label].append(wall)
            cpus[label].append(cpu)
            if hasattr(value, "passes"):
                passes[label], details[label] = value.passes, value.details
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {walls[k][-1]:.1f}s" for k in labels), file=sys.stderr,
              flush=True)
    base = labels[0]
    print(f"{args.model} {args.size}x{args.size}, {args.images} images, batch {args.batch_size}; {machine}; "
          f"{args.rounds} interleaved rounds, median (range)\n")
    print("| run | passes over the data | wall s | ratio to predict, wall | ratio to predict, CPU time |")
    print("|---|---|---|---|---|")
    for label in labels:
        wall_ratio = np.asarray(walls[label]) / np.asarray(walls[base])
        cpu_ratio = np.asarray(cpus[label]) / np.asarray(cpus[base])
        print(f"| {label} | {passes.get(label, 1)} | {describe(walls[label])} | {describe(wall_ratio)}x | "
              f"{describe(cpu_ratio)}x |")
    exact = details.get("exact", {})
    if exact:
        print(f"\nexact: {exact['levels']} BN levels, activations kept for {exact['cached_passes']} passes, "
              f"peak cache {exact['peak_cache_bytes'] / 2**30:.2f} GiB (budget {exact['memory_budget'] / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
