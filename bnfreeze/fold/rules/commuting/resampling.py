"""Upsampling: every output element is a weighted average of input elements of the same channel.

``UpSampling1D/3D`` and nearest ``UpSampling2D`` copy elements. The other
interpolations of ``UpSampling2D`` (bilinear, bicubic, lanczos3/5, area, all
through ``keras.ops.image.resize``) compute each output element as a
weighted sum of input elements of its channel with weights that sum to 1
(TensorFlow normalises the kernels and clamps indices at the borders), so
``f(s * x + t) = s * f(x) + t`` at every element, borders included
(tests/fold/rules/test_commuting.py checks each mode with Keras).
"""

from __future__ import annotations

from bnfreeze.fold.rules.commuting.layout import CommutingOp, Layout, Step, channel_axis

#: UpSampling2D interpolations whose weights sum to 1 at every output element.
AVERAGING_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area")


class UpSampling(CommutingOp):
    class_names = ("UpSampling1D", "UpSampling2D", "UpSampling3D")

    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        axis = channel_axis(step.layer, layout.rank)
        if layout.axis != axis:
            return f"{step.name} upsamples a tensor whose channels are not on its channel axis"
        interpolation = getattr(step.layer, "interpolation", "nearest")
        if interpolation not in AVERAGING_INTERPOLATIONS:
            return f"{step.name} upsamples with {interpolation!r} interpolation, which bnfreeze does not know to average"
        return Layout(shape=step.output_shape(), axis=axis)
