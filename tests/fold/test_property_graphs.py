"""Property: on unusual graphs, every BN is folded exactly or kept with a reason, never wrongly.

Hypothesis draws Functional models from the long tail that broke bnfreeze
before (issue 12): BN subclasses that clip, BNs called with ``training`` True/False/1/0, frozen or not,
and nested models called with ``training=True/False``, ``keras.ops`` nodes
(``x * 2``, ``x + y``, slicing, ``ops.reshape``/``ops.transpose``),
``TimeDistributed`` wrappers, Permute, Cropping, UpSampling (nearest and
bilinear), RepeatVector, ZeroPadding, transposed and depthwise convolutions,
BN after BN, Dropout between a layer and its BN, active dropout. Every BN
gets statistics far from identity (a third of the gammas negative). The
folded model is compared here, independently of bnfreeze's own check, under
``training=False`` and the default call, at inputs x1 and x10; every BN of
the model must be in the report.
"""

import os

import keras
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers, ops
from support import bn_count, randomize_bn, randomize_weights

import bnfreeze

EXAMPLES = int(os.environ.get("BNFREEZE_GRAPH_EXAMPLES", "100"))
CHANNELS = 4


@keras.saving.register_keras_serializable(package="bnfreeze_property")
class ClipBN(layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        return ops.clip(super().call(inputs, training=training, mask=mask), -1.5, 1.5)


IMAGE_OPS = ("conv", "conv_t", "depthwise", "bn", "bn", "bn2", "clip_bn", "bn_flag", "act", "pool", "dropout",
             "linear", "permute", "crop", "upsample", "pad", "ops_mul", "ops_add", "ops_transpose", "nested",
             "residual", "to_sequence", "to_vector")
SEQUENCE_OPS = ("td_dense", "td_bn", "dense", "bn", "act", "conv1d", "to_vector")
VECTOR_OPS = ("dense", "bn", "bn2", "act", "dropout", "repeat", "slice")


@st.composite
def programs(draw):
    ops_list, mode, size = [], "image", 8
    for _ in range(draw(st.integers(2, 10))):
        pool = {"image": IMAGE_OPS, "sequence": SEQUENCE_OPS, "vector": VECTOR_OPS}[mode]
        op = draw(st.sampled_from(pool))
        if op == "conv":
            padding = draw(st.sampled_from(["valid", "same"])) if size >= 4 else "same"
            kernel = draw(st.sampled_from([1, 3]))
            ops_list.append((op, padding, kernel, draw(st.sampled_from(["linear", "relu"])), draw(st.booleans())))
            size -= kernel - 1 if padding == "valid" else 0
        elif op == "conv_t":
            kernel, strides = draw(st.sampled_from([(1, 1), (2, 2), (3, 1)]))
            if size * strides > 16:
                continue
            ops_list.append((op, kernel, strides))
            size *= strides
        elif op in ("pool", "crop"):
            if size < 4:
                continue
            ops_list.append((op, draw(st.sampled_from(["max", "avg"]))))
            size = size // 2 if op == "pool" else size - 1
        elif op == "upsample":
            if size > 8:
                continue
            ops_list.append((op, draw(st.sampled_from(["nearest", "bilinear"]))))
            size *= 2
        elif op == "pad":
            ops_list.append((op,))
            size += 2
        elif op == "bn_flag":  # explicit training values, truthy ones included; frozen or not
            ops_list.append((op, draw(st.sampled_from([True, False, 1, 0])), draw(st.booleans())))
        elif op == "dropout":
            ops_list.append((op, draw(st.booleans())))
        elif op == "nested":
            ops_list.append((op, draw(st.sampled_from([None, True, False])), draw(st.sampled_from(["bn", "conv_bn"]))))
        elif op == "to_sequence":
            ops_list.append((op,))
            mode = "sequence"
        elif op == "to_vector":
            ops_list.append((op, draw(st.sampled_from(["flatten", "gap", "ops_reshape"]))))
            mode = "vector"
        elif op == "repeat":
            ops_list.append((op,))
            mode = "sequence"
        elif op in ("dense", "td_dense"):
            ops_list.append((op, draw(st.sampled_from(["linear", "relu"])), draw(st.booleans())))
        else:
            ops_list.append((op,))
    return ops_list, draw(st.integers(0, 2**16))


def _nested(training, kind, shape):
    inner_in = keras.Input(shape)
    x = inner_in
    if kind == "conv_bn":
        x = layers.Conv2D(CHANNELS, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    inner = keras.Model(inner_in, x)
    return lambda t: inner(t) if training is None else inner(t, training=training)


def build(program):
    inputs = keras.Input((8, 8, CHANNELS))
    x = inputs
    for op in program:
        kind = op[0]
        if kind == "conv":
            _, padding, kernel, activation, bias = op
            x = layers.Conv2D(CHANNELS, kernel, padding=padding, activation=activation, use_bias=bias)(x)
        elif kind == "conv_t":
            x = layers.Conv2DTranspose(CHANNELS, op[1], strides=op[2], padding="same")(x)
        elif kind == "depthwise":
            x = layers.DepthwiseConv2D(3, padding="same")(x)
        elif kind == "bn":
            x = layers.BatchNormalization()(x)
        elif kind == "bn2":
            x = layers.BatchNormalization()(layers.BatchNormalization()(x))
        elif kind == "clip_bn":
            x = ClipBN()(x)
        elif kind == "bn_flag":
            bn = layers.BatchNormalization()
            bn.trainable = op[2]
            x = bn(x, training=op[1])
        elif kind == "act":
            x = layers.Activation("tanh")(x)
        elif kind == "pool":
            x = (layers.MaxPooling2D if op[1] == "max" else layers.AveragePooling2D)(2)(x)
        elif kind == "dropout":
            x = layers.Dropout(0.3)(x, training=True) if op[1] else layers.Dropout(0.3)(x)
        elif kind == "linear":
            x = layers.Activation("linear")(x)
        elif kind == "permute":
            x = layers.Permute((2, 1, 3))(x)
        elif kind == "crop":
            x = layers.Cropping2D(((1, 0), (0, 1)))(x)
        elif kind == "upsample":
            x = layers.UpSampling2D(2, interpolation=op[1])(x)
        elif kind == "pad":
            x = layers.ZeroPadding2D(1)(x)
        elif kind == "ops_mul":
            x = x * 2.0
        elif kind == "ops_add":
            x = x + layers.BatchNormalization()(x)
        elif kind == "ops_transpose":
            x = ops.transpose(x, (0, 2, 1, 3))
        elif kind == "nested":
            x = _nested(op[1], op[2], tuple(x.shape[1:]))(x)
        elif kind == "residual":
            x = layers.Add()([x, layers.BatchNormalization()(layers.Conv2D(CHANNELS, 3, padding="same")(x))])
        elif kind == "to_sequence":
            x = ops.reshape(x, (-1, int(x.shape[1]), int(x.shape[2]) * CHANNELS))
        elif kind == "to_vector":
            if op[1] == "flatten":
                x = layers.Flatten()(x)
            elif op[1] == "gap":
                x = layers.GlobalAveragePooling1D()(x) if len(x.shape) == 3 else layers.GlobalAveragePooling2D()(x)
            else:
                x = ops.reshape(x, (-1, int(np.prod(x.shape[1:]))))
        elif kind == "td_dense":
            x = layers.TimeDistributed(layers.Dense(5, activation=op[1], use_bias=op[2]))(x)
        elif kind == "td_bn":
            x = layers.TimeDistributed(layers.BatchNormalization())(x)
        elif kind == "dense":
            x = layers.Dense(5, activation=op[1], use_bias=op[2])(x)
        elif kind == "conv1d":
            x = layers.Conv1D(5, 3, padding="same")(x)
        elif kind == "repeat":
            x = layers.RepeatVector(3)(x)
        elif kind == "slice":
            x = x[:, 1:]
    if len(x.shape) > 2:
        x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(3)(x))


def _outputs(model, x, training):
    out = model(x) if training is None else model(x, training=training)
    return [np.asarray(o, np.float64) for o in keras.tree.flatten(out)]


def _restoring(*models):
    """Variables of ``models`` restored after the block (a default call can update BN statistics)."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        saved = [(v, np.array(v.numpy())) for m in models for v in m.variables]
        try:
            yield
        finally:
            for variable, value in saved:
                variable.assign(value)

    return scope()


def _deterministic(model, x) -> bool:
    with _restoring(model):
        return all(np.array_equal(a, b) for a, b in zip(_outputs(model, x, None), _outputs(model, x, None)))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_unusual_graphs_fold_exactly_or_keep_with_reasons(case):
    program, seed = case
    keras.utils.set_random_seed(seed)
    model = build(program)
    randomize_weights(model, seed)
    randomize_bn(model, seed)
    result = bnfreeze.fold(model, seed=seed)
    report = result.report
    assert len(report["folded"]) + len(report["kept"]) == bn_count(model), report
    assert bn_count(result.model) == bn_count(model) - len(report["folded"])
    assert all(entry["reason"] for entry in report["kept"])
    rng = np.random.default_rng(seed)
    for magnitude in (1.0, 10.0):
        x = (rng.standard_normal((3, 8, 8, CHANNELS)) * magnitude).astype("float32")
        calls = [False] + ([None] if _deterministic(model, x) else [])
        for training in calls:
            with _restoring(model, result.model):
                pairs = list(zip(_outputs(model, x, training), _outputs(result.model, x, training)))
            for ref, got in pairs:
                error = float(np.max(np.abs(ref - got))) / max(1.0, float(np.max(np.abs(ref))))
                assert error <= 2e-4, (program, training, magnitude, error, report["folded"])
