"""``bnfreeze.verify``: do deployment artifacts compute what the Keras model computes?

The reference is a Keras model run on TensorFlow's CPU. Each candidate (a
``.keras`` model, a SavedModel folder, an ``.onnx`` or a ``.tflite`` file,
recognised by its content) runs on the same inputs, batch by batch (batch
size 1 by default: the single-sample deployment case), on each requested
device, and every output is compared with :mod:`bnfreeze.compare`.

A device that is not present here gives a *skipped* row with the reason;
with ``require_gpu`` a skipped GPU row fails.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bnfreeze.compare import OutputComparison, Tolerance
from bnfreeze.io.arrays import ArrayData, load_arrays
from bnfreeze.parity import random_data
from bnfreeze.errors import InputError
from bnfreeze.verify.runners import KerasRunner, Runner, Unavailable, runner_class
from bnfreeze.io.signature import input_specs
from bnfreeze.verify.harness import check_inputs, compare_runner, run_reference

DEVICES = {"cpu": ("cpu",), "gpu": ("gpu",), "all": ("cpu", "gpu")}


@dataclass
class VerifyRow:
    candidate: str
    backend: str
    device: str
    batch_size: int
    max_abs: float | None = None
    max_rel: float | None = None
    mean_abs: float | None = None
    p99_abs: float | None = None
    top1_agreement: float | None = None
    provider: str = ""
    passed: bool = False
    skipped: bool = False
    #: a skipped row that fails the run (``require_gpu``)
    required: bool = False
    reason: str | None = None
    outputs: list[OutputComparison] = field(default_factory=list)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["outputs"] = [o.as_dict() for o in self.outputs]
        return data


@dataclass
class VerifyReport:
    reference: str
    data: str
    tolerance: Tolerance
    rows: list[VerifyRow]

    @property
    def passed(self) -> bool:
        ran = any(not row.skipped for row in self.rows)
        return ran and all(row.passed or (row.skipped and not row.required) for row in self.rows)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "data": self.data,
            "atol": self.tolerance.abs_limit,
            "rtol": self.tolerance.rel_limit,
            "check": self.tolerance.check,
            "tolerance_dtype": self.tolerance.dtype,
            "results": [row.as_dict() for row in self.rows],
        }


def _summarize(row: VerifyRow, comparisons: list[OutputComparison]) -> None:
    def worst(values):
        values = [v for v in values if v is not None and not np.isnan(v)]
        return max(values) if values else None

    row.outputs = comparisons
    row.max_abs = worst(c.max_abs for c in comparisons)
    row.max_rel = worst(c.max_rel for c in comparisons)
    row.mean_abs = float(np.mean([c.mean_abs for c in comparisons])) if comparisons else None
    row.p99_abs = worst(c.p99_abs for c in comparisons)
    top1 = [c.top1_agreement for c in comparisons if c.top1_agreement is not None]
    row.top1_agreement = float(np.mean(top1)) if top1 else None
    row.passed = all(c.passed for c in comparisons)
    failing = next((c for c in comparisons if not c.passed), None)
    row.reason = f"{failing.name}: {failing.reason}" if failing is not None else None


def _feeds(reference_model, data, samples: int, seed: int, batch_size: int) -> tuple[ArrayData, list[dict]]:
    specs = input_specs(reference_model)
    dataset = load_arrays(data, specs) if data is not None else random_data(specs, samples, seed)
    return dataset, list(dataset.batches(batch_size))


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
) -> VerifyReport:
    """Compare every candidate artifact with the Keras ``reference`` model file."""
    from bnfreeze.io.models import load_model

    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose cpu, gpu or all")
    if not candidates:
        raise InputError("give at least one candidate artifact to verify")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    reference_model = load_model(reference, unsafe=unsafe)
    tolerance = tolerance.resolved(reference_model)
    classes = [(Path(c), runner_class(c)) for c in candidates]  # bad paths fail before any run
    dataset, feeds = _feeds(reference_model, data, samples, seed, batch_size)
    expected = run_reference(reference_model, feeds)
    specs = input_specs(reference_model)
    rows = []
    for path, cls in classes:
        for dev in DEVICES[device]:
            if dev not in cls.devices:
                continue
            row = VerifyRow(str(path), cls.backend, dev, batch_size)
            rows.append(row)
            runner = _make_runner(cls, path, dev, unsafe)
            try:
                runner.load()
            except Unavailable as exc:
                row.skipped = True
                row.required = require_gpu and dev == "gpu"
                row.reason = f"{'--require-gpu: ' if row.required else ''}{exc}"
                continue
            try:
                row.provider = runner.provider
                comparisons = compare_runner(runner, feeds, expected, check_inputs(runner, specs), tolerance)
                _summarize(row, comparisons)
                if locate and not row.passed and isinstance(runner, KerasRunner):
                    from bnfreeze.verify.locate import first_divergence

                    where = first_divergence(reference_model, runner.model, feeds[0], tolerance)
                    if where:
                        row.reason = f"{row.reason}; first diverging layer: {where}"
            finally:
                runner.close()
    return VerifyReport(str(reference), str(dataset.source), tolerance, rows)


def _make_runner(cls: type[Runner], path: Path, device: str, unsafe: bool) -> Runner:
    if cls is KerasRunner:
        return KerasRunner(path, device, unsafe=unsafe)
    return cls(path, device)
