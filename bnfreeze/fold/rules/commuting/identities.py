"""Layers that are the identity at inference.

Dropout and its variants, GaussianNoise/GaussianDropout, AlphaDropout,
ActivityRegularization (it only adds a loss), Identity and
``Activation('linear')`` return their input unchanged unless they run in
training mode, so ``f(s * x + t) = s * f(x) + t`` trivially. Whether a call
runs in training mode is decided by the walk (a call with ``training=True``,
or one that receives it under the model's default call, stops it).
"""

from __future__ import annotations

from bnfreeze.fold.rules.commuting.layout import CommutingOp, Layout, Step

IDENTITY_CLASSES = (
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    "Activation",
)


def is_inference_identity(layer) -> bool:
    """True for the layers above (``Activation`` only when linear)."""
    from bnfreeze.fold.classes import is_exactly

    if not is_exactly(layer, *IDENTITY_CLASSES):
        return False
    if is_exactly(layer, "Activation"):
        from bnfreeze.fold.classes import activation_name

        return activation_name(layer) == "linear"
    return True


class InferenceIdentity(CommutingOp):
    class_names = IDENTITY_CLASSES

    def handles(self, layer) -> bool:
        return is_inference_identity(layer)

    def transfer(self, step: Step) -> Layout | str:
        return step.layout
