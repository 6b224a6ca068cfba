"""Find the first layer where a Keras candidate stops agreeing with the reference.

Both models are run with every top-level layer's output exposed and compared
in the reference's topological order, where the candidate has a layer of the
same name. A candidate made by ``bnfreeze fold`` computes some tensors under
other names, so the reference's fold plan maps them: where a BN was folded
backward into L, the candidate's L is compared with the reference's BN; the
ops a BN was moved through in a forward or pre-activation fold have no
counterpart and are skipped, and so are the earlier layers that took a
pre-activation BN's shift and the ops between them and the BN.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.compare import Tolerance, compare_output


def _probe(model):
    import keras

    outputs, names = [], []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            output = layer.output
        except (AttributeError, ValueError):  # a shared layer has several outputs
            continue
        if isinstance(output, (list, tuple, dict)):
            continue
        outputs.append(output)
        names.append(layer.name)
    return keras.Model(model.inputs, outputs), names


def _counterparts(reference, candidate_names: set[str]) -> dict[str, str | None]:
    """Reference layer name -> candidate layer name to compare it with (None: skip).

    ``reference`` is a plain model (:mod:`bnfreeze.fold.plain`), as a fold plans on.
    """
    from bnfreeze.fold.planner import plan

    mapping: dict[str, str | None] = {}
    for match in plan(reference).folds:
        if match.site.graph.path or match.site.name in candidate_names:
            continue  # nested, or the candidate still has this BN
        if match.direction == "backward":
            mapping[match.target] = None
            mapping[match.site.name] = match.target
        else:  # the ops a BN's map moved through (and, pre-activation, the earlier layers that took its shift)
            for name in (*match.through, *match.shift_through, *match.also):
                mapping[name] = None
    return mapping


def first_divergence(reference, candidate, feed: dict, tolerance: Tolerance = Tolerance(),
                     candidate_feed: dict | None = None) -> str | None:
    """Name of the first reference layer whose output the candidate does not reproduce.

    ``feed`` holds the reference's inputs by their names (:func:`bnfreeze.io.signature.input_specs`),
    ``candidate_feed`` the same values by the candidate's input names (default: ``feed``): each model gets
    its own inputs by name, never by position. A reference that is not a plain Keras graph (a KerasHub
    backbone, a model with layers of its own call) is compared as bnfreeze reads it: the plain model
    computes what it computes at inference, with the same inputs in the same order.
    """
    import keras

    from bnfreeze.fold.plain import plain_model
    from bnfreeze.io.signature import input_specs

    arrays = [feed[s.name] for s in input_specs(reference)]
    reference = plain_model(reference).model
    ref_probe, ref_names = _probe(reference)
    cand_probe, cand_names = _probe(candidate)
    cand_feed = feed if candidate_feed is None else candidate_feed
    cand_arrays = [cand_feed[s.name] for s in input_specs(candidate)]
    ref_out = ref_probe(arrays, training=False)
    cand_out = dict(zip(cand_names, cand_probe(cand_arrays, training=False)))
    mapping = _counterparts(reference, set(cand_names))
    for name, ref in zip(ref_names, ref_out):
        other = mapping.get(name, name)
        if other is None or other not in cand_out:
            continue
        ref_np = np.asarray(keras.ops.convert_to_numpy(ref))
        cand_np = np.asarray(keras.ops.convert_to_numpy(cand_out[other]))
        if ref_np.shape != cand_np.shape:
            continue
        if not compare_output(name, ref_np, cand_np, tolerance).passed:
            return other
    return None
