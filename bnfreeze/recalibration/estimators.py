"""The four ways to estimate BN population statistics from calibration data.

* :class:`ExactEstimator` — the mean and biased variance of every BN's
  *inference-time* input over the whole calibration set, BN level by BN level
  (Li et al., "Revisiting Batch Normalization for Practical Domain
  Adaptation" (AdaBN), 2016, computed exactly rather than per batch).
* :class:`PreciseEstimator` — PreciseBN (Wu & Johnson, "Rethinking 'Batch' in
  BatchNorm", 2021; fvcore's ``update_bn_stats``): one pass with every BN
  normalising by its batch statistics, pooling the batches' means and E[x^2]
  weighted by their counts.
* :class:`EmaEstimator` — Keras's own momentum update, batch after batch, as
  training would do it.
* fixed-batch — :class:`PreciseEstimator` on one seeded batch (the seed
  article's "use a fixed batch"); with one batch the three notions agree.

Each estimator reads the model (never writes it) except through
``assign(layer_id, mean, variance)``, which the caller points at the copy that
will be saved. Layers that take ``training`` always get ``training=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from bnfreeze.io.progress import NoProgress, Progress  # noqa: F401 (NoProgress: re-exported)
from bnfreeze.recalibration.kernels import inference as bn_inference, normalise as bn_normalise
from bnfreeze.recalibration.execution import Executor
from bnfreeze.recalibration.moments import Moments, batch_moments, reduction_axes
from bnfreeze.recalibration.program import Key, Program, Step, run_steps

Batches = Callable[[], Iterator[list[np.ndarray]]]


def bn_input_key(step: Step) -> Key:
    return step.inputs[id(step.node.arguments.args[0])]


def bn_mask_key(step: Step) -> Key | None:
    """The key of the Keras mask the BN's call receives (``Masking``, ``Embedding(mask_zero=True)``), or None."""
    mask = step.node.arguments.kwargs.get("mask")
    return step.inputs.get(id(mask)) if mask is not None else None


def bn_keys(step: Step) -> set[Key]:
    """The tensors a BN's moments are taken from: its input and, where it has one, its mask."""
    mask = bn_mask_key(step)
    return {bn_input_key(step)} | ({mask} if mask is not None else set())


@dataclass
class Statistics:
    """What an estimator found for one BN layer.

    ``count`` is the number of values per channel (samples x positions x
    calls), ``samples`` the number of samples. ``extra`` holds values for
    other moving variables (batch renormalisation's) when the estimator
    tracked them itself; otherwise they are derived from ``mean`` and
    ``variance`` when assigned.
    """

    mean: np.ndarray
    variance: np.ndarray
    count: float
    batches: int
    samples: int = 0
    extra: dict | None = None


def _fused_inference(step: Step, x, mask=None):
    return bn_inference(step.bn, x, step.bn_axis(x.shape.rank))


def _bn_moments(step: Step, x, mask):
    """The moments of one BN call's input, masked positions left out (as Keras's training does).

    A mask meets only BNs of the last axis (:func:`~bnfreeze.recalibration.program.flatten` refuses the others).
    """
    rank = x.shape.rank
    return batch_moments(x, reduction_axes(step.bn_axis(rank), rank), mask=mask)


class ExactEstimator:
    """Exact population statistics in dependency order, one pass per BN level.

    BNs of the same level (the number of BNs on the longest path above them)
    are measured in one pass over the data, with every BN above them already
    recalibrated. Between passes the activations at the frontier — the tensors
    later passes still need — are kept for the whole calibration set when they
    fit in ``memory_budget`` bytes, so each layer runs once per sample in all;
    when they do not fit (known in advance when the number of samples is, and
    noticed during the pass when it is not), a pass recomputes from the last
    frontier it could keep (in the worst case from the data).
    """

    def __init__(self, program: Program, executor: Executor, assign, memory_budget: int, progress: Progress):
        self.program = program
        self.executor = executor
        self.assign = assign
        self.memory_budget = memory_budget
        self.progress = progress
        self.passes = 0
        self.cached_passes = 0
        self.peak_cache_bytes = 0
        self.samples = 0

    def run(self, batches: Batches, samples: int | None, sample_bytes: dict[Key, int]) -> dict[int, Statistics]:
        program = self.program
        stage_of = program.key_stage()
        consumers: dict[Key, list[Step]] = {}
        for step in program.steps:
            for key in step.keys_in():
                consumers.setdefault(key, []).append(step)
        results: dict[int, Statistics] = {}
        cache: _Cache | None = None
        levels = program.max_level + 1
        for level in range(levels):
            layer_ids = [i for i, lv in program.levels.items() if lv == level]
            stat_steps = [s for i in layer_ids for s in program.bn_steps(i)]
            frontier = [k for k, st in stage_of.items()
                        if st <= level and any(c.stage > level for c in consumers.get(k, []))]
            per_sample = sum(sample_bytes[k] for k in frontier)
            held = cache.bytes if cache is not None else 0
            cache_keys = cache.keys if cache is not None else list(program.input_keys)
            room = self.memory_budget - held
            store = level < program.max_level and per_sample * (samples if samples is not None else 1) <= room
            keep = frontier if store else []
            targets = {k for s in stat_steps for k in bn_keys(s)} | set(keep)
            steps = program.needed_steps(targets, set(cache_keys))
            fn = self.executor.compile(_measuring_function(steps, cache_keys, stat_steps, keep))
            moments = {i: Moments() for i in layer_ids}
            new_cache = _Cache(keep) if store else None
            seen = 0
            self.progress.start(f"exact: pass {level + 1}/{levels} (BN level {level})", samples)
            for count, args in self._inputs(batches, cache):
                reduced, kept = self.executor.run(fn, args)
                for step, (n, mean, m2) in zip(stat_steps, reduced):
                    moments[id(step.bn)].update(n, mean, m2)
                seen += count
                if new_cache is not None:
                    if per_sample * seen > room:  # more samples than expected: stop keeping this frontier
                        new_cache = None
                    else:
                        new_cache.append(count, kept)
                self.progress.advance(count)
            moments, total = self.executor.merge(moments, seen, self._channels(layer_ids), f"the end of pass {level + 1}")
            self.passes += 1
            self.samples = total if level == 0 else self.samples
            if total == 0:  # no data at all (found only now when its size was unknown): nothing to measure
                return results
            for layer_id in layer_ids:
                if moments[layer_id].mean is None:
                    continue  # its mask removed every position: recalibrate() refuses it, naming the data
                results[layer_id] = _statistics(moments[layer_id], total)
                self.assign(layer_id, results[layer_id])
            if new_cache is not None:
                new_cache.bytes = per_sample * seen
                self.cached_passes += 1
                cache = new_cache
                self.peak_cache_bytes = max(self.peak_cache_bytes, held + new_cache.bytes)
        return results

    def _channels(self, layer_ids) -> dict[int, int]:
        return {i: int(self.program.bn_layers[i].moving_mean.shape[0]) for i in layer_ids}

    def _inputs(self, batches: Batches, cache: "_Cache | None") -> Iterator[tuple[int, tuple]]:
        if cache is None:
            for arrays in batches():
                yield len(arrays[0]), self.executor.feed(arrays)
        else:
            yield from zip(cache.sizes, cache.values)


class _Cache:
    """Frontier activations of every batch, in batch order."""

    def __init__(self, keys: list[Key]):
        self.keys = keys
        self.bytes = 0
        self.sizes: list[int] = []
        self.values: list[tuple] = []

    def append(self, count: int, values: tuple) -> None:
        self.sizes.append(count)
        self.values.append(tuple(values))


def no_values_message(program: Program, layer_id: int) -> str:
    """Why a BN gets no statistics: its mask (Masking, Embedding(mask_zero=True)) removes every position."""
    return (f"{program.bn_names[layer_id]}: no value of the calibration data reaches it (its mask removes every "
            "position); nothing to measure it on")


def _statistics(m: Moments, samples: int) -> Statistics:
    return Statistics(m.mean, m.variance, m.count, m.batches, samples)


def _measuring_function(steps: list[Step], input_keys: list[Key], stat_steps: list[Step], keep: list[Key]):
    """A step function: run ``steps``, return the moments of each BN input and the ``keep`` tensors."""

    def fn(*tensors):
        values = dict(zip(input_keys, tensors))
        run_steps(steps, values, bn_call=_fused_inference)
        reduced = []
        for step in stat_steps:
            mask = bn_mask_key(step)
            reduced.append(_bn_moments(step, values[bn_input_key(step)], values[mask] if mask is not None else None))
        return reduced, tuple(values[k] for k in keep)

    return fn


class BatchStatisticsPass:
    """One pass with every BN normalising by its batch statistics; yields them per batch.

    The statistics are those of the global batch (all-reduced across local
    replicas, as a synchronized BN would), so the result does not depend on
    how many devices run it. Batch renormalisation's r/d corrections are not
    applied: they pull towards the old moving statistics that are being
    replaced.
    """

    def __init__(self, program: Program, executor: Executor):
        self.program = program
        self.executor = executor
        bn_steps = [s for s in program.steps if s.is_bn]
        targets = {key for s in bn_steps for key in s.outputs}  # every BN runs, so every BN is measured
        steps = program.needed_steps(targets, set(program.input_keys))
        self.order = [s for s in steps if s.is_bn]  # the order run_steps calls them in
        self.fn = executor.compile(self._function(steps))
        self.samples = 0

    def _function(self, steps: list[Step]):
        def fn(*tensors):
            values = dict(zip(self.program.input_keys, tensors))
            reduced = []

            def normalise(step: Step, x, mask=None):
                n, mean, m2 = _bn_moments(step, x, mask)
                reduced.append((n, mean, m2))
                return bn_normalise(step.bn, x, mean, m2 / n, step.bn_axis(x.shape.rank))

            run_steps(steps, values, bn_call=normalise)
            return reduced, ()

        return fn

    def feed_all(self, batches: Batches, samples: int | None, description: str, progress: Progress, update) -> None:
        """Run every batch; hand each batch's ``[(BN step, (n, mean, M2)), ...]`` to ``update``."""
        progress.start(description, samples)
        for arrays in batches():
            reduced, _ = self.executor.run(self.fn, self.executor.feed(arrays))
            self.samples += len(arrays[0])
            progress.advance(len(arrays[0]))
            update(list(zip(self.order, reduced)))


class PreciseEstimator:
    """PreciseBN: count-weighted mean and E[x^2] of each BN's input over all batches.

    On several workers each one pools its own batches and the pools are
    merged at the end (as fvcore's ``update_bn_stats`` does across GPUs).
    """

    def __init__(self, program: Program, executor: Executor, progress: Progress):
        self.program = program
        self.executor = executor
        self.pass_ = BatchStatisticsPass(program, executor)
        self.progress = progress
        self.moments = {i: Moments() for i in program.bn_layers}
        self.passes = 0
        self.samples = 0

    def update(self, per_batch: list[tuple[Step, tuple]]) -> None:
        for step, (n, mean, m2) in per_batch:
            self.moments[id(step.bn)].update(n, mean, m2)

    def run(self, batches: Batches, samples: int | None, description: str = "precise") -> dict[int, Statistics]:
        self.pass_.feed_all(batches, samples, description, self.progress, self.update)
        channels = {i: int(layer.moving_mean.shape[0]) for i, layer in self.program.bn_layers.items()}
        self.moments, self.samples = self.executor.merge(self.moments, self.pass_.samples, channels, "the end of the pass")
        self.passes = 1
        return {i: _statistics(m, self.samples) for i, m in self.moments.items() if m.mean is not None}


class EmaEstimator:
    """Keras's training-time update, ``moving = moving * momentum + batch * (1 - momentum)``.

    Starts from the model's current moving statistics and applies one update
    per batch and per call, in float32 like Keras. For batch renormalisation
    ``moving_stddev`` is averaged and ``moving_variance`` derived from it, as
    Keras does.
    """

    def __init__(self, program: Program, executor: Executor, progress: Progress):
        self.program = program
        self.pass_ = BatchStatisticsPass(program, executor)
        self.progress = progress
        self.state: dict[int, dict[str, np.ndarray]] = {}
        for layer_id, layer in program.bn_layers.items():
            state = {"mean": np.asarray(layer.moving_mean.numpy(), np.float32),
                     "variance": np.asarray(layer.moving_variance.numpy(), np.float32)}
            if getattr(layer, "renorm", False):
                state["stddev"] = np.asarray(layer.moving_stddev.numpy(), np.float32)
                state["renorm_mean"] = np.asarray(layer.renorm_mean.numpy(), np.float32)
                state["renorm_stddev"] = np.asarray(layer.renorm_stddev.numpy(), np.float32)
            self.state[layer_id] = state
        self.counts = {i: 0.0 for i in program.bn_layers}
        self.batches = {i: 0 for i in program.bn_layers}
        self.passes = 0

    def update(self, per_batch: list[tuple[Step, tuple]]) -> None:
        for step, (n, mean, m2) in per_batch:
            layer, state = step.bn, self.state[id(step.bn)]
            if n == 0:
                continue
            momentum = np.float32(layer.momentum)
            batch_mean = np.asarray(mean, np.float32)
            batch_var = np.asarray(m2 / n, np.float32)
            state["mean"] = state["mean"] * momentum + batch_mean * (np.float32(1) - momentum)
            if "stddev" in state:
                stddev = np.sqrt(batch_var + np.float32(layer.epsilon))
                renorm = np.float32(layer.renorm_momentum)
                state["renorm_mean"] = state["renorm_mean"] * renorm + batch_mean * (np.float32(1) - renorm)
                state["renorm_stddev"] = state["renorm_stddev"] * renorm + stddev * (np.float32(1) - renorm)
                state["stddev"] = state["stddev"] * momentum + stddev * (np.float32(1) - momentum)
                state["variance"] = np.maximum(state["stddev"] ** 2 - np.float32(layer.epsilon), 0).astype(np.float32)
            else:
                state["variance"] = state["variance"] * momentum + batch_var * (np.float32(1) - momentum)
            self.counts[id(layer)] += float(n)
            self.batches[id(layer)] += 1

    def run(self, batches: Batches, samples: int | None) -> dict[int, Statistics]:
        self.pass_.feed_all(batches, samples, "ema", self.progress, self.update)
        self.passes = 1
        self.samples = self.pass_.samples
        return {i: Statistics(s["mean"].astype(np.float64), s["variance"].astype(np.float64), self.counts[i],
                              self.batches[i], self.samples, _renorm_extra(s))
                for i, s in self.state.items() if self.batches[i]}


def _renorm_extra(state: dict) -> dict | None:
    if "stddev" not in state:
        return None
    return {"moving_stddev": state["stddev"], "renorm_mean": state["renorm_mean"],
            "renorm_stddev": state["renorm_stddev"]}
