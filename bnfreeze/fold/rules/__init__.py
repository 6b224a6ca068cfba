"""The fold rules, in the order the planner tries them.

Backward folds come first: when a BN could fold both ways, folding it into
the layer before it is preferred.
"""

from __future__ import annotations

from bnfreeze.fold.rules.backward_conv import ConvBackward
from bnfreeze.fold.rules.backward_conv_transpose import ConvTransposeBackward
from bnfreeze.fold.rules.backward_dense import DenseBackward
from bnfreeze.fold.rules.backward_depthwise import DepthwiseBackward
from bnfreeze.fold.rules.backward_separable import SeparableBackward
from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, TargetUpdate
from bnfreeze.fold.rules.forward_conv import ConvForward
from bnfreeze.fold.rules.forward_dense import DenseForward
from bnfreeze.fold.rules.forward_depthwise import DepthwiseForward
from bnfreeze.fold.rules.forward_separable import SeparableForward

RULES: tuple[FoldRule, ...] = (
    DenseBackward(),
    ConvBackward(),
    DepthwiseBackward(),
    SeparableBackward(),
    ConvTransposeBackward(),
    DenseForward(),
    ConvForward(),
    DepthwiseForward(),
    SeparableForward(),
)

__all__ = ["RULES", "BNSite", "FoldRule", "Match", "TargetUpdate"]
