"""int8 and pre-activation BNs: the converters alone, ``bnfreeze quantize``, and every pre-activation fold.

A small pre-activation ResNet (ResNet v2 blocks: BN -> ReLU -> conv -> BN ->
ReLU -> conv, identity shortcuts, a max pooling, a final BN -> ReLU ->
global pooling -> Dense) is trained on scikit-learn's digits, once per seed,
and quantized three ways with the same 256 calibration images:

* *peer*: the converter alone on the unfolded model (``bnfreeze quantize
  --no-fold``: the same converter calls);
* *bnfreeze*: ``bnfreeze quantize`` as it ships (:data:`bnfreeze.fold.rules.INT8_RULES`:
  a pre-activation BN folds where its shift moves into an earlier bias; one
  whose shift would stay as an add is left to the converter);
* *every pre-activation fold*: the same, folding with ``bnfreeze fold``'s own
  rules (the shift kept as an add where it cannot move), the ablation that
  explains the choice above.

TF Lite full-integer int8 and onnxruntime QDQ int8; accuracy and SNR against
the float model on the 360 held-out digits; BNs kept; ops. Writes its section
of BENCHMARKS.md (between its markers).

Run: ``python scripts/bench_preactivation_int8.py [--seeds 1 2 3] [--epochs 40]``
(needs the test extras: scikit-learn).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402
from benchmarks_md import write_section  # noqa: E402

START = "<!-- bench_preactivation_int8: start (written by scripts/bench_preactivation_int8.py) -->"
END = "<!-- bench_preactivation_int8: end -->"
VARIANTS = {"peer": "peer (converter alone)", "bnfreeze": "bnfreeze quantize",
            "every": "every pre-activation fold (shift as an add)"}


def preact_resnet():
    import keras
    from keras import layers

    def block(x, name):
        y = layers.BatchNormalization(name=f"{name}_preact_bn")(x)
        y = layers.ReLU(name=f"{name}_preact_relu")(y)
        y = layers.Conv2D(16, 3, padding="same", use_bias=False, name=f"{name}_conv1")(y)
        y = layers.BatchNormalization(name=f"{name}_bn")(y)
        y = layers.ReLU(name=f"{name}_relu")(y)
        y = layers.Conv2D(16, 3, padding="same", name=f"{name}_conv2")(y)
        return layers.Add(name=f"{name}_out")([x, y])

    inputs = keras.Input((8, 8, 1), name="digits")
    x = layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = block(block(x, "b1"), "b2")
    x = block(layers.MaxPooling2D(2, name="pool")(x), "b3")
    x = layers.ReLU(name="post_relu")(layers.BatchNormalization(name="post_bn")(x))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x), name="preact_resnet")


@contextlib.contextmanager
def quantize_folding_with(rules):
    """``bnfreeze quantize`` folding with ``rules`` instead of its own (the ablation only)."""
    import bnfreeze.quantize.pipeline as pipeline

    saved = pipeline.INT8_RULES
    pipeline.INT8_RULES = rules
    try:
        yield
    finally:
        pipeline.INT8_RULES = saved


def run_seed(seed: int, epochs: int, folder: Path) -> dict:
    import keras
    import tensorflow as tf

    import bnfreeze
    from bnfreeze.fold.rules import RULES
    from bnfreeze.io.arrays import ArrayData
    from bnfreeze.io.signature import input_specs
    from make_example_model import load_digits_split

    x_train, x_test, y_train, y_test = load_digits_split(0)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = preact_resnet()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    specs = input_specs(model)
    calib = x_train[np.random.default_rng(seed).choice(len(x_train), size=256, replace=False)]
    calibration = ArrayData(Path("256 training digits"), {specs[0].name: calib}, specs)
    evaluation = ArrayData(Path("360 held-out digits"), {specs[0].name: x_test}, specs, y_test)
    found = {}
    for label in VARIANTS:
        options = {"fold": False} if label == "peer" else {}
        context = quantize_folding_with(RULES) if label == "every" else contextlib.nullcontext()
        with context:
            result = bnfreeze.quantize(model, calibration, tflite=folder / f"{seed}_{label}.tflite",
                                       onnx=folder / f"{seed}_{label}.onnx", eval_data=evaluation, min_top1=0.0,
                                       allow_float_ops=True, force=True, **options)
        fold = result.report["fold"]
        found[label] = {"float_accuracy": result.report["float_accuracy"],
                        "kept": None if fold is None else len(fold["kept"]),
                        **{a["kind"]: a for a in result.report["artifacts"]}}
    return found


def markdown(results: dict, machine: str, args) -> str:
    out = [START, "", "## int8 and pre-activation BNs", "",
           f"Generated by `python scripts/bench_preactivation_int8.py --seeds {' '.join(map(str, args.seeds))} "
           f"--epochs {args.epochs}` on {machine}.",
           "A pre-activation ResNet (three ResNet v2 blocks of 16 channels, 7 BNs, 4 of them pre-activation BNs) "
           "trained on the digits once per seed; the same 256 calibration images for every file; accuracy and "
           "SNR against the float model on the 360 held-out digits. *bnfreeze quantize* folds a pre-activation BN "
           "only where its shift moves into an earlier bias (here: the final BN, after the last Add); the three "
           "block BNs, whose shift would stay as an add, are left to the converter (an int8 multiply and add). "
           "*every pre-activation fold* folds those too (`bnfreeze fold`'s rules): the BN's scale goes into the "
           "next convolution's kernel and the convolution's int8 input is no longer normalized per channel.", "",
           "| seed | variant | BNs kept | TFLite acc | TFLite SNR dB | TFLite ops | ONNX acc | ONNX SNR dB |",
           "|---|---|---|---|---|---|---|---|"]
    for seed, found in results.items():
        for label, title in VARIANTS.items():
            v = found[label]
            ops = ", ".join(f"{k} {n}" for k, n in sorted(v["tflite"]["ops"].items()))
            kept = "all 7 (no fold)" if v["kept"] is None else str(v["kept"])
            out.append(f"| {seed} | {title} | {kept} | {v['tflite']['accuracy']:.4f} | {v['tflite']['snr_db']:.1f} | "
                       f"{ops} | {v['onnx']['accuracy']:.4f} | {v['onnx']['snr_db']:.1f} |")
    out += ["", "| goal | result |", "|---|---|"]
    for kind in ("tflite", "onnx"):
        worse = [(seed, found["bnfreeze"][kind]["accuracy"] - found["peer"][kind]["accuracy"])
                 for seed, found in results.items()]
        verdict = "met" if all(delta >= 0 for _, delta in worse) else "**not met**"
        deltas = ", ".join(f"seed {seed}: {delta:+.4f}" for seed, delta in worse)
        out.append(f"| {kind}: bnfreeze int8 accuracy >= peer | {verdict} ({deltas}) |")
    out += ["", END]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--note", default="", help="Said of the machine (other work running, say).")
    args = parser.parse_args()

    import tensorflow as tf

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
               f"{'a GPU (unused: int8 runs on the CPU)' if tf.config.list_physical_devices('GPU') else 'no GPU'}, "
               f"TensorFlow {tf.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
               f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}{args.note}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            started = time.perf_counter()
            results[seed] = run_seed(seed, args.epochs, Path(tmp))
            print(f"seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    section = markdown(results, machine, args)
    write_section(args.out, section, START, END)
    print(section)


if __name__ == "__main__":
    main()
