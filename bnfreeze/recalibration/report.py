"""What recalibration changed, per BN, and what it did to accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnfreeze.errors import InputError


@dataclass
class BnChange:
    """Old and new statistics of one BN layer, summarised.

    ``samples`` counts calibration samples; ``values`` the values per channel
    the statistics were taken over (samples x positions x calls).
    ``mean_shift`` is ``|new_mean - old_mean| / sqrt(old_var + eps)``: how far
    the mean moved in units of the old standard deviation (max and RMS over
    channels). ``variance_ratio`` is ``(new_var + eps) / (old_var + eps)`` per
    channel (median, min, max); ``extreme_channels`` counts channels whose
    ratio or shift is past the warning limits.
    """

    name: str
    level: int | None
    calls: int
    samples: int
    values: int
    channels: int
    mean_shift_max: float
    mean_shift_rms: float
    variance_ratio_median: float
    variance_ratio_min: float
    variance_ratio_max: float
    extreme_channels: int = 0

    @classmethod
    def of(cls, name, level, calls, samples, values, old_mean, old_var, new_mean, new_var, epsilon) -> "BnChange":
        old_mean, old_var = np.asarray(old_mean, np.float64), np.asarray(old_var, np.float64)
        shift = np.abs(np.asarray(new_mean, np.float64) - old_mean) / np.sqrt(old_var + epsilon)
        ratio = (np.asarray(new_var, np.float64) + epsilon) / (old_var + epsilon)
        extreme = (ratio < VARIANCE_RATIO_LIMITS[0]) | (ratio > VARIANCE_RATIO_LIMITS[1]) | (shift > MEAN_SHIFT_LIMIT)
        return cls(name, level, calls, int(samples), int(round(values)), int(shift.size), float(shift.max()),
                   float(np.sqrt(np.mean(shift**2))), float(np.median(ratio)), float(ratio.min()), float(ratio.max()),
                   int(np.count_nonzero(extreme)))

    def as_dict(self) -> dict:
        return dict(self.__dict__)


#: Fewer calibration samples than this: the statistics are noisy (the variance of a Dense BN's input
#: taken over n samples has a relative standard error of about sqrt(2 / n): 14 % at 100).
MIN_SAMPLES = 100
#: new/old variance outside these limits (the BN's output scale changes more than 10x) ...
VARIANCE_RATIO_LIMITS = (1e-2, 1e2)
#: ... or a mean that moved more than this many old standard deviations: most likely wrong data or preprocessing.
MEAN_SHIFT_LIMIT = 10.0


def plural(count, noun: str) -> str:
    """``1 sample``, ``2 samples``, ``1 pass``, ``3 passes``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x", "ch", "sh")) else f"{count} {noun}s"


def warnings_for(changes: list[BnChange], samples: int, mode: str, batch_size: int) -> list[dict]:
    """What makes these statistics doubtful, as ``{"kind", "bn", "message"}`` dicts (one line each)."""
    found = []
    if mode == "fixed-batch" and samples < batch_size:
        found.append({"kind": "small_fixed_batch", "bn": None,
                      "message": f"fixed-batch used {plural(samples, 'sample')}, fewer than --batch-size {batch_size}: "
                                 "give more calibration data"})
    elif mode != "fixed-batch" and samples < MIN_SAMPLES:
        found.append({"kind": "few_samples", "bn": None,
                      "message": f"only {plural(samples, 'calibration sample')} (fewer than {MIN_SAMPLES}): "
                                 "the statistics are noisy"})
    low, high = VARIANCE_RATIO_LIMITS
    for change in changes:
        parts = []
        if change.variance_ratio_min < low:
            parts.append(f"variance ratio (new+eps)/(old+eps) down to {change.variance_ratio_min:.3g} (limit {low:g})")
        if change.variance_ratio_max > high:
            parts.append(f"variance ratio (new+eps)/(old+eps) up to {change.variance_ratio_max:.3g} (limit {high:g})")
        if change.mean_shift_max > MEAN_SHIFT_LIMIT:
            parts.append(f"mean moved by {change.mean_shift_max:.3g} old standard deviations (limit {MEAN_SHIFT_LIMIT:g})")
        if parts:
            found.append({"kind": "extreme_change", "bn": change.name,
                          "message": f"{change.name}: {'; '.join(parts)} in "
                                     f"{change.extreme_channels} of {plural(change.channels, 'channel')}"})
    return found


#: one-unit outputs: the threshold of each output activation (a probability at 0.5; a logit, tanh, softsign at 0)
THRESHOLDS = {"sigmoid": 0.5, "hard_sigmoid": 0.5, "hard_silu": None, "softmax": 0.5, "linear": 0.0, "tanh": 0.0,
              "softsign": 0.0}
#: layers an output passes through unchanged in value (its activation is the one before them)
_VALUE_KEEPING = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                  "GaussianDropout", "AlphaDropout", "Identity", "ActivityRegularization", "Flatten", "Reshape")


def output_activation(model, index: int = 0) -> str | None:
    """The activation that computes output ``index`` of ``model`` (``sigmoid``, ``linear``, ...), following
    nested models and layers that keep values (Dropout, Flatten, ...); None where it cannot be told."""
    import keras

    tensors = keras.tree.flatten(model.outputs)
    if index >= len(tensors):
        return None
    tensor = tensors[index]
    for _ in range(256):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        op = history.operation
        inner = getattr(op, "outputs", None) if isinstance(op, keras.Model) else None
        if inner is not None:
            flat = keras.tree.flatten(inner)
            if history.tensor_index >= len(flat):
                return None
            tensor = flat[history.tensor_index]
            continue
        name = type(op).__name__
        if not isinstance(op, keras.layers.Layer):  # a keras.ops node: ops.sigmoid, ops.tanh
            return name.lower() if name.lower() in THRESHOLDS and type(op).__module__.startswith("keras.") else None
        if type(op) is getattr(keras.layers, name, None) and name in _VALUE_KEEPING:
            nodes = op._inbound_nodes
            if history.node_index >= len(nodes) or len(nodes[history.node_index].input_tensors) != 1:
                return None
            tensor = nodes[history.node_index].input_tensors[0]
            continue
        activation = getattr(op, "activation", None)
        if activation is None:
            return None
        return getattr(activation, "__name__", None)
    return None


@dataclass(frozen=True)
class ClassRule:
    """How an output becomes class predictions: the arg-max over its classes, or, for one unit, a threshold.

    The threshold is a property of the model (its output activation), never
    of a batch; where the activation does not tell (``threshold`` None) it is
    decided once, over the whole data set (0.5 when every value lies in
    [0, 1], else 0), by :class:`Scorer`.
    """

    threshold: float | None = None
    activation: str | None = None

    @classmethod
    def of(cls, model, index: int = 0) -> "ClassRule":
        activation = output_activation(model, index)
        return cls(THRESHOLDS.get(activation) if activation else None, activation)


def class_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim >= 2 and labels.shape[-1] > 1:
        return labels.argmax(axis=-1)
    return labels.reshape(len(labels)).astype(np.int64)


class Scorer:
    """Top-1 accuracy over a whole data set, fed batch by batch: the same figure at any batch size.

    Arg-max outputs are counted as they come; one-unit outputs are kept (one
    number per sample) and thresholded once at the end, by ``rule`` or by
    ``reference``'s decision (an int8 artifact is judged by its float model's
    threshold, never by its own values).
    """

    def __init__(self, rule: ClassRule, reference: "Scorer | None" = None):
        self.rule = rule
        self.reference = reference
        self.correct = 0
        self.total = 0
        self._values: list[np.ndarray] = []
        self._truth: list[np.ndarray] = []

    def add(self, outputs, labels) -> None:
        outputs = np.asarray(outputs)
        truth = class_labels(labels)
        if outputs.ndim >= 2 and outputs.shape[-1] > 1:
            if truth.size and truth.max() >= outputs.shape[-1]:
                raise InputError(f"a label is {int(truth.max())}, but the model's first output has "
                                 f"{outputs.shape[-1]} classes (0 to {outputs.shape[-1] - 1})")
            self.correct += int(np.sum(outputs.argmax(axis=-1) == truth))
            self.total += len(truth)
            return
        if truth.size and not np.isin(truth, (0, 1)).all():
            raise InputError(f"a label is {int(truth[~np.isin(truth, (0, 1))][0])}, but the model's first output "
                             "has one unit (a binary decision: labels 0 and 1)")
        self._values.append(outputs.reshape(len(outputs), -1)[:, 0].astype(np.float64))
        self._truth.append(truth)

    def threshold(self) -> float:
        """The one-unit threshold: the rule's, the reference's, or decided over every value seen."""
        if self.rule.threshold is not None:
            return self.rule.threshold
        if self.reference is not None:
            return self.reference.threshold()
        values = np.concatenate(self._values) if self._values else np.zeros(0)
        return 0.5 if values.size and values.min() >= 0 and values.max() <= 1 else 0.0

    def counts(self) -> tuple[int, int]:
        correct, total = self.correct, self.total
        if self._values:
            values, truth = np.concatenate(self._values), np.concatenate(self._truth)
            correct += int(np.sum((values > self.threshold()).astype(np.int64) == truth))
            total += len(truth)
        return correct, total

    @property
    def accuracy(self) -> float | None:
        correct, total = self.counts()
        return correct / total if total else None


def accuracy(model, data, batch_size: int, limit: int | None = None, reference: Scorer | None = None,
             scorer: list | None = None) -> float:
    """Top-1 accuracy of ``model``'s first output on labelled ``data`` (inference mode), the same at any
    ``batch_size``. ``reference``: a scorer whose one-unit threshold this one follows; ``scorer``, a list
    that receives this run's :class:`Scorer`."""
    from bnfreeze.parity import run_keras

    counted = Scorer(ClassRule.of(model), reference)
    for feed, labels in zip(data.batches(batch_size, limit), data.label_batches(batch_size, limit)):
        try:
            counted.add(run_keras(model, [feed[s.name] for s in data.specs])[0], labels)
        except InputError as exc:
            raise InputError(f"{getattr(data, 'source', 'data')}: {exc}") from exc
    if scorer is not None:
        scorer.append(counted)
    result = counted.accuracy
    return float("nan") if result is None else result
