"""Backward fold: ``Dense -> BN``.

Dense computes ``z = x @ W + b`` on the last axis of inputs of any rank, with
``W`` of shape ``(in, out)``; output channel ``o`` is column ``W[:, o]``:

    W'[:, o] = s_o W[:, o],   b' = s * b + t

The BN must normalize the last axis.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold


class DenseBackward(BackwardFold):
    name = "dense-backward"
    target_class_names = ("Dense",)

    def channel_axis(self, layer, rank: int) -> int:
        return rank - 1

    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        return kernel * scale[np.newaxis, :]
