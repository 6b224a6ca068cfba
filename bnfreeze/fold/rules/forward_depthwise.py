"""Forward fold: ``BN -> [commuting ops] -> DepthwiseConv1D/2D``.

The kernel is ``(*k, C, M)``; input channel ``c`` feeds outputs
``c * M + m`` only:

    W'[..., c, m] = s_c W[..., c, m]
    b'_{c*M+m} = b_{c*M+m} + t_c sum_taps W[..., c, m]

Declines under zero padding with a non-zero shift, as for convolutions.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting import Layout
from bnfreeze.fold.rules.forward import ForwardFold


class DepthwiseForward(ForwardFold):
    name = "depthwise-forward"
    target_class_names = ("DepthwiseConv1D", "DepthwiseConv2D")

    def check_target(self, match, layout: Layout) -> str | None:
        return self.conv_layout_problem(match, layout)

    def fold_weights(self, match, weights, layout: Layout):
        affine = match.site.affine
        kernel = weights["kernel"]
        bias = weights.get("bias", np.zeros(kernel.shape[-2] * kernel.shape[-1]))
        taps = tuple(range(kernel.ndim - 2))
        shift = (np.sum(kernel, axis=taps) * affine.shift[:, np.newaxis]).reshape(-1)
        return {"kernel": kernel * affine.scale[:, np.newaxis], "bias": bias + shift}
