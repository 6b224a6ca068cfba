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
from bnfreeze.io.signature import TensorSpec, data_name, select_inputs


ARRAY_SUFFIXES = (".npy", ".npz")


def _paths(path) -> list[str]:
    return [str(p) for p in path] if isinstance(path, (list, tuple)) else [str(path)]


def _is_array_file(text: str) -> bool:
    return Path(text).suffix.lower() in ARRAY_SUFFIXES and not looks_like_records(text)


def is_records(path, feature_type: str | None = None) -> bool:
    """Whether ``path`` (one path or several) names TFRecord data (several ``.npy``/``.npz`` files do not)."""
    paths = _paths(path)
    if feature_type is None and len(paths) > 1 and all(_is_array_file(p) for p in paths):
        return False
    return feature_type is not None or len(paths) > 1 or any(looks_like_records(p) for p in paths)


def _check_several(paths: list[str], feature_type: str | None) -> None:
    """Several data paths are several array files or several TFRecord files/globs, never a mix or folders."""
    if len(paths) < 2:
        return
    arrays = [p for p in paths if _is_array_file(p)]
    if arrays and len(arrays) != len(paths):
        other = next(p for p in paths if not _is_array_file(p))
        raise InputError(f"{other}: several data paths must all be .npy/.npz files (read one after the other) or "
                         f"all TFRecord files; it is given with {arrays[0]}")
    if arrays and feature_type is not None:
        raise InputError(f"{arrays[0]}: --feature-type applies to TFRecord files; this is a NumPy file")
    for path in paths:
        if Path(path).is_dir():
            raise InputError(f"{path}: is a folder; several data paths must be .npy/.npz files or TFRecord files "
                             "(give one image folder: it is read recursively)")


def check_data_path(path, feature_type: str | None = None) -> None:
    """Fail early (before any output is checked or model loaded) when the data is not there."""
    paths = _paths(path)
    _check_several(paths, feature_type)
    if is_records(path, feature_type):
        expand(paths)
        return
    for item in paths:
        if not Path(item).exists():
            raise InputError(f"{item}: no such file or folder")


def open_data(path, specs: list[TensorSpec], rescale: float | None = None, *, feature: str | None = None,
              feature_type: str | None = None, model=None):
    """Calibration or evaluation data: a ``.npy``/``.npz`` file (or several, read as one
    set), a folder of images, or TFRecord files/globs.

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
    paths = _paths(path)
    _check_several(paths, feature_type)
    if len(paths) > 1 and not is_records(path, feature_type):
        if feature is not None:
            raise InputError(f"{paths[0]}: --feature applies to TFRecord files only")
        return load_arrays(paths, specs, rescale)
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
    """In-memory data as ``{data name: array}`` (each input's dict key where the model has one, else its
    name: how :func:`dataset_data` takes a dict), or an :class:`InputError` saying what is accepted."""
    names = [data_name(spec) for spec in specs]
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
        chosen = select_inputs(data, specs)  # by the model's dict keys, as Keras pairs them, else by name
        if chosen is None:
            missing = next(data_name(s) for s in specs if select_inputs(data, [s]) is None)
            raise InputError(f"data: no array for the model input {missing} (got {', '.join(map(str, data))})")
        return {data_name(spec): chosen[spec.name] for spec in specs}
    raise InputError(f"data: got {type(data).__name__}; {accepted}")
