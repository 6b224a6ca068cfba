"""What recalibration changed, per BN, and what it did to accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BnChange:
    """Old and new statistics of one BN layer, summarised.

    ``mean_shift`` is ``|new_mean - old_mean| / sqrt(old_var + eps)``: how far
    the mean moved in units of the old standard deviation (max and RMS over
    channels). ``variance_ratio`` is ``new_var / old_var`` per channel
    (median, min, max).
    """

    name: str
    level: int | None
    calls: int
    samples: float
    channels: int
    mean_shift_max: float
    mean_shift_rms: float
    variance_ratio_median: float
    variance_ratio_min: float
    variance_ratio_max: float

    @classmethod
    def of(cls, name, level, calls, samples, old_mean, old_var, new_mean, new_var, epsilon) -> "BnChange":
        old_mean, old_var = np.asarray(old_mean, np.float64), np.asarray(old_var, np.float64)
        shift = np.abs(np.asarray(new_mean, np.float64) - old_mean) / np.sqrt(old_var + epsilon)
        ratio = (np.asarray(new_var, np.float64) + epsilon) / (old_var + epsilon)
        return cls(name, level, calls, samples, int(shift.size), float(shift.max()), float(np.sqrt(np.mean(shift**2))),
                   float(np.median(ratio)), float(ratio.min()), float(ratio.max()))

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
