"""Calibration samples for the converters: the data's samples one at a time, in order.

The TF Lite converter takes a *representative dataset* (a generator of
feeds) and onnxruntime a :class:`CalibrationDataReader`; both get the same
samples in the same order, one sample per feed, so that the two artifacts and
the peers in ``scripts/bench_int8.py`` are calibrated on exactly the same data.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from bnfreeze.errors import InputError


def samples(data, limit: int | None = None, batch: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """One-sample feeds ``{input name: (1, ...) array}`` from a data source, at most ``limit``; with ``batch``
    (a file whose batch dimension is fixed) feeds of exactly ``batch`` samples, the last one filled up with
    repeats of its own last sample (so every sample is seen, and no sample is made up)."""
    for feed in data.batches(batch or 1, limit):
        yield {name: np.ascontiguousarray(fill_batch(value, batch)) for name, value in feed.items()}


def fill_batch(value: np.ndarray, batch: int | None) -> np.ndarray:
    """``value`` (samples first) with its last sample repeated up to ``batch`` samples (None: as it is)."""
    if batch is None or len(value) >= batch:
        return value
    return np.concatenate([value, np.repeat(value[-1:], batch - len(value), axis=0)])


def sample_count(data, limit: int | None = None) -> int:
    size = data.size if data.size is not None else data.count()  # TFRecords: counted by reading them
    count = size if limit is None else min(size, limit)
    if count == 0:
        raise InputError(f"{data.source}: holds no samples to calibrate on")
    return count


def pairing(data, names: list[str], what: str) -> dict[str, str]:
    """``{converter input name: data input name}``, by name (the converters name their inputs after the
    Keras inputs, at most decorated with ``:0``), never by position."""
    from bnfreeze.verify.matching import canonical

    specs = [s.name for s in data.specs]
    by_name = {canonical(n): n for n in specs}
    chosen = {}
    for name in names:
        spec = name if name in specs else by_name.get(canonical(name))
        if spec is None:
            raise InputError(f"{data.source}: {what} has an input {name} that the data has no array for "
                             f"(it has {', '.join(specs)})")
        chosen[name] = spec
    return chosen


def representative_dataset(data, names: list[str], limit: int | None = None, batch: int | None = None):
    """A TF Lite ``representative_dataset``: feeds keyed by the signature's input names."""
    pairs = pairing(data, names, "the TF Lite signature")

    def generate():
        for feed in samples(data, limit, batch):
            yield {name: feed[spec] for name, spec in pairs.items()}

    return generate


def onnx_reader(data, names: list[str], limit: int | None = None, batch: int | None = None):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``data`` for graph inputs ``names``."""
    from bnfreeze.io.interrupts import import_native

    quantization = import_native("onnxruntime.quantization")
    pairs = pairing(data, names, "the ONNX graph")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self._feeds = samples(data, limit, batch)

        def get_next(self):
            feed = next(self._feeds, None)
            if feed is None:
                return None
            return {name: feed[spec] for name, spec in pairs.items()}

        def rewind(self):
            self._feeds = samples(data, limit, batch)

    return Reader()
