"""Backward fold: ``TimeDistributed(L) -> BN`` or ``-> TimeDistributed(BN)``.

``TimeDistributed(L)`` applies the same ``L`` to every step ``x[:, i]`` of
its input; a ``TimeDistributed(BN)`` applies the same per-channel map
``s * z + t`` to every step, which at inference is one map on the whole
``(batch, steps, ...)`` tensor with the BN's axis moved one to the right (the
planner makes the site so). Folding ``L``'s kernel by ``s`` and its bias to
``s * b + t`` (the rule for ``L`` alone, :mod:`bnfreeze.fold.rules.backward`)
therefore folds every step at once: the same per-step pattern, the same
exact math. The wrapped ``L`` is one of the layers a backward rule folds into
(Dense, convolutions, depthwise, separable, transposed); its channel axis is
counted inside the step and shifted by one for the time axis.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from bnfreeze.fold.rules.backward import BackwardFold, bias_layout_problem
from bnfreeze.fold.rules.base import Match, TargetUpdate


class TimeDistributedBackward(BackwardFold):
    name = "time-distributed-backward"
    target_class_names = ("TimeDistributed",)

    def __init__(self, inner_rules: Sequence[BackwardFold]):
        self.inner_rules = tuple(inner_rules)

    def inner_rule(self, layer) -> BackwardFold | None:
        inner = getattr(layer, "layer", None)
        return next((rule for rule in self.inner_rules if rule.folds_into(inner)), None)

    def folds_into(self, layer) -> bool:
        return type(layer) in self.target_classes() and self.inner_rule(layer) is not None

    def scale_kernel(self, kernel: np.ndarray, scale: np.ndarray, layer) -> np.ndarray:
        return self.inner_rule(layer).scale_kernel(kernel, scale, layer.layer)

    def check(self, match: Match) -> str | None:
        site, layer = match.site, match.target_layer
        rule = self.inner_rule(layer)
        name = f"{match.target} ({layer.layer.name})"
        shape = site.graph.shape_of(match.details["target_ref"])  # (batch, steps, ...): one step is shape[1:]
        return (self.path_problem(match)
                or rule.layer_problem(name, layer.layer, site, site.axis - 1, site.rank - 1, offset=1)
                or bias_layout_problem(name, layer.layer, shape[1:] if shape is not None else None))

    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        layer = match.target_layer
        new_weights = self.inner_rule(layer).fold_weights(match.site.affine, weights, layer.layer)
        return TargetUpdate(weights=new_weights, config={"use_bias": True}, config_path=("layer", "config"))
