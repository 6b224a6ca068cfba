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
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("Exception encountered when calling")]
    return (useful or lines or [type(exc).__name__])[0][:300]


class DataWarning(UserWarning):
    """The data given may not be what the model expects (it looks unscaled, say); the command goes on.

    The command line prints it as one ``bnfreeze: warning:`` line on stderr.
    """
