"""Models and independent checks for the recalibration tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from support import randomize_bn, randomize_weights


def residual_model(seed: int = 0, *, renorm: bool = False, frozen: str | None = None):
    """Conv-BN-ReLU, a residual Add over two BN branches, BN after pooling, Dropout, Dense-BN.

    ``frozen`` names a BN to build with ``trainable=False``.
    """
    import keras
    from keras import layers

    def bn(name, **kw):
        layer = layers.BatchNormalization(name=name, renorm=renorm, **kw)
        if name == frozen:
            layer.trainable = False
        return layer

    x_in = keras.Input((10, 10, 3), name="image")
    x = layers.Conv2D(6, 3, padding="same", name="c1")(x_in)
    x = bn("bn1")(x)
    x = layers.ReLU()(x)
    a = layers.Conv2D(6, 3, padding="same", name="c2")(x)
    a = bn("bn2")(a)
    a = layers.ReLU()(a)
    a = layers.Conv2D(6, 1, name="c3")(a)
    a = bn("bn3", scale=False)(a)
    b = bn("bn_skip", center=False)(x)
    x = layers.Add()([a, b])
    x = layers.AveragePooling2D(2)(x)
    x = bn("bn_pool")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(8, name="d1")(x)
    x = bn("bn_dense")(x)
    x = layers.Activation("tanh")(x)
    out = layers.Dense(4, name="logits")(x)
    model = keras.Model(x_in, out, name="residual")
    randomize_weights(model, seed)
    randomize_bn(model, seed)
    return model


def nested_model(seed: int = 0, shared_twice: bool = False):
    """A Sequential block with BNs inside a Functional model (optionally applied to two inputs)."""
    import keras
    from keras import layers

    block = keras.Sequential([
        keras.Input((6,)), layers.Dense(5, name="inner_dense"), layers.BatchNormalization(name="inner_bn"),
        layers.ReLU(),
    ], name="block")
    x_in = keras.Input((6,), name="features")
    x = layers.Dense(6, name="pre")(x_in)
    x = layers.BatchNormalization(name="outer_bn")(x)
    if shared_twice:
        y = block(x)
        z = block(layers.Dense(6, name="other")(x_in))
        y = layers.Concatenate()([y, z])
    else:
        y = block(x)
    y = layers.Dense(3, name="head")(y)
    y = layers.BatchNormalization(name="head_bn")(y)
    model = keras.Model(x_in, y, name="nested")
    randomize_weights(model, seed)
    randomize_bn(model, seed)
    return model


def calibration(model, samples: int = 100, seed: int = 3, shift: float = 0.7, scale: float = 1.8) -> np.ndarray:
    """Inputs far from standard normal, so new statistics differ from the old."""
    rng = np.random.default_rng(seed)
    shape = (samples,) + tuple(model.inputs[0].shape[1:])
    return (rng.normal(shift, scale, shape)).astype(np.float32)


def bn_input_moments(model, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and biased variance (float64) of every top-level BN's input, model in inference mode."""
    import keras

    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    probe = keras.Model(model.inputs, [l.input for l in bns])
    outputs = keras.tree.flatten(probe([x], training=False))  # one BN: a bare tensor, not a list of one
    result = {}
    for layer, value in zip(bns, outputs):
        value = np.asarray(value, np.float64)
        axes = tuple(i for i in range(value.ndim) if i != layer.axis % value.ndim)
        result[layer.name] = (value.mean(axis=axes), value.var(axis=axes))
    return result


def save_npy(tmp_path: Path, x: np.ndarray, name: str = "calib.npy") -> Path:
    path = tmp_path / name
    np.save(path, x)
    return path
