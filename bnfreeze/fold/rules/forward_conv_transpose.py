"""Forward fold: ``BN -> [commuting ops] -> Conv1D/2D/3DTranspose``, where it is exact.

A transposed convolution scatters every input element into the output
through the kernel ``W`` of shape ``(*k, out, in)``; input channel ``c`` is
the last kernel axis. Scaling the input per channel scales the kernel:

    W'[..., o, c] = s_c W[..., o, c]

The shift ``t`` adds ``sum over the taps that reach output position p of
W[tap, o, c] t_c``, which depends on ``p`` (border outputs and, with
strides, the positions between the input grid receive fewer taps), so it is
a bias only when every output position receives the same taps: a kernel of
extent 1 with stride 1 (then ``b'_o = b_o + sum_c W[0, o, c] t_c``). Otherwise
the fold is exact only when every shift is 0 (scale-only BN), and the rule
declines with the reason.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting import Layout
from bnfreeze.fold.rules.forward import ForwardFold


def single_tap(layer) -> bool:
    """Every output position of ``layer`` receives exactly one kernel tap (kernel 1, stride 1)."""
    return all(int(k) == 1 for k in layer.kernel_size) and all(int(s) == 1 for s in layer.strides)


class ConvTransposeForward(ForwardFold):
    name = "conv-transpose-forward"
    target_class_names = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")

    def check_target(self, match, layout: Layout) -> str | None:
        layer = match.target_layer
        axis = 1 if layer.data_format == "channels_first" else layout.rank - 1
        if layout.axis != axis:
            return f"{match.target} does not read {match.site.name}'s channels on its channel axis"
        if match.site.affine.has_shift() and not single_tap(layer):
            return (f"{match.site.name}'s shift reaches the outputs of {match.target} through a varying number "
                    f"of kernel taps (kernel {tuple(layer.kernel_size)}, strides {tuple(layer.strides)})")
        return None

    def fold_weights(self, match, weights, layout: Layout):
        affine = match.site.affine
        kernel = weights["kernel"]
        bias = weights.get("bias", np.zeros(kernel.shape[-2]))
        new = {"kernel": kernel * affine.scale}
        if affine.has_shift():
            taps = tuple(range(kernel.ndim - 2))
            new["bias"] = bias + np.sum(kernel, axis=taps) @ affine.shift
        else:
            new["bias"] = bias
        return new
