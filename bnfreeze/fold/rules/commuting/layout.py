"""Where a BN's channels are in a tensor on a forward path, and the op interface.

A forward fold moves the BN's per-channel map ``y = s * x + t`` past ops
``f`` with ``f(s * x + t) = s * f(x) + t`` for every element, where the
channel of an output element may differ from its position (Flatten, Permute
and Reshape move elements). :class:`Layout` records, for the tensor after
each op, which BN channel every element carries; each :class:`CommutingOp`
maps the layout before it to the layout after it, or returns the reason the
map does not pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from bnfreeze.fold.affine import BNAffine
from bnfreeze.fold.graph import Call


def axis_map(shape: tuple[int, ...], axis: int, channels: int) -> np.ndarray:
    """The channel of every element when the channels run along ``axis`` (non-batch, 0-based)."""
    view = [1] * len(shape)
    view[axis] = channels
    return np.broadcast_to(np.arange(channels).reshape(view), shape)


@dataclass(frozen=True, eq=False)
class Layout:
    """The BN channel of every element of a tensor (batch axis excluded).

    ``shape`` is the non-batch shape (dims may be None). When the channels
    run along one axis, ``axis`` (counted with the batch axis) says which;
    otherwise ``mapping`` holds the channel of every element (shape known).
    """

    shape: tuple[int | None, ...]
    axis: int | None
    mapping: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return len(self.shape) + 1

    @property
    def known(self) -> bool:
        return all(d is not None for d in self.shape)

    def channel_map(self, channels: int) -> np.ndarray | None:
        """The channel of every element (non-batch shape), or None when a dim is unknown."""
        if self.mapping is not None:
            return self.mapping
        if not self.known or self.axis is None:
            return None
        return axis_map(tuple(self.shape), self.axis - 1, channels)

    def last_axis_channels(self, channels: int) -> np.ndarray | None:
        """The channel of each element of the last axis when it is the same at every leading position."""
        if self.axis == self.rank - 1:
            return np.arange(channels)
        if self.mapping is None:
            return None
        rows = self.mapping.reshape(-1, self.mapping.shape[-1]) if self.mapping.ndim else self.mapping.reshape(1, 1)
        return rows[0].copy() if np.all(rows == rows[0]) else None

    @property
    def features(self) -> np.ndarray | None:
        """The last axis's channels of a mapped layout (Flatten's result, say)."""
        if self.mapping is None:
            return None
        return self.last_axis_channels(int(self.mapping.max()) + 1 if self.mapping.size else 0)

    @classmethod
    def from_mapping(cls, mapping: np.ndarray, channels: int) -> "Layout":
        """A layout for ``mapping``, channel-structured on an axis again where it is."""
        mapping = np.asarray(mapping)
        shape = tuple(int(d) for d in mapping.shape)
        for axis, size in enumerate(shape):
            if size == channels and np.array_equal(mapping, axis_map(shape, axis, channels)):
                return cls(shape=shape, axis=axis + 1)
        return cls(shape=shape, axis=None, mapping=np.ascontiguousarray(mapping))


@dataclass(frozen=True)
class Step:
    """What a forward-path op needs to decide: the op, its call, the layout before it, the BN."""

    name: str
    layer: object
    call: Call | None
    layout: Layout
    affine: BNAffine
    bn: str
    #: The op's output shape without the batch axis, as the graph recorded it (None: ask the layer).
    recorded_output_shape: tuple[int | None, ...] | None = None

    @property
    def scale(self) -> np.ndarray:
        return self.affine.scale

    @property
    def channels(self) -> int:
        return self.affine.channels

    def output_shape(self) -> tuple[int | None, ...]:
        if self.recorded_output_shape is not None:
            return tuple(self.recorded_output_shape)
        shape = self.layer.compute_output_shape((None,) + tuple(self.layout.shape))
        return tuple(shape[1:])


def channel_axis(layer, rank: int) -> int:
    """The channel axis (batch counted) of a layer with a ``data_format``.

    The 1D reshaping layers (Cropping1D, UpSampling1D, ZeroPadding1D) have
    none: they read ``(batch, steps, features)``, features on axis 2.
    """
    if type(layer).__name__.endswith("1D") and not hasattr(layer, "data_format"):
        return 2
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else rank - 1


class CommutingOp(ABC):
    """One family of ops the BN's affine map passes through, recognised by exact Keras class."""

    #: ``keras.layers`` class names this op handles (exact classes only).
    class_names: tuple[str, ...] = ()

    def handles(self, layer) -> bool:
        from bnfreeze.fold.classes import is_exactly

        return is_exactly(layer, *self.class_names)

    @abstractmethod
    def transfer(self, step: Step) -> Layout | str:
        """The layout after the op, or why the affine map does not pass through it."""
