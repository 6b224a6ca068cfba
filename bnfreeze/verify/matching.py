"""Which candidate input or output corresponds to which of the reference's.

Converters name the same tensor differently: Keras names (``probs``), signature
keys (``output_0``), TFLite tensor names (``serving_default_digits:0``,
``StatefulPartitionedCall:1``, ``Identity_1``), ONNX names. The rules, in
order, never pairing two tensors by guess:

1. an explicit map (``--input-map`` / ``--output-map ref=cand,...``);
2. the same name;
3. the same name once the forms that only decorate it are removed: a ``:0``
   suffix (tensor 0 of an op) and a ``serving_default_`` prefix, where that
   leaves the names on each side distinct;
4. positional names: when one side names its tensors ``output_0``,
   ``output_1``, ... (Keras's ``model.export``, ``tf.saved_model`` functions:
   the name *is* the position in the model) and both sides have as many,
   ``output_i`` is the other side's i-th — only where the other side lists
   its tensors in the model's order (not a TFLite file without a signature,
   whose converter may reorder its outputs);
5. when both sides have the same count: the one left on each side, or, where
   several are left, pairs whose shapes single each other out (each left on
   one side agrees in shape with exactly one left on the other).

Anything still unpaired is ambiguous (two outputs of one shape whose names do
not agree): :class:`~bnfreeze.errors.InputError` with one line listing both
sides and the map option that settles it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bnfreeze.errors import InputError
from bnfreeze.io.signature import TensorSpec

_POSITIONAL = re.compile(r"^output_(\d+)$")


def canonical(name: str) -> str:
    """``name`` without the decorations that do not change which tensor it is."""
    if name.endswith(":0"):
        name = name[:-2]
    if name.startswith("serving_default_"):
        name = name[len("serving_default_"):]
    return name


def parse_map(value, option: str) -> dict[str, str]:
    """``"ref=cand,ref2=cand2"`` (or a dict) as ``{ref: cand}``; malformed text is bad input."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise InputError(f"{option}: {part!r} is not REF=CAND (expected ref=cand,ref2=cand2)")
            ref, cand = part.split("=", 1)
            items.append((ref.strip(), cand.strip()))
    mapping: dict[str, str] = {}
    for ref, cand in items:
        if not isinstance(ref, str) or not isinstance(cand, str) or not ref or not cand:
            raise InputError(f"{option}: every entry needs a reference name and a candidate name (ref=cand)")
        if ref in mapping:
            raise InputError(f"{option}: {ref} is mapped twice")
        mapping[ref] = cand
    if len(set(mapping.values())) != len(mapping):
        raise InputError(f"{option}: two reference names are mapped to the same candidate name")
    return mapping


def shape_text(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def describe(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {shape_text(s.shape)}" for s in specs) or "none"


def shapes_agree(a: TensorSpec, b: TensorSpec) -> bool:
    """Same rank and the same size wherever both know it (the batch dimension is free)."""
    if len(a.shape) != len(b.shape):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a.shape[1:], b.shape[1:]))


def find(specs: list[TensorSpec], name: str) -> TensorSpec | None:
    """The spec called ``name``, or the only one whose canonical name is ``canonical(name)``."""
    for spec in specs:
        if spec.name == name:
            return spec
    same = [s for s in specs if canonical(s.name) == canonical(name)]
    return same[0] if len(same) == 1 else None


def _positions(specs: list[TensorSpec]) -> dict[int, TensorSpec] | None:
    """``{i: spec}`` when the names are exactly ``output_0`` ... ``output_{n-1}`` (in any order), else None."""
    found = {}
    for spec in specs:
        m = _POSITIONAL.match(spec.name)
        if not m:
            return None
        found[int(m.group(1))] = spec
    return found if specs and sorted(found) == list(range(len(specs))) else None


@dataclass(frozen=True)
class Pair:
    reference: TensorSpec
    candidate: TensorSpec
    #: how they were paired: "map", "name", "canonical name", "position", "shape"
    how: str


def match(
    kind: str,
    reference: list[TensorSpec],
    candidate: list[TensorSpec],
    explicit: dict[str, str] | None = None,
    *,
    reference_label: str = "the reference",
    candidate_label: str = "the candidate",
    option: str | None = None,
    reference_ordered: bool = True,
    candidate_ordered: bool = True,
) -> list[Pair]:
    """Pair every reference ``kind`` ("input"/"output") with a candidate's; see the module doc.

    ``explicit`` entries whose candidate name this candidate does not have
    are left for the caller to judge (a map may serve several candidates).
    Extra candidate outputs are allowed once every reference output is
    paired; inputs must pair up completely. ``*_ordered`` say whether a side
    lists its tensors in the model's order (rule 4).
    """
    option = option or f"--{kind}-map"
    pairs: list[Pair] = []
    refs, cands = list(reference), list(candidate)

    def take(ref, cand, how):
        pairs.append(Pair(ref, cand, how))
        refs.remove(ref)
        cands.remove(cand)

    unmatched_map = []
    for ref_name, cand_name in (explicit or {}).items():
        ref = find(reference, ref_name)
        if ref is None:
            raise InputError(f"{reference_label}: {option} names {ref_name}, but the reference has no {kind} of that "
                             f"name (it has {describe(reference)})")
        cand = find(candidate, cand_name)
        if cand is None:
            unmatched_map.append(cand_name)
        if cand is None or ref not in refs or cand not in cands:
            continue
        take(ref, cand, "map")
    for ref in list(refs):
        cand = next((c for c in cands if c.name == ref.name), None)
        if cand is not None:
            take(ref, cand, "name")
    ref_keys = [canonical(s.name) for s in refs]
    cand_keys = {canonical(s.name): s for s in cands}
    if len(set(ref_keys)) == len(ref_keys) and len(cand_keys) == len(cands):
        for ref, key in zip(list(refs), ref_keys):
            if key in cand_keys:
                take(ref, cand_keys[key], "canonical name")
    same_count = len(reference) == len(candidate)
    if same_count and refs:
        ref_positions, cand_positions = _positions(reference), _positions(candidate)
        if cand_positions is not None and ref_positions is None and reference_ordered:
            by_position = [(ref, cand_positions[i]) for i, ref in enumerate(reference)]
        elif ref_positions is not None and cand_positions is None and candidate_ordered:
            by_position = [(ref_positions[i], cand) for i, cand in enumerate(candidate)]
        else:
            by_position = []
        for ref, cand in by_position:
            if ref in refs and cand in cands:
                take(ref, cand, "position")
    if same_count and len(refs) == 1 and len(cands) == 1:
        take(refs[0], cands[0], "position")
    if same_count and len(refs) > 1 and len(refs) == len(cands):
        agree = {id(r): [c for c in cands if shapes_agree(r, c)] for r in refs}
        agree_back = {id(c): [r for r in refs if shapes_agree(r, c)] for c in cands}
        if all(len(v) == 1 for v in agree.values()) and all(len(v) == 1 for v in agree_back.values()):
            for ref in list(refs):
                take(ref, agree[id(ref)][0], "shape")
    if refs or (kind == "input" and cands):
        if not same_count and kind == "input":
            raise InputError(f"{candidate_label}: has {len(candidate)} inputs, the reference has {len(reference)} "
                             f"({describe(reference)})")
        if not same_count:
            why = "the counts differ"
        elif any(sum(shapes_agree(r, c) for c in cands) > 1 for r in refs):
            why = "several have one shape"
        else:
            why = "the shapes do not agree"
        raise InputError(
            f"{candidate_label}: cannot tell which {kind}s correspond to the reference's (names differ and "
            f"{why}): reference {reference_label} has "
            f"{describe(reference)}; candidate has {describe(candidate)}; pass {option} REF=CAND,... to pair them"
            + (f" ({option} names {', '.join(unmatched_map)}, which this candidate does not have)" if unmatched_map else "")
        )
    order = {id(s): i for i, s in enumerate(reference)}
    return sorted(pairs, key=lambda p: order[id(p.reference)])
