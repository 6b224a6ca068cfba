"""Reading input data for a model from ``.npy``/``.npz`` files, batch by batch.

Files are opened with ``allow_pickle=False`` (a pickled or object array is
refused: loading it could run code), and only the rows of the batch at hand
are read (``.npy`` files and ``.npz`` members alike, by seeking past the
array header), so memory does not grow with the file: not even as mapped
pages, which a memory map would leave resident. Every array is checked against
the model's inputs (rank, dimensions, a real numeric dtype: not bool, not
complex) when the file is opened, and every batch for NaN/Inf before it is
used. All problems raise :class:`~bnfreeze.errors.InputError` naming the file.

An ``.npz`` holds one array per model input, named after the input (for a
model whose inputs are a dict: its keys, as Keras pairs them), or an array
named ``x`` for a single-input model; an optional ``y`` holds labels. Several
files are read as one set, one after the other (their arrays must match).
Values an input cannot take (300 for a ``uint8`` input, a token id beyond an
``Embedding``'s vocabulary) are refused when the file is opened
(:mod:`bnfreeze.io.ranges`), never wrapped by a cast.
"""

from __future__ import annotations

import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.io.ranges import needs_check, problem
from bnfreeze.io.signature import TensorSpec, data_name, select_inputs

LABEL_KEY = "y"


@dataclass
class ArrayData:
    """Arrays for each model input (first axis: samples), and optional labels.

    ``start``/``stop`` select a window of rows (a worker's shard, the first
    ``--max-samples``); nothing is read until a batch is asked for.
    """

    source: Path
    arrays: dict[str, np.ndarray]
    specs: list[TensorSpec]
    labels: np.ndarray | None = None
    start: int = 0
    stop: int | None = None
    #: ``--rescale``: every float input is multiplied by it (uint8 pixels by 1/255, say) as it is read
    rescale: float | None = None
    #: the files the rows come from, in order, with their number of rows (several files read as one)
    parts: tuple[tuple[Path, int], ...] = ()

    def locate(self, row: int) -> tuple[Path, int]:
        """The file holding row ``row`` of the whole set, and the row in that file."""
        for path, rows in self.parts:
            if row < rows:
                return path, row
            row -= rows
        return self.source, row

    @property
    def rows(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    @property
    def size(self) -> int:
        stop = self.rows if self.stop is None else self.stop
        return max(stop - self.start, 0)

    def count(self) -> int:
        return self.size

    def head(self, n: int) -> "ArrayData":
        """The first ``n`` samples."""
        return replace(self, stop=self.start + min(self.size, n))

    def shard(self, index: int, count: int, batch_size: int) -> "ArrayData":
        """Worker ``index`` of ``count``: a contiguous range of whole batches (the last one may be short)."""
        batches = -(-self.size // batch_size)
        first, last = (batches * index) // count, (batches * (index + 1)) // count
        start = self.start + min(first * batch_size, self.size)
        return replace(self, start=start, stop=self.start + min(last * batch_size, self.size))

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Feeds of at most ``batch_size`` samples, checked for NaN/Inf, in the inputs' dtypes."""
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        total = self.size if limit is None else min(self.size, limit)
        for offset in range(0, total, batch_size):
            start, stop = self.start + offset, self.start + min(offset + batch_size, total)
            feed = {}
            for spec in self.specs:
                feed[spec.name] = self._checked(spec, np.asarray(self.arrays[spec.name][start:stop]), start)
            yield feed

    def _checked(self, spec: TensorSpec, batch: np.ndarray, start: int) -> np.ndarray:
        """``batch`` (rows ``start``, ... of the set) cast to the input's dtype, refused where it holds NaN/Inf
        or a value the input cannot take (the cast would wrap or overflow it)."""
        if np.issubdtype(batch.dtype, np.floating) and not np.all(np.isfinite(batch)):
            path, row = self.locate(start + int(np.argwhere(~np.isfinite(batch))[0][0]))
            raise InputError(f"{path}: NaN or Inf in {spec.name} at sample {row}")
        dtype = feed_dtype(spec.dtype)
        if self.rescale is not None and np.issubdtype(dtype, np.floating):
            batch = batch.astype(dtype) * dtype.type(self.rescale)
        found = problem(batch, spec)
        if found is not None:
            sample, value, what = found
            path, row = self.locate(start + sample)
            raise InputError(f"{path}: input {spec.name} holds {value} at sample {row}; {what}")
        return batch.astype(dtype, copy=False)

    def take(self, indices) -> dict[str, np.ndarray]:
        """The samples at ``indices`` (sorted; counted from the window's start) as one feed."""
        indices = np.sort(np.asarray(indices)) + self.start
        return next(_Subset(self, indices).batches(len(indices)))

    def label_batches(self, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
        if self.labels is None:
            return
        total = self.size if limit is None else min(self.size, limit)
        for offset in range(0, total, batch_size):
            yield np.asarray(self.labels[self.start + offset:self.start + min(offset + batch_size, total)])


class _Subset(ArrayData):
    def __init__(self, data: ArrayData, indices: np.ndarray):
        super().__init__(data.source, {k: np.asarray(v[indices]) for k, v in data.arrays.items()}, data.specs,
                         rescale=data.rescale)
        self.indices = indices
        self.whole = data

    def locate(self, row: int) -> tuple[Path, int]:
        return self.whole.locate(int(self.indices[row]))


def feed_dtype(name: str):
    """The NumPy dtype fed to an input of Keras dtype ``name`` (NumPy has no bfloat16: float32; a text
    input, ``string``, gets NumPy's str)."""
    if name == "string":
        return np.str_
    return np.float32 if name == "bfloat16" else np.dtype(name)


def _open(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a .npy or .npz file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty")
    try:
        if path.suffix == ".npy":
            return {"": NpyRows(path)}
        if path.suffix == ".npz":
            return _open_npz(path)
    except ValueError as exc:
        text = str(exc).lower()
        if "pickle" in text or "python objects" in text:
            raise InputError(f"{path}: holds a pickled or object array, which bnfreeze refuses to load") from exc
        raise InputError(f"{path}: not a readable NumPy file ({str(exc).splitlines()[0][:120]})") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable NumPy file (truncated or corrupt)") from exc
    raise InputError(f"{path}: unknown data format {path.suffix or '(no suffix)'!r}; expected .npy or .npz")


class _RowArray:
    """What NumPy and the batch readers ask of an array read by rows: its length and ``np.asarray``."""

    shape: tuple

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        array = self[:]
        return array if dtype is None else array.astype(dtype)


class _Rows(_RowArray, ABC):
    """An array in a file, read row range by row range, never whole.

    Reads the ``.npy`` header and then only the rows asked for, so memory
    follows the batch, not the file. Subclasses open the stream.
    """

    path: Path
    label: str

    def _header(self, stream) -> None:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        if fortran and len(shape) > 1:
            raise ValueError("Fortran-ordered arrays are not supported; save with np.ascontiguousarray")
        self.offset = stream.tell()
        self.shape = tuple(shape)
        self.dtype = dtype
        self.ndim = len(shape)
        self._stream = None
        self._row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize

    @abstractmethod
    def _open_stream(self):
        """A binary stream of the ``.npy`` bytes (any position: readers seek)."""

    def __getitem__(self, index):
        if not self.shape:
            return self._read(0, 1).reshape(())
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                return self[:][index]
            return self._read(start, max(stop - start, 0))
        rows = np.asarray(index)
        return np.stack([self._read(int(i), 1)[0] for i in rows]) if rows.size else self._read(0, 0)

    def _read(self, start: int, rows: int) -> np.ndarray:
        position = self.offset + start * self._row_bytes
        if self._stream is None or self._stream.tell() != position:
            if self._stream is None:
                self._stream = self._open_stream()
            self._stream.seek(position)
        try:
            data = self._stream.read(rows * self._row_bytes)
        except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
            raise InputError(f"{self.path}: {self.label} is corrupt ({exc})") from exc
        if len(data) != rows * self._row_bytes:
            raise InputError(f"{self.path}: {self.label} is truncated")
        return np.frombuffer(data, dtype=self.dtype).reshape((rows, *self.shape[1:])).copy()


class NpyRows(_Rows):
    """A ``.npy`` file read by row ranges (with plain reads, not a memory map)."""

    def __init__(self, path: Path):
        self.path = path
        self.label = "the array"
        with open(path, "rb") as stream:
            self._header(stream)

    def _open_stream(self):
        return open(self.path, "rb")


class NpzMember(_Rows):
    """One array of an ``.npz`` read row range by row range, never whole.

    ``np.load`` of an ``.npz`` reads a member completely; this seeks in the zip
    member instead (which for compressed archives means decompressing up to
    the rows).
    """

    def __init__(self, path: Path, member: str):
        self.path = path
        self.member = member
        self.label = member
        self._archive = None
        with zipfile.ZipFile(path) as archive, archive.open(member) as stream:
            self._header(stream)

    def _open_stream(self):
        self._archive = zipfile.ZipFile(self.path)
        return self._archive.open(self.member)


def _open_npz(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".npy")]
    if not names:
        raise ValueError("no arrays in the archive")
    return {name[:-4]: NpzMember(path, name) for name in names}


def _by_input(path: Path, found: dict, specs: list[TensorSpec]) -> dict:
    """The file's arrays by input name, paired the way Keras pairs a dict with the model's inputs."""
    arrays = select_inputs(found, specs)
    if arrays is not None:
        return arrays
    names = [s.name for s in specs]
    if len(specs) == 1 and ("x" in found or "" in found):
        return {names[0]: found["x"] if "x" in found else found[""]}
    have = ", ".join(k for k in found if k) or "no arrays besides y"
    wanted = ", ".join(data_name(s) for s in specs)
    raise InputError(f"{path}: needs arrays named {wanted} (or x for one input); it has {have}")


def _load_one(path: Path, specs: list[TensorSpec]) -> tuple[dict, np.ndarray | None, int]:
    found = _open(path)
    labels = found.pop(LABEL_KEY, None) if path.suffix == ".npz" else None
    if labels is not None:
        labels = np.asarray(labels)
    arrays = _by_input(path, found, specs)
    sizes = set()
    for spec in specs:
        array = arrays[spec.name]
        _check_array(path, spec, array)
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise InputError(f"{path}: the arrays hold different numbers of samples ({sorted(sizes)})")
    if sizes == {0}:
        raise InputError(f"{path}: holds no samples")
    if labels is not None:
        check_labels(path, labels, next(iter(sizes)))
    for spec in specs:
        scan_values(path, spec, arrays[spec.name])
    return arrays, labels, next(iter(sizes))


def check_labels(path, labels: np.ndarray, count: int) -> None:
    """Labels are one per sample: class indices (whole, non-negative numbers) or rows of class scores
    (one-hot, finite). Anything else would be scored as some class and give an accuracy that means nothing."""
    if labels.ndim == 0:
        raise InputError(f"{path}: y is a single number; give one label per sample ({count})")
    if labels.shape[0] != count:
        raise InputError(f"{path}: y has {labels.shape[0]} labels for {count} samples")
    if labels.dtype.kind not in "iub" and labels.dtype.kind != "f":
        raise InputError(f"{path}: y holds {labels.dtype} values; labels are class indices (integers) or one-hot "
                         "rows of numbers")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
        first = int(np.argwhere((~np.isfinite(labels.reshape(count, -1))).any(axis=1))[0][0])
        raise InputError(f"{path}: y has a NaN or infinite label (sample {first})")
    if labels.ndim >= 2 and labels.shape[-1] > 1:
        return  # rows of class scores: the arg-max is the class
    flat = labels.reshape(count)
    if labels.dtype.kind == "f" and not np.all(flat == np.round(flat)):
        first = int(np.argwhere(flat != np.round(flat))[0][0])
        raise InputError(f"{path}: y has a fractional label ({flat[first]:g} at sample {first}); labels are class "
                         "indices")
    if labels.dtype.kind in "if" and flat.min() < 0:
        first = int(np.argmin(flat))
        raise InputError(f"{path}: y has a negative label ({flat[first]:g} at sample {first}); labels are class "
                         "indices from 0")


#: elements read at a time when a file's values are checked against an input (before any work)
_SCAN_ELEMENTS = 1 << 22


def scan_values(path: Path, spec: TensorSpec, array) -> None:
    """Refuse ``array`` (read range by range) if it holds a value ``spec``'s input cannot take; nothing is
    read when its dtype cannot hold one."""
    if not needs_check(spec, array.dtype):
        return
    per_row = max(int(np.prod(array.shape[1:], dtype=np.int64)), 1)
    step = max(_SCAN_ELEMENTS // per_row, 1)
    for first in range(0, array.shape[0], step):
        found = problem(np.asarray(array[first:first + step]), spec)
        if found is not None:
            sample, value, what = found
            raise InputError(f"{path}: input {spec.name} holds {value} at sample {first + sample}; {what}")


def load_arrays(path, specs: list[TensorSpec], rescale: float | None = None) -> ArrayData:
    """Open ``path`` (or several ``.npy``/``.npz`` files, read as one set in order) for a model with inputs
    ``specs``; check names, shapes, dtypes and values.

    ``rescale`` multiplies every float input as it is read (integer inputs, token ids, are fed as they are;
    a model without a float input refuses it)."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if rescale is not None and not any(np.issubdtype(feed_dtype(s.dtype), np.floating) for s in specs):
        kinds = ", ".join(f"{s.name} ({s.dtype})" for s in specs)
        raise InputError(f"{paths[0]}: --rescale multiplies float inputs; the model's inputs are {kinds}")
    loaded = [(p, *_load_one(p, specs)) for p in paths]
    if len(loaded) == 1:
        source, arrays, labels, rows = loaded[0]
        return ArrayData(source, arrays, specs, labels, parts=((source, rows),), rescale=rescale)
    first_path, first_arrays, first_labels, _ = loaded[0]
    for other, arrays, labels, _rows in loaded[1:]:
        for spec in specs:
            a, b = first_arrays[spec.name], arrays[spec.name]
            if tuple(a.shape[1:]) != tuple(b.shape[1:]):
                raise InputError(f"{other}: {spec.name} has samples of shape {tuple(b.shape[1:])}, but {first_path} "
                                 f"has {tuple(a.shape[1:])}; several files must hold samples of one shape")
        if (labels is None) != (first_labels is None):
            have, lack = (first_path, other) if labels is None else (other, first_path)
            raise InputError(f"{lack}: has no labels (y) but {have} has; give labels in every file or in none")
    arrays = {spec.name: ConcatRows([entry[1][spec.name] for entry in loaded]) for spec in specs}
    labels = None if first_labels is None else np.concatenate([entry[2] for entry in loaded])
    source = Path(", ".join(str(p) for p in paths))
    return ArrayData(source, arrays, specs, labels, parts=tuple((entry[0], entry[3]) for entry in loaded),
                     rescale=rescale)


class ConcatRows(_RowArray):
    """Arrays of several files read as one, by row ranges (each part read only where asked)."""

    def __init__(self, parts: list):
        self.parts = parts
        self.shape = (sum(int(p.shape[0]) for p in parts), *parts[0].shape[1:])
        self.dtype = np.result_type(*[p.dtype for p in parts])
        self.ndim = len(self.shape)
        self.offsets = np.cumsum([0] + [int(p.shape[0]) for p in parts])

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self.shape[0])
            if step != 1:
                return self[:][index]
            pieces = []
            for part, offset in zip(self.parts, self.offsets[:-1]):
                low, high = max(start - offset, 0), min(stop - offset, int(part.shape[0]))
                if low < high:
                    pieces.append(np.asarray(part[low:high]).astype(self.dtype, copy=False))
            if not pieces:
                return np.zeros((0, *self.shape[1:]), self.dtype)
            return np.concatenate(pieces)
        rows = np.asarray(index)
        if not rows.size:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        return np.stack([self[int(i):int(i) + 1][0] for i in rows])


def _check_array(path: Path, spec: TensorSpec, array: np.ndarray) -> None:
    if array.dtype == np.bool_ and spec.dtype == "bool":
        pass
    elif array.dtype == object or not np.issubdtype(array.dtype, np.number):
        kind = "booleans" if array.dtype == np.bool_ else "not numbers"
        raise InputError(f"{path}: {spec.name} has dtype {array.dtype} ({kind}); the model's input is {spec.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{path}: {spec.name} has dtype {array.dtype} (complex numbers); "
                         f"the model's input is {spec.dtype}: give real numbers")
    if np.issubdtype(feed_dtype(spec.dtype), np.integer) and np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{path}: {spec.name} holds floats, but the model's input {spec.name} is {spec.dtype}")
    if array.ndim != len(spec.shape) or not spec.matches_shape(array.shape):
        expected = "(N, " + ", ".join("?" if d is None else str(d) for d in spec.shape[1:]) + ")"
        raise InputError(f"{path}: {spec.name} has shape {tuple(array.shape)}, the model expects {expected}")
