"""Loading Keras models safely (archives checked first) and saving them atomically."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import weakref
import zipfile
from pathlib import Path
from typing import Iterator

from bnfreeze.errors import InputError
from bnfreeze.io.files import atomic_path
from bnfreeze.io.interrupts import deferred

KERAS_SUFFIXES = (".keras",)
LEGACY_SUFFIXES = (".h5", ".hdf5")


#: the file each model :func:`load_model` returned was read from (the model itself is not touched)
_SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def copy_state(source, target, convert=None) -> None:
    """Give ``target`` (built from ``source``'s config) ``source``'s state, as saving and loading would.

    Every layer inside, itself included, saves its own variables and assets and
    the twin loads them, so load hooks run (``Normalization.finalize_state``, a
    lookup table's vocabulary) and variables are copied bit for bit, or through
    ``convert`` (an array to the array to load) where given.
    """
    import numpy as np

    convert = convert or np.array
    pairs = zip(source._flatten_layers(include_self=True, recursive=True),
                target._flatten_layers(include_self=True, recursive=True))
    for mine, twin in pairs:
        store: dict = {}
        mine.save_own_variables(store)
        twin.load_own_variables({key: convert(value) for key, value in store.items()})
        if hasattr(mine, "save_assets") and hasattr(twin, "load_assets"):
            with tempfile.TemporaryDirectory() as folder:
                mine.save_assets(folder)
                twin.load_assets(folder)


def model_label(model) -> str:
    """How a message names a model: the file it was loaded from, else its Keras name."""
    try:
        source = _SOURCES.get(model)
    except TypeError:  # not weakly referable
        source = None
    return str(source) if source is not None else str(model.name)


#: deployment artifacts a Keras-model command may be given by mistake
_ARTIFACTS = {".onnx": "an ONNX file", ".tflite": "a TFLite file"}


def _format_of(path: Path) -> str | None:
    """``"keras"`` (a zip archive), ``"h5"`` (HDF5) or ``"tflite"``, read from the file's first bytes."""
    with path.open("rb") as handle:
        head = handle.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "h5"
    if zipfile.is_zipfile(path):
        return "keras"
    if head[4:8] == b"TFL3":
        return "tflite"
    return None


def check_model_file(path: str | os.PathLike) -> str:
    """Check that ``path`` holds a Keras model, without Keras: its format (``"keras"`` or ``"h5"``), read
    from the content, or an :class:`InputError` naming the file (missing, a folder, an artifact, damaged)."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as exc:  # a loop, or a link to nothing: say which
                raise InputError(f"{path}: {exc.strerror.lower() if exc.strerror else 'unreadable link'} "
                                 f"(a symbolic link that leads to no file)") from exc
        raise InputError(f"{path}: no such file")
    kind = _format_of(path) if path.is_file() else None
    suffix = path.suffix.lower()
    artifact = None
    if kind == "tflite":
        artifact = "a TFLite file"
    elif kind is None and path.is_file():
        artifact = _ARTIFACTS.get(suffix)
    elif path.is_dir() and any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        artifact = "a SavedModel"
    if artifact:
        raise InputError(f"{path}: is {artifact}; this command needs the Keras model it came from (.keras or .h5) "
                         f"- bnfreeze verify compares artifacts with their model")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a .keras or .h5 model file")
    if kind == "keras":
        _check_keras_archive(path)
    elif kind is None and suffix in LEGACY_SUFFIXES:
        raise InputError(f"{path}: not an HDF5 file (truncated or not a Keras .h5 model)")
    elif kind is None and suffix in KERAS_SUFFIXES:
        raise InputError(f"{path}: not a Keras model archive nor an HDF5 model (truncated, or not a model)")
    elif kind is None:
        raise InputError(f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; expected .keras or .h5")
    return kind


def load_model(path: str | os.PathLike, *, unsafe: bool = False):
    """Load a ``.keras`` (or legacy ``.h5``) model with Keras safe mode on.

    The format is read from the file's content, not its name: an HDF5 model named
    ``.keras`` (Keras 2's ``model.save("m.keras")`` wrote one) loads as HDF5, a
    ``.keras`` archive named ``.h5`` as an archive. ``unsafe=True`` turns safe
    mode off, which is needed for ``Lambda`` layers whose code is stored as
    Python bytecode; only do that for files you trust. Every check of the file
    comes before Keras (and TensorFlow) is imported. Raises :class:`InputError`
    with a one-line message naming the file.
    """
    path = Path(path)
    kind = check_model_file(path)
    import keras

    named = path
    try:
        with deferred(), _named_for_keras(path, ".keras" if kind == "keras" else ".h5") as named:
            # an interrupt inside TensorFlow/h5py would read as a damaged file
            model = keras.saving.load_model(named, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # Keras raises many types; translate to one line
        raise InputError(f"{path}: {_describe_load_error(exc).replace(str(named), str(path))}") from exc
    if not isinstance(model, keras.Model):
        raise InputError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    _SOURCES[model] = path
    return model


@contextlib.contextmanager
def _named_for_keras(path: Path, suffix: str):
    """``path`` under a name ending in ``suffix`` (Keras chooses its reader by the name): the path itself
    where it already does, else a link to it in a temporary folder (a copy where links are refused)."""
    if path.suffix.lower() == suffix or (suffix == ".h5" and path.suffix.lower() in LEGACY_SUFFIXES):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="bnfreeze-load-") as folder:
        named = Path(folder) / (path.stem + suffix)
        try:
            named.symlink_to(path.resolve())
        except OSError:
            shutil.copyfile(path, named)
        yield named


def _check_keras_archive(path: Path) -> None:
    """A ``.keras`` file is a zip of ``metadata.json``, ``config.json`` and the weights; check all three.

    Every member's CRC is checked, so a damaged transfer is reported as such
    rather than loaded with whatever the damage left.
    """
    import json

    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a Keras model archive (truncated or not a .keras file)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise InputError(f"{path}: damaged archive ({bad} fails its checksum)")
            names = set(archive.namelist())
            if names and all(name.endswith(".npy") for name in names):
                raise InputError(f"{path}: is a NumPy .npz file (arrays), not a Keras model")
            for member in ("metadata.json", "config.json"):
                if member not in names:
                    raise InputError(f"{path}: damaged Keras archive ({member} is missing)")
                try:
                    content = json.loads(archive.read(member))
                except ValueError:
                    content = None
                if not isinstance(content, dict):
                    raise InputError(f"{path}: damaged Keras archive ({member} is not a JSON object)")
                if member == "config.json":
                    missing = missing_package(content)
                    if missing:
                        raise InputError(f"{path}: {missing}")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"{path}: damaged Keras archive ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from exc


#: pip names of packages whose import name differs from what ``pip install`` takes
_PIP_NAMES = {"keras_hub": "keras-hub", "keras_nlp": "keras-nlp", "keras_cv": "keras-cv", "keras_rs": "keras-rs",
              "tensorflow_hub": "tensorflow-hub", "tensorflow_text": "tensorflow-text",
              "tensorflow_addons": "tensorflow-addons"}
#: modules a Keras config names that are not packages to install
_NOT_PACKAGES = {"keras", "builtins", "__main__", "tensorflow", "numpy"}


def _modules(config) -> Iterator[tuple[str, str]]:
    """(module, class name) of every serialized object in a Keras config."""
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and "class_name" in config:
            yield module, str(config.get("registered_name") or config["class_name"])
        for value in config.values():
            yield from _modules(value)
    elif isinstance(config, list):
        for value in config:
            yield from _modules(value)


def missing_package(config) -> str | None:
    """The first class of a model config that nothing here provides, as a sentence, or None.

    A class registered in this process (``--custom-objects``, an imported
    package) is found by its registered name; otherwise Keras imports the module
    the config names. Where that module is a package Keras models commonly come
    from (KerasHub, KerasCV...) and is not installed, the sentence names it and
    the pip command; a user's own module is left to Keras's lookup (and the
    message for an unknown custom object).
    """
    import importlib.util
    import sys

    for module, name in _modules(config):
        top = module.split(".")[0]
        if not top or top in _NOT_PACKAGES or top.startswith("bnfreeze_custom_objects"):
            continue
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        # a class registered in this process (by --custom-objects, which imports Keras) needs no module;
        # before Keras is imported nothing is registered, and this check stays free of its import
        keras = sys.modules.get("keras")
        if found or (keras is not None and keras.saving.get_registered_object(name) is not None):
            continue
        if top in _PIP_NAMES or top.startswith("keras_"):
            return (f"its class {name} comes from the package {top} ({module}), which is not installed here: "
                    f"install it (pip install {_PIP_NAMES.get(top, top.replace('_', '-'))}) and try again")
        # a user's own module: Keras's lookup and its message for unknown custom objects follow
    return None


def _describe_load_error(exc: Exception) -> str:
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return (
            "contains a Lambda layer whose code would run on loading; "
            "pass --unsafe (safe_mode=False) only if you trust this file"
        )
    match = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if match:
        return (
            f"unknown custom object {match.group(1)!r}: register it with "
            "@keras.saving.register_keras_serializable and import it before loading"
        )
    if isinstance(exc, (zipfile.BadZipFile, EOFError, OSError)):
        return "truncated or unreadable model file"
    first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"cannot be loaded as a Keras model ({first_line[:200]})"


def save_model(model, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Save ``model`` as a ``.keras`` file atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"{path}: output model must end in .keras")
    with atomic_path(path, force=force) as tmp:
        model.save(tmp)
    return path
