"""Backend runners, and recognising an artifact by what it is.

Adding a runtime is one module with a :class:`~bnfreeze.verify.runners.base.Runner`
subclass and one entry in :data:`RUNNERS`, with a sniffing function that
recognises its files by content. Options a runner takes as keyword arguments
(``unsafe`` for Keras, ``signature`` for SavedModel and TFLite) are passed to
it by :func:`open_runner`; others are not.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path
from typing import Callable

from bnfreeze.errors import InputError
from bnfreeze.verify.runners.base import IOSpec, Quantization, Runner, Unavailable
from bnfreeze.verify.runners.keras import KerasRunner
from bnfreeze.verify.runners.onnx import OnnxRunner
from bnfreeze.verify.runners.savedmodel import SavedModelRunner
from bnfreeze.verify.runners.tflite import TFLiteRunner


def _head(path: Path, size: int = 16) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)


def _is_keras(path: Path) -> bool:
    if path.is_dir():
        return False
    if _head(path, 8) == b"\x89HDF\r\n\x1a\n":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return "config.json" in archive.namelist()


def _is_savedmodel(path: Path) -> bool:
    return path.is_dir() and ((path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists())


def _is_tflite(path: Path) -> bool:
    return path.is_file() and _head(path, 8)[4:8] == b"TFL3"


def _is_onnx(path: Path) -> bool:
    if not path.is_file():
        return False
    from bnfreeze.io.interrupts import import_native

    onnx = import_native("onnx")

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return len(model.graph.node) > 0 or len(model.graph.output) > 0


#: (kind, sniff, runner class), tried in order.
RUNNERS: tuple[tuple[str, Callable[[Path], bool], type[Runner]], ...] = (
    ("keras", _is_keras, KerasRunner),
    ("savedmodel", _is_savedmodel, SavedModelRunner),
    ("tflite", _is_tflite, TFLiteRunner),
    ("onnx", _is_onnx, OnnxRunner),
)


def runner_class(path: str | Path) -> type[Runner]:
    """The runner for the artifact at ``path``, recognised by its content."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    for _kind, sniff, cls in RUNNERS:
        if sniff(path):
            return cls
    raise InputError(f"{path}: not a Keras model, SavedModel folder, ONNX or TFLite file")


def open_runner(path: str | Path, device: str = "cpu", **options) -> Runner:
    """A runner (not loaded yet) for ``path`` on ``device``, given the options its class accepts."""
    cls = runner_class(path)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(Path(path), device, **{k: v for k, v in options.items() if k in accepted})


__all__ = ["RUNNERS", "IOSpec", "Quantization", "Runner", "Unavailable", "runner_class", "open_runner", "KerasRunner", "OnnxRunner", "SavedModelRunner", "TFLiteRunner"]
