"""``bnfreeze.recalibrate``: replace BN population statistics with those of calibration data.

BN's moving averages are an exponential average taken while the weights were
still changing, and they describe the training domain. Recalibration gives
every BN the statistics of the data the model will really see: AdaBN (Li et
al., 2016) shows that target-domain statistics alone recover most of the
accuracy a domain shift costs; PreciseBN (Wu & Johnson, 2021) that exact
population statistics beat the moving averages even in-domain.

Only ``moving_mean`` and ``moving_variance`` change (and, with batch
renormalisation, ``moving_stddev``, ``renorm_mean`` and ``renorm_stddev``,
which Keras derives from them; otherwise the next training step would undo the
work). Every other weight is a bit-for-bit copy. The input model is not
modified; the result holds a new one.
"""

from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass, field

import numpy as np

from bnfreeze.errors import InputError, ParityError
from bnfreeze.recalibration.estimators import (
    EmaEstimator,
    ExactEstimator,
    NoProgress,
    PreciseEstimator,
    Progress,
    Statistics,
    no_values_message,
)
from bnfreeze.recalibration.execution import Executor
from bnfreeze.recalibration.program import Program, flatten, run_steps
from bnfreeze.recalibration.report import BnChange, accuracy, warnings_for

MODES = ("exact", "precise", "ema", "fixed-batch")
DEFAULT_BATCH_SIZE = 32


def default_memory_budget() -> int:
    """A quarter of the machine's physical memory, at most 8 GiB."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 8 << 30
    return int(min(physical // 4, 8 << 30))


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}


def parse_bytes(text: str | int) -> int:
    """``"2GiB"``, ``"512MB"``, ``"0"`` or a number of bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise InputError(f"memory budget {text!r}: give a size like 2GiB, 512MB or 0")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class RecalibrationResult:
    model: object
    mode: str
    statistics: dict[str, Statistics]
    changes: list[BnChange]
    passes: int
    samples: int
    skipped: list[str] = field(default_factory=list)
    kept: list[dict] = field(default_factory=list)  # BNs not recalibrated: {"name", "reason"}
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_data: str | None = None
    warnings: list[dict] = field(default_factory=list)
    is_chief: bool = True
    details: dict = field(default_factory=dict)

    @property
    def report(self) -> dict:
        return {
            "mode": self.mode,
            "samples": self.samples,
            "passes": self.passes,
            "batch_norms": [c.as_dict() for c in self.changes],
            "skipped": self.skipped,
            "kept": self.kept,
            "warnings": self.warnings,
            "accuracy": None if self.accuracy_before is None else {
                "data": self.accuracy_data, "before": self.accuracy_before, "after": self.accuracy_after},
            **self.details,
        }


def recalibrate(
    model,
    data,
    *,
    mode: str = "exact",
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_samples: int | None = None,
    seed: int = 0,
    memory_budget: int | str | None = None,
    strategy=None,
    eval_data=None,
    strict: bool = False,
    progress: Progress | None = None,
) -> RecalibrationResult:
    """Recalibrate every BatchNormalization layer of ``model`` on ``data``.

    ``data`` comes from :func:`bnfreeze.open_data` (arrays, image folders,
    TFRecords), is a ``tf.data.Dataset`` of samples or of batches (a tensor,
    a tuple whose first item is the input(s), or a dict by input name), or
    arrays in memory: one NumPy array for a one-input model, a list of
    arrays in the order of the inputs, or a dict of arrays by input name.
    ``mode``: ``exact`` (default; the mean and biased variance of each BN's
    inference-time input, in dependency order; idempotent and independent of
    ``batch_size``), ``precise`` (PreciseBN), ``ema`` (Keras's momentum
    update) or ``fixed-batch`` (one seeded batch of ``batch_size`` samples).
    ``strategy``: a ``tf.distribute`` strategy to run on; the statistics equal
    a single device's. Under a ``MultiWorkerMirroredStrategy`` with a cluster
    every worker calls this with the same arguments, reads its own shard of
    ``data`` and gets the same result (``exact`` and ``precise`` only).
    Accuracy before and after is measured on ``eval_data``, or on ``data``
    when it has labels. Doubtful statistics (too few samples, extreme
    changes) are listed in ``result.warnings``; with ``strict`` they raise
    :class:`~bnfreeze.errors.ParityError` instead.
    """
    from bnfreeze.fold.rewrite import copy_model
    from bnfreeze.io.models import model_label
    from bnfreeze.io.sources import as_data

    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if max_samples is not None and max_samples < 1:
        raise InputError(f"--max-samples must be >= 1, got {max_samples}")
    budget = default_memory_budget() if memory_budget is None else parse_bytes(memory_budget)
    progress = progress or NoProgress()
    executor = Executor(strategy)
    cluster = executor.cluster
    if cluster.workers > 1 and mode not in ("exact", "precise"):
        raise InputError(f"--mode {mode} runs in one process; on several workers use exact or precise")
    source = as_data(data, _specs(model))
    data = _worker_share(source, max_samples, batch_size, cluster)
    if cluster.workers == 1 and data.size == 0:
        raise InputError(f"{data.source}: holds no samples")

    result_model = copy_model(model)
    reading = _plain_reading(result_model, model_label(model))
    program = flatten(reading.model, ordered=mode == "exact", label=model_label(model))
    _explain_opaque(program, reading)
    if not program.bn_layers:
        why = "".join(f"; {reason}" for _, reason in list(program.kept.values())[:3])
        raise InputError(f"{program.label}: has no BatchNormalization layer bnfreeze can reach{why}; "
                         "nothing to recalibrate")
    old = {i: (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
           for i, layer in program.bn_layers.items()}
    names = [s.name for s in data.specs]

    def batches():
        for feed in data.batches(batch_size):
            yield [feed[n] for n in names]

    def assign(layer_id: int, stats: Statistics) -> None:
        where = f"{data.source}: {program.bn_names[layer_id]}"
        layer = program.bn_layers[layer_id]
        _assign(layer, stats, where)
        if reading.changed:  # the statistics go into the model of the user's own classes
            _assign(reading.source_of(layer), stats, where)

    details: dict = {"batch_size": batch_size, "replicas": executor.replicas}
    if reading.notes:
        details["structure"] = _structure_notes(reading)
    if cluster.workers > 1:
        details["workers"] = cluster.workers
    if mode == "exact":
        estimator = ExactEstimator(program, executor, assign, budget, progress)
        statistics = estimator.run(batches, data.size, _sample_bytes(program, data, names))
        details.update(memory_budget=budget, cached_passes=estimator.cached_passes,
                       peak_cache_bytes=estimator.peak_cache_bytes, levels=program.max_level + 1)
    elif mode == "ema":
        estimator = EmaEstimator(program, executor, progress)
        statistics = estimator.run(batches, data.size)
    else:
        estimator = PreciseEstimator(program, executor, progress)
        if mode == "fixed-batch":
            total = data.size if data.size is not None else data.count()
            if total == 0:
                raise InputError(f"{data.source}: holds no samples")
            indices = np.sort(np.random.default_rng(seed).choice(total, size=min(batch_size, total), replace=False))
            feed = data.take(indices)
            details.update(seed=seed, fixed_batch=len(indices))
            statistics = estimator.run(lambda: iter([[feed[n] for n in names]]), len(indices), "fixed-batch")
        else:
            statistics = estimator.run(batches, data.size)
    samples = estimator.samples
    if samples == 0:
        raise InputError(f"{data.source}: holds no samples")
    for layer_id in program.bn_layers:
        if layer_id not in statistics:
            raise InputError(f"{data.source}: {no_values_message(program, layer_id)}")
    if mode != "exact":
        for layer_id, stats in statistics.items():
            assign(layer_id, stats)

    changes = []
    for layer_id, stats in statistics.items():
        layer = program.bn_layers[layer_id]
        changes.append(BnChange.of(
            program.bn_names[layer_id], program.levels.get(layer_id), len(program.bn_steps(layer_id)),
            stats.samples, stats.count, *old[layer_id], stats.mean, stats.variance, layer.epsilon))
    result = RecalibrationResult(
        result_model, mode, {program.bn_names[i]: s for i, s in statistics.items()}, changes,
        estimator.passes, samples, skipped=list(program.opaque),
        kept=[{"name": name, "reason": reason} for name, reason in program.kept.values()],
        warnings=warnings_for(changes, samples, mode, batch_size), is_chief=cluster.is_chief, details=details)
    if strict and result.warnings:
        first = result.warnings[0]["message"]
        more = len(result.warnings) - 1
        raise ParityError(f"recalibration is doubtful (--strict): {first}" + (f" (and {more} more)" if more else ""))
    if cluster.is_chief:
        # the chief reports; it measures on the whole calibration set (or eval_data), not on its shard
        _measure_accuracy(result, model, source if eval_data is None else as_data(eval_data, _specs(model)), batch_size)
    return result


def _plain_reading(model, label: str):
    """``model`` read the way fold reads it (:func:`bnfreeze.fold.plain.plain_model`): a KerasHub backbone's
    Functional graph, layers with their own ``call`` traced, so recalibration reaches the BNs inside them.

    The statistics are measured on the plain model at inference (``training=False``, what deployment and
    every export run) and written into ``model`` itself, whose classes stay the user's. A model whose plain
    reading cannot be built is measured as it is (its own-call layers keep their BNs, with the reason).
    """
    from bnfreeze.fold.plain import PlainModel, plain_model

    from bnfreeze.fold.classes import batch_norms_inside
    from bnfreeze.fold.graph import model_kind

    try:
        reading = plain_model(model)
    except InputError:
        if model_kind(model) == "subclassed":
            raise  # why bnfreeze cannot read it: the trace's reason, not "a subclassed model"
        return PlainModel(model=model, original=model)
    if reading.changed and any(reading.source_of(bn) is None for bn in batch_norms_inside(reading.model)):
        return PlainModel(model=model, original=model, notes=reading.notes)  # a BN it cannot trace back
    return reading


#: what each reading of a layer means for recalibrate, whose output keeps the model's own classes and layers
_MEANING = {
    "read as Functional": "its call is Keras's own: measured as the graph it holds; the output keeps the class "
                          "and all it carries",
    "traced": "{detail}; its BNs measured through the traced call, the output keeps the layer as it is",
    "opaque": "{detail}; its BNs keep their statistics",
    "dropped": "the identity at inference, so not run while measuring; the output keeps it",
    "pinned": "run at training=False while measuring, as at inference; the output keeps it as it is",
}


def _structure_notes(reading) -> list[dict]:
    """The plain reading's notes, said for recalibrate (fold's notes speak of the plain model it writes)."""
    notes = []
    for note in reading.notes_dicts():
        meaning = _MEANING.get(note["action"])
        if meaning is not None:
            note = {**note, "detail": meaning.format(detail=note["detail"])}
        notes.append(note)
    return notes


def _explain_opaque(program: Program, reading) -> None:
    """A BN kept because it sits inside a layer bnfreeze could not trace says what stopped the trace."""
    for layer_id, (name, reason) in list(program.kept.items()):
        for qualified, opaque in reading.opaque.items():
            if name.startswith(qualified + "/"):
                program.kept[layer_id] = (name, f"{name}: it is inside {qualified} ({type(opaque.layer).__name__}), "
                                                f"which bnfreeze keeps as it is: {opaque.reason}")
                break


def _specs(model):
    from bnfreeze.fold.plain import input_specs_of

    return input_specs_of(model)


def _worker_share(data, max_samples: int | None, batch_size: int, cluster):
    """The first ``max_samples`` samples, and of those this worker's shard.

    Data of known size is cut to ``max_samples`` and then split into
    contiguous ranges of whole batches (so every worker's batches are
    batches of the one-process run). TFRecords are split by file; there
    ``max_samples`` caps each worker's share at its part of the total.
    """
    if data.size is not None:
        if max_samples is not None:
            data = data.head(min(data.size, max_samples))
        return data.shard(cluster.index, cluster.workers, batch_size) if cluster.workers > 1 else data
    if cluster.workers > 1:
        data = data.shard(cluster.index, cluster.workers, batch_size)
        if max_samples is not None:
            data = data.head(-(-max_samples // cluster.workers))
        return data
    return data.head(max_samples) if max_samples is not None else data


def _assign(layer, stats: Statistics, label: str) -> None:
    """Write new moving statistics into ``layer`` (cast to each variable's dtype).

    ``label`` begins a refusal's message: the calibration data and the BN's name.
    """
    values = {"moving_mean": stats.mean, "moving_variance": stats.variance}
    if getattr(layer, "renorm", False):
        stddev = np.sqrt(np.asarray(stats.variance, np.float64) + layer.epsilon)
        values.update(moving_stddev=stddev, renorm_mean=stats.mean, renorm_stddev=stddev)
        values.update(stats.extra or {})
    for name, value in values.items():
        variable = getattr(layer, name)
        exact = np.asarray(value, np.float64)
        cast = exact.astype(variable.dtype)
        overflow = np.flatnonzero(~np.isfinite(cast.astype(np.float64)))
        if overflow.size:  # inf would zero the channel's output, NaN poison it
            channel = int(overflow[0])
            what = f"the {name.replace('_', ' ')} of channel {channel} on the calibration data"
            if np.isfinite(exact[channel]):  # a float16 BN whose input varies more than float16 holds
                raise InputError(f"{label}: {what} ({exact[channel]:.4g}) does not fit its {variable.dtype} "
                                 "variable")
            # EMA's float32 update overflowed (Keras's own arithmetic, as training would do it)
            raise InputError(f"{label}: {what} is {exact[channel]} in float32 arithmetic (the values reaching "
                             "this BN are too large for float32)")
        variable.assign(cast)


def _sample_bytes(program: Program, data, names: list[str]) -> dict:
    """Bytes per sample of every tensor of the flattened graph.

    From the graph's static shapes where they are known; otherwise one sample
    is run through the graph.
    """
    sizes = {}
    for key, tensor in _static_tensors(program).items():
        shape = tuple(tensor.shape)[1:]
        if any(d is None for d in shape):
            break
        sizes[key] = int(np.prod(shape, dtype=np.int64)) * _itemsize(tensor.dtype)
    else:
        return sizes
    feed = next(iter(data.batches(1)), None)
    if feed is None:  # an empty shard of a multi-worker run: nothing to keep
        return collections.defaultdict(int)
    values = dict(zip(program.input_keys, [feed[n] for n in names]))
    run_steps(program.steps, values)
    return {key: int(np.prod(v.shape[1:], dtype=np.int64)) * _itemsize(v.dtype) for key, v in values.items()}


def _static_tensors(program: Program) -> dict:
    """The symbolic (Keras) tensor behind every key of the program."""
    from keras import tree

    tensors = {}
    for step in program.steps:
        for tensor_id, key in step.inputs.items():
            if key in program.input_keys and key not in tensors:
                tensors[key] = next(t for t in step.node.input_tensors if id(t) == tensor_id)
        for key, tensor in zip(step.outputs, tree.flatten(step.node.outputs)):
            tensors[key] = tensor
    return tensors


def _itemsize(dtype) -> int:
    import keras

    name = keras.backend.standardize_dtype(dtype)
    return 2 if name == "bfloat16" else np.dtype(name).itemsize


def _measure_accuracy(result: RecalibrationResult, model, data, batch_size: int) -> None:
    if getattr(data, "labels", None) is None:
        return
    result.accuracy_data = str(data.source)
    before: list = []
    result.accuracy_before = accuracy(model, data, batch_size, scorer=before)
    # judged alike: where the output's activation does not give the one-unit threshold, the original's decides
    result.accuracy_after = accuracy(result.model, data, batch_size, reference=before[0])
