"""SIGINT and SIGTERM that stop a command cleanly, and a true account of what was written.

Python raises ``KeyboardInterrupt`` at the next bytecode wherever the
program is. Three places make that wrong:

* inside the import of a native extension (onnx's nanobind module init), the
  exception crosses C++ and the process aborts (``terminate called after
  throwing an instance of 'nanobind::python_error'``, exit 134);
* inside a model load, TensorFlow or h5py can turn it into an ordinary error,
  which then reads as a damaged model file;
* between the renames that put several outputs into place, it leaves some
  written and some not, and "nothing was written" would be false.

The command line installs :func:`install`; code that must not be torn runs
inside :func:`deferred`, where a signal is only noted and raised as
:class:`Interrupted` when the section ends. A signal stays noted until the
command line has reported it, and :func:`checkpoint` (before outputs are put
in place, and when a command ends) raises it again if it was lost on the way.
Every completed write is recorded (:func:`record_written`), so the message
says exactly what is on disk. Without :func:`install` (the Python API) nothing changes.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass, field
from typing import Iterator


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``signum`` says which (exit code 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class _State:
    installed: bool = False
    depth: int = 0
    pending: int | None = None
    written: list[str] = field(default_factory=list)


_STATE = _State()


def _handler(signum, _frame) -> None:
    # Noted before it is raised: Python runs the handler between any two bytecodes, also inside a
    # finalizer or a weakref callback, where the exception is printed and dropped ("Exception
    # ignored in ..."). The note stays until the command line has reported the interrupt, so the
    # next checkpoint raises it again.
    _STATE.pending = signum
    if _STATE.depth == 0:
        raise Interrupted(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through :class:`Interrupted` (the command line does this)."""
    _STATE.pending = None
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    _STATE.installed = True


def checkpoint() -> None:
    """Raise :class:`Interrupted` for a signal that arrived and was not reported yet (outside
    :func:`deferred`). Called before outputs are put in place and when a command ends."""
    if _STATE.depth == 0 and _STATE.pending is not None:
        raise Interrupted(_STATE.pending)


def reported() -> None:
    """The command line has told the user about the interrupt: forget it."""
    _STATE.pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (native imports, model loads, the final renames)."""
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1
        checkpoint()


def import_native(name: str):
    """``importlib.import_module(name)`` with signals held: a signal inside a native extension's
    module init (onnx's nanobind, TensorFlow, onnxruntime) aborts the process instead of raising."""
    import importlib

    with deferred():
        return importlib.import_module(name)


def record_written(path) -> None:
    """Note that ``path`` is now in place on disk."""
    _STATE.written.append(str(path))


def forget_written(path) -> None:
    """``path`` was put back as it was (outputs committed together, one of which failed)."""
    with contextlib.suppress(ValueError):
        _STATE.written.remove(str(path))


def written() -> list[str]:
    """The outputs put in place so far by this process, in order."""
    return list(_STATE.written)
