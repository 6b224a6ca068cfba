"""Shared helpers for the tests: BN statistics far from identity, parity asserts."""

from __future__ import annotations

import numpy as np

PARITY_ATOL = 1e-5


def randomize_bn(model, seed: int = 0, negative: bool = True) -> None:
    """Give every BN statistics far from identity (the brief's quality bar).

    gamma in [0.5, 1.5] (a third negative when ``negative``), beta and moving
    mean ~ N(0, 0.5), moving variance in [0.2, 2].
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.BatchNormalization) or not layer.weights:
            continue  # an unbuilt BN (a block's spare one) has no statistics
        values = {}
        channels = layer.moving_mean.shape[0]
        gamma = rng.uniform(0.5, 1.5, channels)
        if negative:
            gamma *= np.where(rng.random(channels) < 1 / 3, -1.0, 1.0)
        values["gamma"] = gamma
        values["beta"] = rng.normal(0.0, 0.5, channels)
        values["moving_mean"] = rng.normal(0.0, 0.5, channels)
        values["moving_variance"] = rng.uniform(0.2, 2.0, channels)
        if layer.renorm:
            values["moving_stddev"] = np.sqrt(values["moving_variance"] + layer.epsilon)
            values["renorm_mean"] = values["moving_mean"]
            values["renorm_stddev"] = values["moving_stddev"]
        for variable in layer.weights:
            if variable.name in values:
                variable.assign(values[variable.name].astype(variable.dtype))


def randomize_weights(model, seed: int = 0) -> None:
    """Non-zero biases everywhere, so a lost bias shows up."""
    rng = np.random.default_rng(seed + 1000)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for variable in layer.weights:
            if variable.name == "bias":
                variable.assign(rng.normal(0, 0.5, variable.shape).astype(variable.dtype))


def rules_without_preactivation():
    """The registered fold rules without the pre-activation ones: what the other rules alone decide."""
    from bnfreeze.fold.rules import RULES

    return tuple(rule for rule in RULES if rule.direction != "pre-activation")


def run(model, arrays):
    import keras

    feed = arrays[0] if len(arrays) == 1 else list(arrays)
    return [np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float64) for o in keras.tree.flatten(model(feed, training=False))]


def inputs_for(model, batch: int = 3, seed: int = 1, free_dim: int = 16):
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (batch,) + tuple(free_dim if d is None else d for d in tensor.shape[1:])
        arrays.append(rng.standard_normal(shape).astype("float32"))
    return arrays


def max_error(reference, candidate, arrays) -> float:
    """Largest absolute error over outputs, relative to max(1, max |reference|)."""
    worst = 0.0
    for ref, cand in zip(run(reference, arrays), run(candidate, arrays)):
        assert ref.shape == cand.shape
        scale = max(1.0, float(np.max(np.abs(ref))))
        worst = max(worst, float(np.max(np.abs(ref - cand))) / scale)
    return worst


def assert_parity(reference, candidate, atol: float = PARITY_ATOL, batch: int = 3, seed: int = 1) -> float:
    arrays = inputs_for(reference, batch=batch, seed=seed)
    error = max_error(reference, candidate, arrays)
    assert error <= atol, f"folded model differs: {error:.3g} > {atol:g}"
    return error


def bn_count(model) -> int:
    import keras

    return sum(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in model._flatten_layers(include_self=False, recursive=True)
    )


def fold_and_check(model, *, folded: int, atol: float = PARITY_ATOL, seed: int = 0):
    """Randomize, fold, and assert the count folded and the parity."""
    import bnfreeze

    randomize_weights(model, seed)
    randomize_bn(model, seed)
    result = bnfreeze.fold(model)
    got = len(result.report["folded"])
    assert got == folded, result.report
    assert bn_count(result.model) == bn_count(model) - folded
    assert_parity(model, result.model, atol=atol)
    return result


def channels_last_twin(model):
    """The same network with channels_last layouts and the same weights.

    TensorFlow cannot run channels_first convolutions on the CPU, but Keras
    stores kernels in the same layout for both data formats, so a
    channels_first model and its channels_last twin compute the same function
    up to a transpose of the channel axis. Used to check channels_first folds
    numerically on machines without a GPU.
    """
    import copy


    config = copy.deepcopy(model.get_config())
    for entry in config["layers"]:
        layer_config = entry["config"]
        if layer_config.get("data_format") == "channels_first":
            layer_config["data_format"] = "channels_last"
        if entry["class_name"] == "BatchNormalization" and layer_config["axis"] in (1, [1]):
            layer_config["axis"] = -1
        if entry["class_name"] == "InputLayer":
            shape = list(layer_config["batch_shape"])
            layer_config["batch_shape"] = [shape[0]] + shape[2:] + [shape[1]]
        entry.pop("build_config", None)
    twin = type(model).from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def noise_floor(model, seed: int = 0, batch: int = 2) -> float:
    """How much the model's output moves (relative to its largest magnitude)
    when its input moves by float32 rounding (1e-7 relative): the parity any
    float32 rewrite of an ill-conditioned network can hope for."""
    rng = np.random.default_rng(seed)
    arrays = inputs_for(model, batch=batch, seed=seed)
    nudged = [(a * (1 + 1e-7 * rng.standard_normal(a.shape))).astype(a.dtype) for a in arrays]
    worst = 0.0
    for ref, moved in zip(run(model, arrays), run(model, nudged)):
        worst = max(worst, float(np.max(np.abs(ref - moved)) / max(1e-30, np.max(np.abs(ref)))))
    return worst


def fold_channels_first_and_check(model, *, folded: int = 1):
    """Randomize and fold a channels_first model; check parity through channels_last twins
    (TF runs channels_first convolutions on GPUs only)."""
    import bnfreeze

    randomize_weights(model)
    randomize_bn(model)
    result = bnfreeze.fold(model, check=False)
    assert len(result.report["folded"]) == folded
    assert_parity(channels_last_twin(model), channels_last_twin(result.model))
    return result


def bnfreeze(*args, cwd=None, timeout: int = 300):
    """Run the command line in a fresh process, as a user does."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "bnfreeze.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def digest(path) -> str:
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def loads_without_bnfreeze(path, sample_shape: tuple) -> str:
    """Load ``path`` with plain keras.models.load_model in a process that never imports bnfreeze; run one sample."""
    import subprocess
    import sys

    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        "assert not any(k.startswith('bnfreeze') for k in sys.modules), 'bnfreeze was imported'\n"
        f"print(m(np.zeros((1, *{tuple(sample_shape)!r}), 'float32')).shape)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def outputs_in_fresh_process(path, arrays, work) -> list:
    """Outputs of ``model(x, training=False)`` and ``model(x)`` for the model file ``path``, computed in a process
    that imports neither bnfreeze nor keras_hub (it fails if either gets imported while loading).

    Returns ``(inference, default_call)``: lists of arrays in ``keras.tree.flatten`` order.
    """
    import subprocess
    import sys
    from pathlib import Path

    work = Path(work)
    feed = work / "fresh_inputs.npz"
    out = work / "fresh_outputs.npz"
    np.savez(feed, *arrays)
    code = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        "bad = [k for k in sys.modules if k.startswith(('bnfreeze', 'keras_hub'))]\n"
        "assert not bad, f'imported while loading: {bad[:3]}'\n"
        f"data = np.load({str(feed)!r}); arrays = [data[f'arr_{{i}}'] for i in range(len(data.files))]\n"
        "x = arrays[0] if len(arrays) == 1 else arrays\n"
        "a = [np.asarray(t) for t in keras.tree.flatten(m(x, training=False))]\n"
        "b = [np.asarray(t) for t in keras.tree.flatten(m(x))]\n"
        f"np.savez({str(out)!r}, *a, *b)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = np.load(out)
    values = [data[f"arr_{i}"] for i in range(len(data.files))]
    half = len(values) // 2
    return values[:half], values[half:]
