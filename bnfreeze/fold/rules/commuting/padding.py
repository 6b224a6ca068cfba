"""Zero padding: commutes with ``s * x + t`` only when every shift ``t`` is 0.

``ZeroPadding1D/2D/3D`` adds zeros *after* the BN, so the padded border of
``pad(s * x + t)`` holds 0 where ``s * pad(x) + t`` holds ``t``: the two
agree only where ``t = 0`` on every channel (a BN with ``center=False`` and
zero moving mean, say). Any non-zero shift keeps the BN, with the channel
named in the reason.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting.layout import CommutingOp, Layout, Step, channel_axis


class ZeroPadding(CommutingOp):
    class_names = ("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D")

    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        axis = channel_axis(step.layer, layout.rank)
        if layout.axis != axis:
            return f"{step.name} pads a tensor whose channels are not on its channel axis"
        shifted = np.flatnonzero(step.affine.shift != 0)
        if shifted.size:
            channel = int(shifted[0])
            return (f"zero padding {step.name} pads zeros after {step.bn}, whose shift is not 0 "
                    f"(channel {channel}: {step.affine.shift[channel]:.3g}): the border would differ")
        return Layout(shape=step.output_shape(), axis=axis)
