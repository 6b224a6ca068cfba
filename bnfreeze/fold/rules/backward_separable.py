"""Backward fold: ``SeparableConv1D/2D -> BN``, into the pointwise part.

A separable convolution is a depthwise convolution followed by a pointwise
(1x1) convolution with kernel ``(1[, 1], in * multiplier, out)`` and the
layer's bias. The BN acts on the pointwise output, so only the pointwise
kernel and the bias change:

    P'[..., o] = s_o P[..., o],   b' = s * b + t

The depthwise kernel stays bit for bit.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold


class SeparableBackward(BackwardFold):
    name = "separable-backward"
    target_class_names = ("SeparableConv1D", "SeparableConv2D")
    kernel_name = "pointwise_kernel"

    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        return kernel * scale
