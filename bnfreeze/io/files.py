"""Writing outputs atomically, and the paths bnfreeze derives from its inputs.

Every file bnfreeze writes goes first to a temporary file in the destination
folder and is renamed into place only when it is complete, so a failure at any
point leaves nothing behind and never a half-written artifact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from bnfreeze.errors import InputError
from bnfreeze.io.interrupts import checkpoint, deferred, record_written


#: Files that make a folder a SavedModel: the only kind of folder bnfreeze replaces (with --force).
SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def check_writable(path: str | os.PathLike, *, force: bool, folder: bool = False) -> Path:
    """Refuse to replace an existing output unless ``force``; the folder must exist.

    An output replaces what is at ``path`` whole. A file output never replaces a
    folder, and a folder output (a SavedModel) replaces only a SavedModel folder:
    a project folder given by mistake (``--json .``, ``--savedmodel`` where the
    input model lies) would otherwise be deleted with everything in it.
    """
    path = Path(path)
    if path.is_dir():
        if not folder:
            raise InputError(f"{path}: is a folder; give the name of the file to write")
        if not any((path / name).is_file() for name in SAVEDMODEL_FILES):
            raise InputError(f"{path}: is a folder but not a SavedModel; bnfreeze replaces only a SavedModel "
                             "folder (with --force), never another folder")
    if path.exists() and not force:
        raise InputError(f"{path}: already exists; pass --force to replace it")
    if not path.parent.exists():
        raise InputError(f"{path.parent}: output folder does not exist")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place on success.

    The temporary name keeps the suffix (Keras insists on ``.keras``). On any
    exception the temporary file or folder is removed and ``path`` is left as
    it was. ``folder``: the output is a folder (a SavedModel), which may replace
    an existing SavedModel folder (:func:`check_writable`).
    """
    path = check_writable(path, force=force, folder=folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written for {path}")
        checkpoint()  # an interrupt that was swallowed on the way stops the command here, nothing written
        with deferred():  # replace the old output and put the new one in place, untorn
            check_writable(path, force=force, folder=folder)
            if folder and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(tmp, path)
            record_written(path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_json(data, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``data`` as indented JSON atomically."""
    path = Path(path)
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(to_json(data))
    return path


@contextlib.contextmanager
def committed_together() -> Iterator[contextlib.ExitStack]:
    """An ExitStack of :func:`atomic_path` outputs that are put in place together or not at all.

    The work inside the block may be interrupted (every temporary is removed);
    once it is done, all renames run with signals held, so an interrupt
    cannot leave some outputs written and others not.
    """
    with contextlib.ExitStack() as stack:
        yield stack
        checkpoint()  # raised here, it unwinds every output without putting any in place
        pending = stack.pop_all()
    with deferred():
        pending.close()


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
