"""The fold rules, in the order the planner tries them.

Backward folds come first: when a BN could fold both ways, folding it into
the layer before it is preferred.
"""

from __future__ import annotations

from bnfreeze.rules.backward_conv import ConvBackward
from bnfreeze.rules.backward_conv_transpose import ConvTransposeBackward
from bnfreeze.rules.backward_dense import DenseBackward
from bnfreeze.rules.backward_depthwise import DepthwiseBackward
from bnfreeze.rules.backward_separable import SeparableBackward
from bnfreeze.rules.base import BNSite, FoldRule, Match, TargetUpdate

RULES: tuple[FoldRule, ...] = (
    DenseBackward(),
    ConvBackward(),
    DepthwiseBackward(),
    SeparableBackward(),
    ConvTransposeBackward(),
)

__all__ = ["RULES", "BNSite", "FoldRule", "Match", "TargetUpdate"]
