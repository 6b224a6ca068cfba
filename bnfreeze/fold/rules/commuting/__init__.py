"""Ops a per-channel affine map ``y = s * x + t`` can be moved through, one family per module.

Every op maps the :class:`~bnfreeze.fold.rules.commuting.layout.Layout`
before it to the layout after it, or returns the reason the map does not
pass. Ops are recognised by exact Keras class (a subclass may change
``call``); ``keras.ops`` nodes are handled where they provably only move
elements (``ops.reshape`` keeping the batch axis, ``ops.transpose`` with the
batch axis first) and stop the walk otherwise.
"""

from __future__ import annotations

from bnfreeze.fold.rules.commuting.identities import InferenceIdentity, is_inference_identity
from bnfreeze.fold.rules.commuting.layout import CommutingOp, Layout, Step, channel_axis
from bnfreeze.fold.rules.commuting.movement import (
    Cropping,
    Flatten,
    OpsReshape,
    OpsTranspose,
    Permute,
    RepeatVector,
    Reshape,
)
from bnfreeze.fold.rules.commuting.padding import ZeroPadding
from bnfreeze.fold.rules.commuting.pooling import AveragePooling, MaxPooling
from bnfreeze.fold.rules.commuting.resampling import UpSampling

#: Every op family, tried in order.
COMMUTING_OPS: tuple[CommutingOp, ...] = (
    InferenceIdentity(),
    AveragePooling(),
    MaxPooling(),
    Flatten(),
    Reshape(),
    Permute(),
    RepeatVector(),
    Cropping(),
    UpSampling(),
    ZeroPadding(),
    OpsReshape(),
    OpsTranspose(),
)


def commuting_op_for(layer) -> CommutingOp | None:
    for op in COMMUTING_OPS:
        if op.handles(layer):
            return op
    return None


__all__ = ["COMMUTING_OPS", "CommutingOp", "Layout", "Step", "channel_axis", "commuting_op_for",
           "is_inference_identity"]
