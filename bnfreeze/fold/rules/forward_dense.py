"""Forward fold: ``BN -> [commuting ops, Flatten, Reshape] -> Dense``.

Dense reads its last axis; ``c[i]`` is the BN channel feeding input ``i``
(``i`` itself without Flatten/Reshape; tracked through them otherwise, for
channels_last and channels_first). With ``x_i' = s_c[i] x_i + t_c[i]``:

    W'[i, :] = s_c[i] W[i, :],    b' = b + sum_i t_c[i] W[i, :]

Exact for inputs of any rank: the same kernel is applied at every leading
position, and Reshape is only crossed when every leading position maps the
last axis to the same channels.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting import Layout
from bnfreeze.fold.rules.forward import ForwardFold


class DenseForward(ForwardFold):
    name = "dense-forward"
    target_class_names = ("Dense",)

    def _channels(self, match, layout: Layout):
        channels = layout.last_axis_channels(match.site.affine.channels)
        kernel_rows = match.target_layer.kernel.shape[0]
        if channels is None or len(channels) != kernel_rows:
            return None
        return channels

    def check_target(self, match, layout: Layout) -> str | None:
        if self._channels(match, layout) is None:
            return f"{match.target} does not read {match.site.name}'s channels on its last axis"
        return None

    def fold_weights(self, match, weights, layout: Layout):
        channels = self._channels(match, layout)
        affine = match.site.affine
        kernel = weights["kernel"]
        bias = weights.get("bias", np.zeros(kernel.shape[1]))
        return {
            "kernel": kernel * affine.scale[channels][:, np.newaxis],
            "bias": bias + affine.shift[channels] @ kernel,
        }
