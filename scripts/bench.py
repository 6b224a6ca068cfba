"""Benchmarks against the limit and the peers; writes BENCHMARKS.md.

For each keras.applications architecture (weights=None, randomised BN
statistics with a third of the gammas negative), in one process:

* BN layers folded (backward/forward) and kept (with reasons), and the
  folded model's parity error on seeded inputs;
* wall time of ``bnfreeze fold`` on the command line (a fresh process:
  TensorFlow start-up included) and of each export;
* TF batch-1 latency of the original, the folded model and the *limit* —
  the same architecture with every BN replaced by an identity — measured
  interleaved (round-robin, one call of each per turn), medians;
* onnxruntime CPU batch-1 latency of the unfolded model's ONNX at
  ORT_ENABLE_ALL and the folded model's ONNX at ORT_ENABLE_BASIC and
  ORT_ENABLE_ALL, interleaved, medians;
* ONNX node counts and BN-derived nodes: tf2onnx on the unfolded model (the
  peer), that graph after onnxruntime's own ORT_ENABLE_ALL fusions (the other
  peer), and bnfreeze's export of the folded model;
* with a GPU present: the TF and CUDA-provider latencies as well.

Pre-activation networks (``--pre-activation``, default ResNet50V2 and
DenseNet121) get their own section, with *positive* random BN statistics
(gamma 0.5–1.5, beta and mean ~N(0, 0.5), variance 0.2–2): a BN with a
negative scale before a ReLU is kept (a sign flip would stay), so with a
third of the gammas negative nearly every pre-activation BN stays, which the
main table shows. Per model, in one process: BNs folded by kind (backward,
pre-activation with the shift in an earlier bias, pre-activation with the
shift kept as an add), BN layers left, parity, and the TF batch-1 latency of
the original, the folded model, the limit and the limit with biases,
interleaved. Goals: ResNet50V2 >= 0.98 and DenseNet121 >= 0.95 of the
limit (``limit/folded``), 0 BN layers left.

Run: ``python scripts/bench.py [--models ResNet50 MobileNetV2] [--size 224] [--calls 30] [--out BENCHMARKS.md]``
(``--models`` with no name skips the main tables and rewrites only the pre-activation section;
``--pre-activation`` with no name skips that one)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

MODELS = ["ResNet50", "ResNet50V2", "MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "EfficientNetV2B0",
          "InceptionV3", "Xception", "DenseNet121", "NASNetMobile", "RegNetX002", "ConvNeXtTiny"]
MIN_SIZE = {"InceptionV3": 75, "Xception": 71, "NASNetMobile": 224}


@dataclass
class Row:
    model: str
    available: bool = True
    note: str = ""
    bn: int = 0
    folded_backward: int = 0
    folded_forward: int = 0
    kept: dict = field(default_factory=dict)
    parity_max_rel: float | None = None
    fold_cli_s: float | None = None
    fold_cli_user_s: float | None = None
    fold_s: float | None = None
    export_s: dict = field(default_factory=dict)
    tf_ms: dict = field(default_factory=dict)
    ort_ms: dict = field(default_factory=dict)
    gpu_ms: dict = field(default_factory=dict)
    onnx_nodes: dict = field(default_factory=dict)
    bn_nodes: dict = field(default_factory=dict)


def limit_model(model):
    """The same architecture and weights with every BN bypassed (an identity)."""
    import keras

    from bnfreeze.fold.rewrite import without_layers

    return without_layers(model, [l.name for l in model.layers if isinstance(l, keras.layers.BatchNormalization)])


def limit_with_biases(model, limit):
    """The limit with a (zero) bias in every layer that had none: the network as one builds it without BN.

    Folding gives every target a bias (the BN's shift), so this is what a
    folded model can at most match.
    """
    import copy

    from bnfreeze.fold.rewrite import rebuild

    config = copy.deepcopy(limit.get_config())
    for entry in config["layers"]:
        if entry["config"].get("use_bias") is False:
            entry["config"]["use_bias"] = True
    biased = rebuild(limit, config)
    for layer in biased.layers:
        weights = limit.get_layer(layer.name).get_weights()
        if len(layer.weights) == len(weights) + 1:
            weights = weights + [np.zeros(layer.weights[-1].shape, layer.weights[-1].dtype)]
        if layer.weights:
            layer.set_weights(weights)
    return biased


def interleaved(functions: dict, calls: int, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds per call of each function, run round-robin so drift hits all alike."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(calls):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def tf_callable(model, x, device: str):
    import tensorflow as tf

    with tf.device(device):
        fn = tf.function(lambda t: model(t, training=False))
        tensor = tf.constant(x)
        fn(tensor)

    def call():
        with tf.device(device):
            for output in tf.nest.flatten(fn(tensor)):  # a dict or list of outputs (KerasHub backbones)
                output.numpy()

    return call


def ort_callable(path: Path, level: str, x, provider="CPUExecutionProvider", optimized: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(str(path), sess_options=options, providers=[provider])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def onnx_facts(path: Path, bn_names) -> tuple[int, int]:
    import onnx

    from bnfreeze.export.onnx_graph import bn_derived_nodes

    proto = onnx.load(str(path))
    return len(proto.graph.node), len(bn_derived_nodes(proto, bn_names))


def regnetx002(input_shape):
    """RegNetX-200MF (Radosavovic et al., 2020) built from its published parameters.

    Keras 3.15 does not ship ``keras.applications.RegNetX002``; this is the
    same design: stem 32 (3x3/2), four stages of X blocks (1x1 conv-BN-ReLU,
    3x3 grouped conv-BN-ReLU with group width 8, 1x1 conv-BN, residual Add
    with a 1x1/2 conv-BN shortcut where the shape changes, ReLU), widths
    24/56/152/368 and depths 1/1/4/7, global average pooling, Dense 1000.
    """
    import keras
    from keras import layers

    def conv_bn(x, filters, kernel, stride=1, groups=1, name=""):
        x = layers.Conv2D(filters, kernel, stride, padding="same", groups=groups, use_bias=False, name=name + "_conv")(x)
        return layers.BatchNormalization(name=name + "_bn")(x)

    inputs = keras.Input(input_shape)
    x = layers.ReLU()(conv_bn(inputs, 32, 3, 2, name="stem"))
    for stage, (width, depth) in enumerate(zip((24, 56, 152, 368), (1, 1, 4, 7))):
        for block in range(depth):
            name = f"s{stage}b{block}"
            stride = 2 if block == 0 else 1
            shortcut = x
            if block == 0:
                shortcut = conv_bn(x, width, 1, stride, name=name + "_skip")
            y = layers.ReLU()(conv_bn(x, width, 1, name=name + "_a"))
            y = layers.ReLU()(conv_bn(y, width, 3, stride, groups=width // 8, name=name + "_b"))
            y = conv_bn(y, width, 1, name=name + "_c")
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(1000, name="logits")(x), name="RegNetX002")


def cli_fold_seconds(source: Path, out: Path, without_sklearn: bool) -> float | None:
    """Wall time of ``bnfreeze fold`` in a fresh process (TensorFlow start-up included).

    ``without_sklearn`` runs it as a user's install does: scikit-learn is a
    test-only dependency of bnfreeze, but when present Keras imports it at
    start-up (``keras.wrappers``), which costs about a second here.
    """
    block = "import sys; sys.modules['sklearn'] = None; " if without_sklearn else ""
    code = (f"{block}import sys; sys.argv = ['bnfreeze', 'fold', {str(source)!r}, '-o', {str(out)!r}, '--force', "
            "'--atol', '1e-2', '--rtol', '1e-2']; from bnfreeze.cli import main; main()")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return time.perf_counter() - started if proc.returncode == 0 else None


def bench_model(name: str, size: int, calls: int, work: Path, gpu: bool) -> Row:
    import keras

    import bnfreeze
    from bnfreeze.compare import Tolerance
    from bnfreeze.export import export
    from support import randomize_bn

    row = Row(name)
    size = max(size, MIN_SIZE.get(name, 32))
    keras.utils.set_random_seed(0)
    if hasattr(keras.applications, name):
        model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    elif name == "RegNetX002":
        model = regnetx002((size, size, 3))
        row.note = "built here: not in Keras 3.15; "
    else:
        row.available, row.note = False, "not in keras.applications of this Keras version"
        return row
    randomize_bn(model, seed=3)
    bn_names = [l.name for l in model._flatten_layers(include_self=False) if isinstance(l, keras.layers.BatchNormalization)]
    row.bn = len(bn_names)
    row.note += f"{size}x{size}"
    source = work / f"{name}.keras"
    model.save(source)

    row.fold_cli_s = cli_fold_seconds(source, work / f"{name}.cli.keras", without_sklearn=False)
    row.fold_cli_user_s = cli_fold_seconds(source, work / f"{name}.cli.keras", without_sklearn=True)

    started = time.perf_counter()
    result = bnfreeze.fold(model, atol=1.0, rtol=1.0)
    row.fold_s = time.perf_counter() - started
    row.parity_max_rel = result.parity.max_rel
    for entry in result.report["folded"]:
        if entry["direction"] == "backward":
            row.folded_backward += 1
        else:
            row.folded_forward += 1
    for entry in result.report["kept"]:
        row.kept[entry["reason"]] = row.kept.get(entry["reason"], 0) + 1
    folded = result.model
    limit = limit_model(model)

    loose = Tolerance(1e-2, 1e-2)  # the chaotic EfficientNetV2B0 (see tests/test_zoo.py) needs it
    for kind, suffix in (("onnx", ".onnx"), ("tflite", ".tflite"), ("savedmodel", "_sm")):
        started = time.perf_counter()
        export(folded, **{kind: work / f"{name}.folded{suffix}"}, tolerance=loose)
        row.export_s[kind] = time.perf_counter() - started
    export(model, onnx=work / f"{name}.onnx", tolerance=loose)

    x = np.random.default_rng(0).normal(0, 1, (1, size, size, 3)).astype(np.float32)
    row.tf_ms = interleaved({"original": tf_callable(model, x, "/cpu:0"), "folded": tf_callable(folded, x, "/cpu:0"),
                             "limit": tf_callable(limit, x, "/cpu:0"),
                             "limit + biases": tf_callable(limit_with_biases(model, limit), x, "/cpu:0")}, calls)
    optimized = work / f"{name}.ort_all.onnx"
    row.ort_ms = interleaved({
        "unfolded ALL": ort_callable(work / f"{name}.onnx", "ORT_ENABLE_ALL", x, optimized=optimized),
        "folded BASIC": ort_callable(work / f"{name}.folded.onnx", "ORT_ENABLE_BASIC", x),
        "folded ALL": ort_callable(work / f"{name}.folded.onnx", "ORT_ENABLE_ALL", x),
    }, calls)
    for label, path in (("tf2onnx", work / f"{name}.onnx"), ("tf2onnx + ORT ALL", optimized),
                        ("bnfreeze", work / f"{name}.folded.onnx")):
        row.onnx_nodes[label], row.bn_nodes[label] = onnx_facts(path, bn_names)
    if gpu:
        row.gpu_ms = interleaved({
            "TF original": tf_callable(model, x, "/gpu:0"), "TF folded": tf_callable(folded, x, "/gpu:0"),
            "TF limit": tf_callable(limit, x, "/gpu:0"),
            "CUDA unfolded ALL": ort_callable(work / f"{name}.onnx", "ORT_ENABLE_ALL", x, "CUDAExecutionProvider"),
            "CUDA folded ALL": ort_callable(work / f"{name}.folded.onnx", "ORT_ENABLE_ALL", x, "CUDAExecutionProvider"),
        }, calls)
    keras.backend.clear_session()
    return row


PRE_START = "<!-- bench pre-activation: start (written by scripts/bench.py) -->"
PRE_END = "<!-- bench pre-activation: end -->"
#: limit/folded each pre-activation network must reach (issue 25).
PRE_GOALS = {"ResNet50V2": 0.98, "DenseNet121": 0.95}


def interleaved_with_cpu(functions: dict, calls: int, warmup: int = 3) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and process-CPU milliseconds per call of each function, run round-robin.

    On a machine other jobs share, a call's wall time includes the time its
    threads wait for a core; its CPU time (every thread of this process)
    counts the work alone, and moves much less.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    wall = {name: [] for name in functions}
    cpu = {name: [] for name in functions}
    for _ in range(calls):
        for name, fn in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append((time.perf_counter() - start) * 1e3)
            cpu[name].append((time.process_time() - start_cpu) * 1e3)
    return ({n: statistics.median(t) for n, t in wall.items()}, {n: statistics.median(t) for n, t in cpu.items()})


def bench_pre_activation(name: str, size: int, calls: int, rounds: int = 1) -> dict:
    """One pre-activation network with positive BN scales: the fold by kind, BNs left, latency against the limit."""
    import collections

    import keras

    import bnfreeze
    from support import bn_count, randomize_bn

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    randomize_bn(model, seed=3, negative=False)
    started = time.perf_counter()
    result = bnfreeze.fold(model, atol=1e-3, rtol=1e-3)
    seconds = time.perf_counter() - started
    kinds = collections.Counter(
        f["direction"] if f["direction"] != "pre-activation" else f"pre-activation, shift {f['shift']}"
        for f in result.report["folded"])
    limit = limit_model(model)
    x = np.random.default_rng(0).normal(0, 1, (1, size, size, 3)).astype(np.float32)
    functions = {"original": tf_callable(model, x, "/cpu:0"), "folded": tf_callable(result.model, x, "/cpu:0"),
                 "limit": tf_callable(limit, x, "/cpu:0"),
                 "limit + biases": tf_callable(limit_with_biases(model, limit), x, "/cpu:0")}
    measured = [interleaved_with_cpu(functions, calls) for _ in range(rounds)]
    row = {"model": name, "size": size, "bn": bn_count(model), "left": bn_count(result.model),
           "kinds": dict(kinds), "kept": len(result.report["kept"]), "parity_max_rel": result.parity.max_rel,
           "fold_s": seconds, "rounds": measured, "load": os.getloadavg()[0]}
    keras.backend.clear_session()
    return row


def pre_activation_markdown(rows: list[dict], machine: str, args) -> str:
    out = [PRE_START, "", "## Pre-activation networks (positive BN scales)", "",
           f"Generated by `python scripts/bench.py --models --pre-activation {' '.join(r['model'] for r in rows)} "
           f"--size {args.size} --calls {args.calls} --rounds {args.rounds}` on {machine}{args.note}.",
           "keras.applications with weights=None and *positive* random BN statistics (gamma 0.5–1.5, beta and "
           "mean ~N(0, 0.5), variance 0.2–2): with a third of the gammas negative (the tables above) nearly every "
           "pre-activation BN has a negative channel and is kept, saying which. *pre-activation, shift bias*: the "
           "BN's scale went into the convolutions after its ReLU and its shift into an earlier layer's bias, "
           "nothing stays; *shift add*: the shift stays as one per-channel add (a `keras.ops.add` of a constant). "
           "TF batch-1 latency on the CPU, the four models interleaved call by call in one process, medians of "
           "the wall time and of the process's CPU time per call (all its threads; on a shared machine it counts "
           f"the work, not the waits for a core), {args.rounds} rounds: the medians of the rounds, and "
           "`limit/folded` as the median of the rounds' ratios (their range in parentheses); "
           "*limit*: every BN replaced by an identity; *limit + biases*: the limit with a zero bias where a layer "
           "had none. On TF 2.21 Grappler's remapper fails on ResNet50V2's limit graphs (`remapper failed: "
           "INVALID_ARGUMENT: Mutation::Apply error: fanout ... exist for missing node .../conv4_block*_out/Add`: "
           "an Add that feeds a ReLU and the next shortcut) and they run without its fusions; the original and "
           "folded graphs do not hit it.", "",
           "| model | input | BN | folded backward | pre-activation, shift bias | pre-activation, shift add | "
           "BN layers left | parity max_rel | fold s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k = r["kinds"]
        out.append(f"| {r['model']} | {r['size']}x{r['size']} | {r['bn']} | {k.get('backward', 0)} | "
                   f"{k.get('pre-activation, shift bias', 0)} | {k.get('pre-activation, shift add', 0)} | "
                   f"{r['left']} | {r['parity_max_rel']:.1e} | {r['fold_s']:.1f} |")
    out += ["", "| model | time | original ms | folded ms | limit ms | limit + biases ms | original/folded | "
            "original/limit | limit/folded | (limit + biases)/folded | goal | load average after |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for index, label in ((0, "wall"), (1, "CPU")):
            per_round = [round_[index] for round_ in r["rounds"]]
            t = {k: statistics.median(m[k] for m in per_round) for k in per_round[0]}
            shares = sorted(m["limit"] / m["folded"] for m in per_round)
            share = statistics.median(shares)
            spread = f" ({shares[0]:.3f}–{shares[-1]:.3f})" if len(shares) > 1 else ""
            goal = PRE_GOALS.get(r["model"])
            verdict = "–" if goal is None else (
                f"{'met' if share >= goal and r['left'] == 0 else '**not met**'} (>= {goal:.2f}, 0 BN left)")
            out.append(f"| {r['model']} | {label} | {_f(t['original'])} | {_f(t['folded'])} | {_f(t['limit'])} | "
                       f"{_f(t['limit + biases'])} | {t['original'] / t['folded']:.2f} | "
                       f"{t['original'] / t['limit']:.2f} | {share:.3f}{spread} | "
                       f"{t['limit + biases'] / t['folded']:.3f} | {verdict} | {r['load']:.1f} |")
    out += ["", PRE_END]
    return "\n".join(out) + "\n"


def write_marked(path: Path, section: str, start: str, end: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` with ``section``, or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def kept_summary(kept: dict) -> str:
    """'16 after Add, 1 after MaxPooling2D' from the planner's reasons (one per kept BN)."""
    import re

    by_producer: dict[str, int] = {}
    for reason, count in kept.items():
        found = re.search(r"input comes from \S+ \((\w+)\)", reason)
        key = f"after {found.group(1)}" if found else reason[:80]
        by_producer[key] = by_producer.get(key, 0) + count
    return ", ".join(f"{n} {key}" for key, n in sorted(by_producer.items(), key=lambda kv: -kv[1])) or "–"


def _f(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[Row], machine: str, args) -> str:
    out = [
        "# Benchmarks", "",
        f"Generated by `python scripts/bench.py --size {args.size} --calls {args.calls}` on {machine}.",
        "Architectures from `keras.applications` with weights=None and randomised BN statistics "
        "(gamma 0.5–1.5, a third negative; beta, mean ~N(0, 0.5); variance 0.2–2). "
        "Latencies are medians of interleaved batch-1 calls. `bnfreeze fold` CLI times are wall times of a fresh "
        "process (TensorFlow start-up, load, fold, parity check, save); *user install* runs it without "
        "scikit-learn (a test-only dependency that Keras imports at start-up when present). "
        "Goal: ResNet50 under 10 s.", "",
        "## Fold", "",
        "| model | input | BN | folded backward | folded forward | kept (input of the BN) | parity max_rel | "
        "`bnfreeze fold` CLI s, user install | same, dev env (+scikit-learn) | fold s (in process) | ONNX export s | "
        "TFLite s | SavedModel s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r.available:
            out.append(f"| {r.model} | – | – | – | – | {r.note} | – | – | – | – | – | – | – |")
            continue
        kept = kept_summary(r.kept)
        out.append(f"| {r.model} | {r.note} | {r.bn} | {r.folded_backward} | {r.folded_forward} | {kept} | "
                   f"{r.parity_max_rel:.1e} | {_f(r.fold_cli_user_s, 1)} | {_f(r.fold_cli_s, 1)} | {_f(r.fold_s, 1)} | "
                   f"{_f(r.export_s.get('onnx'), 1)} | {_f(r.export_s.get('tflite'), 1)} | "
                   f"{_f(r.export_s.get('savedmodel'), 1)} |")
    out += ["", "## TensorFlow batch-1 latency (CPU)", "",
            "*limit*: the same network with every BN replaced by an identity. Goal: folded speed-up >= 95% of the "
            "limit's (`limit/folded` >= 0.95). A fold must give its target the BN's shift as a bias, which the "
            "limit does not have where the layer before a BN was built without one (`use_bias=False`); "
            "*limit + biases* is the limit with a zero bias in those layers — the network as one would build it "
            "without BN, and what a folded model can at most match.", "",
            "| model | original ms | folded ms | limit ms | limit + biases ms | original/folded | original/limit | "
            "limit/folded | goal | (limit + biases)/folded |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.available:
            continue
        t = r.tf_ms
        share = t["limit"] / t["folded"]
        goal = "met" if share >= 0.95 else ("not met: BNs kept" if r.kept else "not met")
        biased = t.get("limit + biases")
        out.append(f"| {r.model} | {_f(t['original'])} | {_f(t['folded'])} | {_f(t['limit'])} | {_f(biased)} | "
                   f"{t['original'] / t['folded']:.2f} | {t['original'] / t['limit']:.2f} | {share:.2f} | {goal} | "
                   f"{(biased / t['folded']) if biased else float('nan'):.2f} |")
    out += ["", "## onnxruntime batch-1 latency (CPU provider)", "",
            "| model | unfolded, ORT_ENABLE_ALL ms | folded, ORT_ENABLE_BASIC ms | folded, ORT_ENABLE_ALL ms | "
            "unfolded ALL / folded ALL |", "|---|---|---|---|---|"]
    for r in rows:
        if not r.available:
            continue
        o = r.ort_ms
        out.append(f"| {r.model} | {_f(o['unfolded ALL'])} | {_f(o['folded BASIC'])} | {_f(o['folded ALL'])} | "
                   f"{o['unfolded ALL'] / o['folded ALL']:.2f} |")
    out += ["", "## ONNX graphs", "",
            "BN-derived nodes: BatchNormalization nodes, and Mul/Add/Sub/Div/Sqrt nodes named after a BN layer "
            "(what a converter leaves when it cannot fuse). Goal: 0 where bnfreeze folded every BN.", "",
            "| model | tf2onnx nodes | tf2onnx BN-derived | after ORT ALL nodes | after ORT ALL BN-derived | "
            "bnfreeze nodes | bnfreeze BN-derived | goal |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.available:
            continue
        n, b = r.onnx_nodes, r.bn_nodes
        kept = sum(r.kept.values())
        goal = "met" if b["bnfreeze"] == 0 else (f"met: the {kept} kept BNs" if kept else "not met")
        out.append(f"| {r.model} | {n['tf2onnx']} | {b['tf2onnx']} | {n['tf2onnx + ORT ALL']} | "
                   f"{b['tf2onnx + ORT ALL']} | {n['bnfreeze']} | {b['bnfreeze']} | {goal} |")
    if any(r.gpu_ms for r in rows):
        out += ["", "## GPU batch-1 latency", "", "| model | " + " | ".join(next(r.gpu_ms for r in rows if r.gpu_ms)) + " |",
                "|---|" + "---|" * 5]
        for r in rows:
            if r.gpu_ms:
                out.append(f"| {r.model} | " + " | ".join(_f(v) for v in r.gpu_ms.values()) + " |")
    else:
        out += ["", "No GPU was present: the GPU latencies (TF GPU, CUDA provider) were not measured."]
    return "\n".join(out) + "\n"


def _kept_sections(path: Path) -> str:
    """Sections other scripts write (from "## Recalibration" or the int8 markers on), kept as they are."""
    text = path.read_text() if path.exists() else ""
    starts = [i for i in (text.find("\n## Recalibration"), text.find("\n<!-- bench_int8: start"),
                          text.find("\n" + PRE_START)) if i >= 0]
    return text[min(starts):] if starts else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--pre-activation", nargs="*", default=list(PRE_GOALS),
                        help="Pre-activation networks measured with positive BN scales (their own section).")
    parser.add_argument("--note", default="", help="Said of the machine in the pre-activation section.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds of the pre-activation latencies.")
    parser.add_argument("--json", type=Path, help="Also write the raw numbers as JSON.")
    parser.add_argument("--merge", type=Path,
                        help="JSON of an earlier run: keep its rows, re-measure only --models, write the merged file.")
    args = parser.parse_args()

    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
               f"{'GPU ' + tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0]).get('device_name', '') if gpu else 'no GPU'}, "
               f"TensorFlow {tf.__version__}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    rows = [Row(**r) for r in json.loads(args.merge.read_text())] if args.merge else []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            started = time.perf_counter()
            row = bench_model(name, args.size, args.calls, Path(tmp), gpu)
            index = next((i for i, r in enumerate(rows) if r.model == name), None)
            if index is None:
                rows.append(row)
            else:
                rows[index] = row
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
            args.out.write_text(markdown(rows, machine, args) + _kept_sections(args.out))
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    pre_rows = []
    for name in args.pre_activation:
        started = time.perf_counter()
        pre_rows.append(bench_pre_activation(name, args.size, args.calls, args.rounds))
        print(f"{name} (pre-activation): {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if pre_rows:
        write_marked(args.out, pre_activation_markdown(pre_rows, machine, args), PRE_START, PRE_END)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
