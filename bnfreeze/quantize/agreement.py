"""How closely each int8 artifact follows the float Keras model, and the bar it must clear.

Every artifact runs beside the float model on the same samples (the
evaluation data when given, else the calibration data), batch by batch; each
output is summarised over all samples by :class:`bnfreeze.compare.Accumulator`
(top-1 agreement, SNR, cosine, max error). The bar is the lossy comparators
of ``verify``: by default top-1 agreement >= 0.99 for a classifier output
(``(batch, classes)``) and SNR >= 25 dB for any other output; ``check`` picks
the criterion for every output instead. With labels, the float model's and
each artifact's top-1 accuracy are counted on the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from bnfreeze.compare import Accumulator, OutputComparison, Tolerance
from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec, input_specs, output_specs
from bnfreeze.quantize.calibration import fill_batch
from bnfreeze.recalibration.report import ClassRule, Scorer
from bnfreeze.verify.harness import check_inputs, infer, match_outputs, run_reference

DEFAULT_MIN_TOP1 = 0.99
DEFAULT_MIN_SNR = 25.0
QUANTIZE_CHECKS = ("top1", "snr")


def is_classifier(spec: TensorSpec) -> bool:
    return len(spec.shape) == 2 and spec.shape[-1] is not None and spec.shape[-1] >= 2


def criteria(model, check=None, min_top1: float | None = None, min_snr: float | None = None) -> dict[str, Tolerance]:
    """The pass criterion of every output of ``model``: ``{output name: Tolerance}``.

    Without ``check``: the bounds given choose the checks (``min_snr`` alone
    means ``snr``); with neither, top-1 for classifier outputs and SNR for the
    rest. A bound the chosen checks would not use is bad input, as for verify.
    """
    checks = tuple(check) if check else ()
    unknown = [c for c in checks if c not in QUANTIZE_CHECKS]
    if unknown:
        raise InputError(f"--check {unknown[0]}: a quantized model is checked by top1 or snr")
    if not checks and (min_top1 is not None or min_snr is not None):
        checks = tuple(c for c, bound in (("top1", min_top1), ("snr", min_snr)) if bound is not None)
    outputs = output_specs(model)
    result = {}
    for spec in outputs:
        chosen = checks or (("top1",) if is_classifier(spec) else ("snr",))
        if "top1" in chosen and not is_classifier(spec):
            raise InputError(f"--check top1: output {spec.name} has shape {tuple(spec.shape)}, not (batch, classes); "
                             f"use --check snr")
        top1 = (DEFAULT_MIN_TOP1 if min_top1 is None else min_top1) if "top1" in chosen else None
        snr = (DEFAULT_MIN_SNR if min_snr is None else min_snr) if "snr" in chosen else None
        if min_top1 is not None and "top1" not in chosen:
            raise InputError("--min-top1 applies to --check top1; add --check top1 or drop --min-top1")
        if min_snr is not None and "snr" not in chosen:
            raise InputError("--min-snr applies to --check snr; add --check snr or drop --min-snr")
        result[spec.name] = Tolerance(check="+".join(chosen), min_top1=top1, min_snr=snr)
    return result


@dataclass
class Agreement:
    """One artifact beside the float model: one summary per output, and its accuracy with labels."""

    outputs: list[OutputComparison]
    correct: int = 0
    labelled: int = 0
    tolerances: dict[str, Tolerance] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def reason(self) -> str | None:
        failing = next((o for o in self.outputs if not o.passed), None)
        return None if failing is None else f"{failing.name}: {failing.reason}"

    def worst(self, attribute: str):
        values = [getattr(o, attribute) for o in self.outputs if getattr(o, attribute) is not None]
        if not values:
            return None
        return max(values) if attribute in ("max_abs", "max_rel") else min(values)


@dataclass
class Measured:
    artifacts: dict[str, Agreement]
    samples: int
    float_correct: int = 0
    labelled: int = 0

    @property
    def float_accuracy(self) -> float | None:
        return self.float_correct / self.labelled if self.labelled else None


def fixed_batch(runner) -> int | None:
    """The batch size an artifact's inputs fix, or None (dynamic)."""
    return next((int(s.shape[0]) for s in runner.input_specs() if s.shape and s.shape[0] is not None), None)


def measure(model, runners: dict, data, tolerances: dict[str, Tolerance], batch_size: int = 32) -> Measured:
    """Run ``model`` and every runner (``{label: Runner}``, loaded) on ``data``; compare and count."""
    specs = input_specs(model)
    references = output_specs(model)
    plans = {}
    for label, runner in runners.items():
        inputs = check_inputs(runner, specs)
        pairs = match_outputs(runner, references)
        accumulators = [Accumulator(p.reference.name, tolerances[p.reference.name]) for p in pairs]
        plans[label] = (runner, inputs, pairs, accumulators, Agreement([], tolerances=tolerances))
    first = references[0].name
    labels = data.label_batches(batch_size) if getattr(data, "labels", None) is not None else None
    # one class rule for the float model and every artifact, decided by the float model (never per batch)
    float_scorer = Scorer(ClassRule.of(model))
    scorers = {label: Scorer(float_scorer.rule, float_scorer) for label in plans}
    start = 0
    for feed in data.batches(batch_size):
        expected = run_reference(model, [feed])[0]
        truth = next(labels) if labels is not None else None
        if truth is not None:
            try:
                float_scorer.add(expected[first], truth)
            except InputError as exc:
                raise InputError(f"{getattr(data, 'source', 'data')}: {exc}") from exc
        count = len(next(iter(feed.values())))
        for label, (runner, inputs, pairs, accumulators, agreement) in plans.items():
            fixed = fixed_batch(runner)  # a file of fixed batch size gets the last, shorter batch filled up
            got = infer(runner, {inputs[name]: fill_batch(value, fixed) for name, value in feed.items()
                                 if name in inputs})
            if fixed is not None:
                got = {name: value[:count] for name, value in got.items()}
            for pair, accumulator in zip(pairs, accumulators):
                accumulator.add(expected[pair.reference.name], got[pair.candidate.name], start)
            if truth is not None:
                main = next(p.candidate.name for p in pairs if p.reference.name == first)
                scorers[label].add(got[main], truth)
        start += len(next(iter(feed.values())))
    for label, (runner, inputs, pairs, accumulators, agreement) in plans.items():
        agreement.outputs = [a.result() for a in accumulators]
        agreement.correct, agreement.labelled = scorers[label].counts()
    float_correct, labelled = float_scorer.counts()
    return Measured({label: plan[4] for label, plan in plans.items()}, start, float_correct, labelled)
