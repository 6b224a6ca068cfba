"""Where calibration and evaluation data come from: array files, image folders, TFRecords, tf.data.

:func:`open_data` picks the loader by what the path is; every loader gives the
same interface: ``source``, ``specs``, ``size`` (None where unknown until
read: TFRecords), ``batches(batch_size, limit)``, ``take(indices)``,
``count()``, ``head(n)``, ``shard(index, count, batch_size)``, ``labels`` and
``label_batches``. :func:`as_data` also accepts a ``tf.data.Dataset``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnfreeze.errors import InputError
from bnfreeze.io.arrays import load_arrays
from bnfreeze.io.images import load_image_folder
from bnfreeze.io.records import dataset_data, expand, load_records, looks_like_records
from bnfreeze.io.signature import TensorSpec


def _paths(path) -> list[str]:
    return [str(p) for p in path] if isinstance(path, (list, tuple)) else [str(path)]


def is_records(path, feature_type: str | None = None) -> bool:
    """Whether ``path`` (one path or several) names TFRecord data."""
    paths = _paths(path)
    return feature_type is not None or len(paths) > 1 or any(looks_like_records(p) for p in paths)


def check_data_path(path, feature_type: str | None = None) -> None:
    """Fail early (before any output is checked or model loaded) when the data is not there."""
    if is_records(path, feature_type):
        expand(_paths(path))
        return
    path = Path(_paths(path)[0])
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")


def open_data(path, specs: list[TensorSpec], rescale: float | None = None, *, feature: str | None = None,
              feature_type: str | None = None, model=None):
    """Calibration or evaluation data: a ``.npy``/``.npz`` file, a folder of images, or TFRecord files/globs.

    ``rescale`` multiplies every float input (pixels, array values) as it is read. Given the Keras ``model``
    the data feeds and no ``rescale``, a float input fed raw whole numbers that the model does not rescale
    itself gets a :class:`~bnfreeze.errors.DataWarning` naming ``--rescale`` (:mod:`bnfreeze.io.scaling`).
    """
    data = _open_data(path, specs, rescale, feature, feature_type)
    if model is not None and rescale is None:
        from bnfreeze.io.scaling import warn_if_unscaled

        warn_if_unscaled(data, model)
    return data


def _open_data(path, specs, rescale, feature, feature_type):
    if is_records(path, feature_type):
        return load_records(_paths(path), specs, feature=feature, feature_type=feature_type or "auto",
                            rescale=rescale)
    if feature is not None:
        raise InputError(f"{_paths(path)[0]}: --feature applies to TFRecord files only")
    path = Path(_paths(path)[0])
    if path.is_dir():
        return load_image_folder(path, specs, 1.0 if rescale is None else rescale)
    return load_arrays(path, specs, rescale)


def as_data(data, specs: list[TensorSpec]):
    """``data`` as a loader.

    A loader from :func:`open_data` is returned as it is; a ``tf.data.Dataset``
    is wrapped; arrays in memory (one NumPy array for a one-input model, a
    list or tuple of arrays in the order of the model's inputs, or a dict by
    input name) are read as a dataset of samples.
    """
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(data, tf.data.Dataset):
        return dataset_data(data, specs)
    if hasattr(data, "batches") and hasattr(data, "size"):
        return data
    arrays = _arrays_by_input(data, specs)
    import tensorflow as tf

    return dataset_data(tf.data.Dataset.from_tensor_slices(arrays), specs)


def _arrays_by_input(data, specs: list[TensorSpec]) -> dict:
    """In-memory data as ``{input name: array}``, or an :class:`InputError` saying what is accepted."""
    names = [spec.name for spec in specs]
    accepted = ("give bnfreeze.open_data(PATH, ...), a tf.data.Dataset, a NumPy array, a list of arrays (one per "
                "model input, in order) or a dict of arrays by input name")
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise InputError(f"data: the model has {len(names)} inputs ({', '.join(names)}); {accepted}")
        return {names[0]: data}
    if isinstance(data, (list, tuple)) and all(isinstance(a, np.ndarray) for a in data):
        if len(data) != len(names):
            raise InputError(f"data: {len(data)} arrays for a model with {len(names)} inputs ({', '.join(names)})")
        return dict(zip(names, data))
    if isinstance(data, dict) and all(isinstance(a, np.ndarray) for a in data.values()):
        missing = [n for n in names if n not in data]
        if missing:
            raise InputError(f"data: no array for the model input {missing[0]} (got {', '.join(map(str, data))})")
        return {n: data[n] for n in names}
    raise InputError(f"data: got {type(data).__name__}; {accepted}")
