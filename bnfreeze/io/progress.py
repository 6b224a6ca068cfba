"""How long work tells its caller how far it is: a step starts (with the samples it will count, or None),
samples are done. The command line shows a bar on a terminal and lines in a log; the library default
shows nothing."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, samples: int) -> None: ...


class NoProgress:
    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, samples: int) -> None:
        pass
