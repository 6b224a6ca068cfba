"""The comparator shared by ``fold``, ``export`` and ``verify``.

An output passes the default (``"max"``) check when it is finite, has the
reference's shape, and its largest absolute error is within ``atol`` *or*
within ``rtol`` times the largest magnitude of the reference output. The
second clause makes the tolerance scale with the output (logits of size 50
and probabilities of size 1 are judged alike) without dividing by reference
values near zero.

The ``"elementwise"`` check is Polygraphy's stricter rule: every element must
be within ``atol`` or within ``rtol`` times its own reference magnitude.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bnfreeze.errors import InputError

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
CHECKS = ("max", "elementwise")

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
    return min(floats or {"float32"}, key=_PRECISION_ORDER.index)


@dataclass(frozen=True)
class Tolerance:
    """``atol``/``rtol`` left None take the default for the model's compute dtype (:meth:`resolved`)."""

    atol: float | None = None
    rtol: float | None = None
    check: str = "max"
    dtype: str | None = None

    def __post_init__(self):
        if (self.atol is not None and not self.atol >= 0) or (self.rtol is not None and not self.rtol >= 0):
            raise InputError(f"tolerances must be >= 0 (atol={self.atol}, rtol={self.rtol})")
        if self.check not in CHECKS:
            raise InputError(f"unknown check {self.check!r}; choose one of {', '.join(CHECKS)}")

    def resolved(self, model) -> "Tolerance":
        """Fill the missing values from :data:`DTYPE_TOLERANCES` for ``model``'s compute dtype."""
        dtype = compute_dtype(model)
        atol, rtol = DTYPE_TOLERANCES[dtype]
        return Tolerance(atol if self.atol is None else self.atol, rtol if self.rtol is None else self.rtol,
                         self.check, dtype)

    @property
    def abs_limit(self) -> float:
        return DEFAULT_ATOL if self.atol is None else self.atol

    @property
    def rel_limit(self) -> float:
        return DEFAULT_RTOL if self.rtol is None else self.rtol

    def describe(self) -> str:
        source = f" ({self.dtype} defaults)" if self.dtype else ""
        return f"atol {self.abs_limit:g}, rtol {self.rel_limit:g}{source}"

    def as_dict(self) -> dict:
        return {"atol": self.abs_limit, "rtol": self.rel_limit, "check": self.check, "dtype": self.dtype}


@dataclass(frozen=True)
class OutputComparison:
    """How far one candidate output is from the reference output."""

    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    p99_abs: float
    top1_agreement: float | None
    finite: bool
    passed: bool
    reason: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _top1(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Share of samples whose arg-max class agrees, for classifier-shaped outputs."""
    if reference.ndim != 2 or reference.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)))


def compare_output(name: str, reference, candidate, tolerance: Tolerance = Tolerance()) -> OutputComparison:
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        nan = float("nan")
        return OutputComparison(
            name, nan, nan, nan, nan, None, False, False,
            reason=f"shape {candidate.shape} differs from the reference's {reference.shape}",
        )
    finite = bool(np.all(np.isfinite(candidate)) and np.all(np.isfinite(reference)))
    diff = np.abs(candidate - reference)
    if diff.size == 0:
        return OutputComparison(name, 0.0, 0.0, 0.0, 0.0, None, True, True)
    max_abs = float(np.max(diff))
    magnitude = float(np.max(np.abs(reference))) if finite else float("nan")
    if magnitude > 0:
        max_rel = max_abs / magnitude
    else:
        max_rel = 0.0 if max_abs == 0 else float("inf")
    if tolerance.check == "elementwise":
        within = (diff <= tolerance.abs_limit) | (diff <= tolerance.rel_limit * np.abs(reference))
        passed = bool(np.all(within))
    else:
        passed = max_abs <= tolerance.abs_limit or max_rel <= tolerance.rel_limit
    reason = None
    if not finite:
        passed = False
        reason = "NaN or Inf in the outputs"
    elif not passed:
        reason = f"max_abs {max_abs:.3g} > atol {tolerance.abs_limit:g} and max_rel {max_rel:.3g} > rtol {tolerance.rel_limit:g}"
    return OutputComparison(
        name=name,
        max_abs=max_abs,
        max_rel=max_rel,
        mean_abs=float(np.mean(diff)),
        p99_abs=float(np.percentile(diff, 99)),
        top1_agreement=_top1(reference, candidate),
        finite=finite,
        passed=passed,
        reason=reason,
    )


def summarize(comparisons: list[OutputComparison]) -> dict:
    """Worst case over outputs: ``max_abs``, ``max_rel`` and ``passed``."""
    return {
        "max_abs": max((c.max_abs for c in comparisons), default=0.0),
        "max_rel": max((c.max_rel for c in comparisons), default=0.0),
        "passed": all(c.passed for c in comparisons),
    }
