"""Facts about an exported ONNX graph: node counts and BN leftovers.

tf2onnx names ONNX nodes after the TensorFlow ops they come from, and those
carry the Keras layer names (``model/bn3_1/batchnorm/mul_1``). A node is
*BN-derived* when it is a ``BatchNormalization`` or an arithmetic node
(Mul, Add, Sub, Div, Sqrt, Reciprocal) whose name path contains a
BatchNormalization layer's name: the Mul+Add chains a converter leaves when
it cannot fuse a BN into the layer before it.
"""

from __future__ import annotations

import collections
import re

ARITHMETIC = {"Mul", "Add", "Sub", "Div", "Sqrt", "Reciprocal", "Rsqrt"}


def _segments(node_name: str) -> list[str]:
    return [re.sub(r"_\d+$", "", part) for part in node_name.split("/")]


def bn_derived_nodes(proto, bn_names) -> list[str]:
    """Names of the nodes that implement a BatchNormalization layer in ``proto``."""
    bn_names = set(bn_names)
    found = []
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization":
            found.append(node.name)
        elif node.op_type in ARITHMETIC and bn_names.intersection(_segments(node.name)):
            found.append(node.name)
    return found


def op_counts(proto) -> dict[str, int]:
    return dict(collections.Counter(node.op_type for node in proto.graph.node))


def unsupported_nodes(proto) -> list[tuple[str, str]]:
    """(op_type, name) of nodes that are not standard ONNX operators."""
    from bnfreeze.io.interrupts import import_native

    onnx = import_native("onnx")

    bad = []
    for node in proto.graph.node:
        domain = node.domain or ""
        if domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            bad.append((node.op_type, node.name))
        elif domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft"):
            bad.append((node.op_type, node.name))
    return bad


def layer_of(node_name: str, layer_names) -> str | None:
    """The Keras layer a tf2onnx node name points to, if any."""
    layer_names = set(layer_names)
    for segment in _segments(node_name):
        if segment in layer_names:
            return segment
    return None
