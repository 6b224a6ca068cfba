"""Comparing outputs: the error statistics of every output, streamed over batches, and the verdict.

See :mod:`bnfreeze.compare` for the statistics and the checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from bnfreeze.compare.tolerance import Tolerance


@dataclass(frozen=True)
class OutputComparison:
    """How far one candidate output is from the reference output, over all samples."""

    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    p99_abs: float
    top1_agreement: float | None
    finite: bool
    passed: bool
    reason: str | None = None
    snr_db: float | None = None
    cosine: float | None = None
    samples: int = 0
    #: index (into the data) of the sample the check judged worst
    worst_sample: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _nan_comparison(name: str, reason: str, samples: int = 0) -> OutputComparison:
    nan = float("nan")
    return OutputComparison(name, nan, nan, nan, nan, None, False, False, reason=reason, samples=samples)


def snr_db(signal_energy: float, noise_energy: float) -> float:
    """``10*log10(signal / noise)``: ``inf`` when the noise is 0, ``-inf`` when the signal is."""
    if noise_energy == 0:
        return math.inf
    if signal_energy == 0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


class Accumulator:
    """Statistics of one output over batches, so verify can stream the data.

    :meth:`add` takes a batch of reference and candidate outputs and the index
    of its first sample in the data; :meth:`result` gives the
    :class:`OutputComparison` over everything added.
    """

    def __init__(self, name: str, tolerance: Tolerance = Tolerance()):
        self.name = name
        self.tolerance = tolerance
        self.samples = 0
        self.shape_problem: str | None = None
        self.finite = True
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.signal = 0.0
        self.noise = 0.0
        self.dot = 0.0
        self.ref_norm2 = 0.0
        self.cand_norm2 = 0.0
        self.top1_agree = 0
        self.top1_total = 0
        self.classifier = True
        #: (abs, rel, sample) of the batch failing the max rule with the largest error, and its worst
        #: sample; None while no batch failed it
        self.worst_max_fail: tuple[float, float, int] | None = None
        self.elementwise_failed = 0
        self.diffs: list[np.ndarray] = []
        # worst samples: (value, index)
        self.worst_abs = (-1.0, None)
        self.worst_noise = (-1.0, None)
        self.worst_disagreement: tuple[float, int] | None = None
        self.first_nonfinite: int | None = None
        self.exact = False  # text or boolean outputs: compared for equality
        self.first_unequal: int | None = None

    def add(self, reference, candidate, start: int = 0) -> None:
        reference, candidate = np.asarray(reference), np.asarray(candidate)
        if reference.dtype.kind in "OSUb" or candidate.dtype.kind in "OSUb":
            self._add_exact(reference, candidate, start)
            return
        reference = reference.astype(np.float64)
        candidate = candidate.astype(np.float64)
        batch = int(reference.shape[0]) if reference.ndim else 1
        self.samples += batch
        if self.shape_problem is not None:
            return
        if reference.shape != candidate.shape:
            self.shape_problem = f"shape {candidate.shape} differs from the reference's {reference.shape}"
            return
        if reference.size == 0:
            return
        ref_bad, cand_bad = ~np.isfinite(reference), ~np.isfinite(candidate)
        if ref_bad.any() or cand_bad.any():
            # NaN where the reference has NaN, the same infinity where it has one: the same function
            # (sqrt or log of a negative, say); anything else is a difference no number describes.
            with np.errstate(invalid="ignore"):
                same = np.array_equal(ref_bad, cand_bad) and bool(np.all(
                    ~ref_bad | (np.isnan(reference) & np.isnan(candidate)) | (reference == candidate)))
            if not same:
                if self.first_nonfinite is None:
                    bad = np.argwhere(ref_bad != cand_bad if not np.array_equal(ref_bad, cand_bad) else ref_bad)[0]
                    self.first_nonfinite = start + (int(bad[0]) if reference.ndim else 0)
                self.finite = False
                return
            reference = np.where(ref_bad, 0.0, reference)
            candidate = np.where(cand_bad, 0.0, candidate)
        diff = candidate - reference
        absdiff = np.abs(diff)
        # the max rule per sample (its largest error against its own largest magnitude): a property of the
        # data, the same at any batch size
        rows = batch if reference.ndim else 1
        sample_abs = absdiff.reshape(rows, -1).max(axis=1)
        magnitude = np.abs(reference).reshape(rows, -1).max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sample_rel = np.where(magnitude > 0, sample_abs / np.where(magnitude > 0, magnitude, 1.0),
                                  np.where(sample_abs == 0, 0.0, math.inf))
        self.max_abs = max(self.max_abs, float(sample_abs.max()))
        self.max_rel = max(self.max_rel, float(sample_rel.max()))
        failing = ~((sample_abs <= self.tolerance.abs_limit) | (sample_rel <= self.tolerance.rel_limit))
        if failing.any():
            worst = int(np.flatnonzero(failing)[np.argmax(sample_abs[failing])])
            if self.worst_max_fail is None or sample_abs[worst] > self.worst_max_fail[0]:
                self.worst_max_fail = (float(sample_abs[worst]), float(sample_rel[worst]), start + worst)
        within = (absdiff <= self.tolerance.abs_limit) | (absdiff <= self.tolerance.rel_limit * np.abs(reference))
        self.elementwise_failed += int(within.size - np.count_nonzero(within))
        self.sum_abs += float(absdiff.sum())
        self.count += absdiff.size
        self.signal += float(np.sum(reference * reference))
        self.noise += float(np.sum(diff * diff))
        self.dot += float(np.sum(reference * candidate))
        self.ref_norm2 += float(np.sum(reference * reference))
        self.cand_norm2 += float(np.sum(candidate * candidate))
        self.diffs.append(absdiff.astype(np.float32).ravel())
        # per-sample figures (axis 0 is the sample axis when the output has one)
        if reference.ndim >= 1:
            per_abs = absdiff.reshape(batch, -1).max(axis=1)
            per_signal = (reference * reference).reshape(batch, -1).sum(axis=1)
            per_noise = (diff * diff).reshape(batch, -1).sum(axis=1)
        else:
            per_abs, per_signal, per_noise = absdiff.reshape(1), (reference ** 2).reshape(1), (diff ** 2).reshape(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(per_noise == 0, 0.0, per_noise / np.where(per_signal == 0, 1e-300, per_signal))
        i = int(np.argmax(per_abs))
        if per_abs[i] > self.worst_abs[0]:
            self.worst_abs = (float(per_abs[i]), start + i)
        i = int(np.argmax(ratio))
        if ratio[i] > self.worst_noise[0]:
            self.worst_noise = (float(ratio[i]), start + i)
        if reference.ndim == 2 and reference.shape[-1] >= 2:
            agree = np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)
            self.top1_agree += int(agree.sum())
            self.top1_total += batch
            if not agree.all():
                wrong = np.flatnonzero(~agree)
                j = int(wrong[np.argmax(per_abs[wrong])])
                if self.worst_disagreement is None or per_abs[j] > self.worst_disagreement[0]:
                    self.worst_disagreement = (float(per_abs[j]), start + j)
        else:
            self.classifier = False

    def _add_exact(self, reference: np.ndarray, candidate: np.ndarray, start: int) -> None:
        """Text and boolean outputs (class names, flags) have no error size: they must be equal."""
        self.exact = True
        self.samples += int(reference.shape[0]) if reference.ndim else 1
        if self.shape_problem is not None:
            return
        if reference.shape != candidate.shape:
            self.shape_problem = f"shape {candidate.shape} differs from the reference's {reference.shape}"
            return
        same = reference == candidate
        if not np.all(same) and self.first_unequal is None:
            self.first_unequal = start + (int(np.argwhere(~np.asarray(same))[0][0]) if reference.ndim else 0)

    def result(self) -> OutputComparison:
        tolerance = self.tolerance
        if self.shape_problem is not None:
            return _nan_comparison(self.name, self.shape_problem, self.samples)
        if getattr(self, "exact", False):
            equal = self.first_unequal is None
            return OutputComparison(self.name, 0.0 if equal else math.nan, 0.0 if equal else math.nan,
                                    0.0 if equal else math.nan, 0.0 if equal else math.nan, None, True, equal,
                                    reason=None if equal else "text or boolean values differ (they must be equal)",
                                    samples=self.samples, worst_sample=self.first_unequal,
                                    snr_db=math.inf if equal else math.nan, cosine=1.0 if equal else math.nan)
        if not self.finite:
            return OutputComparison(self.name, math.nan, math.nan, math.nan, math.nan, None, False, False,
                                    reason="NaN or Inf in the outputs where the reference has none (or another)",
                                    samples=self.samples,
                                    worst_sample=self.first_nonfinite)
        if self.count == 0:
            return OutputComparison(self.name, 0.0, 0.0, 0.0, 0.0, None, True, True, samples=self.samples,
                                    snr_db=math.inf, cosine=1.0)
        diffs = np.concatenate(self.diffs)
        top1 = self.top1_agree / self.top1_total if self.classifier and self.top1_total else None
        snr = snr_db(self.signal, self.noise)
        norms = math.sqrt(self.ref_norm2) * math.sqrt(self.cand_norm2)
        if norms > 0:
            cosine = max(-1.0, min(1.0, self.dot / norms))
        else:
            cosine = 1.0 if self.ref_norm2 == self.cand_norm2 else 0.0
        reasons = []
        for check in tolerance.checks:
            if check == "max" and self.worst_max_fail is not None:
                worst_abs, worst_rel, sample = self.worst_max_fail
                reasons.append(f"sample {sample}: max_abs {worst_abs:.3g} > atol {tolerance.abs_limit:g} and "
                               f"max_rel {worst_rel:.3g} > rtol {tolerance.rel_limit:g}")
            elif check == "elementwise" and self.elementwise_failed:
                reasons.append(f"{self.elementwise_failed} elements beyond atol {tolerance.abs_limit:g} "
                               f"and rtol {tolerance.rel_limit:g} of their reference")
            elif check == "top1":
                if top1 is None:
                    reasons.append("top-1 agreement needs a (batch, classes) output; use --check snr for this one")
                elif top1 < tolerance.top1_limit:
                    reasons.append(f"top-1 agreement {top1:.4f} < {tolerance.top1_limit:g}")
            elif check == "snr" and snr < tolerance.snr_limit:
                reasons.append(f"snr {snr:.3g} dB < {tolerance.snr_limit:g} dB")
        primary = tolerance.checks[0]
        if primary == "top1" and self.worst_disagreement is not None:
            worst = self.worst_disagreement[1]
        elif primary == "snr":
            worst = self.worst_noise[1]
        elif primary == "max" and self.worst_max_fail is not None:
            worst = self.worst_max_fail[2]  # the sample the failure line names
        else:
            worst = self.worst_abs[1]
        if self.noise == 0:
            worst = None  # identical outputs: no sample is worse than another
        return OutputComparison(
            name=self.name,
            max_abs=self.max_abs,
            max_rel=self.max_rel,
            mean_abs=self.sum_abs / self.count,
            p99_abs=float(np.percentile(diffs, 99)),
            top1_agreement=top1,
            finite=True,
            passed=not reasons,
            reason="; ".join(reasons) or None,
            snr_db=snr,
            cosine=cosine,
            samples=self.samples,
            worst_sample=worst,
        )


def compare_output(name: str, reference, candidate, tolerance: Tolerance = Tolerance()) -> OutputComparison:
    """Compare one output (all samples in one array)."""
    accumulator = Accumulator(name, tolerance)
    accumulator.add(reference, candidate)
    return accumulator.result()


def summarize(comparisons: list[OutputComparison]) -> dict:
    """Worst case over outputs: ``max_abs``, ``max_rel`` and ``passed``."""
    return {
        "max_abs": max((c.max_abs for c in comparisons), default=0.0),
        "max_rel": max((c.max_rel for c in comparisons), default=0.0),
        "passed": all(c.passed for c in comparisons),
    }
