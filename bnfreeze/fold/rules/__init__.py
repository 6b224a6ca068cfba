"""The fold rules, in the order the planner tries them.

Backward folds come first: when a BN could fold both ways, folding it into
the layer before it is preferred. Merging a BN into the BN before it comes
after the folds into linear layers, and before the forward folds. The
pre-activation folds (the BN's scale into the linear layers after its
activation) come last, since they may leave an add: first the one that moves
the shift into an earlier bias (nothing stays), then the one that keeps it
as an add.
"""

from __future__ import annotations

from bnfreeze.fold.rules.backward_batch_norm import BatchNormBackward
from bnfreeze.fold.rules.backward_conv import ConvBackward
from bnfreeze.fold.rules.backward_conv_transpose import ConvTransposeBackward
from bnfreeze.fold.rules.backward_dense import DenseBackward
from bnfreeze.fold.rules.backward_depthwise import DepthwiseBackward
from bnfreeze.fold.rules.backward_separable import SeparableBackward
from bnfreeze.fold.rules.backward_time_distributed import TimeDistributedBackward
from bnfreeze.fold.rules.base import BNSite, FoldRule, Match, ShiftAdd, TargetUpdate
from bnfreeze.fold.rules.forward_conv import ConvForward
from bnfreeze.fold.rules.forward_conv_transpose import ConvTransposeForward
from bnfreeze.fold.rules.forward_dense import DenseForward
from bnfreeze.fold.rules.forward_depthwise import DepthwiseForward
from bnfreeze.fold.rules.forward_separable import SeparableForward
from bnfreeze.fold.rules.preactivation_add import PreActivationAdd
from bnfreeze.fold.rules.preactivation_bias import PreActivationIntoBias

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
    PreActivationIntoBias(),
    PreActivationAdd(),
)

#: The rules ``bnfreeze quantize`` folds with: a pre-activation BN whose shift would stay as an add is left to
#: the converter (:mod:`bnfreeze.fold.rules.preactivation_add` says why).
INT8_RULES: tuple[FoldRule, ...] = tuple(
    PreActivationAdd(for_int8=True) if isinstance(rule, PreActivationAdd) else rule for rule in RULES)

__all__ = ["INT8_RULES", "RULES", "BNSite", "FoldRule", "Match", "ShiftAdd", "TargetUpdate"]
