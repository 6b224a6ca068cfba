"""How far each runtime's float32 output lies from Keras's on real models: the evidence for the default
tolerances of :data:`bnfreeze.compare.tolerance.RUNTIME_TOLERANCES`.

For each model (the trained digits CNN in models/, and keras.applications architectures built with
weights=None, BN statistics randomised far from identity, a third of the gammas negative, and their logits
as the output: ``classifier_activation=None``, since a softmax over 1000 near-uniform classes hides the
float noise that a regression head or a backbone's features show in full), in one process:
fold it, export the original and the folded model to SavedModel, ONNX and TFLite, and run ``bnfreeze.verify``
with the original Keras model as the reference and every artifact (and the folded Keras model) as a candidate,
batch 1 (the single-sample deployment case), on SAMPLES inputs: the digits' held-out images for the digits
CNN, seeded standard-normal inputs at 1x and at 10x for the others. Prints, per runtime and device, the worst
max_abs and max_rel (max |error| / max |reference|) over every model and input, and writes them as JSON.

    python scripts/measure_tolerances.py [--models MobileNetV2 ResNet50] [--samples 100] [--json out.json]

A GPU row appears where onnxruntime's CUDA provider (or a TF GPU) is present; on a machine without one it is
reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

MODELS = ["digits_cnn", "MobileNetV2", "ResNet50", "EfficientNetB0", "DenseNet121"]


def build(name: str, softmax: bool = False):
    import keras

    from support import randomize_bn, randomize_weights

    if name == "digits_cnn":
        return keras.models.load_model(REPO / "models" / "digits_cnn.keras", compile=False)
    model = getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3),
                                              classifier_activation="softmax" if softmax else None)
    randomize_bn(model, seed=0)
    randomize_weights(model, seed=0)
    return model


def data_for(name: str, model, samples: int, scale: float, folder: Path) -> Path:
    path = folder / f"{name}_x{scale:g}.npy"
    if name == "digits_cnn":
        x = np.load(REPO / "models" / "digits_test.npz")["x"][:samples]
    else:
        shape = (samples,) + tuple(model.inputs[0].shape[1:])
        x = np.random.default_rng(7).standard_normal(shape).astype("float32") * scale
    np.save(path, x.astype("float32"))
    return path


def measure(name: str, samples: int, device: str, folder: Path, softmax: bool = False) -> list[dict]:
    import bnfreeze
    from bnfreeze.compare import Tolerance
    from bnfreeze.export import export
    from bnfreeze.verify import verify

    model = build(name, softmax)
    original = folder / f"{name}.keras"
    model.save(original)
    folded = bnfreeze.fold(model, check=False).model
    folded_path = folder / f"{name}.folded.keras"
    folded.save(folded_path)
    candidates = [folded_path]
    loose = Tolerance(1.0, 1.0)  # the exports' own checks must not stop the measurement
    for tag, source in (("", model), (".folded", folded)):
        paths = {"savedmodel": folder / f"{name}{tag}_sm", "onnx": folder / f"{name}{tag}.onnx",
                 "tflite": folder / f"{name}{tag}.tflite"}
        export(source, **{kind: str(path) for kind, path in paths.items()}, force=True, tolerance=loose)
        candidates += list(paths.values())
    rows = []
    for scale in ((1.0,) if name == "digits_cnn" else (1.0, 10.0)):
        data = data_for(name, model, samples, scale, folder)
        report = verify(str(original), [str(c) for c in candidates], data=str(data), device=device,
                        tolerance=Tolerance(0.0, 0.0))
        for row in report.rows:
            rows.append({"model": name, "head": "softmax" if softmax or name == "digits_cnn" else "logits",
                         "scale": scale, "candidate": Path(row.candidate).name,
                         "folded": ".folded" in Path(row.candidate).name, "backend": row.backend,
                         "device": row.device, "skipped": row.skipped, "samples": row.samples,
                         "max_abs": row.max_abs, "max_rel": row.max_rel, "reason": row.reason if row.skipped else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--samples", type=int, default=100, help="Inputs per model and scale (digits: up to 360).")
    parser.add_argument("--device", default="all", choices=["cpu", "gpu", "all"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--softmax", action="store_true", help="keras.applications with their softmax head.")
    args = parser.parse_args()
    import onnxruntime
    import tensorflow as tf

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            started = time.perf_counter()
            found = measure(name, 300 if name == "digits_cnn" else args.samples, args.device, Path(folder),
                            args.softmax)
            rows += found
            for row in found:
                figures = "skipped" if row["skipped"] else f"max_abs {row['max_abs']:.3g}, max_rel {row['max_rel']:.3g}"
                print(f"{name} x{row['scale']:g} {row['candidate']} {row['backend']}/{row['device']} "
                      f"({row['samples']} samples): {figures}", flush=True)
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    worst: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row["skipped"]:
            continue
        key = (row["backend"], row["device"])
        entry = worst.setdefault(key, {"max_abs": 0.0, "max_rel": 0.0, "where_abs": "", "where_rel": ""})
        for field in ("max_abs", "max_rel"):
            if row[field] is not None and row[field] >= entry[field]:
                entry[field] = row[field]
                entry[f"where_{field[4:]}"] = f"{row['model']} x{row['scale']:g} {row['candidate']}"
    print()
    print("| runtime | device | worst max_abs | where | worst max_rel | where |")
    print("|---|---|---|---|---|---|")
    for (backend, device), entry in sorted(worst.items()):
        print(f"| {backend} | {device} | {entry['max_abs']:.3g} | {entry['where_abs']} | {entry['max_rel']:.3g} | "
              f"{entry['where_rel']} |")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, onnxruntime "
               f"{onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}")
    print(f"\n{machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows,
                                         "worst": {f"{b}/{d}": e for (b, d), e in worst.items()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
