"""A Keras model flattened into one ordered list of layer calls, for staged execution.

Recalibration must run parts of a model: the calls between stored activations
and the inputs of the BNs being measured. Keras runs a Functional model as a
whole, so :func:`flatten` reads its call graph (``_nodes_by_depth``, the same
structure ``Functional._run_through_graph`` walks) into :class:`Step` s, and
inlines nested Functional and Sequential models so that BNs inside them are
reached and measured like any other. Every tensor of the flattened graph has a
:data:`Key`; a nested model called twice gets two sets of keys.

The stage of a tensor is the number of BN levels it lies behind: level ``L``
BNs read tensors of stage <= ``L`` only, and their outputs are stage ``L+1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

from bnfreeze.errors import InputError

Key = Hashable


@dataclass(eq=False)
class Step:
    """One call of a layer (or keras.ops operation) in the flattened graph.

    ``bn`` is the BN layer the call measures: the layer itself, or the BN a
    ``TimeDistributed`` wraps (``op`` is then the wrapper); None for any other
    call.
    """

    index: int
    op: object
    node: object
    path: tuple[str, ...]  # names of the nested models the call sits in
    inputs: dict[int, Key]  # id(KerasTensor of the node) -> key
    outputs: list[Key]
    bn: object = None
    stage: int = 0

    @property
    def is_bn(self) -> bool:
        return self.bn is not None

    @property
    def name(self) -> str:
        if self.bn is not None and self.bn is not self.op:
            return "/".join((*self.path, self.op.name, self.bn.name))
        return "/".join((*self.path, self.op.name))

    def bn_axis(self, rank: int) -> int:
        """The BN's channel axis in this call's input (one further out through a TimeDistributed)."""
        if self.bn is self.op:
            return self.bn.axis % rank
        return self.bn.axis % (rank - 1) + 1

    def keys_in(self) -> set[Key]:
        return set(self.inputs.values())


@dataclass
class Program:
    """The flattened graph with the BN level of every BN layer."""

    steps: list[Step]
    input_keys: list[Key]
    levels: dict[int, int | None] = field(default_factory=dict)  # id(BN layer) -> level
    bn_layers: dict[int, object] = field(default_factory=dict)
    bn_names: dict[int, str] = field(default_factory=dict)  # id(BN layer) -> "nested/path/name" of its first call
    opaque: list[str] = field(default_factory=list)  # layers holding BNs bnfreeze cannot reach
    kept: dict[int, tuple[str, str]] = field(default_factory=dict)  # id(BN) -> (name, reason) of BNs not measured
    label: str = "the model"  # how messages name the model: its file where it was loaded from one

    @property
    def max_level(self) -> int:
        return max((lv for lv in self.levels.values() if lv is not None), default=-1)

    def bn_steps(self, layer_id: int) -> list[Step]:
        return [s for s in self.steps if s.is_bn and id(s.bn) == layer_id]

    def key_stage(self) -> dict[Key, int]:
        stages = {key: 0 for key in self.input_keys}
        for step in self.steps:
            for key in step.outputs:
                stages[key] = step.stage
        return stages

    def producers(self) -> dict[Key, Step]:
        return {key: step for step in self.steps for key in step.outputs}

    def needed_steps(self, targets: set[Key], available: set[Key]) -> list[Step]:
        """The steps, in order, that compute ``targets`` from the ``available`` tensors."""
        producers = self.producers()
        needed: set[int] = set()
        todo = [k for k in targets if k not in available]
        seen = set(todo)
        while todo:
            key = todo.pop()
            step = producers.get(key)
            if step is None:
                raise RuntimeError(f"tensor {key} has no producer and is not available")
            if step.index in needed:
                continue
            needed.add(step.index)
            for k in step.keys_in():
                if k not in available and k not in seen:
                    seen.add(k)
                    todo.append(k)
        return [s for s in self.steps if s.index in needed]


def _is_batch_norm(op) -> bool:
    """Keras's own BN: the only one whose call bnfreeze knows, so the only one it measures and normalises."""
    from bnfreeze.fold.classes import is_exact_batch_norm

    return is_exact_batch_norm(op)


def _graph_of(op):
    """The Functional graph behind a nested model, or None for any other layer.

    Only Keras's own Sequential and Functional classes: a subclass may
    override ``call``, so its graph does not say what it computes; it runs as
    one layer, and the BNs inside it are kept.
    """
    from bnfreeze.fold.graph import model_kind

    kind = model_kind(op)
    if kind == "sequential":
        return getattr(op, "_functional", None)
    if kind == "functional":
        return op
    return None


def _time_distributed_batch_norm(op, node, exact: bool, name: str):
    """``(BN, None)`` for a ``TimeDistributed(BatchNormalization)`` call exact recalibration can measure,
    ``(None, reason)`` for one it cannot, ``(None, None)`` for any other call.

    At inference the wrapper applies the BN to every time step with the same
    moving statistics, so the population statistics are those of the
    wrapper's input over the batch, the time steps and the positions. In
    training Keras runs the BN once per time step, with that step's batch
    statistics and one momentum update per step: the one-pass modes would
    have to copy that, and do not. ``name``: the wrapper's name with its
    nested models' path, which the reason begins with.
    """
    from bnfreeze.fold.classes import is_exactly

    if not is_exactly(op, "TimeDistributed") or not _is_batch_norm(getattr(op, "layer", None)):
        return None, None
    layer, name = op.layer, f"{name}/{op.layer.name}"
    rank = len(node.input_tensors[0].shape) if node.input_tensors else None
    if not exact:
        return None, (f"{name}: TimeDistributed runs its BN once per time step in training, so its batch "
                      "statistics are per step; exact recalibration measures it")
    if node.arguments.kwargs.get("mask") is not None:
        return None, f"{name}: a TimeDistributed BN that receives a mask is not measured"
    if rank is None or layer.axis % (rank - 1) == 0:
        return None, f"{name}: normalizes the batch axis of each time step, not a channel axis"
    return layer, None


def flatten(model, ordered: bool = True, label: str | None = None) -> Program:
    """Flatten ``model`` (Functional or Sequential) into a :class:`Program`.

    With ``ordered`` (exact mode) every BN gets its level (and a BN that reads
    its own output is refused), and BNs inside ``TimeDistributed`` are
    measured; without, levels are None (one-pass modes need none). ``label``
    names the model in messages (default: the file it was loaded from, else
    its Keras name).
    """
    from bnfreeze.io.models import model_label
    from bnfreeze.io.signature import call_arguments

    label = label or model_label(model)
    graph = _graph_of(model)
    if graph is None:
        raise InputError(f"{label}: recalibration needs a Functional or Sequential model, "
                         f"got a subclassed {type(model).__name__}")
    from bnfreeze.fold.classes import batch_norms_inside, class_label, is_batch_norm, subclass_reason

    steps: list[Step] = []
    opaque: list[str] = []
    kept: dict[int, tuple[str, str]] = {}

    def visit(function, scope: tuple, path: tuple[str, ...], input_keys: list[Key]) -> list[Key]:
        alias: dict[int, Key] = {id(x): k for x, k in zip(function.inputs, input_keys)}

        def key(tensor) -> Key:
            return alias.get(id(tensor), (scope, id(tensor)))

        for depth in sorted(function._nodes_by_depth, reverse=True):
            for node in function._nodes_by_depth[depth]:
                op = node.operation
                if not op or node.is_input:
                    continue
                inputs = {id(t): key(t) for t in node.input_tensors}
                inner = _graph_of(op)
                if inner is not None:
                    # paired the way Keras pairs them: a dict by the inner model's input names (or its dict
                    # keys), not by the dict's sorted order
                    arguments = call_arguments(inner, node.arguments.args[0], label)
                    inner_inputs = [key(t) for t in arguments]
                    outs = visit(inner, scope + (len(steps), op.name), path + (op.name,), inner_inputs)
                    for outer, inner_key in zip(node.outputs, outs):
                        alias[id(outer)] = inner_key
                    continue
                name = "/".join((*path, op.name))
                bn = op if _is_batch_norm(op) else None
                wrapped, why = _time_distributed_batch_norm(op, node, ordered, name)
                if wrapped is not None:
                    bn = wrapped
                elif why is not None:
                    kept.setdefault(id(op.layer), (name + "/" + op.layer.name, why))
                elif is_batch_norm(op) and not _is_batch_norm(op):
                    # a subclass may normalise something else than its input (its call is its own): it runs
                    # as it is, and keeps its statistics
                    kept.setdefault(id(op), (name, subclass_reason(name, op, "BatchNormalization")))
                elif not _is_batch_norm(op) and batch_norms_inside(op):
                    opaque.append(name)
                    for inner in batch_norms_inside(op):
                        kept.setdefault(id(inner), (
                            f"{name}/{inner.name}", f"{name}/{inner.name}: it is inside {name} ({class_label(op)}), "
                            "a layer that calls it itself, out of bnfreeze's sight"))
                steps.append(Step(len(steps), op, node, path, inputs, [(scope, id(t)) for t in node.outputs], bn))
        return [key(t) for t in function.outputs]

    input_keys = [((), id(x)) for x in graph.inputs]
    visit(graph, (), (), input_keys)
    for step in steps:
        if step.is_bn and id(step.bn) in kept:  # a BN one of its calls cannot measure keeps its statistics in all
            step.bn = None
    program = Program(steps, input_keys, opaque=opaque, kept=kept, label=label)
    for step in steps:
        if step.is_bn and step.node.arguments.kwargs.get("mask") is not None:
            rank = len(step.node.input_tensors[0].shape)
            if step.bn_axis(rank) != rank - 1:
                raise InputError(f"{label}: {step.name} receives a mask but normalizes axis {step.bn.axis} of a "
                                 f"rank-{rank} tensor, not the last: its masked statistics have no single count per "
                                 "channel")
        if step.is_bn:
            program.bn_layers[id(step.bn)] = step.bn
            program.bn_names.setdefault(id(step.bn), step.name)
            program.levels[id(step.bn)] = None
    if ordered:
        _assign_levels(program)
    return program


def _assign_levels(program: Program) -> None:
    """BN level = the largest stage among its calls' inputs (fixed point over shared BNs).

    A BN whose input depends on its own output (a nested model applied to its
    own result) has no level: exact recalibration of it would need an
    iteration, so it is refused with a reason.
    """
    levels: dict[int, int] = {layer_id: 0 for layer_id in program.bn_layers}
    for _ in range(len(levels) + 2):
        changed = False
        stage = {key: 0 for key in program.input_keys}
        for step in program.steps:
            s = max((stage[k] for k in step.keys_in()), default=0)
            if step.is_bn:
                if s > levels[id(step.bn)]:
                    levels[id(step.bn)] = s
                    changed = True
                step.stage = levels[id(step.bn)] + 1
            else:
                step.stage = s
            for key in step.outputs:
                stage[key] = step.stage
        if not changed:
            program.levels = levels
            return
    cyclic = sorted(program.bn_names[i] for i in levels)
    program.levels = {}
    raise InputError(
        f"{program.label}: a BatchNormalization layer reads its own output (a nested model applied to its own result; "
        f"among {', '.join(cyclic[:3])}): exact recalibration has no fixed order for it; use --mode precise"
    )


def run_steps(steps: list[Step], values: dict, bn_call=None) -> None:
    """Run ``steps`` in order on ``values`` (key -> tensor), adding their outputs.

    Every layer that takes ``training`` gets ``training=False``: Dropout and
    other training-only behaviour stay off. ``bn_call(step, x, mask)``, if given,
    replaces the call of every BN step; where it returns None, the layer runs
    as usual.
    """
    from keras import tree

    for step in steps:
        local = {tensor_id: values[key] for tensor_id, key in step.inputs.items()}
        args, kwargs = step.node.arguments.fill_in(local)
        outputs = bn_call(step, args[0], kwargs.get("mask")) if step.is_bn and bn_call is not None else None
        if outputs is None:
            if getattr(step.op, "_call_has_training_arg", False):
                kwargs["training"] = False
            outputs = step.op(*args, **kwargs)
        for key, value in zip(step.outputs, tree.flatten(outputs)):
            values[key] = value
