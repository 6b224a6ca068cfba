"""``bnfreeze.verify``: do deployment artifacts compute what the reference computes?

The reference and each candidate may be any artifact bnfreeze can run — a
``.keras``/``.h5`` model, a SavedModel folder, an ``.onnx`` or a ``.tflite``
file, recognised by content — in any combination. The reference runs on the
CPU; each candidate runs on each requested device, on the same inputs, batch
by batch (batch size 1 by default: the single-sample deployment case).
Inputs and outputs are paired by :mod:`bnfreeze.verify.matching` before
anything runs; quantized tensors are fed quantized and read dequantized
(:meth:`~bnfreeze.verify.runners.base.Runner.run`); every output is summarised
over all samples by :class:`~bnfreeze.compare.Accumulator` while the data
streams past.

A device that is not present here gives a *skipped* row with the reason;
with ``require_gpu`` a skipped GPU row fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bnfreeze.compare import OutputComparison, Tolerance
from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec
from bnfreeze.parity import integer_ranges, random_data
from bnfreeze.verify.harness import Comparison, infer, match_outputs, pair_inputs
from bnfreeze.verify.matching import canonical, find, parse_map
from bnfreeze.verify.runners import KerasRunner, Runner, Unavailable, open_runner, runner_class

DEVICES = {"cpu": ("cpu",), "gpu": ("gpu",), "all": ("cpu", "gpu")}


@dataclass
class VerifyRow:
    """One candidate on one device: the worst over its outputs, and one summary per output in ``outputs``."""

    candidate: str
    backend: str
    device: str
    batch_size: int
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    p99_abs: float | None = None
    top1_agreement: float | None = None
    snr_db: float | None = None
    cosine: float | None = None
    provider: str = ""
    #: how the candidate is quantized ("full-integer int8 (quantized I/O)", "QDQ", ...), None when it is not
    quantization: str | None = None
    samples: int = 0
    passed: bool = False
    skipped: bool = False
    #: a skipped row that fails the run (``require_gpu``)
    required: bool = False
    reason: str | None = None
    outputs: list[OutputComparison] = field(default_factory=list)
    #: reference output name -> candidate output name, where they differ
    output_names: dict[str, str] = field(default_factory=dict)
    #: with ``locate``: the first layer of a failing Keras candidate that differs from the reference's
    first_diverging_layer: str | None = None
    #: what this row is held to: the defaults of its runtime and the reference's (:meth:`Tolerance.for_runtimes`)
    tolerance: Tolerance | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["outputs"] = [o.as_dict() for o in self.outputs]
        data["tolerance"] = self.tolerance.as_dict() if self.tolerance is not None else None
        return data


@dataclass
class VerifyReport:
    reference: str
    data: str
    tolerance: Tolerance
    rows: list[VerifyRow]
    #: the reference's backend and quantization, e.g. ("onnxruntime", None)
    reference_backend: str = ""
    reference_quantization: str | None = None
    samples: int = 0

    @property
    def passed(self) -> bool:
        ran = any(not row.skipped for row in self.rows)
        return ran and all(row.passed or (row.skipped and not row.required) for row in self.rows)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "data": self.data,
            "samples": self.samples,
            "criteria": self.tolerance.as_dict(),
            "results": [row.as_dict() for row in self.rows],
        }


def _summarize(row: VerifyRow, comparisons: list[OutputComparison]) -> None:
    def worst(values, pick=max):
        values = [v for v in values if v is not None and not np.isnan(v)]
        return pick(values) if values else None

    row.outputs = comparisons
    row.max_abs = worst(c.max_abs for c in comparisons)
    row.max_rel = worst(c.max_rel for c in comparisons)
    row.mean_abs = worst(c.mean_abs for c in comparisons)
    row.p99_abs = worst(c.p99_abs for c in comparisons)
    row.top1_agreement = worst((c.top1_agreement for c in comparisons), min)
    row.snr_db = worst((c.snr_db for c in comparisons), min)
    row.cosine = worst((c.cosine for c in comparisons), min)
    row.samples = max((c.samples for c in comparisons), default=0)
    row.passed = all(c.passed for c in comparisons)
    failing = next((c for c in comparisons if not c.passed), None)
    row.reason = f"{failing.name}: {failing.reason}" if failing is not None else None


def data_specs(reference: Runner) -> list[TensorSpec]:
    """The reference's inputs as the data must hold them: real dtypes, names without decorations.

    ``serving_default_digits:0`` becomes ``digits``, so an ``.npz`` names its
    arrays the same whatever artifact is the reference (where that keeps the
    names distinct).
    """
    specs = reference.input_specs()
    keys = [canonical(s.name) for s in specs]
    if len(set(keys)) != len(keys):
        keys = [s.name for s in specs]
    return [TensorSpec(key, tuple(s.shape), s.real_dtype, key=s.key, values=s.values) for key, s in zip(keys, specs)]


def verify(
    reference,
    candidates,
    *,
    data=None,
    samples: int = 8,
    seed: int = 0,
    batch_size: int = 1,
    tolerance: Tolerance = Tolerance(),
    device: str = "cpu",
    require_gpu: bool = False,
    locate: bool = False,
    unsafe: bool = False,
    signature: str | None = None,
    input_map=None,
    output_map=None,
    rescale: float | None = None,
    progress=None,
    on_header=None,
) -> VerifyReport:
    """Compare every candidate artifact with the ``reference`` artifact (any format, run on the CPU).

    ``signature`` picks the SavedModel (and multi-signature TFLite) signature;
    ``input_map``/``output_map`` pair names the automatic matching cannot
    (``"ref=cand,..."`` or a dict); ``data`` is a ``.npy``/``.npz`` file or a
    folder of images (``rescale`` multiplies its float inputs). ``progress`` (``start(description, total)``,
    ``advance(samples)``) hears of each step as it begins and of the samples compared; ``on_header`` is called
    with the report before any sample is compared (no rows yet), so a caller can show what runs on what.
    """
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose cpu, gpu or all")
    if not candidates:
        raise InputError("give at least one candidate artifact to verify")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if data is None and rescale is not None:
        raise InputError("--rescale multiplies the inputs given with --data; give --data too")
    inputs_map = parse_map(input_map, "--input-map")
    outputs_map = parse_map(output_map, "--output-map")
    options = {"unsafe": unsafe, "signature": signature}
    runner_class(reference)
    classes = [(Path(c), runner_class(c)) for c in candidates]  # bad paths fail before any run
    if data is not None:
        from bnfreeze.io.sources import check_data_path

        check_data_path(data)  # before any runner starts (and TensorFlow is imported)
    from bnfreeze.io.progress import NoProgress

    progress = progress or NoProgress()
    opened: list[Runner] = []
    try:
        progress.start(f"loading the reference {reference}", None)
        ref_runner = open_runner(reference, "cpu", **options)
        try:
            ref_runner.load()
        except Unavailable as exc:
            raise InputError(f"{reference}: the reference cannot run on the CPU here ({exc})") from exc
        opened.append(ref_runner)
        keras_model = getattr(ref_runner, "model", None)
        # a Keras reference: the defaults of each output's own precision; otherwise what the artifact shows
        tolerance = tolerance.resolved(keras_model) if keras_model is not None else tolerance.resolved_for(
            ref_runner.compute_dtype())
        specs = data_specs(ref_runner)
        ref_inputs = dict(zip([s.name for s in specs], [s.name for s in ref_runner.input_specs()]))
        ref_outputs = ref_runner.output_specs()
        ranges = _integer_ranges(keras_model, ref_inputs) if keras_model is not None else {}
        # given data is opened (and checked) before any candidate is; random data once every Keras model's
        # integer ranges are known
        if data is not None:
            from bnfreeze.io.sources import open_data

            dataset = open_data(data, specs, rescale, model=keras_model)
        else:
            dataset = None
        rows: list[VerifyRow] = []
        plans: list[tuple[VerifyRow, Comparison]] = []
        used_inputs: set[str] = set()
        used_outputs: set[str] = set()
        bounds: dict[str, tuple[object, str]] = {}  # data name -> (the tightest ValueRange of a Keras candidate, path)
        for path, cls in classes:
            for dev in DEVICES[device]:
                if dev not in cls.devices:
                    continue
                row = VerifyRow(str(path), cls.backend, dev, batch_size)
                rows.append(row)
                progress.start(f"loading {path} ({cls.backend}, {dev})", None)
                runner = open_runner(path, dev, **options)
                try:
                    runner.load()
                except Unavailable as exc:
                    row.skipped = True
                    row.required = require_gpu and dev == "gpu"
                    row.reason = f"{'--require-gpu: ' if row.required else ''}{exc}"
                    continue
                opened.append(runner)
                row.provider = runner.provider
                row.quantization = runner.quantization
                input_pairs = pair_inputs(runner, specs, inputs_map, str(reference))
                pairs = match_outputs(runner, ref_outputs, outputs_map, str(reference),
                                      ref_runner.outputs_in_model_order)
                used_inputs |= {p.reference.name for p in input_pairs if p.how == "map"}
                used_outputs |= {p.reference.name for p in pairs if p.how == "map"}
                names = {p.reference.name: p.candidate.name for p in input_pairs}
                if isinstance(runner, KerasRunner):  # ids beyond its vocabulary could not be fed to it
                    _narrow(ranges, _integer_ranges(runner.model, names))
                    _tighten(bounds, runner, names)
                row.output_names = {p.reference.name: p.candidate.name for p in pairs
                                    if p.reference.name != p.candidate.name}
                row.tolerance = tolerance.for_runtimes((ref_runner.backend, "cpu"), (cls.backend, dev))
                plans.append((row, Comparison(runner, names, pairs, row.tolerance)))
        if plans:
            _check_maps_used(inputs_map, specs, used_inputs, "input")
            _check_maps_used(outputs_map, ref_outputs, used_outputs, "output")
        if dataset is None:  # random samples over the integer ranges of every Keras model compared
            dataset = random_data(specs, samples, seed, int_high=ranges)
        else:
            _check_candidate_ranges(dataset, specs, bounds)  # before any run, like the reference's own ranges
        total = dataset.count()
        if on_header is not None:
            on_header(VerifyReport(str(reference), str(dataset.source), tolerance, [], ref_runner.backend,
                                   ref_runner.quantization, total))
        progress.start(f"comparing {len(plans)} candidate run{'s' if len(plans) != 1 else ''} with {reference}",
                       total)
        first_feed = None
        start = 0
        for feed in dataset.batches(batch_size):
            if first_feed is None:
                first_feed = feed
            expected = infer(ref_runner, {ref_inputs[name]: value for name, value in feed.items()})
            for _row, comparison in plans:
                comparison.add(feed, expected, start)
            count = next(iter(feed.values())).shape[0]
            start += count
            progress.advance(count)
        for row, comparison in plans:
            _summarize(row, comparison.results())
            if (locate and not row.passed and isinstance(comparison.runner, KerasRunner)
                    and isinstance(ref_runner, KerasRunner) and first_feed is not None):
                from bnfreeze.verify.locate import first_divergence

                where = first_divergence(
                    ref_runner.model, comparison.runner.model,
                    {ref_inputs[name]: value for name, value in first_feed.items()}, row.tolerance.elementary(),
                    {comparison.inputs[name]: value for name, value in first_feed.items() if name in comparison.inputs})
                if where:
                    row.first_diverging_layer = where
                    row.reason = f"{row.reason}; first diverging layer: {where}"
        return VerifyReport(str(reference), str(dataset.source), tolerance, rows, ref_runner.backend,
                            ref_runner.quantization, start)
    finally:
        for runner in opened:
            runner.close()


def _integer_ranges(model, names: dict[str, str]) -> dict[str, int]:
    """The vocabulary bound of each integer input of a Keras model, by data name (``names``: data name -> the
    model's input name); only the inputs that have one: a float input beside them gets none."""
    bounds = integer_ranges(model)
    return {data_name: bounds[name] for data_name, name in names.items() if name in bounds}


def _narrow(ranges: dict[str, int], bounds: dict[str, int]) -> None:
    """Each input's integer range: the smallest bound any model compared sets (an id must fit them all)."""
    for name, bound in bounds.items():
        ranges[name] = min(ranges.get(name, bound), bound)


def _tighten(bounds: dict, runner, names: dict[str, str]) -> None:
    """Note the vocabulary bound of each of a Keras candidate's inputs, by data name, where it is the tightest."""
    own = {spec.name: spec.values for spec in runner.input_specs() if spec.values is not None}
    for data_name, name in names.items():
        value = own.get(name)
        if value is not None and (data_name not in bounds or value.high < bounds[data_name][0].high):
            bounds[data_name] = (value, str(runner.path))


def _check_candidate_ranges(dataset, specs: list[TensorSpec], bounds: dict) -> None:
    """Given data must fit every Keras candidate's inputs too (an id beyond a candidate's vocabulary): read
    once, before anything runs, only where a candidate bounds an input."""
    from dataclasses import replace

    from bnfreeze.io.ranges import problem

    narrowed = {s.name: (replace(s, values=bounds[s.name][0]), bounds[s.name][1]) for s in specs if s.name in bounds}
    if not narrowed:
        return
    start = 0
    for feed in dataset.batches(256):
        for name, (spec, path) in narrowed.items():
            found = problem(feed[name], spec)
            if found is not None:
                sample, value, what = found
                raise InputError(f"{dataset.source}: input {name} holds {value} at sample {start + sample}; "
                                 f"the candidate {path} {what[3:] if what.startswith('it ') else what}")
        start += len(next(iter(feed.values())))


def _check_maps_used(mapping: dict[str, str], reference: list[TensorSpec], used: set[str], kind: str) -> None:
    """A map entry that paired nothing (no candidate has that name) is a typo: bad input, not a no-op."""
    for ref, cand in mapping.items():
        spec = find(reference, ref)
        if spec is None or spec.name not in used:
            raise InputError(f"--{kind}-map: no candidate has an {kind} named {cand} (mapped to the reference's {ref})")
