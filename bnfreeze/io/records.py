"""Calibration data from TFRecord files of ``tf.train.Example``, and from any ``tf.data.Dataset``.

TFRecords are read by a ``tf.data`` pipeline, file after file, batch by batch
with prefetching, so memory does not grow with the data. Paths are files or
globs (``shards/*.tfrecord``), local or anything ``tf.io.gfile`` reads
(``gs://...``); ``.gz``/``.zlib`` files are read as GZIP/ZLIB-compressed.
One feature of every record feeds the model's (one) input:

* ``image`` (``--feature-type image``): a bytes feature holding an encoded
  PNG/JPEG/BMP/GIF, decoded to the input's channel count, resized (bilinear)
  to its height and width and multiplied by ``rescale``, exactly like an
  image folder.
* ``tensor`` (``--feature-type tensor``): either a bytes feature holding one
  serialized ``TensorProto`` (``tf.io.serialize_tensor(x)``, with ``x`` of
  one sample's shape), or a ``float_list``/``int64_list`` holding one
  sample's values in row-major (C) order, reshaped to the input's shape.

With ``auto`` (the default) the first record decides: encoded image bytes
are an image, other bytes a serialized tensor, lists a tensor. The feature
is ``--feature`` or, by default, the first of: the input's name,
``image/encoded``, ``image``, ``x``, or the records' only feature. Every
problem raises :class:`~bnfreeze.errors.InputError` naming the file (and the
record number, for a record that does not decode).

A worker of a multi-worker run reads every ``count``-th file (sharding by
file, as ``tf.data``'s auto-sharding does); the number of records is not
known until they are read, so ``size`` is None.
"""

from __future__ import annotations

import glob as globbing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.io.arrays import feed_dtype
from bnfreeze.io.images import ImageLayout, decode_image, image_layout
from bnfreeze.io.ranges import check_pixels, needs_check, problem
from bnfreeze.io.signature import TensorSpec, data_name, select_inputs

RECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec", ".tfr", ".record", ".records")
COMPRESSION = {".gz": "GZIP", ".gzip": "GZIP", ".zz": "ZLIB", ".zlib": "ZLIB"}
FEATURE_TYPES = ("auto", "image", "tensor")
DEFAULT_FEATURES = ("image/encoded", "image", "x")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


def is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def _compression_of(name: str) -> str:
    return COMPRESSION.get(Path(name).suffix.lower(), "")


def looks_like_records(text: str) -> bool:
    """A glob, a URL (``gs://``) or a file whose name ends like a TFRecord file (maybe compressed)."""
    name = text.lower()
    for suffix in COMPRESSION:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return is_pattern(text) or "://" in text or name.endswith(RECORD_SUFFIXES)


def expand(patterns: list[str]) -> list[str]:
    """Files named by ``patterns`` (globs expanded, sorted; repeats dropped); each must name something."""
    files: list[str] = []
    for pattern in patterns:
        remote = "://" in pattern
        if remote:
            import tensorflow as tf

            matches = sorted(tf.io.gfile.glob(pattern))
        elif is_pattern(pattern):
            matches = sorted(p for p in globbing.glob(pattern, recursive=True) if Path(p).is_file())
        else:
            path = Path(pattern)
            if not path.exists():
                raise InputError(f"{pattern}: no such file")
            if path.is_dir():
                raise InputError(f"{pattern}: is a folder; give TFRecord files or a glob like {pattern}/*.tfrecord")
            matches = [pattern]
        if not matches:
            raise InputError(f"{pattern}: matches no files")
        files += [m for m in matches if m not in files]
    return files


@dataclass
class RecordFormat:
    """How one record becomes one sample."""

    feature: str
    kind: str  # "image", "serialized", "float_list" or "int64_list"
    sample_shape: tuple
    stored_dtype: str
    layout: ImageLayout | None
    rescale: float

    @property
    def description(self) -> str:
        what = {"image": "an encoded image", "serialized": "a serialized tensor"}.get(self.kind, f"a {self.kind}")
        return f"feature {self.feature!r} ({what})"


@dataclass
class RecordData:
    """TFRecord files as calibration data (see the module docstring)."""

    source: str
    files: list[str]
    specs: list[TensorSpec]
    format: RecordFormat
    compression: str = ""
    limit: int | None = None
    labels: None = None

    @property
    def size(self) -> int | None:
        return 0 if not self.files or self.limit == 0 else None

    def head(self, n: int) -> "RecordData":
        return replace(self, limit=n if self.limit is None else min(n, self.limit))

    def shard(self, index: int, count: int, batch_size: int) -> "RecordData":
        """Worker ``index`` of ``count``: every ``count``-th file, starting at file ``index``."""
        return replace(self, files=self.files[index::count])

    def count(self) -> int:
        """The number of records (reads the files once, without decoding them)."""
        import tensorflow as tf

        if not self.files:
            return 0
        dataset = self._records()
        if self.limit is not None:
            dataset = dataset.take(self.limit)
        try:
            return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
        except tf.errors.OpError as exc:
            raise InputError(self._culprit(0, exc)) from exc

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict]:
        if batch_size < 1:
            raise InputError(f"batch size must be >= 1, got {batch_size}")
        if not self.files:
            return iter(())
        dataset = self._samples()
        limits = [n for n in (self.limit, limit) if n is not None]
        if limits:
            dataset = dataset.take(min(limits))
        return self._iterate(dataset.batch(batch_size).prefetch(2))

    def take(self, indices) -> dict:
        """The samples at ``indices`` (record numbers over all files, sorted) as one feed."""
        import tensorflow as tf

        wanted = tf.constant(np.sort(np.asarray(indices, np.int64)))
        dataset = self._records().enumerate().filter(lambda n, _: tf.reduce_any(tf.equal(n, wanted)))
        dataset = dataset.map(lambda n, item: (item[0], self._decode(item[1])))
        return next(self._iterate(dataset.batch(len(wanted))))

    def label_batches(self, batch_size: int, limit: int | None = None):
        return iter(())

    # -- the pipeline --------------------------------------------------------------
    def _records(self):
        """``(file number, serialized record)`` pairs, file after file."""
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices(self.files).enumerate()
        compression = self.compression
        return files.flat_map(lambda n, name: tf.data.TFRecordDataset(name, compression).map(lambda r: (n, r)))

    def _samples(self):
        import tensorflow as tf

        return self._records().map(lambda n, r: (n, self._decode(r)), num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)

    def _decode(self, record):
        import tensorflow as tf

        dtype = feed_dtype(self.specs[0].dtype)
        value = self._raw(record)
        if self.format.kind == "image" and np.issubdtype(dtype, np.integer):
            value = tf.round(value)  # resized pixels lie between integers: rounded, not truncated
        return tf.cast(value, dtype)

    def _raw(self, record):
        """One record's sample as stored (before the cast to the input's dtype)."""
        import tensorflow as tf

        fmt = self.format
        if fmt.kind in ("float_list", "int64_list"):
            size = int(np.prod(fmt.sample_shape, dtype=np.int64))
            kind = tf.float32 if fmt.kind == "float_list" else tf.int64
            value = tf.io.parse_single_example(record, {fmt.feature: tf.io.FixedLenFeature([size], kind)})[fmt.feature]
            value = tf.reshape(value, fmt.sample_shape)
        else:
            raw = tf.io.parse_single_example(record, {fmt.feature: tf.io.FixedLenFeature([], tf.string)})[fmt.feature]
            if fmt.kind == "image":
                value = decode_image(raw, fmt.layout, fmt.rescale)
            else:
                value = tf.io.parse_tensor(raw, out_type=tf.as_dtype(fmt.stored_dtype))
                value = tf.ensure_shape(value, fmt.sample_shape)
        if fmt.kind != "image" and fmt.rescale != 1.0:  # --rescale of tensor features (a float input)
            dtype = tf.as_dtype(feed_dtype(self.specs[0].dtype))
            value = tf.cast(value, dtype) * tf.cast(fmt.rescale, dtype)
        if value.dtype.is_floating:
            value = tf.debugging.check_numerics(value, "NaN or Inf")
        return value

    def check_values(self) -> None:
        """Refuse (naming the file and the record) a value the input cannot take, reading the records once
        before any work; nothing is read where the stored dtype cannot hold one (images: their pixels times
        ``rescale`` were checked when the records were opened)."""
        import tensorflow as tf

        spec = self.specs[0]
        if self.format.kind == "image" or not needs_check(spec, np.dtype(self.format.stored_dtype)):
            return
        for path in self.files:
            first = 0
            try:
                for batch in tf.data.TFRecordDataset(path, self.compression).map(self._raw).batch(1024):
                    values = batch.numpy()
                    found = problem(values, spec)
                    if found is not None:
                        record, value, what = found
                        raise InputError(f"{path}: record {first + record + 1}: input {spec.name} holds {value}; "
                                         f"{what}")
                    first += len(values)
            except tf.errors.OpError as exc:
                raise InputError(self._culprit(self.files.index(path), exc)) from exc

    def _iterate(self, dataset) -> Iterator[dict]:
        import tensorflow as tf

        name = self.specs[0].name
        iterator = iter(dataset)
        last_file = 0
        while True:
            try:
                numbers, batch = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as exc:
                raise InputError(self._culprit(last_file, exc)) from exc
            last_file = int(numbers[-1])
            yield {name: batch}

    def _culprit(self, first_file: int, exc) -> str:
        """The first file (from ``first_file`` on) with a record that does not read or decode, and why."""
        import tensorflow as tf

        for path in self.files[first_file:]:
            record = -1
            try:
                dataset = tf.data.TFRecordDataset(path, self.compression).map(self._decode)
                for record, _ in enumerate(dataset):
                    pass
            except tf.errors.DataLossError:
                return f"{path}: not a readable TFRecord file (corrupt or truncated after {record + 1} records)"
            except tf.errors.OpError as error:
                message = str(getattr(error, "message", error))
                if "NaN or Inf" in message:
                    reason = "holds NaN or Inf"
                elif self.format.kind == "image":
                    reason = f"{self.format.description} is not a decodable image"
                else:
                    reason = f"{self.format.description} does not give a tensor of shape {self.format.sample_shape}"
                return f"{path}: record {record + 2}: {reason}"
        return f"{self.source}: could not read the records ({str(exc).splitlines()[0][:160]})"


def load_records(patterns, specs: list[TensorSpec], *, feature: str | None = None, feature_type: str = "auto",
                 rescale: float | None = None) -> RecordData:
    """Open TFRecord files or globs for a model with inputs ``specs`` (checked on the first record)."""
    patterns = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
    patterns = [str(p) for p in patterns]
    source = ", ".join(patterns)
    if feature_type not in FEATURE_TYPES:
        raise InputError(f"unknown --feature-type {feature_type!r}; choose one of {', '.join(FEATURE_TYPES)}")
    if len(specs) != 1:
        raise InputError(f"{source}: TFRecords feed a model with one input; this model has {len(specs)}")
    files = expand(patterns)
    compressions = {_compression_of(f) for f in files}
    if len(compressions) > 1:
        raise InputError(f"{source}: mixes compressed and uncompressed TFRecord files; give one kind")
    compression = compressions.pop()
    path, example = _first_example(files, compression)
    fmt = _record_format(path, example, specs[0], feature, feature_type, rescale)
    if fmt.kind != "image" and rescale is not None:
        if not np.issubdtype(feed_dtype(specs[0].dtype), np.floating):
            raise InputError(f"{path}: --rescale multiplies float inputs; the model's input {specs[0].name} is "
                             f"{specs[0].dtype}")
        fmt = replace(fmt, rescale=rescale)
    if fmt.kind == "image":
        check_pixels(specs[0], fmt.rescale, path)
    data = RecordData(source, files, specs, fmt, compression)
    data.check_values()  # before any work
    return data


def _first_example(files: list[str], compression: str):
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    for path in files:
        try:
            for raw in tf.data.TFRecordDataset(path, compression).take(1):
                try:
                    return path, tf.train.Example.FromString(raw.numpy())
                except DecodeError as exc:
                    raise InputError(f"{path}: its records are not tf.train.Example protos") from exc
        except tf.errors.OpError as exc:
            raise InputError(f"{path}: not a readable TFRecord file ({_first_line(exc)})") from exc
    raise InputError(f"{files[0] if len(files) == 1 else ', '.join(files[:3])}: holds no records")


def _first_line(exc) -> str:
    return str(getattr(exc, "message", exc)).strip().splitlines()[0][:160]


def _record_format(path: str, example, spec: TensorSpec, feature: str | None, feature_type: str,
                   rescale: float | None) -> RecordFormat:
    features = example.features.feature
    names = sorted(features)
    if feature is None:
        candidates = list(dict.fromkeys([data_name(spec), spec.name, *DEFAULT_FEATURES]))
        feature = next((c for c in candidates if c in features), names[0] if len(names) == 1 else None)
        if feature is None:
            raise InputError(f"{path}: give --feature: the records have features {', '.join(names) or '(none)'}")
    if feature not in features:
        raise InputError(f"{path}: the records have no feature {feature!r}; they have {', '.join(names) or '(none)'}")
    value = features[feature]
    which = value.WhichOneof("kind")
    sample_shape = tuple(spec.shape[1:])
    if which == "bytes_list":
        if len(value.bytes_list.value) != 1:
            raise InputError(f"{path}: feature {feature!r} holds {len(value.bytes_list.value)} byte strings per "
                             "record; expected one (an encoded image or a serialized tensor)")
        data = value.bytes_list.value[0]
        is_image = data.startswith(_IMAGE_MAGIC)
        if feature_type == "image" or (feature_type == "auto" and is_image):
            layout = image_layout(path, [spec])
            return RecordFormat(feature, "image", (layout.height, layout.width, layout.channels)
                                if not layout.channels_first else (layout.channels, layout.height, layout.width),
                                "uint8", layout, 1.0 if rescale is None else rescale)
        return _serialized_format(path, feature, data, spec)
    if which in ("float_list", "int64_list"):
        if feature_type == "image":
            raise InputError(f"{path}: feature {feature!r} is a {which}, not encoded image bytes")
        if any(d is None for d in sample_shape):
            raise InputError(f"{path}: a {which} feeds only an input of fixed shape; the model's is {spec.shape}")
        values = len(getattr(value, which).value)
        expected = int(np.prod(sample_shape, dtype=np.int64))
        if values != expected:
            raise InputError(f"{path}: feature {feature!r} holds {values} values per record; the model's input "
                             f"{spec.shape} takes {expected}")
        if which == "float_list" and np.issubdtype(feed_dtype(spec.dtype), np.integer):
            raise InputError(f"{path}: feature {feature!r} holds floats, but the model's input is {spec.dtype}")
        return RecordFormat(feature, which, sample_shape, "float32" if which == "float_list" else "int64", None, 1.0)
    raise InputError(f"{path}: feature {feature!r} is empty in the first record")


def _serialized_format(path: str, feature: str, data: bytes, spec: TensorSpec) -> RecordFormat:
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import tensor_pb2

    try:
        proto = tensor_pb2.TensorProto.FromString(data)
        dtype = tf.as_dtype(proto.dtype)
    except (DecodeError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: feature {feature!r} is neither an encoded image nor a serialized tensor "
                         "(tf.io.serialize_tensor)") from exc
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    sample_shape = tuple(spec.shape[1:])
    if len(shape) != len(sample_shape) or any(a is not None and a != b for a, b in zip(sample_shape, shape)):
        raise InputError(f"{path}: feature {feature!r} holds tensors of shape {shape}; the model's input "
                         f"{spec.shape} takes one sample of shape {sample_shape}")
    if dtype.is_complex or dtype == tf.bool or not (dtype.is_floating or dtype.is_integer):
        raise InputError(f"{path}: feature {feature!r} holds {dtype.name} tensors; the model's input is {spec.dtype}")
    if dtype.is_floating and np.issubdtype(feed_dtype(spec.dtype), np.integer):
        raise InputError(f"{path}: feature {feature!r} holds floats, but the model's input is {spec.dtype}")
    return RecordFormat(feature, "serialized", sample_shape, dtype.name, None, 1.0)


@dataclass
class DatasetData:
    """A ``tf.data.Dataset`` of samples (one input: a tensor; several: a tuple or a dict by input name)."""

    dataset: object
    specs: list[TensorSpec]
    size: int | None = None
    source: str = "<tf.data.Dataset>"
    labels: None = None

    def count(self) -> int:
        if self.size is not None:
            return self.size
        return int(self.dataset.reduce(np.int64(0), lambda n, _: n + 1))

    def head(self, n: int) -> "DatasetData":
        return replace(self, dataset=self.dataset.take(n), size=None if self.size is None else min(self.size, n))

    def shard(self, index: int, count: int, batch_size: int) -> "DatasetData":
        """Worker ``index`` of ``count``: every ``count``-th sample (``Dataset.shard``)."""
        size = None if self.size is None else len(range(index, self.size, count))
        return replace(self, dataset=self.dataset.shard(count, index), size=size)

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict]:
        dataset = self.dataset if limit is None else self.dataset.take(limit)
        for batch in dataset.batch(batch_size).prefetch(2):
            yield batch

    def take(self, indices) -> dict:
        import tensorflow as tf

        wanted = tf.constant(np.sort(np.asarray(indices, np.int64)))
        dataset = self.dataset.enumerate().filter(lambda n, _: tf.reduce_any(tf.equal(n, wanted))).map(lambda n, x: x)
        return next(iter(dataset.batch(len(wanted))))

    def label_batches(self, batch_size: int, limit: int | None = None):
        return iter(())


def _check_dataset_values(dataset, specs: list[TensorSpec]) -> None:
    """Read the samples once before any work where their dtype can hold a value an input cannot take."""
    import tensorflow as tf

    wanted = [s for s in specs if needs_check(s, np.dtype(tf.as_dtype(dataset.element_spec[s.name].dtype).name))]
    if not wanted:
        return
    first = 0
    for batch in dataset.batch(1024):
        for spec in wanted:
            found = problem(np.asarray(batch[spec.name]), spec)
            if found is not None:
                sample, value, what = found
                raise InputError(f"<tf.data.Dataset>: input {spec.name} holds {value} at sample {first + sample}; "
                                 f"{what}")
        first += int(batch[wanted[0].name].shape[0])


def dataset_data(dataset, specs: list[TensorSpec]) -> DatasetData:
    """Wrap a ``tf.data.Dataset`` of samples or of batches: the inputs first (a tuple's first item), cast."""
    import tensorflow as tf

    names = [s.name for s in specs]
    spec = dataset.element_spec

    def inputs_of(element_spec):
        if isinstance(element_spec, dict):
            chosen = select_inputs({key: key for key in element_spec}, specs)
            if chosen is not None:
                return lambda e: {n: e[k] for n, k in chosen.items()}
            if len(names) == 1 and "x" in element_spec:
                return lambda e: {names[0]: e["x"]}
            raise InputError(f"<tf.data.Dataset>: needs elements keyed {', '.join(data_name(s) for s in specs)} "
                             f"(or x); they have {', '.join(map(str, element_spec))}")
        if isinstance(element_spec, tuple):
            if len(names) > 1 and len(element_spec) == len(names) and all(
                    isinstance(s, tf.TensorSpec) for s in element_spec):
                return lambda e: dict(zip(names, e))
            inner = inputs_of(element_spec[0])
            return lambda e: inner(e[0])
        if len(names) == 1:
            return lambda e: {names[0]: e}
        raise InputError(f"<tf.data.Dataset>: this model has {len(names)} inputs; give a tuple or a dict per element")

    pick = inputs_of(spec)
    packed = isinstance(spec, tuple)  # tf.data hands a tuple's items over as separate arguments
    dataset = dataset.map(lambda *items: pick(items if packed else items[0]))
    ranks = {n: dataset.element_spec[n].shape.rank for n in names}
    batched = [ranks[s.name] == len(s.shape) for s in specs]
    for s in specs:
        if ranks[s.name] not in (len(s.shape), len(s.shape) - 1):
            raise InputError(f"<tf.data.Dataset>: elements for {s.name} have rank {ranks[s.name]}; the model's "
                             f"input {s.shape} takes samples of rank {len(s.shape) - 1} (or batches)")
    if all(batched):
        dataset = dataset.unbatch()
    elif any(batched):
        raise InputError("<tf.data.Dataset>: give either samples or batches for every input")
    for s in specs:
        dtype = tf.as_dtype(dataset.element_spec[s.name].dtype)
        if dtype.is_complex or dtype == tf.bool or dtype == tf.string:
            raise InputError(f"<tf.data.Dataset>: {s.name} has dtype {dtype.name}; the model's input is {s.dtype}")
        if dtype.is_floating and np.issubdtype(feed_dtype(s.dtype), np.integer):
            raise InputError(f"<tf.data.Dataset>: {s.name} holds floats, but the model's input {s.name} is {s.dtype}")
    cardinality = int(dataset.cardinality())
    size = cardinality if cardinality >= 0 else None
    if cardinality == int(tf.data.INFINITE_CARDINALITY):
        raise InputError("<tf.data.Dataset>: is infinite (repeat()); take as many samples as the calibration needs")
    _check_dataset_values(dataset, specs)
    casts = {s.name: tf.as_dtype(feed_dtype(s.dtype)) for s in specs}
    dataset = dataset.map(lambda e: {n: tf.cast(e[n], casts[n]) for n in names})
    return DatasetData(dataset, specs, size)
