"""The verify wing: run artifacts beside a reference and compare every output.

``runners`` has one runner per backend (load, infer, close), ``harness`` runs
an artifact beside the reference, ``api`` is :func:`verify`, ``config`` reads
``parity.toml``, ``reports`` writes JSON and JUnit, ``locate`` finds the first
diverging layer of a Keras candidate.
"""

from bnfreeze.verify.api import VerifyReport, VerifyRow, verify

__all__ = ["VerifyReport", "VerifyRow", "verify"]
