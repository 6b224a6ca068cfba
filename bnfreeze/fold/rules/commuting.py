"""Ops a per-channel affine map ``y = s * x + t`` can be moved through.

A forward fold moves a BN past the ops between it and the next linear layer.
That is exact only for ops ``f`` with ``f(s * x + t) = s * f(x) + t`` per
channel (the channels may be rearranged, as Flatten does):

* inference identities: Dropout, SpatialDropout1D/2D/3D, GaussianNoise,
  GaussianDropout, AlphaDropout, ActivityRegularization, Identity,
  ``Activation('linear')`` - unless called with ``training=True``;
* average pooling, local and global: an average has weights summing to 1, so
  it commutes with any affine map. Keras's 'same' padding averages over the
  valid elements only (the padded zeros are not counted), so this holds at
  the borders too;
* max pooling, local and global, when no scale is negative: max is monotone,
  ``max(s x + t) = s max(x) + t`` for ``s >= 0``; a negative scale turns the
  max into a min;
* Flatten and Reshape: they only move elements, so the channel of every
  element is tracked (:class:`Layout`); a Dense layer after them sees which
  channel feeds each of its inputs.

Every op returns the layout of its output, or a reason to stop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from bnfreeze.fold.graph import Call


@dataclass(frozen=True)
class Layout:
    """Where the BN's channels are in a tensor on the forward path.

    ``shape`` is the non-batch shape (dims may be None). While the tensor is
    channel-structured, ``axis`` (counted with the batch axis) holds the
    channels. After Flatten/Reshape, ``features`` gives the channel of each
    element of the last axis, the same for every leading position.
    """

    shape: tuple[int | None, ...]
    axis: int | None
    features: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return len(self.shape) + 1

    def last_axis_channels(self, channels: int) -> np.ndarray | None:
        """The channel feeding each element of the last axis, if that is well defined."""
        if self.features is not None:
            return self.features
        if self.axis == self.rank - 1:
            return np.arange(channels)
        return None

    def channel_map(self, channels: int) -> np.ndarray | None:
        """The channel of every element (non-batch shape), or None if a dim is unknown."""
        if any(d is None for d in self.shape):
            return None
        if self.features is not None:
            return np.broadcast_to(self.features, self.shape).copy()
        shape = [1] * len(self.shape)
        shape[self.axis - 1] = channels
        return np.broadcast_to(np.arange(channels).reshape(shape), self.shape).copy()


@dataclass(frozen=True)
class Step:
    """What a forward-path op needs to decide: the op, its call, the BN's scale."""

    name: str
    layer: object
    call: Call
    layout: Layout
    scale: np.ndarray
    bn: str

    def output_shape(self) -> tuple[int | None, ...]:
        shape = self.layer.compute_output_shape((None,) + tuple(self.layout.shape))
        return tuple(shape[1:])


def _channel_axis(layer, rank: int) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else rank - 1


class CommutingOp(ABC):
    """One family of ops the BN's affine map passes through."""

    class_names: tuple[str, ...] = ()

    def handles(self, layer) -> bool:
        return type(layer).__name__ in self.class_names and type(layer).__module__.startswith("keras")

    @abstractmethod
    def transfer(self, step: Step) -> Layout | str:
        """The layout after the op, or why the affine map does not pass through it."""


class InferenceIdentity(CommutingOp):
    class_names = (
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

    def handles(self, layer) -> bool:
        if not super().handles(layer):
            return False
        if type(layer).__name__ == "Activation":
            from bnfreeze.fold.rules.backward import activation_name

            return activation_name(layer) == "linear"
        return True

    def transfer(self, step: Step) -> Layout | str:
        return step.layout


class _Pooling(CommutingOp):
    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        if layout.features is not None or layout.axis != _channel_axis(step.layer, layout.rank):
            return f"{step.name} does not pool over the spatial axes of {step.bn}'s channels"
        problem = self.value_problem(step)
        if problem:
            return problem
        shape = step.output_shape()
        rank = len(shape) + 1
        # Global pooling without keepdims leaves (batch, channels) for both data formats.
        axis = layout.axis if rank == layout.rank else 1
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


class Flatten(CommutingOp):
    class_names = ("Flatten",)

    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        channels = step.scale.shape[0]
        mapping = layout.channel_map(channels)
        if mapping is None:
            return f"{step.name} flattens a tensor of unknown shape {layout.shape}"
        if getattr(step.layer, "data_format", "channels_last") == "channels_first" and mapping.ndim > 1:
            mapping = np.moveaxis(mapping, 0, -1)
        flat = mapping.reshape(-1)
        return Layout(shape=(flat.size,), axis=None, features=flat)


class Reshape(CommutingOp):
    class_names = ("Reshape",)

    def transfer(self, step: Step) -> Layout | str:
        layout = step.layout
        channels = step.scale.shape[0]
        mapping = layout.channel_map(channels)
        if mapping is None:
            return f"{step.name} reshapes a tensor of unknown shape {layout.shape}"
        shape = step.output_shape()
        reshaped = mapping.reshape(shape)
        rows = reshaped.reshape(-1, shape[-1]) if shape else reshaped.reshape(1, -1)
        if not np.all(rows == rows[0]):
            return f"{step.name} mixes {step.bn}'s channels along its last axis"
        features = rows[0].copy()
        if np.array_equal(features, np.arange(channels)):
            # still one channel per position on the last axis: channel-structured again
            return Layout(shape=tuple(shape), axis=len(shape))
        return Layout(shape=tuple(shape), axis=None, features=features)


COMMUTING_OPS: tuple[CommutingOp, ...] = (InferenceIdentity(), AveragePooling(), MaxPooling(), Flatten(), Reshape())


def commuting_op_for(layer) -> CommutingOp | None:
    for op in COMMUTING_OPS:
        if op.handles(layer):
            return op
    return None
