"""The comparators shared by ``fold``, ``export`` and ``verify``.

Every comparison reports the same statistics of ``candidate - reference`` over
all samples: ``max_abs``, ``max_rel`` (relative to the largest magnitude of the
reference output), ``mean_abs``, ``p99_abs``, ``top1_agreement`` (share of
samples whose arg-max class agrees, for ``(batch, classes)`` outputs),
``snr_db`` (``10*log10(sum ref^2 / sum (ref - cand)^2)``, ``inf`` when
identical) and ``cosine`` (of the flattened outputs). What makes an output
*pass* is the check (several may be combined; all must hold):

``max`` (the default)
    finite, the reference's shape, and for every batch the largest absolute
    error within ``atol`` *or* within ``rtol`` times the largest magnitude of
    the reference output in that batch. The second clause makes the tolerance
    scale with the output (logits of size 50 and probabilities of size 1 are
    judged alike) without dividing by reference values near zero.
``elementwise``
    Polygraphy's stricter rule: every element within ``atol`` or within
    ``rtol`` times its own reference magnitude.
``top1``
    top-1 agreement >= ``min_top1`` (default 0.99), for lossy artifacts
    (quantized models) whose classes must agree although their values cannot.
``snr``
    ``snr_db >= min_snr`` (default 30 dB), Polygraphy-style error statistics
    for lossy artifacts whose outputs are not classes.
"""

from __future__ import annotations

import math
from dataclasses import replace, asdict, dataclass

import numpy as np

from bnfreeze.errors import InputError

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
DEFAULT_MIN_TOP1 = 0.99
DEFAULT_MIN_SNR = 30.0
CHECKS = ("max", "elementwise", "top1", "snr")
#: The checks that use ``atol``/``rtol``.
TOLERANCE_CHECKS = ("max", "elementwise")

#: Default (atol, rtol) by the lowest floating-point precision a model computes in. Folding
#: changes the order of roundings, so a model computing in float16 (machine epsilon 1e-3) or
#: bfloat16 (8e-3) cannot be held to float32's 1e-4; float64 can be held to far more.
DTYPE_TOLERANCES = {
    "float64": (1e-8, 1e-7),
    "float32": (DEFAULT_ATOL, DEFAULT_RTOL),
    "float16": (1e-2, 1e-2),
    "bfloat16": (5e-2, 5e-2),
}
_PRECISION_ORDER = ["bfloat16", "float16", "float32", "float64"]


def compute_dtype(model) -> str:
    """The lowest floating-point precision among the model's layers' compute dtypes."""
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    floats = {str(getattr(layer, "compute_dtype", "float32")) for layer in layers} & set(DTYPE_TOLERANCES)
    return lowest_precision(floats)


def output_precisions(model) -> list[str]:
    """For each output (in ``keras.tree.flatten`` order), the lowest compute precision of the layers
    it depends on (the whole of a nested model or custom layer on the way counts)."""
    import keras

    result = []
    for tensor in keras.tree.flatten(model.outputs):
        dtypes, seen, stack = set(), set(), [tensor]
        while stack:
            history = getattr(stack.pop(), "_keras_history", None)
            if history is None:
                continue
            operation, node_index = history[0], history[1]
            if (id(operation), node_index) in seen:
                continue
            seen.add((id(operation), node_index))
            parts = operation._flatten_layers(include_self=True) if hasattr(operation, "_flatten_layers") else []
            dtypes |= {str(getattr(part, "compute_dtype", "")) for part in parts}
            nodes = getattr(operation, "_inbound_nodes", [])
            if node_index < len(nodes):
                stack.extend(nodes[node_index].input_tensors)
        result.append(lowest_precision(dtypes))
    return result


def lowest_precision(dtypes) -> str:
    """The lowest floating-point precision among ``dtypes`` (names); float32 when there is none."""
    floats = {str(d) for d in dtypes} & set(DTYPE_TOLERANCES)
    return min(floats or {"float32"}, key=_PRECISION_ORDER.index)


def _split_checks(check) -> tuple[str, ...]:
    if isinstance(check, str):
        names = [part.strip() for part in check.split("+")]
    else:
        names = [str(part).strip() for part in check]
    names = [n for n in names if n]
    return tuple(dict.fromkeys(names)) or ("max",)


@dataclass(frozen=True)
class Tolerance:
    """What an output must satisfy.

    ``check`` names one check or several joined by ``+`` (``"top1+snr"``; a
    list is accepted too). ``atol``/``rtol`` left None take the default for the
    model's compute dtype (:meth:`resolved`); ``min_top1``/``min_snr`` left None
    take :data:`DEFAULT_MIN_TOP1`/:data:`DEFAULT_MIN_SNR` where their check is
    used. Use :func:`criteria` to build one from user options: it also refuses
    options that the chosen checks would ignore.
    """

    atol: float | None = None
    rtol: float | None = None
    check: str = "max"
    dtype: str | None = None
    min_top1: float | None = None
    min_snr: float | None = None
    #: (output name, lowest compute precision on the way to it): a float32 output is not judged by the
    #: float16 tolerance of a side branch. Filled by :meth:`resolved`.
    output_dtypes: tuple[tuple[str, str], ...] = ()
    #: whether ``atol``/``rtol`` were given (not filled from a dtype's defaults)
    given: tuple[bool, bool] = (False, False)

    def __post_init__(self):
        object.__setattr__(self, "check", "+".join(_split_checks(self.check)))
        if (self.atol is not None and not self.atol >= 0) or (self.rtol is not None and not self.rtol >= 0):
            raise InputError(f"tolerances must be >= 0 (atol={self.atol}, rtol={self.rtol})")
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise InputError(f"unknown check {unknown[0]!r}; choose one of {', '.join(CHECKS)}")
        if set(TOLERANCE_CHECKS) <= set(self.checks):
            raise InputError("--check max and --check elementwise are two rules for the same tolerances; choose one")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise InputError(f"--min-top1 is a share of samples between 0 and 1, got {self.min_top1}")
        if self.min_snr is not None and math.isnan(self.min_snr):
            raise InputError("--min-snr must be a number of decibels")
        if self.min_top1 is not None and "top1" not in self.checks:
            raise InputError("--min-top1 applies to --check top1; add --check top1 or drop --min-top1")
        if self.min_snr is not None and "snr" not in self.checks:
            raise InputError("--min-snr applies to --check snr; add --check snr or drop --min-snr")

    @property
    def checks(self) -> tuple[str, ...]:
        return tuple(self.check.split("+"))

    def resolved(self, model) -> "Tolerance":
        """Fill the missing values from :data:`DTYPE_TOLERANCES` for ``model``'s compute dtype,
        output by output (:func:`output_precisions`)."""
        from bnfreeze.io.signature import output_names

        resolved = self.resolved_for(compute_dtype(model))
        try:
            pairs = tuple(zip(output_names(model), output_precisions(model)))
        except Exception:  # a model whose graph cannot be walked: one tolerance for every output
            pairs = ()
        return replace(resolved, output_dtypes=pairs)

    def resolved_for(self, dtype: str) -> "Tolerance":
        """Fill the missing ``atol``/``rtol`` with the defaults of compute dtype ``dtype``."""
        if self.dtype is not None and self.atol is not None and self.rtol is not None:
            given = self.given
        else:
            given = (self.atol is not None, self.rtol is not None)
        atol, rtol = DTYPE_TOLERANCES.get(dtype, DTYPE_TOLERANCES["float32"])
        return Tolerance(self.atol if given[0] else atol, self.rtol if given[1] else rtol,
                         self.check, dtype, self.min_top1, self.min_snr, self.output_dtypes, given)

    def for_output(self, name: str) -> "Tolerance":
        """The tolerance output ``name`` is held to: the defaults of its own precision where not given."""
        dtype = dict(self.output_dtypes).get(name)
        if dtype is None or dtype == self.dtype or all(self.given):
            return self
        atol, rtol = DTYPE_TOLERANCES.get(dtype, DTYPE_TOLERANCES["float32"])
        return replace(self, atol=self.atol if self.given[0] else atol, rtol=self.rtol if self.given[1] else rtol,
                       dtype=dtype)

    @property
    def abs_limit(self) -> float:
        return DEFAULT_ATOL if self.atol is None else self.atol

    @property
    def rel_limit(self) -> float:
        return DEFAULT_RTOL if self.rtol is None else self.rtol

    @property
    def top1_limit(self) -> float:
        return DEFAULT_MIN_TOP1 if self.min_top1 is None else self.min_top1

    @property
    def snr_limit(self) -> float:
        return DEFAULT_MIN_SNR if self.min_snr is None else self.min_snr

    def elementary(self) -> "Tolerance":
        """The atol/rtol part of this tolerance as a ``max`` (or ``elementwise``) check, for tensors
        that are not classifier outputs (``--locate`` compares hidden layers)."""
        check = "elementwise" if "elementwise" in self.checks else "max"
        return Tolerance(self.abs_limit, self.rel_limit, check, self.dtype)

    def describe(self) -> str:
        """The bounds in short (``atol 1e-05, rtol 0.0001 (float32 defaults)`` for the default check)."""
        source = f" ({self.dtype} defaults)" if self.dtype else ""
        parts = []
        for check in self.checks:
            if check in TOLERANCE_CHECKS:
                prefix = "elementwise " if check == "elementwise" else ""
                parts.append(f"{prefix}atol {self.abs_limit:g}, rtol {self.rel_limit:g}{source}")
            elif check == "top1":
                parts.append(f"min top-1 {self.top1_limit:g}")
            elif check == "snr":
                parts.append(f"min snr {self.snr_limit:g} dB")
        return " and ".join(parts)

    def explain(self) -> str:
        """The pass criterion in words, for reports."""
        parts = []
        source = f", {self.dtype} defaults" if self.dtype else ""
        for check in self.checks:
            if check == "max":
                parts.append(f"max_abs <= {self.abs_limit:g} or max_rel <= {self.rel_limit:g} (max{source})")
            elif check == "elementwise":
                parts.append(f"every element within {self.abs_limit:g} or {self.rel_limit:g} of its reference value "
                             f"(elementwise{source})")
            elif check == "top1":
                parts.append(f"top-1 agreement >= {self.top1_limit:g}")
            elif check == "snr":
                parts.append(f"snr >= {self.snr_limit:g} dB")
        return " and ".join(parts)

    def as_dict(self) -> dict:
        data = {"check": self.check, "dtype": self.dtype}
        if set(self.checks) & set(TOLERANCE_CHECKS):  # the bounds of the checks used, no others
            data.update(atol=self.abs_limit, rtol=self.rel_limit)
        if "top1" in self.checks:
            data["min_top1"] = self.top1_limit
        if "snr" in self.checks:
            data["min_snr"] = self.snr_limit
        return data


def criteria(atol=None, rtol=None, check=("max",), min_top1=None, min_snr=None) -> Tolerance:
    """A :class:`Tolerance` from user options; options the checks would ignore are bad input.

    ``--atol``/``--rtol`` only mean something to ``max``/``elementwise``, and
    ``--min-top1``/``--min-snr`` only to ``top1``/``snr``: silently ignoring
    them would let a user believe a bound holds that nobody checked.
    """
    checks = _split_checks(check) if check else ("max",)
    if (atol is not None or rtol is not None) and not set(checks) & set(TOLERANCE_CHECKS):
        given = "--atol" if atol is not None else "--rtol"
        raise InputError(f"{given} applies to --check max or elementwise, not to --check {'+'.join(checks)}; "
                         f"add --check max to bound the error too, or drop {given}")
    return Tolerance(atol, rtol, "+".join(checks), None, min_top1, min_snr)


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
        self.max_failed = False  # a batch failed the max rule
        #: (abs, rel, sample) of the failing batch with the largest error, and its worst sample
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
        batch_abs = float(absdiff.max())
        magnitude = float(np.abs(reference).max())
        batch_rel = batch_abs / magnitude if magnitude > 0 else (0.0 if batch_abs == 0 else math.inf)
        self.max_abs = max(self.max_abs, batch_abs)
        self.max_rel = max(self.max_rel, batch_rel)
        if not (batch_abs <= self.tolerance.abs_limit or batch_rel <= self.tolerance.rel_limit):
            self.max_failed = True
            if self.worst_max_fail is None or batch_abs > self.worst_max_fail[0]:
                sample = start + (int(np.argmax(absdiff.reshape(batch, -1).max(axis=1))) if reference.ndim else 0)
                self.worst_max_fail = (batch_abs, batch_rel, sample)
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
            if check == "max" and self.max_failed:
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
        elif primary == "max" and self.max_failed:
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
