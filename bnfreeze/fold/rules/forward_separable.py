"""Forward fold: ``BN -> [commuting ops] -> SeparableConv1D/2D``.

The depthwise kernel ``D`` is ``(*k, C, M)``, the pointwise kernel ``P`` is
``(1[, 1], C*M, out)`` and the bias belongs to the pointwise part. The scale
goes into ``D`` per input channel; the shift passes through ``D`` as the
constant ``d_{c*M+m} = t_c sum_taps D[..., c, m]`` and then through ``P``:

    D'[..., c, m] = s_c D[..., c, m],    b' = b + d @ P

Declines under zero padding with a non-zero shift, as for convolutions.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting import Layout
from bnfreeze.fold.rules.forward import ForwardFold


class SeparableForward(ForwardFold):
    name = "separable-forward"
    target_class_names = ("SeparableConv1D", "SeparableConv2D")
    weight_names = ("depthwise_kernel", "pointwise_kernel")

    def check_target(self, match, layout: Layout) -> str | None:
        return self.conv_layout_problem(match, layout)

    def fold_weights(self, match, weights, layout: Layout):
        affine = match.site.affine
        depthwise, pointwise = weights["depthwise_kernel"], weights["pointwise_kernel"]
        out = pointwise.shape[-1]
        bias = weights.get("bias", np.zeros(out))
        taps = tuple(range(depthwise.ndim - 2))
        constant = (np.sum(depthwise, axis=taps) * affine.shift[:, np.newaxis]).reshape(-1)
        return {
            "depthwise_kernel": depthwise * affine.scale[:, np.newaxis],
            "bias": bias + constant @ pointwise.reshape(-1, out),
        }
