"""Every reported figure is a property of the model and the whole data set, never of how it was batched.

Issue 23, class 2: a one-logit classifier's accuracy was read with a threshold chosen per batch from that
batch's value range, so it changed with --batch-size. Each figure here is computed at batch 1, at sizes
that leave a ragged last batch and over the whole set at once, and must be the same; where there is an
independent answer (NumPy), it must be that.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from bnfreeze.io.arrays import ArrayData
from bnfreeze.io.signature import input_specs
from bnfreeze.recalibration.report import ClassRule, Scorer, accuracy, output_activation

SIZES = (1, 7, 32, 1000)  # one sample, ragged (50 = 7 * 7 + 1), a last batch of 18, everything at once


def _one_unit(activation, seed=0):
    x = keras.Input((3,), name="x")
    out = layers.Dense(1, activation=activation, name="head")(x)
    model = keras.Model(x, out)
    model.get_layer("head").set_weights([np.array([[1.0], [-0.5], [0.25]], "float32"), np.array([0.3], "float32")])
    return model


def _labelled(model, rows=50, seed=1, flip=0.2):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, 3)) * 0.4).astype("float32")  # logits mostly within [-1, 1.5]
    logits = x @ np.array([1.0, -0.5, 0.25]) + 0.3
    y = (logits > 0).astype("int64")
    y[rng.random(rows) < flip] ^= 1
    specs = input_specs(model)
    return ArrayData("test.npz", {specs[0].name: x}, specs, y), logits, y


@pytest.mark.parametrize("activation,threshold", [(None, 0.0), ("sigmoid", 0.5), ("tanh", 0.0)])
def test_one_unit_accuracy_is_the_same_at_every_batch_size(activation, threshold):
    model = _one_unit(activation)
    data, logits, y = _labelled(model)
    outputs = np.asarray(model(data.arrays["x"])).ravel()
    expected = float(np.mean((outputs > threshold) == y))
    # a batch of logits that happen to lie in [0, 1] used to be thresholded at 0.5
    assert activation is not None or np.any((logits > 0) & (logits < 0.5))
    got = {size: accuracy(model, data, size) for size in SIZES}
    assert all(value == pytest.approx(expected) for value in got.values()), (got, expected)


def test_one_unit_output_without_a_known_activation_is_decided_once_over_the_whole_set():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, layers.ReLU(name="r")(layers.Dense(1, name="head")(x)))  # values >= 0, some > 1
    model.get_layer("head").set_weights([np.array([[2.0], [-1.0], [0.5]], "float32"), np.array([0.2], "float32")])
    assert output_activation(model) is None
    data, _, y = _labelled(model, rows=60)
    outputs = np.asarray(model(data.arrays["x"])).ravel()
    threshold = 0.5 if outputs.min() >= 0 and outputs.max() <= 1 else 0.0
    expected = float(np.mean((outputs > threshold) == y))
    got = [accuracy(model, data, size) for size in SIZES]
    assert all(value == pytest.approx(expected) for value in got), (got, expected)


def test_the_activation_is_found_through_nested_models_and_value_keeping_layers():
    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, layers.Dense(1, activation="sigmoid")(inner_in), name="head_block")
    x = keras.Input((3,))
    model = keras.Model(x, layers.Flatten()(layers.Dropout(0.5)(inner(x))))
    assert output_activation(model) == "sigmoid" and ClassRule.of(model).threshold == 0.5
    y = keras.Input((3,))
    assert ClassRule.of(keras.Model(y, keras.ops.sigmoid(layers.Dense(1)(y)))).threshold == 0.5
    assert ClassRule.of(keras.Model(y, layers.Dense(1)(y))).threshold == 0.0


def test_an_artifact_is_judged_by_its_float_models_threshold():
    reference = Scorer(ClassRule())  # undecided: the float model's values decide, once
    reference.add(np.array([[0.2], [0.9], [0.6]]), np.array([0, 1, 1]))
    artifact = Scorer(reference.rule, reference)
    artifact.add(np.array([[0.2], [0.9], [-0.01]]), np.array([0, 1, 1]))  # int8 noise below 0: still 0.5
    assert reference.threshold() == 0.5 and artifact.threshold() == 0.5
    assert reference.counts() == (3, 3) and artifact.counts() == (2, 3)


def test_multi_class_accuracy_and_labels_as_one_hot_are_the_same_at_every_batch_size():
    x = keras.Input((3,), name="x")
    model = keras.Model(x, layers.Dense(4, activation="softmax")(x))
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((45, 3)).astype("float32")
    labels = np.eye(4)[rng.integers(0, 4, 45)]
    specs = input_specs(model)
    data = ArrayData("d.npz", {specs[0].name: inputs}, specs, labels)
    expected = float(np.mean(np.argmax(model(inputs), -1) == labels.argmax(-1)))
    got = [accuracy(model, data, size) for size in SIZES]
    assert all(value == pytest.approx(expected) for value in got), (got, expected)


def test_recalibration_report_figures_do_not_depend_on_the_batch_size():
    import bnfreeze

    x = keras.Input((3,), name="x")
    hidden = layers.BatchNormalization(name="bn")(layers.Dense(5, name="d")(x))
    model = keras.Model(x, layers.Dense(1, name="head")(hidden))
    data, _, _ = _labelled(model, rows=130)
    reports = {size: bnfreeze.recalibrate(model, data, batch_size=size).report for size in (1, 9, 130)}
    accuracies = {(r["accuracy"]["before"], r["accuracy"]["after"]) for r in reports.values()}
    assert len(accuracies) == 1, accuracies
    samples = {r["samples"] for r in reports.values()}
    assert samples == {130}
    shifts = [r["batch_norms"][0]["mean_shift_max"] for r in reports.values()]
    assert max(shifts) - min(shifts) < 1e-5


def test_quantize_agreement_figures_do_not_depend_on_the_batch_size(tmp_path):
    from bnfreeze.quantize.agreement import criteria, measure
    from bnfreeze.verify.runners import KerasRunner

    model = _one_unit(None)
    data, _, _ = _labelled(model, rows=41)
    perturbed = keras.models.clone_model(model)
    weights = model.get_weights()
    perturbed.set_weights([weights[0] * 1.01, weights[1] - 0.02])
    path = tmp_path / "p.keras"
    perturbed.save(path)
    results = []
    for size in (1, 6, 41):
        runner = KerasRunner(path, "cpu")
        runner.load()
        measured = measure(model, {"k": runner}, data, criteria(model, ("snr",)), size)
        comparison = measured.artifacts["k"].outputs[0]
        results.append((measured.float_accuracy, measured.artifacts["k"].accuracy, measured.samples,
                        round(comparison.snr_db, 4), round(comparison.max_abs, 6), comparison.worst_sample))
    assert len(set(results)) == 1, results


def test_the_max_check_and_max_rel_are_per_sample():
    from bnfreeze.compare import Accumulator, Tolerance

    # sample 0 is large and exact, sample 1 small with an error that is large for it (but tiny beside sample 0)
    reference = np.array([[100.0, -80.0], [0.01, 0.02]])
    candidate = reference + np.array([[0.0, 0.0], [0.001, 0.0]])
    verdicts = set()
    for size in (1, 2):
        accumulator = Accumulator("out", Tolerance(atol=1e-5, rtol=1e-4))
        for start in range(0, 2, size):
            accumulator.add(reference[start:start + size], candidate[start:start + size], start)
        result = accumulator.result()
        verdicts.add((result.passed, round(result.max_rel, 9), result.worst_sample))
    assert verdicts == {(False, 0.05, 1)}, verdicts


def test_verify_gives_the_same_figures_at_every_batch_size(tmp_path):
    from bnfreeze.verify import verify

    x = keras.Input((4,), name="x")
    model = keras.Model(x, layers.Dense(3, name="d")(x))
    candidate = keras.models.clone_model(model)
    weights = model.get_weights()
    candidate.set_weights([weights[0] + 1e-4, weights[1]])
    model.save(tmp_path / "ref.keras")
    candidate.save(tmp_path / "cand.keras")
    rng = np.random.default_rng(3)
    scales = np.where(np.arange(11) % 3 == 0, 1000.0, 0.001)[:, None]  # large and tiny samples mixed
    np.save(tmp_path / "d.npy", (rng.standard_normal((11, 4)) * scales).astype("float32"))
    figures = set()
    for size in (1, 4, 11):
        report = verify(tmp_path / "ref.keras", [tmp_path / "cand.keras"], data=tmp_path / "d.npy", batch_size=size)
        (row,) = report.rows
        (out,) = row.outputs
        figures.add((row.passed, f"{out.max_rel:.6g}", f"{out.max_abs:.6g}", f"{out.snr_db:.6g}", out.samples,
                     out.worst_sample))
    assert len(figures) == 1, figures
