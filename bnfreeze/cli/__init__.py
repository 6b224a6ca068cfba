"""The ``bnfreeze`` command line: ``main`` (click commands, parsing only), ``operations``
(file-level work behind each command) and ``tables`` (what the terminal shows)."""

from bnfreeze.cli.main import main

__all__ = ["main"]
