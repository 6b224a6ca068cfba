"""Backward fold: ``Conv1D/2D/3DTranspose -> BN``.

Keras stores a transposed convolution's kernel as ``(*kernel_size, out, in)``:
output channel ``o`` is the second-to-last axis.

    W'[..., o, :] = s_o W[..., o, :],   b' = s * b + t

Keras 3's transposed convolutions have no ``groups`` argument, so there is no
grouped case to handle. Exact for every padding, stride, dilation and
``output_padding``: the BN scales the finished output.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold


class ConvTransposeBackward(BackwardFold):
    name = "conv-transpose-backward"
    target_class_names = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")

    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        return kernel * scale[:, np.newaxis]
