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
from typing import Callable, Iterator, Protocol

import numpy as np

from bnfreeze.recalibration.execution import Executor
from bnfreeze.recalibration.moments import Moments, batch_moments, reduction_axes
from bnfreeze.recalibration.program import Key, Program, Step, run_steps

Batches = Callable[[], Iterator[list[np.ndarray]]]


class Progress(Protocol):
    def start(self, description: str, total: int) -> None: ...

    def advance(self, samples: int) -> None: ...


class NoProgress:
    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, samples: int) -> None:
        pass


def bn_input_key(step: Step) -> Key:
    return step.inputs[id(step.node.arguments.args[0])]


@dataclass
class Statistics:
    """What an estimator found for one BN layer.

    ``extra`` holds values for other moving variables (batch renormalisation's)
    when the estimator tracked them itself; otherwise they are derived from
    ``mean`` and ``variance`` when assigned.
    """

    mean: np.ndarray
    variance: np.ndarray
    count: float
    batches: int
    extra: dict | None = None


class ExactEstimator:
    """Exact population statistics in dependency order, one pass per BN level.

    BNs of the same level (the number of BNs on the longest path above them)
    are measured in one pass over the data, with every BN above them already
    recalibrated. Between passes the activations at the frontier — the tensors
    later passes still need — are kept for the whole calibration set when they
    fit in ``memory_budget`` bytes, so each layer runs once per sample in all;
    when they do not fit, a pass recomputes from the last frontier it could
    keep (in the worst case from the data).
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

    def run(self, batches: Batches, samples: int, sample_bytes: dict[Key, int]) -> dict[int, Statistics]:
        program = self.program
        stage_of = program.key_stage()
        consumers: dict[Key, list[Step]] = {}
        for step in program.steps:
            for key in step.keys_in():
                consumers.setdefault(key, []).append(step)
        results: dict[int, Statistics] = {}
        cache: _Cache | None = None
        for level in range(program.max_level + 1):
            layer_ids = [i for i, lv in program.levels.items() if lv == level]
            stat_steps = [s for i in layer_ids for s in program.bn_steps(i)]
            frontier = [k for k, st in stage_of.items()
                        if st <= level and any(c.stage > level for c in consumers.get(k, []))]
            frontier_bytes = sum(sample_bytes[k] for k in frontier) * samples
            held = cache.bytes if cache is not None else 0
            cache_keys = cache.keys if cache is not None else list(program.input_keys)
            store = level < program.max_level and held + frontier_bytes <= self.memory_budget
            keep = frontier if store else []
            targets = {bn_input_key(s) for s in stat_steps} | set(keep)
            steps = program.needed_steps(targets, set(cache_keys))
            fn = self.executor.compile(_measuring_function(steps, cache_keys, stat_steps, keep))
            moments = {i: Moments() for i in layer_ids}
            new_cache = _Cache(keep, frontier_bytes)
            self.progress.start(f"exact: BN level {level + 1}/{program.max_level + 1}", samples)
            for count, args in self._inputs(batches, cache):
                reduced, kept = self.executor.run(fn, args)
                for step, (n, mean, m2) in zip(stat_steps, reduced):
                    moments[id(step.op)].update(n, mean, m2)
                if store:
                    new_cache.append(count, kept)
                self.progress.advance(count)
            self.passes += 1
            for layer_id in layer_ids:
                results[layer_id] = _statistics(moments[layer_id])
                self.assign(layer_id, results[layer_id])
            if store:
                self.cached_passes += 1
                cache = new_cache
                self.peak_cache_bytes = max(self.peak_cache_bytes, held + frontier_bytes)
        return results

    def _inputs(self, batches: Batches, cache: "_Cache | None") -> Iterator[tuple[int, tuple]]:
        if cache is None:
            for arrays in batches():
                yield len(arrays[0]), self.executor.feed(arrays)
        else:
            yield from zip(cache.sizes, cache.values)


class _Cache:
    """Frontier activations of every batch, in batch order."""

    def __init__(self, keys: list[Key], size_bytes: int):
        self.keys = keys
        self.bytes = size_bytes
        self.sizes: list[int] = []
        self.values: list[tuple] = []

    def append(self, count: int, values: tuple) -> None:
        self.sizes.append(count)
        self.values.append(tuple(values))


def _statistics(m: Moments) -> Statistics:
    return Statistics(m.mean, m.variance, m.count, m.batches)


def _measuring_function(steps: list[Step], input_keys: list[Key], stat_steps: list[Step], keep: list[Key]):
    """A step function: run ``steps``, return the moments of each BN input and the ``keep`` tensors."""

    def fn(*tensors):
        values = dict(zip(input_keys, tensors))
        run_steps(steps, values)
        reduced = []
        for step in stat_steps:
            x = values[bn_input_key(step)]
            reduced.append(batch_moments(x, reduction_axes(step.op, x.shape.rank)))
        return reduced, tuple(values[k] for k in keep)

    return fn


class BatchStatisticsPass:
    """One pass with every BN normalising by its batch statistics; yields them per batch.

    The statistics are those of the global batch (all-reduced across replicas,
    as a synchronized BN would), so the result does not depend on how many
    devices run it. Batch renormalisation's r/d corrections are not applied:
    they pull towards the old moving statistics that are being replaced.
    """

    def __init__(self, program: Program, executor: Executor):
        self.program = program
        self.executor = executor
        bn_steps = [s for s in program.steps if s.is_bn]
        targets = {key for s in bn_steps for key in s.outputs}  # every BN runs, so every BN is measured
        steps = program.needed_steps(targets, set(program.input_keys))
        self.order = [s for s in steps if s.is_bn]  # the order run_steps calls them in
        self.fn = executor.compile(self._function(steps))

    def _function(self, steps: list[Step]):
        import keras

        def fn(*tensors):
            values = dict(zip(self.program.input_keys, tensors))
            reduced = []

            def normalise(step: Step, x):
                layer = step.op
                n, mean, m2 = batch_moments(x, reduction_axes(layer, x.shape.rank))
                reduced.append((n, mean, m2))
                compute = keras.backend.result_type(x.dtype, "float32")
                variance = m2 / n
                y = keras.ops.batch_normalization(
                    keras.ops.cast(x, compute), keras.ops.cast(mean, compute), keras.ops.cast(variance, compute),
                    axis=layer.axis, offset=keras.ops.cast(layer.beta, compute) if layer.center else None,
                    scale=keras.ops.cast(layer.gamma, compute) if layer.scale else None, epsilon=layer.epsilon,
                )
                return keras.ops.cast(y, layer.compute_dtype)

            run_steps(steps, values, bn_call=normalise)
            return reduced, ()

        return fn

    def feed_all(self, batches: Batches, samples: int, description: str, progress: Progress, update) -> None:
        """Run every batch; hand each batch's ``[(BN step, (n, mean, M2)), ...]`` to ``update``."""
        progress.start(description, samples)
        for arrays in batches():
            reduced, _ = self.executor.run(self.fn, self.executor.feed(arrays))
            progress.advance(len(arrays[0]))
            update(list(zip(self.order, reduced)))


class PreciseEstimator:
    """PreciseBN: count-weighted mean and E[x^2] of each BN's input over all batches."""

    def __init__(self, program: Program, executor: Executor, progress: Progress):
        self.program = program
        self.pass_ = BatchStatisticsPass(program, executor)
        self.progress = progress
        self.moments = {i: Moments() for i in program.bn_layers}
        self.passes = 0

    def update(self, per_batch: list[tuple[Step, tuple]]) -> None:
        for step, (n, mean, m2) in per_batch:
            self.moments[id(step.op)].update(n, mean, m2)

    def run(self, batches: Batches, samples: int, description: str = "precise") -> dict[int, Statistics]:
        self.pass_.feed_all(batches, samples, description, self.progress, self.update)
        self.passes = 1
        return {i: _statistics(m) for i, m in self.moments.items() if m.mean is not None}


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
            layer, state = step.op, self.state[id(step.op)]
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

    def run(self, batches: Batches, samples: int) -> dict[int, Statistics]:
        self.pass_.feed_all(batches, samples, "ema", self.progress, self.update)
        self.passes = 1
        return {i: Statistics(s["mean"].astype(np.float64), s["variance"].astype(np.float64), self.counts[i],
                              self.batches[i], _renorm_extra(s)) for i, s in self.state.items() if self.batches[i]}


def _renorm_extra(state: dict) -> dict | None:
    if "stddev" not in state:
        return None
    return {"moving_stddev": state["stddev"], "renorm_mean": state["renorm_mean"],
            "renorm_stddev": state["renorm_stddev"]}
