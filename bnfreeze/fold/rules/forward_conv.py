"""Forward fold: ``BN -> [commuting ops] -> Conv1D/2D/3D``.

The kernel is ``(*k, in / groups, out)``; output ``o`` belongs to group
``g(o) = o // (out / groups)`` and its input ``j`` is BN channel
``c(j, o) = g(o) * in/groups + j``. Scaling the input per channel:

    W'[..., j, o] = s_c(j,o) W[..., j, o]
    b'_o = b_o + sum_{taps, j} W[..., j, o] t_c(j,o)

The bias term assumes every tap sees ``t``: true for 'valid' padding, not at
the borders of 'same'/'causal' zero padding (unless the padding is empty or
``t = 0``), where the rule declines.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting import Layout
from bnfreeze.fold.rules.forward import ForwardFold


def input_channel_index(kernel_shape, groups: int) -> np.ndarray:
    """``c(j, o)``: the input channel read by kernel slot ``j`` of output ``o``."""
    per_group_in, out = kernel_shape[-2], kernel_shape[-1]
    group = np.arange(out) // (out // groups)
    return group[np.newaxis, :] * per_group_in + np.arange(per_group_in)[:, np.newaxis]


class ConvForward(ForwardFold):
    name = "conv-forward"
    target_class_names = ("Conv1D", "Conv2D", "Conv3D")

    def check_target(self, match, layout: Layout) -> str | None:
        return self.conv_layout_problem(match, layout)

    def fold_weights(self, match, weights, layout: Layout):
        affine = match.site.affine
        kernel = weights["kernel"]
        index = input_channel_index(kernel.shape, match.target_layer.groups)
        bias = weights.get("bias", np.zeros(kernel.shape[-1]))
        taps = tuple(range(kernel.ndim - 1))
        return {
            "kernel": kernel * affine.scale[index],
            "bias": bias + np.sum(kernel * affine.shift[index], axis=taps),
        }
