"""Train the shipped example model on scikit-learn's digits data, reproducibly.

Writes, under models/:

* ``digits_cnn.keras``   - a small CNN with three BatchNormalization layers,
  each after a bias-free linear layer (Conv2D, Conv2D, Dense), trained on the
  1,437-image training split of the 8x8 digits;
* ``digits_calib.npy``   - 256 training images (float32, N x 8 x 8 x 1, in
  [0, 1]) for recalibration and parity checks;
* ``digits_test.npz``    - the 360-image test split (``x``, ``y``).

Run: ``python scripts/make_example_model.py`` (needs the ``test`` extras for
scikit-learn). Same machine and versions give the same weights.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., np.newaxis]
    y = digits.target.astype("int64")
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def build_model():
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="digits"),
            layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.Conv2D(32, 3, padding="same", use_bias=False, name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, use_bias=False, name="fc1"),
            layers.BatchNormalization(name="bn3"),
            layers.ReLU(name="relu3"),
            layers.Dropout(0.2, name="dropout"),
            layers.Dense(10, activation="softmax", name="probs"),
        ],
        name="digits_cnn",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    x_train, x_test, y_train, y_test = load_digits_split(args.seed)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, validation_split=0.1, verbose=2, shuffle=True)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {accuracy:.4f} (loss {loss:.4f}) on {len(x_test)} images")

    args.out.mkdir(parents=True, exist_ok=True)
    # Ship inference weights only: a fresh copy has no optimizer state.
    shipped = keras.Sequential.from_config(model.get_config())
    shipped.set_weights(model.get_weights())
    shipped.save(args.out / "digits_cnn.keras")
    rng = np.random.default_rng(args.seed)
    calib = x_train[rng.choice(len(x_train), size=256, replace=False)]
    np.save(args.out / "digits_calib.npy", calib)
    np.savez(args.out / "digits_test.npz", x=x_test, y=y_test)
    print(f"wrote {args.out / 'digits_cnn.keras'}, digits_calib.npy, digits_test.npz")


if __name__ == "__main__":
    main()
