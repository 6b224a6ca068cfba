"""Errors bnfreeze raises for problems a user can act on.

The CLI maps :class:`InputError` to exit code 2 and :class:`CheckError`
(:class:`ParityError`, :class:`KeptError`) to exit code 1, printing the
message as one line (no traceback unless ``--debug``).
"""

from __future__ import annotations


class BnfreezeError(ValueError):
    """Base class of every error bnfreeze raises on purpose."""


class InputError(BnfreezeError):
    """The input (a file, a model, an option) cannot be used as given."""


class ExportError(BnfreezeError):
    """A converter could not produce a correct artifact for this model (exit code 2)."""


class CheckError(BnfreezeError):
    """A check the user asked for failed; nothing was written (exit code 1)."""


class ParityError(CheckError):
    """A rewritten model or artifact does not compute what the original computes."""

    def __init__(self, message: str, parity=None):
        super().__init__(message)
        self.parity = parity


class KeptError(CheckError):
    """More BNs stay than ``--strict``/``--max-kept`` allow; ``.report`` holds the fold report."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


def message_line(exc: BaseException) -> str:
    """The line of an exception that says what is wrong, for one-line messages.

    Keras wraps a layer's error in "Exception encountered when calling X.call()." followed by the
    reason and then every argument (whole arrays): the reason is the line wanted.
    """
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras bolds the reason with terminal escapes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception encountered when calling")]
    return (useful or lines or [type(exc).__name__])[0][:300]


class DataWarning(UserWarning):
    """The data given may not be what the model expects (it looks unscaled, say); the command goes on.

    The command line prints it as one ``bnfreeze: warning:`` line on stderr.
    """


#: what TensorFlow says when it has no kernel for an op on this device (oneDNN off: no NCHW convolution on a CPU)
_DEVICE_PHRASES = ("only supports the NHWC tensor format", "No OpKernel was registered", "Could not find device for",
                   "is not supported on CPU", "not supported on this device", "no registered kernels",
                   "currently only supports")


def device_problem(exc: BaseException) -> str | None:
    """Where ``exc`` says TensorFlow cannot run an op of the model on this machine at all (no kernel for it
    on this device), the line that says so, cleaned of TensorFlow's node decorations; else None."""
    import re

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Keras bolds the message of a layer's error
        lines = [re.sub(r"\s*\[Op:[^\]]*\]", "", re.sub(r"\{\{[^}]*\}\}", "", line)).strip()
                 for line in text.splitlines()]
        lines = [" ".join(line.split()) for line in lines if line]
        found = next((line for line in lines if any(phrase in line for phrase in _DEVICE_PHRASES)), None)
        if found is None and type(exc).__name__ == "UnimplementedError":  # TensorFlow's own word for it
            found = next((line for line in lines
                          if not line.startswith(("Graph execution error", "Detected at node"))), None)
        if found is not None:
            return found[:240]
        exc = exc.__cause__ or exc.__context__
    return None


def cannot_run(label, exc: BaseException) -> "InputError | None":
    """The one-line refusal for a model this machine's TensorFlow cannot run (see :func:`device_problem`)."""
    problem = device_problem(exc)
    if problem is None:
        return None
    return InputError(f"{label}: cannot run on this machine: TensorFlow has no kernel here for one of its ops "
                      f"({problem}); run it where that op is implemented (a GPU, or TensorFlow with oneDNN)")


def index_problem(exc: BaseException) -> str | None:
    """Where ``exc`` is TensorFlow refusing an index out of range inside a run (an ``Embedding`` or a gather
    given an id beyond its table: ``indices[0,5] = 50 is not in [0, 50)``), that clause; else None."""
    import re

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        match = re.search(r"indices(\[[0-9, ]*\])? = -?\d+ is not in \[\d+, \d+\)", str(exc))
        if match:
            return match.group(0)
        exc = exc.__cause__ or exc.__context__
    return None


def runtime_refusal(label, exc: BaseException, data=None) -> "InputError | None":
    """The one-line refusal for a run that failed because of the machine or of the data's values (see
    :func:`cannot_run` and :func:`index_problem`), or None for any other failure."""
    refusal = cannot_run(label, exc)
    if refusal is not None:
        return refusal
    problem = index_problem(exc)
    if problem is not None:
        where = f"{data}: " if data else f"{label}: "
        return InputError(f"{where}holds an id the model cannot look up ({problem}): an Embedding or gather inside "
                          f"{label} receives ids beyond its table")
    return None
