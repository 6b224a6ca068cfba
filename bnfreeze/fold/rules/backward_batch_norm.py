"""Backward merge: ``BN1 -> BN2`` becomes one BN.

Two per-channel affine maps compose into one: with BN1 computing
``y1 = gamma1 * (x - m1) / sqrt(v1 + e1) + beta1`` and BN2 (at inference)
``y2 = s2 * y1 + t2``,

    y2 = (s2 * gamma1) * (x - m1) / sqrt(v1 + e1) + (s2 * beta1 + t2)

so BN2 disappears when BN1 keeps its statistics and gets
``gamma1' = s2 * gamma1`` and ``beta1' = s2 * beta1 + t2`` (``gamma1 = 1``
for ``scale=False`` and ``beta1 = 0`` for ``center=False``: the merged BN
gets both). This holds whether BN1 uses its moving or its batch statistics
(gamma and beta act after the normalisation either way); BN2 must be in
inference mode, which the planner already requires of every site. Both must
normalise the same axis. The merged BN may then fold into a layer next to it
on the next planning round (:func:`bnfreeze.fold.api.fold`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold, weight_problem
from bnfreeze.fold.rules.base import BNSite, Match, TargetUpdate, cast_like


class BatchNormBackward(BackwardFold):
    name = "bn-merge-backward"
    target_class_names = ("BatchNormalization",)

    def scale_kernel(self, kernel, scale, layer):  # pragma: no cover - merges rewrite gamma and beta
        raise TypeError("a BN has no kernel")

    def layer_problem(self, target: str, layer, site: BNSite, axis: int, rank: int, offset: int = 0) -> str | None:
        if not layer.weights:
            return f"{target} is not built (it has no weights)"
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if len(axes) != 1 or int(axes[0]) % rank != axis:
            return f"{site.name} normalizes axis {axis}, but {target} normalizes axis {axes}"
        names = tuple(n for n, used in (("gamma", layer.scale), ("beta", layer.center)) if used)
        return weight_problem(target, layer, names + ("moving_mean", "moving_variance"))

    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        affine = match.site.affine
        like = np.asarray(weights["moving_mean"])
        gamma = np.asarray(weights["gamma"], np.float64) if "gamma" in weights else np.ones(affine.channels)
        beta = np.asarray(weights["beta"], np.float64) if "beta" in weights else np.zeros(affine.channels)
        new_weights = dict(weights)
        new_weights["gamma"] = cast_like(affine.scale * gamma, weights.get("gamma", like))
        new_weights["beta"] = cast_like(affine.scale * beta + affine.shift, weights.get("beta", like))
        return TargetUpdate(weights=new_weights, config={"scale": True, "center": True})
