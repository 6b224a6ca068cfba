"""Seeded inputs for a Keras model and a parity check between two models.

Shared by fold, export, verify and report: :func:`random_inputs` (arrays) and
:func:`random_data` (the same as a data source) make the seeded samples, and
:func:`check_models` compares two Keras models on them.

``fold`` runs the rewritten model beside the original on the same seeded
inputs, one single sample and one batch, and compares every output with
:mod:`bnfreeze.compare` before it writes anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bnfreeze.compare import OutputComparison, Tolerance, compare_output, summarize
from bnfreeze.compare.tolerance import TOLERANCE_CHECKS, lowest_precision
from bnfreeze.errors import InputError, ParityError, message_line
from bnfreeze.io.arrays import ArrayData
from bnfreeze.io.signature import TensorSpec, input_specs, output_names, pack_inputs
from bnfreeze.compare.precision import (LOW_PRECISIONS, NoReading, float32_twin, low_precision_layers,
                                        stored_precision)

#: Size used for unknown (None) non-batch dimensions, such as the spatial
#: dimensions of MobileNetV3 built with default arguments.
DEFAULT_FREE_DIM = 64
#: The most memory seeded random inputs may take (they are made at once, before the runs).
RANDOM_DATA_BYTES = 2 * 2**30
#: A second size for them in the parity check: odd, where 64 is even, so that 'same' padding with a
#: stride, pooling windows and shapes recorded inside nested models meet their other case too.
ODD_FREE_DIM = 37


_INTEGER_HIGH = {"uint8": 256, "int8": 128}


def integer_ranges(model) -> dict[str, int]:
    """Exclusive upper bounds for integer inputs of a Keras model: the smallest vocabulary of the
    Embedding/CategoryEncoding layers in it (ids beyond it would be out of range)."""
    import keras

    sizes = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Embedding):
            sizes.append(int(layer.input_dim))
        elif isinstance(layer, keras.layers.CategoryEncoding):
            sizes.append(int(layer.num_tokens))
    if not sizes:
        return {}
    return {spec.name: min(sizes) for spec in input_specs(model) if "int" in spec.dtype}


def fixed_batch(specs: list[TensorSpec]) -> int | None:
    """The batch size a model's inputs fix (``Input(batch_shape=(2, ...))``, stateful RNNs), or None."""
    return next((int(s.shape[0]) for s in specs if s.shape and s.shape[0] is not None), None)


def random_inputs(specs: list[TensorSpec], batch_size: int, seed: int, free_dim: int = DEFAULT_FREE_DIM,
                  int_high: dict[str, int] | None = None):
    """Seeded inputs: standard normal floats, integers over their range, a few words for text.

    Integer inputs span ``int_high`` (an input name -> exclusive upper bound,
    e.g. an Embedding's vocabulary) or their dtype's non-negative range
    (uint8 and int8 images: all 256 or 128 values); other integer inputs
    without a known range get 0 and 1 (indices and masks any model accepts).
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = (batch_size,) + tuple(free_dim if d is None else int(d) for d in spec.shape[1:])
        if spec.dtype == "string":  # text inputs (StringLookup, TextVectorization): a few words
            arrays.append(rng.choice(np.array(["the", "model", "folds", "batch", "norm", "zebra"]), size=shape))
            continue
        dtype = np.dtype(spec.dtype if spec.dtype != "bfloat16" else "float32")
        if np.issubdtype(dtype, np.integer):
            high = (int_high or {}).get(spec.name) or _INTEGER_HIGH.get(dtype.name, 2)
            arrays.append(rng.integers(0, high, size=shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def run_keras(model, arrays: list[np.ndarray], training: bool | None = False) -> list[np.ndarray]:
    """Run ``model``; outputs flattened in model order.

    ``training=False`` is inference (``predict``, every exporter); ``None`` is
    the model's *default call* ``model(x)``, where layers called with
    ``training=True`` in the graph run in training mode.
    """
    import keras

    feed = pack_inputs(model, list(arrays))
    outputs = model(feed) if training is None else model(feed, training=training)
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]


class preserved_state:
    """Restore every variable of the given models on exit.

    A default call can run BNs in training mode, which update their moving
    statistics, and dropout advances its seed: a parity check must leave the
    models as it found them.
    """

    def __init__(self, *models):
        self.variables = []
        seen = set()
        for model in models:
            for variable in model.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    self.variables.append(variable)

    def __enter__(self):
        self.values = [np.array(v.numpy(), copy=True) for v in self.variables]
        return self

    def __exit__(self, *exc):
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)
        return False


@dataclass(frozen=True)
class ParityRun:
    """One comparison: which call, which inputs, and how far the outputs were apart."""

    call: str  # "training=False" or "default call"
    inputs: str  # "random x1", "random x10", "data.npy samples 0-7"
    batch: int
    max_abs: float
    max_rel: float
    passed: bool
    note: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ParityResult:
    """The worst error over outputs and runs, and the per-output detail."""

    max_abs: float
    max_rel: float
    samples: int
    passed: bool
    outputs: list[OutputComparison] = field(default_factory=list)
    tolerance: Tolerance | None = None
    runs: list[ParityRun] = field(default_factory=list)
    #: the tolerance of the runs in the float32 reading of a float16 or bfloat16 model
    #: (:mod:`bnfreeze.compare.precision`); None where there were none
    reading_tolerance: Tolerance | None = None
    #: why a float16 or bfloat16 model had no float32 reading (judged in its own precision only); None otherwise
    reading_unavailable: str | None = None

    def as_dict(self) -> dict:
        data = {"max_abs": self.max_abs, "max_rel": self.max_rel, "samples": self.samples, "passed": self.passed,
                "tolerance": self.tolerance.as_dict() if self.tolerance else None,
                "runs": [r.as_dict() for r in self.runs]}
        if self.reading_tolerance is not None:
            data["float32_reading_tolerance"] = self.reading_tolerance.as_dict()
        if self.reading_unavailable is not None:
            data["float32_reading_unavailable"] = self.reading_unavailable
        return data

    def failure(self) -> str:
        """The first failed run in words, with the bounds it was held to ("" when every run passed):
        ``max_abs 0.02, max_rel 0.03 at training=False, random x1 (atol 0.01, rtol 0.01 (float16 defaults))``."""
        run = next((r for r in self.runs if not r.passed), None)
        if run is None:
            return ""
        reading = self.reading_tolerance is not None and run.inputs.endswith(READING)
        bounds = (self.reading_tolerance if reading else self.tolerance)
        described = f" ({bounds.describe()})" if bounds is not None else ""
        note = f": {run.note}" if run.note else ""
        return f"max_abs {run.max_abs:.3g}, max_rel {run.max_rel:.3g} at {run.call}, {run.inputs}{described}{note}"


#: (call, batch size, magnitude) of the seeded runs: inference on one sample (the deployment case) and on
#: batches at three magnitudes, standard-normal inputs times 1, 10 and 100 (a fold that is right only while
#: a clipping or saturating layer stays in its linear range differs only at large inputs, and a batch of
#: 8 x 100 values reaches far into the tails), and the default call ``model(x)``.
DEFAULT_RUNS: tuple[tuple[bool | None, int, float], ...] = (
    (False, 1, 1.0), (False, 8, 1.0), (False, 8, 10.0), (False, 8, 100.0), (None, 3, 1.0))
#: Real samples compared when data is given (in batches of DATA_BATCH).
DATA_SAMPLES = 32
DATA_BATCH = 8


def _scaled(specs, arrays, magnitude: float):
    if magnitude == 1.0:
        return arrays
    return [a * np.asarray(magnitude, a.dtype) if np.issubdtype(a.dtype, np.floating) else a
            for spec, a in zip(specs, arrays)]


def run_original(reference, arrays, training=False, source=None) -> list[np.ndarray]:
    """Run the original model; a model that cannot run on inputs of its own declared shapes is bad input.
    ``source`` names the data the inputs come from (None: seeded random inputs)."""
    try:
        return run_keras(reference, arrays, training)
    except Exception as exc:
        from bnfreeze.errors import runtime_refusal
        from bnfreeze.io.models import model_label

        # no kernel for an op here, or ids beyond an Embedding the range checks could not see (one inside
        # a user's layer, or ids computed before the lookup): one line
        refusal = runtime_refusal(model_label(reference), exc, source)
        if refusal is not None:
            raise refusal from exc
        shapes = ", ".join(str(tuple(np.shape(a))) for a in arrays)
        raise InputError(f"{reference.name} does not run on inputs of its declared shape ({shapes}; unknown "
                         f"dims set to {DEFAULT_FREE_DIM}): {message_line(exc)}") from exc


class _NotFinite(Exception):
    """The original model's own outputs overflow at these (scaled) inputs: nothing to compare them with."""


def _compare_run(reference, candidate, arrays, training, names, label, tolerance, scaled: bool = False,
                 source=None):
    """The comparisons of one run, and the reference's outputs in it."""
    expected = run_original(reference, arrays, training, source)
    if scaled and not all(np.all(np.isfinite(e)) for e in expected if np.issubdtype(e.dtype, np.floating)):
        raise _NotFinite()
    try:
        got = run_keras(candidate, arrays, training)
    except Exception as exc:  # the rebuilt model: a layer its config does not rebuild (a Lambda's globals)
        from bnfreeze.io.models import model_label

        raise InputError(f"{model_label(reference)}: its rewritten copy does not run ({label}), so no fold of it "
                         "can be checked; a layer that does not rebuild from its config, such as a Lambda "
                         f"whose function uses names of its module, is the usual cause: {message_line(exc)}") from exc
    if len(expected) != len(got):
        raise ParityError(f"the candidate has {len(got)} outputs, the reference {len(expected)}")
    return [compare_output(f"{name}[{label}]", ref, cand, tolerance.for_output(name))
            for name, ref, cand in zip(names, expected, got)], expected


def _deterministic(model, arrays, tolerance, training=None) -> bool:
    """Does ``model`` (its default call, or the call with ``training``) give the same outputs twice in a row
    (no active dropout or noise, no state that changes between calls)?"""
    with preserved_state(model):
        first = run_keras(model, arrays, training)
        second = run_keras(model, arrays, training)
    return all(compare_output("", a, b, tolerance).passed for a, b in zip(first, second))


def check_models(
    reference,
    candidate,
    tolerance: Tolerance = Tolerance(),
    *,
    seed: int = 0,
    data=None,
    runs: tuple[tuple[bool | None, int, float], ...] = DEFAULT_RUNS,
    default_reference=None,
    like=None,
    reading_reference=None,
    stored: str | None = None,
) -> ParityResult:
    """Compare two models on seeded inputs (and on ``data``'s first samples when given).

    Every run compares all outputs with :func:`bnfreeze.compare.compare_output`:
    inference (``training=False``) on standard-normal inputs and on inputs
    10 and 100 times larger (:data:`DEFAULT_RUNS`), and the default call ``model(x)`` (which keeps
    ``training=True`` where the graph asks for it). Variables are restored
    after default calls. A default call that is not deterministic (dropout
    active in it) cannot be compared and is reported as such, not failed.

    ``default_reference`` is the model whose default call the candidate's must
    match, where that is not ``reference``'s by design: the plain reading of a
    model with preprocessing layers (:mod:`bnfreeze.fold.plain`), whose default
    call is its inference call while the original's runs them in training mode.
    ``like`` is a model with ``reference``'s inputs and outputs whose names and
    shapes the inputs are made from, where ``reference`` records none (a
    subclassed model, read by tracing its call).

    A float16 or bfloat16 model (tolerances not given) is also compared in its float32 reading
    (:mod:`bnfreeze.compare.precision`), every run, held to float32's tolerance: there the fold's algebra is
    judged.
    A run where the original's own rounding (its outputs against its float32 reading's) is over a quarter
    of the tolerance is reported in its own precision but not judged there (two roundings could add up past
    the tolerance with the fold exact), unless the candidate overflows where the original does not.
    ``reading_reference`` is the model whose float32 reading the candidate's must match (default
    ``reference``): the plain reading of a traced model, which records the same operations as the candidate.
    ``stored`` is the lowest precision the rewritten weights are stored in (default: the candidate's lowest):
    float16 weights are rounded by the fold, so the reading is held to float16's bounds.
    """
    tolerance = tolerance.resolved(reference)
    specs = input_specs(like if like is not None else reference)
    names = output_names(like if like is not None else reference)
    comparisons: list[OutputComparison] = []
    records: list[ParityRun] = []
    cases = []
    ranges = integer_ranges(reference)
    for offset, (training, batch, magnitude) in enumerate(runs):
        batch = fixed_batch(specs) or batch  # inputs that fix the batch size run at that size
        arrays = _scaled(specs, random_inputs(specs, batch, seed + offset, int_high=ranges), magnitude)
        cases.append((training, arrays, f"random x{magnitude:g}", False, magnitude != 1.0, None))
    if any(d is None for spec in specs if spec.dtype != "string" for d in spec.shape[1:]):
        # unknown sizes: also at an odd size; a model that cannot run there is not compared there
        arrays = random_inputs(specs, fixed_batch(specs) or 1, seed + len(runs), ODD_FREE_DIM, int_high=ranges)
        cases.append((False, arrays, f"random x1, unknown dims {ODD_FREE_DIM}", True, False, None))
    if data is not None:
        size = fixed_batch(specs) or DATA_BATCH
        for index, feed in enumerate(data.batches(size, max(DATA_SAMPLES, size))):
            arrays = [np.asarray(feed[s.name]) for s in specs]
            if len(arrays[0]) != size and fixed_batch(specs):
                break  # a model with a fixed batch size cannot run the last, smaller batch
            first = index * size
            label = f"{getattr(data, 'source', 'data')} samples {first}-{first + len(arrays[0]) - 1}"
            source = getattr(data, "source", None)
            cases.append((False, arrays, label, False, False, source))
            if index == 0:
                cases.append((None, arrays, label, False, False, source))
    twins, unavailable = None, None
    if _wants_reading(tolerance, reference, candidate):
        try:
            twins = float32_twin(reading_reference or reference), float32_twin(candidate)
            for twin in twins:  # a twin that cannot run is no reading (the original's own runs decide)
                try:
                    run_keras(twin, cases[0][1])
                except Exception as exc:
                    raise NoReading(f"its float32 twin does not run ({message_line(exc)})") from exc
        except NoReading as exc:
            twins, unavailable = None, str(exc)
    low = twins is not None
    exact = _float32_tolerance(tolerance, stored or stored_precision(candidate)) if low else None
    samples = 0
    for training, arrays, inputs, optional, scaled, source in cases:
        call = "training=False" if training is False else "default call"
        batch = int(arrays[0].shape[0]) if arrays else 0
        label = f"{call}, batch {batch}, {inputs}"
        expected_model = default_reference if training is None and default_reference is not None else reference
        case = (training, arrays, label, optional, scaled, source, expected_model)
        found, record, own = _run_case(reference, candidate, case, names, tolerance, call, inputs, batch)
        if low:
            read_found, read_record, read = _run_case(twins[0], twins[1], case[:-1] + (twins[0],), names, exact,
                                                      call, inputs + READING, batch)
            rounding = _own_rounding(names, read, own, tolerance) if own is not None and read is not None else None
            if record.batch and rounding is not None and found:
                # the original's own rounding here is large enough that two exact orders of the same sums may
                # differ by more than the tolerance: the float32 reading judges the fold
                found, record = _reported(found, record, f"{tolerance.dtype} figures reported, not judged: "
                                                         f"{rounding}")
            if read_record.batch and rounding is not None and read_found and exact.dtype in LOW_PRECISIONS:
                # folded weights stored in float16 are rounded by the fold, an error of the same kind
                read_found, read_record = _reported(read_found, read_record, "figures reported, not judged: the "
                                                    f"folded weights are stored in {exact.dtype}, and {rounding}")
        comparisons.extend(found)
        records.append(record)
        samples += record.batch
        if low:
            comparisons.extend(read_found)
            records.append(read_record)
    worst = summarize(comparisons)
    return ParityResult(
        max_abs=worst["max_abs"],
        max_rel=worst["max_rel"],
        samples=samples,
        passed=worst["passed"],
        outputs=comparisons,
        tolerance=tolerance,
        runs=records,
        reading_tolerance=exact,
        reading_unavailable=unavailable,
    )



def _run_case(reference, candidate, case, names, tolerance, call, inputs, batch):
    """One run of :func:`check_models`: its comparisons (none where it was not compared), its record, and the
    expected model's outputs (None where it was not compared)."""
    training, arrays, label, optional, scaled, source, expected_model = case
    try:
        with preserved_state(reference, candidate, expected_model):
            found, expected = _compare_run(expected_model, candidate, arrays, training, names, label, tolerance, scaled,
                                 source)
    except _NotFinite:  # float16 at x100, say: the other runs still compare every output
        return [], ParityRun(call, inputs, 0, 0.0, 0.0, True,
                             "the original model's outputs overflow at these inputs: not compared"), None
    except InputError:  # only where the original itself cannot run
        if not optional:
            raise
        return [], ParityRun(call, inputs, 0, 0.0, 0.0, True,
                             "the original model does not run at this size: not compared"), None
    note = None
    if training is False and not all(c.passed for c in found) and not _deterministic(expected_model, arrays,
                                                                                      tolerance, False):
        from bnfreeze.io.models import model_label

        raise InputError(f"{model_label(reference)}: gives different outputs for the same inputs at inference "
                         f"({label}): dropout or noise active at training=False, or state that changes "
                         "between calls; no fold of it can be checked")
    if training is None and not all(c.passed for c in found) and not _deterministic(expected_model, arrays,
                                                                                     tolerance):
        note = "the default call is not deterministic (dropout or noise active in it): not comparable"
        found = []
    elif expected_model is not reference:
        note = ("compared with the original's inference call: its default call runs preprocessing layers in "
                "training mode by design (see default_call)")
    worst = summarize(found)
    return found, ParityRun(call, inputs, batch, worst["max_abs"], worst["max_rel"], worst["passed"], note), expected


def _own_rounding(names, read, own, tolerance: Tolerance) -> str | None:
    """Why the original's own low-precision rounding in a run is too large to judge a fold by (its outputs
    ``own`` over a quarter of the tolerance from its float32 reading's, ``read``), in words; None where small."""
    for name, exact, rounded in zip(names, read, own):
        bounds = tolerance.for_output(name).elementary()
        quarter = replace(bounds, atol=bounds.abs_limit / 4, rtol=bounds.rel_limit / 4)
        found = compare_output(name, exact, rounded, quarter)
        if found.finite and not found.passed:
            return (f"the original's own {tolerance.for_output(name).dtype or tolerance.dtype} rounding here "
                    f"(max_abs {found.max_abs:.3g} against its float32 reading) is over a quarter of the "
                    "tolerance; the float32 reading judges the fold")
    return None


def _reported(found, record: ParityRun, note: str):
    """A run kept in the report but not judged, except an overflow the original does not have (no rounding)."""
    worst, judged = summarize(found), [c for c in found if not c.finite]
    if judged:
        note = "NaN or Inf in the folded model's outputs where the original has none"
    return judged, replace(record, max_abs=worst["max_abs"], max_rel=worst["max_rel"],
                           passed=all(c.passed for c in judged), note=note)


#: What the inputs of a run in the float32 reading end with.
READING = ", float32 reading"


def _wants_reading(tolerance: Tolerance, *models) -> bool:
    """A float16 or bfloat16 check whose tolerances were not given (given ones are the user's word), of models
    that compute in low precision somewhere, with atol/rtol checks: :mod:`bnfreeze.compare.precision`
    applies."""
    precisions = {tolerance.dtype, *(d for _, d in tolerance.output_dtypes)}
    if not precisions & set(LOW_PRECISIONS) or any(tolerance.given):
        return False
    if not set(tolerance.checks) & set(TOLERANCE_CHECKS):
        return False
    return any(low_precision_layers(m) for m in models if m is not None)


def _float32_tolerance(tolerance: Tolerance, stored: str) -> Tolerance:
    """The check of the float32 reading: float32's defaults for every output, or those of the precision the
    weights are stored in where it is lower (a folded float16 weight is rounded to float16)."""
    return replace(tolerance, atol=None, rtol=None, given=(False, False), output_dtypes=()).resolved_for(
        lowest_precision({"float32", stored}))


def random_data(specs: list[TensorSpec], samples: int, seed: int, int_high=None) -> ArrayData:
    """Seeded standard-normal samples (small integers for integer inputs)."""
    if samples < 1:
        raise InputError(f"--samples must be >= 1, got {samples}")
    per_sample = sum(a.nbytes for a in random_inputs(specs, 1, seed, int_high=int_high))
    if samples * per_sample > RANDOM_DATA_BYTES:
        most = max(RANDOM_DATA_BYTES // max(per_sample, 1), 1)
        raise InputError(f"--samples {samples}: the random inputs would take {samples * per_sample / 2**30:.1f} GiB "
                         f"of memory; give at most {most} samples, or real data with --data")
    arrays = random_inputs(specs, samples, seed, int_high=int_high)
    noun = "sample" if samples == 1 else "samples"
    return ArrayData(Path(f"{samples} random {noun} (seed {seed})"), dict(zip([s.name for s in specs], arrays)), specs)
