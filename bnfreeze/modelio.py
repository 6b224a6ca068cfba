"""Loading Keras models safely and writing outputs atomically.

Every file bnfreeze writes goes first to a temporary file in the destination
folder and is renamed into place only when it is complete, so a failure at any
point leaves nothing behind and never a half-written artifact.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

from bnfreeze.errors import InputError

KERAS_SUFFIXES = (".keras",)
LEGACY_SUFFIXES = (".h5", ".hdf5")


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(8) == b"\x89HDF\r\n\x1a\n"


def load_model(path: str | os.PathLike, *, unsafe: bool = False):
    """Load a ``.keras`` (or legacy ``.h5``) model with Keras safe mode on.

    ``unsafe=True`` turns safe mode off, which is needed for ``Lambda`` layers
    whose code is stored as Python bytecode; only do that for files you trust.
    Raises :class:`InputError` with a one-line message naming the file.
    """
    import keras

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a .keras or .h5 model file")
    if path.suffix.lower() in LEGACY_SUFFIXES:
        if not _is_hdf5(path):
            raise InputError(f"{path}: not an HDF5 file (truncated or not a Keras .h5 model)")
    elif path.suffix.lower() in KERAS_SUFFIXES:
        _check_keras_archive(path)
    else:
        raise InputError(f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; expected .keras or .h5")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # Keras raises many types; translate to one line
        raise InputError(f"{path}: {_describe_load_error(exc)}") from exc
    if not isinstance(model, keras.Model):
        raise InputError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return model


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
            for member in ("metadata.json", "config.json"):
                if member not in names:
                    raise InputError(f"{path}: damaged Keras archive ({member} is missing)")
                try:
                    content = json.loads(archive.read(member))
                except ValueError:
                    content = None
                if not isinstance(content, dict):
                    raise InputError(f"{path}: damaged Keras archive ({member} is not a JSON object)")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise InputError(f"{path}: damaged Keras archive ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from exc


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


def check_writable(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse to replace an existing output unless ``force``; the folder must exist."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{path}: already exists; pass --force to replace it")
    if not path.parent.exists():
        raise InputError(f"{path.parent}: output folder does not exist")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name keeps the suffix (Keras insists on ``.keras``). On any
    exception the temporary file or folder is removed and ``path`` is left as
    it was.
    """
    path = check_writable(path, force=force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for {path}")
        check_writable(path, force=force)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def save_model(model, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Save ``model`` as a ``.keras`` file atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"{path}: output model must end in .keras")
    with atomic_path(path, force=force) as tmp:
        model.save(tmp)
    return path


def write_json(data, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``data`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(to_json(data))
    return path


def to_json(data) -> str:
    import json

    return json.dumps(data, indent=2, default=_json_default) + "\n"


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def derived_path(model_path: str | os.PathLike, tag: str) -> Path:
    """``<stem>.<tag>.keras`` beside ``model_path``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.{tag}.keras")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    return a.resolve() == b.resolve()
