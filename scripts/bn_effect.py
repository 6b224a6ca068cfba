"""The seed article's experiment: its two architectures trained with and without BN on real data.

The seed article (../shared/seed/) shows an MLP (Dense-BN-ReLU-Dense) and a
CNN (Conv-ReLU-BN-MaxPool x2, Flatten, Dense-ReLU-BN, Dense). Both are trained
here on scikit-learn's digits, once as written and once with every
BatchNormalization removed, with the same seed, optimizer and batches; the
figure plots training and validation loss and accuracy per epoch
(docs/bn_effect.png, shown in the README). The MLP reads the 64 pixels; the
CNN reads the digits upsampled to its 32x32x3 input.

Run: ``pip install -e ".[scripts]" && python scripts/bn_effect.py``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402

from make_example_model import load_digits_split  # noqa: E402


def mlp(bn: bool):
    import keras
    from keras import layers

    return keras.Sequential([keras.Input((64,)), layers.Dense(64), *([layers.BatchNormalization()] if bn else []),
                             layers.Activation("relu"), layers.Dense(10), layers.Activation("softmax")],
                            name="mlp_bn" if bn else "mlp")


def cnn(bn: bool):
    import keras
    from keras import layers

    maybe = (lambda: [layers.BatchNormalization()]) if bn else (lambda: [])
    return keras.Sequential([
        keras.Input((32, 32, 3)), layers.Conv2D(32, (3, 3), activation="relu"), *maybe(), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"), *maybe(), layers.MaxPooling2D((2, 2)), layers.Flatten(),
        layers.Dense(64, activation="relu"), *maybe(), layers.Dense(10, activation="softmax"),
    ], name="cnn_bn" if bn else "cnn")


def train(build, bn: bool, x_train, y_train, x_val, y_val, epochs: int, seed: int) -> dict:
    import keras

    keras.utils.set_random_seed(seed)
    model = build(bn)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=32, verbose=0,
                        shuffle=True)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bn_effect.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tensorflow as tf

    x_train, x_val, y_train, y_val = load_digits_split(args.seed)
    to_cnn = lambda x: np.repeat(tf.image.resize(x, (32, 32)).numpy(), 3, axis=-1)  # noqa: E731
    inputs = {"MLP": (x_train.reshape(len(x_train), -1), x_val.reshape(len(x_val), -1), mlp),
              "CNN": (to_cnn(x_train), to_cnn(x_val), cnn)}
    histories = {}
    for arch, (xt, xv, build) in inputs.items():
        for bn in (True, False):
            histories[(arch, bn)] = train(build, bn, xt, y_train, xv, y_val, args.epochs, args.seed)
            final = histories[(arch, bn)]
            print(f"{arch} {'with' if bn else 'without'} BN: val_accuracy {final['val_accuracy'][-1]:.4f}, "
                  f"val_loss {final['val_loss'][-1]:.4f}, first-epoch val_accuracy {final['val_accuracy'][0]:.4f}")

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    epochs = np.arange(1, args.epochs + 1)
    for row, arch in enumerate(inputs):
        for col, metric in enumerate(("loss", "accuracy")):
            ax = axes[row, col]
            for bn, colour in ((True, "tab:blue"), (False, "tab:orange")):
                h = histories[(arch, bn)]
                label = "with BN" if bn else "without BN"
                ax.plot(epochs, h[metric], color=colour, linestyle="--", label=f"{label}, training")
                ax.plot(epochs, h["val_" + metric], color=colour, label=f"{label}, validation")
            ax.set_title(f"seed {arch}: {metric}")
            ax.grid(alpha=0.3)
            if metric == "loss":
                ax.set_yscale("log")
            if row == 1:
                ax.set_xlabel("epoch")
    axes[0, 1].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"The seed article's models on scikit-learn digits (1,437 train / 360 validation), SGD 0.05 m0.9, "
                 f"batch 32, seed {args.seed}", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    args.out.with_suffix(".json").write_text(json.dumps({f"{a} {'bn' if b else 'no_bn'}": h for (a, b), h in histories.items()},
                                                        indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
