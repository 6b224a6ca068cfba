"""Backward fold: ``DepthwiseConv1D/2D -> BN``.

The depthwise kernel has shape ``(*kernel_size, in, multiplier)`` and output
channel ``c * multiplier + m`` comes from ``W[..., c, m]``; so with ``s`` and
``t`` indexed by output channel

    W'[..., c, m] = s_{c*M+m} W[..., c, m],   b' = s * b + t

i.e. ``s`` reshaped to ``(in, multiplier)`` scales the last two axes.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold


class DepthwiseBackward(BackwardFold):
    name = "depthwise-backward"
    target_class_names = ("DepthwiseConv1D", "DepthwiseConv2D")

    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        channels, multiplier = kernel.shape[-2], kernel.shape[-1]
        return kernel * scale.reshape(channels, multiplier)
