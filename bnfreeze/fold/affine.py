"""The affine map a BatchNormalization layer computes at inference.

In inference mode Keras computes, per channel ``c`` of the normalized axis,

    y = gamma_c * (x - mean_c) / sqrt(var_c + eps) + beta_c = s_c * x + t_c
    s_c = gamma_c / sqrt(var_c + eps),   t_c = beta_c - mean_c * s_c

with the *moving* statistics, also for ``renorm=True`` and
``synchronized=True`` layers (renorm only changes training). ``scale=False``
means gamma = 1 and ``center=False`` means beta = 0. ``eps`` is always read from
the layer: Keras defaults to 1e-3, ONNX and PyTorch to 1e-5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def bn_weights(layer) -> dict[str, np.ndarray]:
    """The layer's variables by name (``gamma``, ``beta``, ``moving_mean``...)."""
    return {v.name: np.asarray(v.numpy()) for v in layer.weights}


@dataclass(frozen=True)
class BNAffine:
    """``y = scale * x + shift`` per channel, in float64."""

    scale: np.ndarray
    shift: np.ndarray

    @classmethod
    def from_layer(cls, layer) -> "BNAffine":
        weights = bn_weights(layer)
        return cls.from_weights(
            weights,
            epsilon=float(layer.epsilon),
            center=bool(layer.center),
            use_scale=bool(layer.scale),
        )

    @classmethod
    def from_weights(cls, weights, *, epsilon: float, center: bool, use_scale: bool) -> "BNAffine":
        mean = np.asarray(weights["moving_mean"], dtype=np.float64)
        var = np.asarray(weights["moving_variance"], dtype=np.float64)
        gamma = np.asarray(weights["gamma"], dtype=np.float64) if use_scale else np.ones_like(mean)
        beta = np.asarray(weights["beta"], dtype=np.float64) if center else np.zeros_like(mean)
        scale = gamma / np.sqrt(var + np.float64(epsilon))
        shift = beta - mean * scale
        return cls(scale=scale, shift=shift)

    @property
    def channels(self) -> int:
        return int(self.scale.shape[0])

    def apply(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """Reference implementation used by tests: apply the map along ``axis``."""
        shape = [1] * x.ndim
        shape[axis] = self.channels
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)

    def first_nonpositive_scale(self) -> int | None:
        """Index of the first channel whose scale is not strictly positive."""
        bad = np.flatnonzero(~(self.scale > 0))
        return int(bad[0]) if bad.size else None

    def has_shift(self) -> bool:
        return bool(np.any(self.shift != 0))
