"""Property: folding any small Conv/Dense/BN/pooling graph keeps its function.

Hypothesis draws Sequential and Functional models from Conv2D (valid/same,
with or without bias and activation), Dense, BatchNormalization, ReLU/tanh,
max and average pooling, Flatten, global pooling, Dropout and residual Add
branches, gives every BN statistics far from identity (a third of the gammas
negative), folds, and checks parity at 1e-5 and that no BN is added.
"""

import os

import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers
from support import assert_parity, bn_count, randomize_bn, randomize_weights

import bnfreeze

EXAMPLES = int(os.environ.get("BNFREEZE_PROPERTY_EXAMPLES", "200"))

IMAGE_OPS = ("conv", "bn", "act", "pool", "dropout", "residual", "to_vector")
VECTOR_OPS = ("dense", "bn", "act", "dropout")


@st.composite
def architectures(draw):
    ops = []
    spatial, mode = 8, "image"
    for _ in range(draw(st.integers(2, 9))):
        if mode == "image":
            op = draw(st.sampled_from(IMAGE_OPS))
            if op == "conv":
                padding = draw(st.sampled_from(["valid", "same"])) if spatial >= 3 else "same"
                ops.append(("conv", padding, draw(st.sampled_from(["linear", "relu"])), draw(st.booleans()),
                            draw(st.sampled_from([1, 3]))))
                if padding == "valid" and ops[-1][4] == 3:
                    spatial -= 2
            elif op == "pool":
                if spatial < 2:
                    continue
                ops.append(("pool", draw(st.sampled_from(["max", "avg"])), draw(st.sampled_from(["valid", "same"]))))
                spatial = spatial // 2 if ops[-1][2] == "valid" else -(-spatial // 2)
            elif op == "to_vector":
                ops.append(("to_vector", draw(st.sampled_from(["flatten", "gap", "gmp"]))))
                mode = "vector"
            elif op == "residual":
                ops.append(("residual", draw(st.sampled_from(["conv_bn", "bn"]))))
            else:
                ops.append((op,))
        else:
            op = draw(st.sampled_from(VECTOR_OPS))
            ops.append((op, draw(st.sampled_from(["linear", "relu"])), draw(st.booleans())) if op == "dense" else (op,))
    return ops, draw(st.booleans()), draw(st.integers(0, 2**16))


def build(ops, sequential: bool):
    channels = 4
    stack = []
    for op in ops:
        kind = op[0]
        if kind == "conv":
            _, padding, activation, use_bias, kernel = op
            stack.append(layers.Conv2D(channels, kernel, padding=padding, activation=activation, use_bias=use_bias))
        elif kind == "dense":
            stack.append(layers.Dense(5, activation=op[1], use_bias=op[2]))
        elif kind == "bn":
            stack.append(layers.BatchNormalization())
        elif kind == "act":
            stack.append(layers.Activation("tanh"))
        elif kind == "pool":
            cls = layers.MaxPooling2D if op[1] == "max" else layers.AveragePooling2D
            stack.append(cls(2, padding=op[2]))
        elif kind == "dropout":
            stack.append(layers.Dropout(0.3))
        elif kind == "to_vector":
            stack.append({"flatten": layers.Flatten, "gap": layers.GlobalAveragePooling2D,
                          "gmp": layers.GlobalMaxPooling2D}[op[1]]())
        elif kind == "residual":
            stack.append(op)
    stack.append(layers.Dense(3))
    if sequential and not any(isinstance(s, tuple) for s in stack):
        return keras.Sequential([keras.Input((8, 8, channels))] + stack)
    inputs = keras.Input((8, 8, channels))
    x = inputs
    for item in stack:
        if isinstance(item, tuple):
            branch = x
            if item[1] == "conv_bn":
                branch = layers.Conv2D(channels, 3, padding="same", use_bias=False)(branch)
            branch = layers.BatchNormalization()(branch)
            x = layers.Add()([x, branch])
        else:
            x = item(x)
    return keras.Model(inputs, x)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_fold_preserves_the_function(case):
    ops, sequential, seed = case
    keras.utils.set_random_seed(seed)
    model = build(ops, sequential)
    randomize_weights(model, seed)
    randomize_bn(model, seed)
    before = bn_count(model)
    result = bnfreeze.fold(model, seed=seed)
    assert bn_count(result.model) <= before
    assert bn_count(result.model) == before - len(result.report["folded"])
    assert len(result.report["folded"]) + len(result.report["kept"]) == before
    assert_parity(model, result.model, seed=seed)
    np.testing.assert_equal(result.report["parity"]["passed"], True)
