"""Running an artifact beside a reference and comparing the outputs.

Shared by ``export`` (each artifact is checked against the Keras model before
it is written) and ``verify`` (any artifact against any other). Inputs and
outputs are paired by :mod:`bnfreeze.verify.matching`; every paired output is
compared over all feeds by one :class:`~bnfreeze.compare.Accumulator`, so the
result is one summary per output, not one per batch.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.compare import Accumulator, OutputComparison, Tolerance
from bnfreeze.errors import BnfreezeError, InputError, cannot_run
from bnfreeze.io.models import model_label
from bnfreeze.io.signature import TensorSpec, input_specs, output_names, pack_inputs
from bnfreeze.parity import random_inputs
from bnfreeze.verify.matching import Pair, match, shape_text
from bnfreeze.verify.runners.base import Runner, first_line


def random_feeds(specs: list[TensorSpec], batch_sizes, seed: int, int_high=None) -> list[dict[str, np.ndarray]]:
    feeds = []
    for offset, batch in enumerate(batch_sizes):
        arrays = random_inputs(specs, batch, seed + offset, int_high=int_high)
        feeds.append({spec.name: array for spec, array in zip(specs, arrays)})
    return feeds


def run_reference(model, feeds) -> list[dict[str, np.ndarray]]:
    """Keras outputs on the CPU for each feed, by output name."""
    import keras
    import tensorflow as tf

    specs = input_specs(model)
    names = output_names(model)
    results = []
    for feed in feeds:
        arrays = [feed[s.name] for s in specs]
        with tf.device("/CPU:0"):
            try:
                outputs = model(pack_inputs(model, arrays), training=False)
            except Exception as exc:  # the model's own fault: it cannot run on inputs of its declared shape
                refusal = cannot_run(model_label(model), exc)
                if refusal is not None:
                    raise refusal from exc
                shapes = ", ".join(str(tuple(np.shape(a))) for a in arrays)
                raise InputError(f"{model_label(model)} does not run on inputs of its declared shape ({shapes}): "
                                 f"{first_line(exc)}") from exc
        flat = [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]
        results.append(dict(zip(names, flat)))
    return results


def pair_inputs(runner: Runner, reference: list[TensorSpec], input_map: dict[str, str] | None = None,
                reference_label: str = "the reference") -> list[Pair]:
    """Pair the reference's inputs with the candidate's; raise InputError on a shape mismatch or an ambiguity."""
    pairs = match("input", reference, runner.input_specs(), input_map, reference_label=reference_label,
                  candidate_label=str(runner.path))
    for pair in pairs:
        ref, cand = pair.reference, pair.candidate
        if len(ref.shape) != len(cand.shape) or not ref.matches_shape(cand.shape):
            raise InputError(
                f"{runner.path}: input {cand.name} has shape {shape_text(cand.shape)}, "
                f"the reference's {ref.name} has {shape_text(ref.shape)}"
            )
    return pairs


def check_inputs(runner: Runner, reference: list[TensorSpec], input_map: dict[str, str] | None = None,
                 reference_label: str = "the reference") -> dict[str, str]:
    """Reference input name -> the candidate's (see :func:`pair_inputs`)."""
    return {p.reference.name: p.candidate.name for p in pair_inputs(runner, reference, input_map, reference_label)}


def match_outputs(runner: Runner, reference: list[TensorSpec], output_map: dict[str, str] | None = None,
                  reference_label: str = "the reference", reference_ordered: bool = True) -> list[Pair]:
    """Pair every reference output with one of the candidate's; raise InputError where that is ambiguous."""
    return match("output", reference, runner.output_specs(), output_map, reference_label=reference_label,
                 candidate_label=str(runner.path), reference_ordered=reference_ordered,
                 candidate_ordered=runner.outputs_in_model_order)


def infer(runner: Runner, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the artifact on real values; a runtime's failure on it (a damaged graph) is the artifact's fault."""
    try:
        return runner.run(feed)
    except BnfreezeError:
        raise
    except Exception as exc:  # onnxruntime, TFLite and TF raise many types
        refusal = cannot_run(runner.path, exc)
        if refusal is not None:
            raise refusal from exc
        hint = _fixed_batch(runner, feed)
        raise InputError(f"{runner.path}: {runner.backend} failed to run it ({first_line(exc)}){hint}") from exc


def _fixed_batch(runner: Runner, feed: dict[str, np.ndarray]) -> str:
    """Where an input of the artifact fixes another batch size than the one fed: what to pass instead."""
    for spec in runner.input_specs():
        value = feed.get(spec.name)
        if value is not None and spec.shape and spec.shape[0] is not None and value.ndim and \
                value.shape[0] != spec.shape[0]:
            return (f"; its input {spec.name} fixes the batch size at {spec.shape[0]}, it was given {value.shape[0]}: "
                    f"pass --batch-size {spec.shape[0]}")
    return ""


class Comparison:
    """One candidate beside the reference: its input names, its output pairs and an accumulator per output."""

    def __init__(self, runner: Runner, inputs: dict[str, str], outputs: list[Pair], tolerance: Tolerance):
        self.runner = runner
        self.inputs = inputs
        self.outputs = outputs
        self.accumulators = [Accumulator(pair.reference.name, tolerance.for_output(pair.reference.name))
                             for pair in outputs]

    def add(self, feed: dict[str, np.ndarray], expected: dict[str, np.ndarray], start: int) -> None:
        """Run on ``feed`` (reference input names) and compare with ``expected`` (reference output names)."""
        got = infer(self.runner, {self.inputs[name]: value for name, value in feed.items() if name in self.inputs})
        for pair, accumulator in zip(self.outputs, self.accumulators):
            accumulator.add(expected[pair.reference.name], got[pair.candidate.name], start)

    def results(self) -> list[OutputComparison]:
        return [a.result() for a in self.accumulators]


def compare_runner(
    runner: Runner,
    feeds: list[dict[str, np.ndarray]],
    expected: list[dict[str, np.ndarray]],
    input_map: dict[str, str],
    tolerance: Tolerance,
) -> list[OutputComparison]:
    """Run ``runner`` on every feed and compare each output with the reference: one summary per output."""
    reference = [TensorSpec(name, (None, *np.shape(value)[1:]), str(np.asarray(value).dtype))
                 for name, value in expected[0].items()]
    comparison = Comparison(runner, input_map, match_outputs(runner, reference), tolerance)
    start = 0
    for feed, outputs in zip(feeds, expected):
        comparison.add(feed, outputs, start)
        start += next(iter(feed.values())).shape[0]
    return comparison.results()
