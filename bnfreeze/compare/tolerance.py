"""What makes a comparison pass: the checks, their bounds, and the defaults by compute dtype.

See :mod:`bnfreeze.compare` for what each check means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


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

#: Default float32 (atol, rtol) by the runtime an artifact runs on, compared with Keras on the CPU (or with
#: another runtime: the looser of the two). An output passes a batch when its max |error| is within atol or
#: within rtol x its largest |reference value|. Measured (``scripts/measure_tolerances.py``; method and every
#: number in docs/tolerances.md and BENCHMARKS.md): the worst error over the trained digits CNN on real and
#: random data and keras.applications networks (logits, randomised BN statistics) at 1x and 10x inputs,
#: folded and not, times a margin of at least 10, rounded up to 1, 2 or 5 x 10^k. atol from the digits CNN's
#: softmax (outputs of unit scale: worst 3.8e-6 for every runtime), rtol from every model (the logits of
#: EfficientNetB0 are the worst):
#:
#: * Keras (a candidate's Keras model: a folded one beside its original) 1.65e-5, SavedModel 1.75e-5 -> 2e-4;
#: * onnxruntime CPU 2.93e-5 -> 5e-4;
#: * TFLite 3.36e-5 here, but 1.01e-4 on a user's machine (issue 24: XNNPACK's kernels differ by CPU) -> 2e-3,
#:   atol 1e-4.
#: * GPU rows, not measured here (no GPU; ``measure_tolerances.py --device gpu`` measures them): bnfreeze runs
#:   TF and onnxruntime's CUDA provider with TF32 off, so float32 is float32, but cuDNN picks convolution
#:   algorithms (Winograd, FFT) with larger rounding error; 10x the CPU's, as onnxruntime's own model tests
#:   relax CUDA against the CPU (a relative 1e-2 against 1e-3 for MNIST).
#:
#: The fold's own check (a Keras model against the one it was folded from, on 28 samples) stays at float32's
#: 1e-5 / 1e-4 (:data:`DTYPE_TOLERANCES`, 6x the worst measured): stricter than ``verify`` holds a Keras
#: candidate to, so a fold that passed its check passes ``verify`` on any number of samples.
RUNTIME_TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    ("keras", "cpu"): (5e-5, 2e-4),
    ("savedmodel", "cpu"): (5e-5, 2e-4),
    ("onnxruntime", "cpu"): (5e-5, 5e-4),
    ("tflite", "cpu"): (1e-4, 2e-3),
    ("keras", "gpu"): (5e-4, 2e-3),
    ("savedmodel", "gpu"): (5e-4, 2e-3),
    ("onnxruntime", "gpu"): (5e-4, 5e-3),
}


def runtime_defaults(*runtimes: tuple[str, str]) -> tuple[float, float]:
    """The float32 (atol, rtol) for comparing outputs of these runtimes ``(backend, device)``: the loosest of
    their :data:`RUNTIME_TOLERANCES` (an unknown runtime: float32's defaults)."""
    rows = [RUNTIME_TOLERANCES.get(tuple(r), (DEFAULT_ATOL, DEFAULT_RTOL)) for r in runtimes] or [(DEFAULT_ATOL,
                                                                                                  DEFAULT_RTOL)]
    return max(a for a, _ in rows), max(r for _, r in rows)


def _deciding(runtimes: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The runtimes whose defaults decide: one that another's are at least as loose as drops out (of two
    alike, the later: the candidate), so ``keras/cpu`` beside ``tflite/cpu`` reads ``tflite/cpu``."""
    def bounds(runtime):
        return RUNTIME_TOLERANCES.get(runtime, (DEFAULT_ATOL, DEFAULT_RTOL))

    def covers(a, b):
        return bounds(a)[0] >= bounds(b)[0] and bounds(a)[1] >= bounds(b)[1]

    return tuple(r for i, r in enumerate(runtimes)
                 if not any(covers(o, r) and (bounds(o) != bounds(r) or j > i)
                            for j, o in enumerate(runtimes) if j != i))


def _defaults(dtype: str | None, runtime: tuple[tuple[str, str], ...] = ()) -> tuple[float, float]:
    """(atol, rtol) for a model computing in ``dtype`` compared across ``runtime``: float32 by the runtimes'
    measured noise; float16 and bfloat16 by their own precision (or the runtimes', if looser); float64 by its
    own (an artifact of a float64 model computes in float64)."""
    atol, rtol = DTYPE_TOLERANCES.get(dtype or "float32", DTYPE_TOLERANCES["float32"])
    if not runtime or dtype == "float64":
        return atol, rtol
    run_atol, run_rtol = runtime_defaults(*runtime)
    if dtype in (None, "float32"):
        return run_atol, run_rtol
    return max(atol, run_atol), max(rtol, run_rtol)


def compute_dtype(model) -> str:
    """The lowest floating-point precision among the model's layers' compute dtypes."""
    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else []
    floats = {str(getattr(layer, "compute_dtype", "float32")) for layer in layers} & set(DTYPE_TOLERANCES)
    return lowest_precision(floats)


def output_precisions(model) -> list[str]:
    """For each output (in ``keras.tree.flatten`` order), the lowest compute precision of the layers
    it depends on (the whole of a nested model or custom layer on the way counts), and of the tensors on the
    way (a layer that casts its float32 result to float16 rounds it there)."""
    import keras

    result = []
    for tensor in keras.tree.flatten(model.outputs):
        dtypes, seen, stack = set(), set(), [tensor]
        while stack:
            current = stack.pop()
            dtypes.add(str(getattr(current, "dtype", "")))
            history = getattr(current, "_keras_history", None)
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
    #: the runtimes ``(backend, device)`` compared, whose defaults fill atol/rtol (:meth:`for_runtimes`);
    #: empty: the float32 defaults of the fold's own check
    runtimes: tuple[tuple[str, str], ...] = ()

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
        atol, rtol = _defaults(dtype, self.runtimes)
        return Tolerance(self.atol if given[0] else atol, self.rtol if given[1] else rtol,
                         self.check, dtype, self.min_top1, self.min_snr, self.output_dtypes, given, self.runtimes)

    def for_runtimes(self, *runtimes: tuple[str, str]) -> "Tolerance":
        """This tolerance for outputs of ``runtimes`` (``("tflite", "cpu")``, the reference's and the
        candidate's): atol/rtol not given take the defaults of the loosest (:data:`RUNTIME_TOLERANCES`)."""
        keyed = _deciding(tuple(dict.fromkeys(tuple(r) for r in runtimes)))
        if keyed == self.runtimes:
            return self
        if self.dtype is None:  # not resolved yet: only the runtimes are known
            return replace(self, runtimes=keyed)
        return replace(self, runtimes=keyed).resolved_for(self.dtype)

    def for_output(self, name: str) -> "Tolerance":
        """The tolerance output ``name`` is held to: the defaults of its own precision where not given."""
        dtype = dict(self.output_dtypes).get(name)
        if dtype is None or dtype == self.dtype or all(self.given):
            return self
        atol, rtol = _defaults(dtype, self.runtimes)
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

    @property
    def source(self) -> str:
        """Whose defaults atol/rtol are: ``float32``, ``float32 tflite/cpu``; "" before :meth:`resolved`."""
        if not self.dtype:
            return ""
        return " ".join([self.dtype, *(f"{b}/{d}" for b, d in self.runtimes)])

    def describe(self) -> str:
        """The bounds in short (``atol 1e-05, rtol 0.0001 (float32 defaults)`` for the default check)."""
        source = f" ({self.source} defaults)" if self.source else ""
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
        source = f", {self.source} defaults" if self.source else ""
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
            if self.runtimes:
                data["runtimes"] = [f"{b}/{d}" for b, d in self.runtimes]
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


