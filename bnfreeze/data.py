"""Reading input data for a model from ``.npy``/``.npz`` files, batch by batch.

Files are opened with ``allow_pickle=False`` (a pickled or object array is
refused: loading it could run code) and ``.npy`` files are memory-mapped, so
memory does not grow with the file. Every array is checked against the
model's inputs (rank, dimensions, a numeric dtype) when the file is opened,
and every batch for NaN/Inf before it is used. All problems raise
:class:`~bnfreeze.errors.InputError` naming the file.

An ``.npz`` holds one array per model input, named after the input, or a
single array named ``x`` (or its only array) for a single-input model; an
optional ``y`` holds labels.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.signature import TensorSpec

LABEL_KEY = "y"


@dataclass
class ArrayData:
    """Arrays for each model input (first axis: samples), and optional labels."""

    source: Path
    arrays: dict[str, np.ndarray]
    specs: list[TensorSpec]
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``batch_size`` samples, checked for NaN/Inf, in the inputs' dtypes."""
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        total = self.size if limit is None else min(self.size, limit)
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            feed = {}
            for spec in self.specs:
                batch = np.asarray(self.arrays[spec.name][start:stop])
                if np.issubdtype(batch.dtype, np.floating) and not np.all(np.isfinite(batch)):
                    row = start + int(np.argwhere(~np.isfinite(batch))[0][0])
                    raise InputError(f"{self.source}: NaN or Inf in {spec.name} at sample {row}")
                feed[spec.name] = batch.astype(_numpy_dtype(spec.dtype), copy=False)
            yield feed

    def label_batches(self, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
        if self.labels is None:
            return
        total = self.size if limit is None else min(self.size, limit)
        for start in range(0, total, batch_size):
            yield np.asarray(self.labels[start:min(start + batch_size, total)])


def _numpy_dtype(name: str):
    return np.float32 if name == "bfloat16" else np.dtype(name)


def _open(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a .npy or .npz file")
    try:
        if path.suffix == ".npy":
            return {"": np.load(path, mmap_mode="r", allow_pickle=False)}
        if path.suffix == ".npz":
            archive = np.load(path, allow_pickle=False)
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        text = str(exc).lower()
        if "pickle" in text or "python objects" in text:
            raise InputError(f"{path}: holds a pickled or object array, which bnfreeze refuses to load") from exc
        raise InputError(f"{path}: not a readable NumPy file ({str(exc).splitlines()[0][:120]})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable NumPy file (truncated or corrupt)") from exc
    raise InputError(f"{path}: unknown data format {path.suffix or '(no suffix)'!r}; expected .npy or .npz")


def load_arrays(path: str | Path, specs: list[TensorSpec]) -> ArrayData:
    """Open ``path`` for a model with inputs ``specs``; check names, shapes and dtypes."""
    path = Path(path)
    found = _open(path)
    labels = found.pop(LABEL_KEY, None) if path.suffix == ".npz" else None
    names = [s.name for s in specs]
    if all(name in found for name in names):
        arrays = {name: found[name] for name in names}
    elif len(specs) == 1 and ("x" in found or len(found) == 1):
        arrays = {names[0]: found["x"] if "x" in found else next(iter(found.values()))}
    else:
        have = ", ".join(k for k in found if k) or "one unnamed array"
        raise InputError(f"{path}: needs arrays named {', '.join(names)} (or x for one input); it has {have}")
    sizes = set()
    for spec in specs:
        array = arrays[spec.name]
        _check_array(path, spec, array)
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise InputError(f"{path}: the arrays hold different numbers of samples ({sorted(sizes)})")
    if sizes == {0}:
        raise InputError(f"{path}: holds no samples")
    if labels is not None and labels.shape[0] != next(iter(sizes)):
        raise InputError(f"{path}: y has {labels.shape[0]} labels for {next(iter(sizes))} samples")
    return ArrayData(path, arrays, specs, labels)


def _check_array(path: Path, spec: TensorSpec, array: np.ndarray) -> None:
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"{path}: {spec.name} has dtype {array.dtype}, not numbers")
    if np.issubdtype(_numpy_dtype(spec.dtype), np.integer) and np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{path}: {spec.name} holds floats, but the model's input {spec.name} is {spec.dtype}")
    if array.ndim != len(spec.shape) or not spec.matches_shape(array.shape):
        expected = "(N, " + ", ".join("?" if d is None else str(d) for d in spec.shape[1:]) + ")"
        raise InputError(f"{path}: {spec.name} has shape {tuple(array.shape)}, the model expects {expected}")


def random_data(specs: list[TensorSpec], samples: int, seed: int) -> ArrayData:
    """Seeded standard-normal samples (small integers for integer inputs)."""
    from bnfreeze.parity import random_inputs

    if samples < 1:
        raise InputError(f"--samples must be >= 1, got {samples}")
    arrays = random_inputs(specs, samples, seed)
    return ArrayData(Path(f"<{samples} random samples, seed {seed}>"), dict(zip([s.name for s in specs], arrays)), specs)
