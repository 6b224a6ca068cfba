"""The fold rules, in the order the planner tries them.

Backward folds come first: when a BN could fold both ways, folding it into
the layer before it is preferred. Merging a BN into the BN before it comes
after the folds into linear layers, and before the forward folds.
"""

from __future__ import annotations

from bnfreeze.fold.rules.backward_batch_norm import BatchNormBackward
from bnfreeze.fold.rules.backward_conv import ConvBackward
from bnfreeze.fold.rules.backward_conv_transpose import ConvTransposeBackward
from bnfreeze.fold.rules.backward_dense import DenseBackward
from bnfreeze.fold.rules.backward_depthwise import DepthwiseBackward
from bnfreeze.fold.rules.backward_separable import SeparableBackward
from bnfreeze.fold.rules.backward_time_distributed import TimeDistributedBackward
from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, TargetUpdate
from bnfreeze.fold.rules.forward_conv import ConvForward
from bnfreeze.fold.rules.forward_conv_transpose import ConvTransposeForward
from bnfreeze.fold.rules.forward_dense import DenseForward
from bnfreeze.fold.rules.forward_depthwise import DepthwiseForward
from bnfreeze.fold.rules.forward_separable import SeparableForward

_LINEAR_BACKWARD = (
    DenseBackward(),
    ConvBackward(),
    DepthwiseBackward(),
    SeparableBackward(),
    ConvTransposeBackward(),
)

RULES: tuple[FoldRule, ...] = (
    *_LINEAR_BACKWARD,
    TimeDistributedBackward(_LINEAR_BACKWARD),
    BatchNormBackward(),
    DenseForward(),
    ConvForward(),
    DepthwiseForward(),
    SeparableForward(),
    ConvTransposeForward(),
)

__all__ = ["RULES", "BNSite", "FoldRule", "Match", "TargetUpdate"]
