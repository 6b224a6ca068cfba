"""Find the first layer where a Keras candidate stops agreeing with the reference.

Both models are run with every layer's output exposed; layers are compared
in the reference's topological order where the candidate has a layer of the
same name and output shape (folded BNs have none). The first output outside
the tolerance names the layer to look at.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.compare import Tolerance, compare_output


def _probe(model):
    import keras

    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    outputs = []
    names = []
    for layer in layers:
        try:
            output = layer.output
        except (AttributeError, ValueError):  # shared layers have several outputs
            continue
        if isinstance(output, (list, tuple, dict)):
            continue
        outputs.append(output)
        names.append(layer.name)
    return keras.Model(model.inputs, outputs), names


def first_divergence(reference, candidate, feed: dict, tolerance: Tolerance = Tolerance()) -> str | None:
    """Name of the first layer whose output differs, or None if none does."""
    import keras

    ref_probe, ref_names = _probe(reference)
    cand_probe, cand_names = _probe(candidate)
    arrays = [feed[t.name] for t in reference.inputs] if all(t.name in feed for t in reference.inputs) else list(feed.values())
    ref_out = ref_probe(arrays[0] if len(arrays) == 1 else arrays, training=False)
    cand_out = cand_probe(arrays[0] if len(arrays) == 1 else arrays, training=False)
    candidate_by_name = dict(zip(cand_names, cand_out))
    for name, ref in zip(ref_names, ref_out):
        if name not in candidate_by_name:
            continue
        ref_np = np.asarray(keras.ops.convert_to_numpy(ref))
        cand_np = np.asarray(keras.ops.convert_to_numpy(candidate_by_name[name]))
        if ref_np.shape != cand_np.shape:
            continue
        if not compare_output(name, ref_np, cand_np, tolerance).passed:
            return name
    return None
