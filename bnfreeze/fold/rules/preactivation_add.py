"""Pre-activation fold, the shift staying as an add: ``BN -> activation -> linear layers``.

With ``s > 0`` (see :mod:`bnfreeze.fold.rules.preactivation` for the scale's
way, the signs and the zero scales), the BN's ``y = s * x + t`` is
``s * (x + a)`` with ``a = t / s``. The scale moves into the kernel of every
consumer (per input channel); the BN is replaced by

    x + a        (a keras.ops.add of a constant, shaped to broadcast along the BN's axis)

the node Keras records for ``x + constant`` in a Functional graph (``a + x``
for a BN on another axis than the last: see :class:`~bnfreeze.fold.rules.ShiftAdd`). It loads
in plain Keras, and tf2onnx and the TF Lite converter turn it into one
``Add`` / ``ADD`` with a constant operand — half of what the BN was (its
multiply is gone into the kernels), or nothing where every ``a_c = 0``
(the BN is then removed).

The add is in the BN's compute dtype (float16, float32 or float64; a BN
computing in bfloat16 is kept), so what follows it computes in the dtype it
did. A Sequential model cannot hold a ``keras.ops`` node: there the BN is
kept unless its shift is 0 or moves into an earlier bias
(:mod:`bnfreeze.fold.rules.preactivation_bias`, tried first).

For int8 (``bnfreeze quantize``) the rule is used with ``for_int8``: there
the BN's multiply can be worth keeping. Folded, ``relu(x + a)`` reaches the
next layer's int8 input with each channel at its own scale ``1 / s_c``
instead of normalized, so a per-tensor activation scale spends its levels on
the widest channels, and the add rounds at that scale. Measured on a
pre-activation ResNet trained on the digits (scripts/bench_preactivation_int8.py,
BENCHMARKS.md) the SNR moved either way and the accuracy dropped by one digit
in some files, while left to the converter (an int8 multiply and add, as
without bnfreeze) the accuracy matched the converter's alone in every file.
Where the shift moves into an earlier bias, nothing of the BN stays and the
fold is used.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.base import BNSite, Match, ShiftAdd
from bnfreeze.fold.rules.preactivation import PreActivationFold, ScaleTree, shift_before, unique_name

#: The dtypes a constant of the add can have in a Keras config.
ADD_DTYPES = ("float16", "float32", "float64")


class PreActivationAdd(PreActivationFold):
    """``for_int8``: decline where the shift would stay (for ``bnfreeze quantize``, see the reason)."""

    name = "pre-activation-add"

    def __init__(self, for_int8: bool = False):
        self.for_int8 = for_int8

    def place_shift(self, site: BNSite, tree: ScaleTree):
        return "add" if np.any(shift_before(site.affine) != 0) else "none"

    def shift_problem(self, match: Match) -> str | None:
        if match.details["placement"] == "none":
            return None
        site = match.site
        if self.for_int8:
            return (f"for int8, {site.name} is left to the converter (an int8 multiply and add): folded, its shift "
                    "would stay as an add and the next layer's int8 input would lose the BN's per-channel "
                    "normalization, which can cost int8 accuracy (bnfreeze fold folds it)")
        if site.graph.kind == "sequential":
            return (f"{site.name}'s shift would stay as a per-channel add, which a Sequential model cannot hold "
                    "(rebuild it with the Functional API to fold it)")
        dtype = str(site.layer.compute_dtype)
        if dtype not in ADD_DTYPES:
            return f"{site.name} computes in {dtype}, a dtype the add of its shift cannot be saved in"
        values = shift_before(site.affine).astype(dtype)
        if not np.all(np.isfinite(values)):
            channel = int(np.flatnonzero(~np.isfinite(values))[0])
            return f"{site.name}'s shift over scale on channel {channel} does not fit in {dtype}"
        return None

    def replacement(self, match: Match) -> ShiftAdd | None:
        if match.details["placement"] == "none":
            return None
        site = match.site
        shape = (site.affine.channels,) + (1,) * (site.rank - 1 - site.axis)
        shift = shift_before(site.affine).astype(str(site.layer.compute_dtype)).reshape(shape)
        return ShiftAdd(name=add_name(match), shift=shift, constant_first=site.axis != site.rank - 1)

    def shift_report(self, match: Match) -> tuple[dict, str]:
        if match.details["placement"] == "none":
            return {"shift": "none"}, "no shift (every shift is 0)"
        name = match.site.graph.qualified(add_name(match))
        return {"shift": "add", "shift_add": name}, f"shift stays as an add ({name})"


def add_name(match: Match) -> str:
    """The name of the add that stands where the BN was: ``<bn>_shift`` (made unique)."""
    return unique_name(match.site.graph, f"{match.site.name}_shift")
