"""Backward fold: ``Conv1D/2D/3D -> BN``.

Keras stores the kernel as ``(*kernel_size, in / groups, out)`` whatever the
``data_format``, so output channel ``o`` is the last kernel axis, also for
grouped convolutions (group ``g`` owns outputs ``g*out/groups ...``):

    W'[..., o] = s_o W[..., o],   b' = s * b + t

Exact for every padding ('valid', 'same', 'causal'), stride and dilation: the
BN scales the finished output. The BN must normalize the channel axis
(last for channels_last, 1 for channels_first).
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold


class ConvBackward(BackwardFold):
    name = "conv-backward"
    target_class_names = ("Conv1D", "Conv2D", "Conv3D")

    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        return kernel * scale
