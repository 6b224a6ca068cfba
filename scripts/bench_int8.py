"""int8 quantization: the converters alone versus ``bnfreeze quantize``, side by side in one run.

Four models trained here on scikit-learn's digits in minutes (the same
1,437/360 split as the example model):

* the example model ``models/digits_cnn.keras`` (shipped, not retrained);
* the seed article's CNN (Conv2D relu -> BN -> MaxPooling, twice; Dense relu
  -> BN; 'valid' padding) on the digits upsampled to 32x32x3;
* the seed article's MLP (Dense -> BN -> relu -> Dense) on the 64 pixels;
* a small MobileNetV2-style network (inverted residual blocks: 1x1 expansion,
  3x3 depthwise, 1x1 projection, each followed by BN; residual Adds) on the
  same 32x32x3 images.

Each is quantized twice with the same calibration data (256 training
images): *peer* is the converter alone on the unfolded model (the TF Lite
converter's full-integer quantization; tf2onnx + onnxruntime's
``quantize_static``, QDQ) — ``bnfreeze quantize --no-fold``, which makes
the same converter calls — and *bnfreeze* is ``bnfreeze quantize`` (fold
first). Both are compared with the float model on the 360 held-out digits:
accuracy, top-1 agreement, SNR; the files are read back for BN-derived
quantized ops, ops onnxruntime runs in float and size; batch-1 latency is
timed on the TFLite interpreter and onnxruntime, one thread each, peer and
bnfreeze interleaved call by call, medians.

Run: ``python scripts/bench_int8.py`` (needs the test extras: scikit-learn).
Writes the int8 section of BENCHMARKS.md (between its markers; the rest of
the file is kept) and, with ``--json``, the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402
from benchmarks_md import write_section  # noqa: E402

START = "<!-- bench_int8: start (written by scripts/bench_int8.py) -->"
END = "<!-- bench_int8: end -->"
MODELS = ("example", "seed_cnn", "seed_mlp", "mobilenet_style")


# -- models and data -------------------------------------------------------------------
def digits(seed: int = 0):
    from make_example_model import load_digits_split

    return load_digits_split(seed)


def to_rgb32(x):
    import tensorflow as tf

    return np.repeat(tf.image.resize(x, (32, 32)).numpy(), 3, axis=-1).astype("float32")


def mobilenet_style():
    """Inverted residual blocks (expand 1x1, depthwise 3x3, project 1x1), every conv followed by BN."""
    import keras
    from keras import layers

    def block(x, expand: int, channels: int, stride: int, name: str):
        inputs, width = x, x.shape[-1]
        if expand != 1:
            x = layers.Conv2D(width * expand, 1, use_bias=False, name=f"{name}_expand")(x)
            x = layers.BatchNormalization(name=f"{name}_expand_bn")(x)
            x = layers.ReLU(name=f"{name}_expand_relu")(x)
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = layers.ReLU(name=f"{name}_dw_relu")(x)
        x = layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_project")(x)
        x = layers.BatchNormalization(name=f"{name}_project_bn")(x)
        if stride == 1 and width == channels:
            x = layers.Add(name=f"{name}_add")([inputs, x])
        return x

    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, (expand, channels, stride) in enumerate([(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1)]):
        x = block(x, expand, channels, stride, f"block{i}")
    x = layers.Conv2D(64, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x), name="mobilenet_style")


def build(name: str, epochs: int, seed: int):
    """(model, calibration images, test images, test labels) for one benchmark model."""
    import keras
    import tensorflow as tf

    from bn_effect import cnn, mlp

    x_train, x_test, y_train, y_test = digits(seed)
    calib_index = np.random.default_rng(seed).choice(len(x_train), size=256, replace=False)
    if name == "example":
        model = keras.models.load_model(REPO / "models" / "digits_cnn.keras")
        return model, np.load(REPO / "models" / "digits_calib.npy"), x_test, y_test, "shipped"
    shape = {"seed_cnn": to_rgb32, "mobilenet_style": to_rgb32, "seed_mlp": lambda x: x.reshape(len(x), -1)}[name]
    x_train, x_test = shape(x_train), shape(x_test)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    if name == "seed_cnn":
        model, optimizer = cnn(True), keras.optimizers.SGD(0.05, momentum=0.9)
    elif name == "seed_mlp":
        model, optimizer = mlp(True), keras.optimizers.SGD(0.05, momentum=0.9)
    else:
        model, optimizer = mobilenet_style(), keras.optimizers.Adam(3e-3)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    trained = f"{epochs} epochs, {time.perf_counter() - started:.0f} s"
    return model, x_train[calib_index], x_test, y_test, trained


# -- timing ------------------------------------------------------------------------------
def interleaved(functions: dict, calls: int, warmup: int = 20) -> dict[str, float]:
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


def tflite_call(path: Path, sample: np.ndarray):
    """One batch-1 inference on the TFLite interpreter (one thread, its default XNNPACK delegate)."""
    import tensorflow as tf

    from bnfreeze.verify.runners.base import Quantization

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (spec,) = interpreter.get_input_details()
    scale, zero = spec["quantization"]
    value = Quantization.of([scale], [zero]).quantize(sample, spec["dtype"]) if scale else sample
    index, output = spec["index"], interpreter.get_output_details()[0]["index"]

    def call():
        interpreter.set_tensor(index, value)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return call


def ort_call(path: Path, sample: np.ndarray):
    """One batch-1 inference on onnxruntime's CPU provider (one thread, ORT_ENABLE_ALL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: sample})


# -- one model ---------------------------------------------------------------------------
#: The comparison of the issue: the converters alone, and ``bnfreeze quantize`` as it ships.
MAIN = {"peer": {"fold": False}, "bnfreeze": {}}
#: Going further (same data): ablation of the scale placement, and the data-free rewrites, per channel and per tensor.
EXPERIMENTS = {
    "fold_only": {"place_scales": False},
    "equalize": {"equalize": True},
    "bias_correction": {"bias_correction": True},
    "peer_per_tensor": {"fold": False, "per_tensor": True},
    "no_equalize_per_tensor": {"per_tensor": True, "equalize": False},
    "bnfreeze_per_tensor": {"per_tensor": True},
    "bias_only_per_tensor": {"per_tensor": True, "equalize": False, "bias_correction": True},
    "both_per_tensor": {"per_tensor": True, "bias_correction": True},
}
LABELS = {
    "peer": "peer (converter alone)", "bnfreeze": "bnfreeze quantize",
    "fold_only": "fold only, scales left forward", "equalize": "bnfreeze + --equalize",
    "bias_correction": "bnfreeze + --bias-correction", "peer_per_tensor": "peer, --per-tensor",
    "no_equalize_per_tensor": "bnfreeze --per-tensor --no-equalize",
    "bnfreeze_per_tensor": "bnfreeze --per-tensor (equalizes)",
    "bias_only_per_tensor": "bnfreeze --per-tensor --no-equalize --bias-correction",
    "both_per_tensor": "bnfreeze --per-tensor --bias-correction (equalizes)",
}


def quantize_variants(model, calib, test, variants: dict, folder: Path) -> dict:
    """``bnfreeze.quantize`` once per variant (same data); the report entries per variant and format."""
    import bnfreeze
    from bnfreeze.io.arrays import ArrayData
    from bnfreeze.io.signature import input_specs

    specs = input_specs(model)
    calibration = ArrayData(Path("256 training digits"), {specs[0].name: calib}, specs)
    evaluation = ArrayData(Path("360 held-out digits"), {specs[0].name: test[0]}, specs, test[1])
    found = {}
    for label, options in variants.items():
        started = time.perf_counter()
        result = bnfreeze.quantize(model, calibration, tflite=folder / f"{label}.tflite", onnx=folder / f"{label}.onnx",
                                   eval_data=evaluation, min_top1=0.0, allow_float_ops=True, force=True, **options)
        found[label] = {"seconds": time.perf_counter() - started, "float_accuracy": result.report["float_accuracy"],
                        "fold": result.report["fold"],
                        **{a["kind"]: a for a in result.report["artifacts"]}}
    return found


def bench(name: str, epochs: int, calls: int, seed: int, folder: Path) -> dict:
    model, calib, x_test, y_test, trained = build(name, epochs, seed)
    found = quantize_variants(model, calib, (x_test, y_test), {**MAIN, **EXPERIMENTS}, folder)
    sample = x_test[:1]
    latency = {}
    for kind, make in (("tflite", tflite_call), ("onnx", ort_call)):
        latency[kind] = interleaved({label: make(folder / f"{label}.{kind}", sample) for label in MAIN}, calls)
    bns = sum(1 for layer in model._flatten_layers(include_self=False, recursive=True)
              if type(layer).__name__ == "BatchNormalization")
    return {"model": name, "trained": trained, "bns": bns, "variants": found, "latency": latency,
            "parameters": int(model.count_params())}


# -- Markdown ----------------------------------------------------------------------------
def _pct(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def markdown(results: list[dict], machine: str, args) -> str:
    out = [START, "", "## int8 quantization: the converters alone vs `bnfreeze quantize`", "",
           f"Generated by `python scripts/bench_int8.py --calls {args.calls}` on {machine}.",
           "Models trained here on scikit-learn's digits (1,437 training / 360 held-out images); calibration: the "
           "same 256 training images for every file. *peer*: the converter alone on the unfolded model (TF Lite "
           "converter full-integer int8 with int8 I/O; tf2onnx + onnxruntime `quantize_static` QDQ, per-channel "
           "int8 weights, MinMax) — `bnfreeze quantize --no-fold`, the same converter calls; *bnfreeze*: "
           "`bnfreeze quantize` (fold first). Accuracy, top-1 agreement with the float model and SNR on the 360 "
           "held-out digits. *BN ops*: BN-derived quantized ops left in the file (a MUL and an ADD per unfolded BN, "
           "each with its own rounding). *float ops*: ops onnxruntime's CPU provider runs in float between "
           "quantized ops (read from the graph it runs). Latency: batch 1, one thread, peer and bnfreeze "
           f"interleaved call by call, median of {args.calls} calls (TFLite interpreter with its default XNNPACK "
           "delegate; onnxruntime ORT_ENABLE_ALL).", ""]
    out += ["| model | BNs | folded by bnfreeze | trained |", "|---|---|---|---|"]
    for r in results:
        fold = r["variants"]["bnfreeze"]["fold"]
        kept = f", {len(fold['kept'])} kept" if fold["kept"] else ""
        directions = sorted({f["direction"] for f in fold["folded"]})
        out.append(f"| {r['model']} | {r['bns']} | {len(fold['folded'])} ({', '.join(directions)}){kept} | {r['trained']} |")
    for kind, title in (("tflite", "TF Lite (full-integer int8, int8 I/O)"), ("onnx", "ONNX (QDQ int8, onnxruntime)")):
        out += ["", f"### {title}", ""]
        head = ("| model | float acc | peer int8 acc | bnfreeze int8 acc | agreement peer / bnfreeze | "
                "SNR dB peer / bnfreeze | BN ops peer / bnfreeze |")
        sep = "|---|---|---|---|---|---|---|"
        if kind == "onnx":
            head += " float ops peer / bnfreeze |"
            sep += "---|"
        head += " latency ms peer / bnfreeze | size KiB peer / bnfreeze |"
        sep += "---|---|"
        out += [head, sep]
        for r in results:
            p, b = r["variants"]["peer"][kind], r["variants"]["bnfreeze"][kind]
            lat = r["latency"][kind]
            row = (f"| {r['model']} | {_pct(r['variants']['peer']['float_accuracy'])} | {_pct(p['accuracy'])} | "
                   f"{_pct(b['accuracy'])} | {_pct(p['top1_agreement'])} / {_pct(b['top1_agreement'])} | "
                   f"{p['snr_db']:.1f} / {b['snr_db']:.1f} | {p['bn_derived_ops']} / {b['bn_derived_ops']} |")
            if kind == "onnx":
                pf = sum(1 for op in p["float_ops"] if not op["exact"])
                bf = sum(1 for op in b["float_ops"] if not op["exact"])
                row += f" {pf} / {bf} |"
            row += (f" {lat['peer']:.3f} / {lat['bnfreeze']:.3f} | "
                    f"{p['bytes'] / 1024:.1f} / {b['bytes'] / 1024:.1f} |")
            out.append(row)
    out += ["", "### Goals", "", "| model | format | accuracy >= peer | fewer BN ops where the peer leaves any | "
            "latency no worse (within 5 %) |", "|---|---|---|---|---|"]
    for r in results:
        for kind in ("tflite", "onnx"):
            p, b = r["variants"]["peer"][kind], r["variants"]["bnfreeze"][kind]
            lat = r["latency"][kind]
            fewer = ("n/a (peer leaves none)" if p["bn_derived_ops"] == 0
                     else _verdict(b["bn_derived_ops"] < p["bn_derived_ops"]))
            slower = lat["bnfreeze"] / lat["peer"]
            out.append(f"| {r['model']} | {kind} | {_verdict(b['accuracy'] >= p['accuracy'])} "
                       f"({b['accuracy'] - p['accuracy']:+.4f}) | {fewer} | {_verdict(slower <= 1.05)} "
                       f"(bnfreeze/peer {slower:.2f}) |")
    out += ["", "### Going further: where the BN scale goes, equalization, bias correction", "",
            "Same models, data and converters; TFLite and ONNX accuracy / SNR on the 360 held-out digits. "
            "*fold only*: `bnfreeze.fold` as it is (a BN after a relu folded forward, its scale on the next layer's "
            "input channels), without moving the scale back through the ReLU. `--equalize`: cross-layer "
            "equalization (Nagel et al. 2019) through ReLUs, pooling and Flatten (on by default with "
            "`--per-tensor`); `--bias-correction`: biases that cancel the mean shift of the rounded weights, "
            "measured on the calibration data.", "",
            "| model | variant | TFLite acc | TFLite SNR dB | ONNX acc | ONNX SNR dB |", "|---|---|---|---|---|---|"]
    for r in results:
        for label in ("peer", "bnfreeze", *EXPERIMENTS):
            v = r["variants"][label]
            out.append(f"| {r['model']} | {LABELS[label]} | {_pct(v['tflite']['accuracy'])} | "
                       f"{v['tflite']['snr_db']:.1f} | {_pct(v['onnx']['accuracy'])} | {v['onnx']['snr_db']:.1f} |")
    out += ["", END]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="Also write the raw numbers as JSON.")
    args = parser.parse_args()

    import tensorflow as tf

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
               f"{'a GPU (unused: int8 runs on the CPU)' if tf.config.list_physical_devices('GPU') else 'no GPU'}, "
               f"TensorFlow {tf.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
               f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            started = time.perf_counter()
            folder = Path(tmp) / name
            folder.mkdir()
            results.append(bench(name, args.epochs, args.calls, args.seed, folder))
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    section = markdown(results, machine, args)
    write_section(args.out, section, START, END)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(section)


if __name__ == "__main__":
    main()
