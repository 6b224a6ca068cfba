"""Ops that only move, copy or drop elements: the per-channel map passes through,
and the channel of every element is tracked.

* ``Flatten`` (Keras moves channels_first channels last before flattening),
  ``Reshape`` and ``keras.ops.reshape``: the channel map is reshaped the same
  way (the shape must be known). ``ops.reshape`` must provably keep the batch
  axis: its new shape starts with -1 and fixes every other dimension.
* ``Permute`` and ``keras.ops.transpose`` (batch axis first): the channel map
  is permuted; with unknown dims, the channel axis is followed.
* ``RepeatVector``: ``(batch, F) -> (batch, n, F)``: every copy keeps its channel.
* ``Cropping1D/2D/3D``: drops border elements of the spatial axes; the channel
  axis is untouched.

Each element after the op is an element before it, so
``f(s * x + t) = s_c f(x) + t_c`` with ``c`` the element's tracked channel.
"""

from __future__ import annotations

import numpy as np

from bnfreeze.fold.rules.commuting.layout import CommutingOp, Layout, Step, channel_axis


def _reshaped(step: Step, target: tuple[int, ...], what: str) -> Layout | str:
    mapping = step.layout.channel_map(step.channels)
    if mapping is None:
        return f"{step.name} {what} a tensor of unknown shape {step.layout.shape}"
    if int(np.prod(target, dtype=np.int64)) != mapping.size:
        return f"{step.name} {what} {mapping.size} elements into {target}"
    return Layout.from_mapping(mapping.reshape(target), step.channels)


def _permuted(step: Step, order: list[int]) -> Layout | str:
    """Permute the non-batch axes by ``order`` (0-based, a permutation of range(rank - 1))."""
    layout = step.layout
    if sorted(order) != list(range(len(layout.shape))):
        return f"{step.name} permutes axes {order}, not the {len(layout.shape)} non-batch axes"
    shape = tuple(layout.shape[i] for i in order)
    if layout.mapping is None and layout.axis is not None:
        return Layout(shape=shape, axis=order.index(layout.axis - 1) + 1)
    mapping = layout.channel_map(step.channels)
    if mapping is None:
        return f"{step.name} permutes a tensor of unknown shape {layout.shape}"
    return Layout.from_mapping(np.transpose(mapping, order), step.channels)


class Flatten(CommutingOp):
    class_names = ("Flatten",)

    def transfer(self, step: Step) -> Layout | str:
        mapping = step.layout.channel_map(step.channels)
        if mapping is None:
            return f"{step.name} flattens a tensor of unknown shape {step.layout.shape}"
        if getattr(step.layer, "data_format", "channels_last") == "channels_first" and mapping.ndim > 1:
            mapping = np.moveaxis(mapping, 0, -1)
        return Layout.from_mapping(mapping.reshape(-1), step.channels)


class Reshape(CommutingOp):
    class_names = ("Reshape",)

    def transfer(self, step: Step) -> Layout | str:
        shape = step.output_shape()
        if any(d is None for d in shape):
            return f"{step.name} reshapes to {shape}, which bnfreeze cannot follow"
        return _reshaped(step, tuple(int(d) for d in shape), "reshapes")


class Permute(CommutingOp):
    class_names = ("Permute",)

    def transfer(self, step: Step) -> Layout | str:
        return _permuted(step, [int(d) - 1 for d in step.layer.dims])


class RepeatVector(CommutingOp):
    class_names = ("RepeatVector",)

    def transfer(self, step: Step) -> Layout | str:
        layout, n = step.layout, int(step.layer.n)
        if layout.rank != 2:
            return f"{step.name} repeats a tensor of rank {layout.rank}"
        if layout.mapping is None:
            return Layout(shape=(n, layout.shape[0]), axis=2)
        return Layout.from_mapping(np.broadcast_to(layout.mapping, (n, layout.mapping.shape[0])), step.channels)


class Cropping(CommutingOp):
    class_names = ("Cropping1D", "Cropping2D", "Cropping3D")

    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        axis = channel_axis(step.layer, layout.rank)
        if layout.axis != axis:
            return f"{step.name} crops a tensor whose channels are not on its channel axis"
        return Layout(shape=step.output_shape(), axis=axis)


class OpsReshape(CommutingOp):
    """``keras.ops.reshape(x, newshape)`` in a Functional graph."""

    def handles(self, layer) -> bool:
        from bnfreeze.fold.classes import is_keras_op_class

        return is_keras_op_class(layer, "Reshape")

    def transfer(self, step: Step) -> Layout | str:
        newshape = list(step.layer.newshape) if isinstance(step.layer.newshape, (list, tuple)) else [step.layer.newshape]
        rest = newshape[1:]
        if not newshape or newshape[0] != -1 or not all(isinstance(d, int) and d > 0 for d in rest):
            return (f"{step.name} (keras.ops reshape to {tuple(newshape)}) does not provably keep the batch axis "
                    "(its new shape must be (-1, fixed dims...))")
        return _reshaped(step, tuple(rest), "reshapes")


class OpsTranspose(CommutingOp):
    """``keras.ops.transpose(x, axes)`` that keeps the batch axis first."""

    def handles(self, layer) -> bool:
        from bnfreeze.fold.classes import is_keras_op_class

        return is_keras_op_class(layer, "Transpose")

    def transfer(self, step: Step) -> Layout | str:
        axes = step.layer.axes
        if axes is None or int(axes[0]) != 0:
            return f"{step.name} (keras.ops transpose with axes {axes}) moves the batch axis"
        return _permuted(step, [int(a) - 1 for a in axes[1:]])
