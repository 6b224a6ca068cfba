"""Seeded inputs for a Keras model and a parity check between two models.

Shared by fold, export, verify and report: :func:`random_inputs` (arrays) and
:func:`random_data` (the same as a data source) make the seeded samples, and
:func:`check_models` compares two Keras models on them.

``fold`` runs the rewritten model beside the original on the same seeded
inputs, one single sample and one batch, and compares every output with
:mod:`bnfreeze.compare` before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bnfreeze.compare import OutputComparison, Tolerance, compare_output, summarize
from bnfreeze.errors import InputError, ParityError
from bnfreeze.io.arrays import ArrayData
from bnfreeze.io.signature import TensorSpec, input_specs, output_names

#: Size used for unknown (None) non-batch dimensions, such as the spatial
#: dimensions of MobileNetV3 built with default arguments.
DEFAULT_FREE_DIM = 64


def random_inputs(specs: list[TensorSpec], batch_size: int, seed: int, free_dim: int = DEFAULT_FREE_DIM):
    """Seeded inputs: standard normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        shape = (batch_size,) + tuple(free_dim if d is None else int(d) for d in spec.shape[1:])
        dtype = np.dtype(spec.dtype if spec.dtype != "bfloat16" else "float32")
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def run_keras(model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``model`` in inference mode; outputs flattened in model order."""
    import keras

    feed = arrays[0] if len(arrays) == 1 else list(arrays)
    outputs = model(feed, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]


@dataclass
class ParityResult:
    """The worst error over outputs and batches, and the per-output detail."""

    max_abs: float
    max_rel: float
    samples: int
    passed: bool
    outputs: list[OutputComparison] = field(default_factory=list)
    tolerance: Tolerance | None = None

    def as_dict(self) -> dict:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "samples": self.samples, "passed": self.passed,
                "tolerance": self.tolerance.as_dict() if self.tolerance else None}


def check_models(
    reference,
    candidate,
    tolerance: Tolerance = Tolerance(),
    *,
    seed: int = 0,
    batch_sizes: tuple[int, ...] = (1, 3),
) -> ParityResult:
    """Compare two models on seeded random inputs, one run per batch size."""
    tolerance = tolerance.resolved(reference)
    specs = input_specs(reference)
    names = output_names(reference)
    comparisons: list[OutputComparison] = []
    for offset, batch in enumerate(batch_sizes):
        arrays = random_inputs(specs, batch, seed + offset)
        expected = run_keras(reference, arrays)
        got = run_keras(candidate, arrays)
        if len(expected) != len(got):
            raise ParityError(f"the candidate has {len(got)} outputs, the reference {len(expected)}")
        for name, ref, cand in zip(names, expected, got):
            comparisons.append(compare_output(f"{name}[batch {batch}]", ref, cand, tolerance))
    worst = summarize(comparisons)
    return ParityResult(
        max_abs=worst["max_abs"],
        max_rel=worst["max_rel"],
        samples=sum(batch_sizes),
        passed=worst["passed"],
        outputs=comparisons,
        tolerance=tolerance,
    )


def random_data(specs: list[TensorSpec], samples: int, seed: int) -> ArrayData:
    """Seeded standard-normal samples (small integers for integer inputs)."""
    if samples < 1:
        raise InputError(f"--samples must be >= 1, got {samples}")
    arrays = random_inputs(specs, samples, seed)
    return ArrayData(Path(f"<{samples} random samples, seed {seed}>"), dict(zip([s.name for s in specs], arrays)), specs)
