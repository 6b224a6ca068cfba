"""The contract every fold rule follows.

A rule looks at one BatchNormalization *site* (a BN layer and its single
call in one model graph) and

1. :meth:`FoldRule.match` - recognises its pattern around the BN (or returns
   ``None`` when the pattern is not there);
2. :meth:`FoldRule.check` - returns a reason a user understands when the
   pattern is there but folding would not be exact, or ``None``;
3. :meth:`FoldRule.rewrite` - computes the target layer's new weights (in
   float64, cast to the layer's dtype) from the weights it is given, without
   mutating them or any layer.

Most folds rewrite one layer and remove the BN. A fold may rewrite several
layers (a pre-activation fold scales every consumer of the BN's activation
and may move the BN's shift into the bias of an earlier layer): its
:class:`Match` names the others in ``also``, and
:meth:`FoldRule.rewrite_layers` returns an update for each. A fold may also
leave something where the BN was: :meth:`FoldRule.replacement` returns a
:class:`ShiftAdd` (a per-channel constant added to the BN's input, a plain
``keras.ops.add``), or ``None`` to remove the BN.

Rules never edit the model; :mod:`bnfreeze.fold.rewrite` applies their updates to a
copy of the model's config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from bnfreeze.fold.affine import BNAffine
from bnfreeze.fold.graph import Call, ModelGraph, TensorRef


@dataclass(frozen=True)
class BNSite:
    """A BatchNormalization layer at its one call in ``graph``."""

    graph: ModelGraph
    name: str
    call: Call
    layer: Any
    axis: int
    rank: int
    affine: BNAffine
    #: How reports name the BN when that is not the graph node's name (``td/bn`` for TimeDistributed(BN)).
    label: str | None = None

    @property
    def report_name(self) -> str:
        return self.graph.qualified(self.label or self.name)

    @property
    def input_ref(self) -> TensorRef:
        return self.call.inputs[0]

    @property
    def output_ref(self) -> TensorRef:
        return TensorRef(self.name, self.call.node, 0)


@dataclass(frozen=True)
class Match:
    """A rule's pattern found around a BN: fold it into ``target``."""

    rule: "FoldRule"
    site: BNSite
    target: str
    target_call: Call
    through: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: Further layers the fold rewrites besides ``target`` (every consumer of a pre-activation BN, and the
    #: layer that takes its shift as a bias).
    also: tuple[str, ...] = ()
    #: Layers between an earlier layer and the BN that the BN's shift moves back through: they stay, and
    #: their outputs carry the shift.
    shift_through: tuple[str, ...] = ()

    @property
    def direction(self) -> str:
        return self.rule.direction

    @property
    def target_layer(self):
        return self.site.graph.layer(self.target)

    @property
    def targets(self) -> tuple[str, ...]:
        """Every layer whose weights the fold rewrites: ``target`` first, then ``also``."""
        return (self.target, *self.also)

    @property
    def involved(self) -> tuple[str, ...]:
        """Every layer the fold moves the BN's map through or into."""
        return (*self.through, *self.targets, *self.shift_through)

    def report_entry(self) -> dict:
        graph = self.site.graph
        entry = {
            "bn": self.site.report_name,
            "into": graph.qualified(self.target),
            "direction": self.direction,
            "rule": self.rule.name,
        }
        if self.direction == "forward" or self.through:
            entry["through"] = [graph.qualified(n) for n in self.through]
        entry.update(self.rule.report_details(self))
        return entry


@dataclass(frozen=True)
class TargetUpdate:
    """New weights (by variable name) and config changes for the target layer.

    ``config`` is merged into the layer entry's config, or into the nested
    config at ``config_path`` (``("layer", "config")`` for the layer a
    ``TimeDistributed`` wraps).
    """

    weights: dict[str, np.ndarray]
    config: dict[str, Any] = field(default_factory=dict)
    config_path: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ShiftAdd:
    """What stands where a folded BN was: ``x + shift``, a ``keras.ops.add`` of a constant.

    ``shift`` is already shaped to broadcast along the BN's axis (``(C,)`` for
    the last axis, ``(C, 1, 1)`` for axis 1 of a 4-D tensor) and has the dtype
    the BN computes in; ``name`` is the new node's name, unique in its graph.
    ``constant_first`` writes ``shift + x``: Keras's TensorFlow backend turns
    ``x + vector`` into ``tf.nn.bias_add``, which for a tensor whose last size
    equals the channel count adds along the last axis, so a shift on another
    axis must come first (``tf.add`` then broadcasts it where it belongs).
    """

    name: str
    shift: np.ndarray
    constant_first: bool = False


class FoldRule(ABC):
    """One way to fold a BN into a neighbouring linear layer."""

    #: Short identifier shown in reports.
    name: str = ""
    #: ``"backward"`` (linear layer, then BN), ``"forward"`` (BN, then linear layer) or
    #: ``"pre-activation"`` (BN, then a positively homogeneous activation, then linear layers).
    direction: str = ""
    #: The exact Keras classes this rule folds into (subclasses may change ``call``).
    target_class_names: tuple[str, ...] = ()

    def target_classes(self) -> tuple[type, ...]:
        import keras

        return tuple(getattr(keras.layers, n) for n in self.target_class_names if hasattr(keras.layers, n))

    @abstractmethod
    def match(self, site: BNSite) -> Match | None:
        """Return the pattern around ``site``, or ``None`` when it is not this rule's."""

    @abstractmethod
    def check(self, match: Match) -> str | None:
        """Return why folding ``match`` would not be exact, or ``None`` to fold."""

    @abstractmethod
    def rewrite(self, match: Match, weights: Mapping[str, np.ndarray]) -> TargetUpdate:
        """Compute the target's new weights from ``weights`` (not mutated)."""

    def rewrite_layers(self, match: Match,
                       weights_of: Callable[[str], Mapping[str, np.ndarray]]) -> dict[str, TargetUpdate]:
        """An update for every layer in ``match.targets``; ``weights_of(name)`` gives its current weights.

        Rules that rewrite one layer need not override this.
        """
        return {match.target: self.rewrite(match, weights_of(match.target))}

    def replacement(self, match: Match) -> ShiftAdd | None:
        """What stands where the BN was, or ``None`` to remove it (its consumers read its input)."""
        return None

    def report_details(self, match: Match) -> dict:
        """Report keys this kind of fold adds to the generic ones (none by default)."""
        return {}


def cast_like(value: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Cast a float64 result back to the dtype of the weight it replaces."""
    return np.asarray(value, dtype=np.asarray(like).dtype)
