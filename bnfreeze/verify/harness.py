"""Running an artifact beside its Keras reference and comparing the outputs.

Shared by ``export`` (each artifact is checked before it is written) and
``verify``. Outputs are matched by name when the candidate uses the Keras
output names, else by position.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.compare import OutputComparison, Tolerance, compare_output
from bnfreeze.errors import InputError
from bnfreeze.parity import random_inputs
from bnfreeze.verify.runners.base import Runner
from bnfreeze.io.signature import TensorSpec, input_specs, output_names


def random_feeds(specs: list[TensorSpec], batch_sizes, seed: int) -> list[dict[str, np.ndarray]]:
    feeds = []
    for offset, batch in enumerate(batch_sizes):
        arrays = random_inputs(specs, batch, seed + offset)
        feeds.append({spec.name: array for spec, array in zip(specs, arrays)})
    return feeds


def run_reference(model, feeds) -> list[dict[str, np.ndarray]]:
    """Keras outputs on the CPU for each feed, by output name."""
    import keras
    import tensorflow as tf

    specs = input_specs(model)
    names = output_names(model)
    results = []
    for feed in feeds:
        arrays = [feed[s.name] for s in specs]
        with tf.device("/CPU:0"):
            outputs = model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        flat = [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]
        results.append(dict(zip(names, flat)))
    return results


def check_inputs(runner: Runner, reference: list[TensorSpec]) -> dict[str, str]:
    """Map reference input names to the candidate's; raise InputError on a mismatch."""
    candidate = runner.input_specs()
    if len(candidate) != len(reference):
        raise InputError(
            f"{runner.path}: has {len(candidate)} inputs, the reference has {len(reference)} "
            f"({', '.join(s.name for s in reference)})"
        )
    by_name = {s.name: s for s in candidate}
    if all(s.name in by_name for s in reference):
        pairs = [(s, by_name[s.name]) for s in reference]
    else:
        pairs = list(zip(reference, candidate))
    for ref, cand in pairs:
        if not ref.matches_shape(cand.shape):
            raise InputError(
                f"{runner.path}: input {cand.name} has shape {_shape(cand.shape)}, "
                f"the reference's {ref.name} has {_shape(ref.shape)}"
            )
    return {ref.name: cand.name for ref, cand in pairs}


def _shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _match_outputs(expected: dict, got: dict) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    if all(name in got for name in expected):
        return [(name, value, got[name]) for name, value in expected.items()]
    if len(got) == len(expected):
        return [(name, value, cand) for (name, value), cand in zip(expected.items(), got.values())]
    return [(name, value, None) for name, value in expected.items()]


def compare_runner(
    runner: Runner,
    feeds: list[dict[str, np.ndarray]],
    expected: list[dict[str, np.ndarray]],
    input_map: dict[str, str],
    tolerance: Tolerance,
) -> list[OutputComparison]:
    """Run ``runner`` on every feed and compare each output with the reference."""
    comparisons = []
    for feed, reference in zip(feeds, expected):
        batch = next(iter(feed.values())).shape[0]
        got = _infer(runner, {input_map[name]: value for name, value in feed.items()})
        for name, ref, cand in _match_outputs(reference, got):
            label = f"{name}[batch {batch}]"
            if cand is None:
                nan = float("nan")
                comparisons.append(OutputComparison(label, nan, nan, nan, nan, None, False, False,
                                                    reason=f"no output matches {name}"))
            else:
                comparisons.append(compare_output(label, ref, cand, tolerance))
    return comparisons


def _infer(runner, feed):
    """Run the artifact; a runtime's failure on it (a damaged graph) is the artifact's fault: one line, exit 2."""
    from bnfreeze.errors import BnfreezeError

    try:
        return runner.infer(feed)
    except BnfreezeError:
        raise
    except Exception as exc:  # onnxruntime, TFLite and TF raise many types
        lines = str(exc).strip().splitlines()
        detail = lines[0][:200] if lines else type(exc).__name__
        raise InputError(f"{runner.path}: {runner.backend} failed to run it ({detail})") from exc
