"""Pooling over the spatial axes.

* Average pooling, local and global: an average has weights summing to 1, so
  ``avg(s * x + t) = s * avg(x) + t``. Keras's 'same' padding averages over
  the valid elements only (padded zeros are not counted), so this holds at
  the borders too (tests/fold/rules/test_commuting.py checks it with Keras).
* Max pooling, local and global, when no scale is negative: max is
  monotone, ``max(s * x + t) = s * max(x) + t`` for ``s >= 0``; a negative
  scale turns the max into a min.

Both need the BN's channels on the pooling layer's channel axis.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting.layout import CommutingOp, Layout, Step, channel_axis


class _Pooling(CommutingOp):
    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        if layout.axis is None or layout.axis != channel_axis(step.layer, layout.rank):
            return f"{step.name} does not pool over the spatial axes of {step.bn}'s channels"
        problem = self.value_problem(step)
        if problem:
            return problem
        shape = step.output_shape()
        # Global pooling without keepdims leaves (batch, channels) for both data formats.
        axis = layout.axis if len(shape) + 1 == layout.rank else 1
        return Layout(shape=shape, axis=axis)

    def value_problem(self, step: Step) -> str | None:
        return None


class AveragePooling(_Pooling):
    class_names = (
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
    )


class MaxPooling(_Pooling):
    class_names = (
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
    )

    def value_problem(self, step: Step) -> str | None:
        negative = np.flatnonzero(step.scale < 0)
        if negative.size:
            return f"negative scale on channel {int(negative[0])} does not commute with max pooling ({step.name})"
        return None
