"""What recalibration changed, per BN, and what it did to accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
            parts.append(f"variance ratio new/old down to {change.variance_ratio_min:.3g} (limit {low:g})")
        if change.variance_ratio_max > high:
            parts.append(f"variance ratio new/old up to {change.variance_ratio_max:.3g} (limit {high:g})")
        if change.mean_shift_max > MEAN_SHIFT_LIMIT:
            parts.append(f"mean moved by {change.mean_shift_max:.3g} old standard deviations (limit {MEAN_SHIFT_LIMIT:g})")
        if parts:
            found.append({"kind": "extreme_change", "bn": change.name,
                          "message": f"{change.name}: {'; '.join(parts)} in "
                                     f"{change.extreme_channels} of {plural(change.channels, 'channel')}"})
    return found


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Class predictions: argmax over the last axis, or a 0.5 threshold for one unit in [0, 1] (0 for logits)."""
    outputs = np.asarray(outputs)
    if outputs.ndim >= 2 and outputs.shape[-1] > 1:
        return outputs.argmax(axis=-1)
    flat = outputs.reshape(len(outputs), -1)[:, 0]
    threshold = 0.5 if flat.min() >= 0 and flat.max() <= 1 else 0.0
    return (flat > threshold).astype(np.int64)


def class_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim >= 2 and labels.shape[-1] > 1:
        return labels.argmax(axis=-1)
    return labels.reshape(len(labels)).astype(np.int64)


def accuracy(model, data, batch_size: int, limit: int | None = None) -> float:
    """Top-1 accuracy of ``model``'s first output on labelled ``data`` (inference mode)."""
    from bnfreeze.parity import run_keras

    correct = total = 0
    for feed, labels in zip(data.batches(batch_size, limit), data.label_batches(batch_size, limit)):
        outputs = run_keras(model, [feed[s.name] for s in data.specs])[0]
        correct += int(np.sum(predictions(outputs) == class_labels(labels)))
        total += len(labels)
    return correct / total if total else float("nan")
