"""What a quantized artifact holds, read from the file itself: ops per type, ops left in float,
BN-derived quantized ops, the types of its weights and activations, its size.

Both formats are reduced to the same picture: a list of :class:`Op` over
named tensors, each tensor constant or not and float or not. An op
*computes in float* when it does arithmetic on float values:

* TFLite: any of its non-constant inputs or outputs is a float tensor;
  ``QUANTIZE``/``DEQUANTIZE`` are conversions, not computations.
* ONNX QDQ: ``QuantizeLinear``/``DequantizeLinear`` are the conversions; an
  op is quantized when every float value it reads comes out of a
  ``DequantizeLinear`` and everything it writes goes only into
  ``QuantizeLinear`` nodes (the QDQ contract: a runtime may run it in
  integers). An op whose outputs are not floats (``Shape``, integer ``Cast``)
  computes shapes, not values.

Ops that only move values (transpose, reshape, ...) are listed as such when
they run on floats: they lose no precision. Every float op also says where it
sits: at the float ``input`` of the graph (it reads only graph inputs through
float ops), at its float ``output``, or ``inside``, between quantized ops.

A *BN-derived* op is an arithmetic op (``MUL``/``ADD``/... or ONNX
``Mul``/``Add``/...) named after a BatchNormalization layer of the model that
was converted, or an ONNX ``BatchNormalization``: the quantized multiply and
add a converter leaves when it cannot fold a BN, each with its own rounding.
"""

from __future__ import annotations

import collections
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: Ops that move or select values without arithmetic (TFLite builtin names and ONNX op types).
DATA_MOVEMENT = {
    "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PACK", "UNPACK", "CONCATENATION", "GATHER", "SLICE",
    "STRIDED_SLICE", "SPLIT", "SPLIT_V", "PAD", "PADV2", "TILE", "BROADCAST_TO", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat", "Gather", "Slice", "Split",
    "Pad", "Tile", "Expand", "DepthToSpace", "SpaceToDepth",
}
#: Arithmetic ops that implement a BN when a converter leaves it unfolded.
BN_ARITHMETIC = {"MUL", "ADD", "SUB", "DIV", "RSQRT", "SQRT", "Mul", "Add", "Sub", "Div", "Sqrt", "Reciprocal", "Rsqrt"}
#: TFLite ops whose input 1 is a weight and input 2 a bias.
TFLITE_LINEAR = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D", "TRANSPOSE_CONV", "BATCH_MATMUL"}
ONNX_LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
QUANTIZED_TYPES = ("int8", "uint8", "int16", "int4", "uint4")


@dataclass
class Op:
    kind: str
    name: str
    #: float activation tensors (non-constant) read and written
    inputs: list[str]
    outputs: list[str]
    float_compute: bool = False
    conversion: bool = False


@dataclass
class FloatOp:
    """An op left in float: its type, name, the Keras layer it comes from, where it sits, what it does."""

    op: str
    name: str
    layer: str | None
    where: str  # "input", "output" or "inside"
    moves_only: bool  # only moves values (no arithmetic)

    def describe(self) -> str:
        origin = f"layer {self.layer}" if self.layer else self.name
        return f"{self.op} ({origin})"


@dataclass
class TensorIO:
    name: str
    dtype: str
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class ArtifactFacts:
    """The facts of one quantized artifact (``as_dict`` is its part of the report)."""

    kind: str
    bytes: int
    ops: dict[str, int]
    float_ops: list[FloatOp] = field(default_factory=list)
    bn_derived: list[str] = field(default_factory=list)
    #: constant weights of the linear ops (conv, dense, ...) by dtype, and their biases
    weights: dict[str, int] = field(default_factory=dict)
    biases: dict[str, int] = field(default_factory=dict)
    #: activation tensors by dtype (TFLite); quantized activations by dtype (ONNX: QuantizeLinear outputs)
    activations: dict[str, int] = field(default_factory=dict)
    per_channel_weights: int = 0
    per_tensor_weights: int = 0
    inputs: list[TensorIO] = field(default_factory=list)
    outputs: list[TensorIO] = field(default_factory=list)

    @property
    def float_compute(self) -> list[FloatOp]:
        """Float ops that do arithmetic (the ones that make a model not fully integer)."""
        return [op for op in self.float_ops if not op.moves_only]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["float_ops"] = [asdict(op) for op in self.float_ops]
        data["bn_derived_ops"] = len(self.bn_derived)
        return data


# -- names ------------------------------------------------------------------------------
def _segments(name: str) -> list[str]:
    """Name parts of a tensor or node name: fused TFLite names are joined by ';', scopes by '/'."""
    return [part for piece in name.split(";") for part in piece.split("/") if part]


def _matches(segment: str, names: set[str]) -> str | None:
    """The layer a name segment stands for: Keras traces layer ``x`` under the scope ``x_1``."""
    if segment in names:
        return segment
    stripped = re.sub(r"_\d+$", "", segment)
    return stripped if stripped in names else None


def layer_of(name: str, layer_names) -> str | None:
    """The Keras layer named in a converter's tensor or node name, preferring the innermost scope."""
    names = set(layer_names)
    found = None
    for segment in _segments(name):
        hit = _matches(segment, names)
        if hit is not None:
            found = hit
    return found


def is_bn_derived(kind: str, name: str, bn_names) -> bool:
    if kind == "BatchNormalization":
        return True
    names = set(bn_names)
    return kind in BN_ARITHMETIC and any(_matches(s, names) for s in _segments(name))


# -- where a float op sits ----------------------------------------------------------------
def _classify(ops: list[Op], graph_inputs: set[str], graph_outputs: set[str]) -> dict[int, str]:
    """``input``/``output``/``inside`` for every float-compute op (see the module doc).

    Walks float tensors only: an op is at the ``input`` when every float value
    it reads comes from a graph input through float ops alone, at the
    ``output`` when every float value it writes reaches only graph outputs
    (through float ops; ops that read a float only for its shape do not count).
    """
    producer = {t: i for i, op in enumerate(ops) for t in op.outputs}
    consumers: dict[str, list[int]] = collections.defaultdict(list)
    for i, op in enumerate(ops):
        for t in op.inputs:
            consumers[t].append(i)

    def from_inputs(i: int, seen: set[int]) -> bool:
        for t in ops[i].inputs:
            if t in graph_inputs:
                continue
            j = producer.get(t)
            if j is None or j in seen:
                continue
            if not ops[j].float_compute:
                return False
            seen.add(j)
            if not from_inputs(j, seen):
                return False
        return True

    def to_outputs(i: int, seen: set[int]) -> bool:
        for t in ops[i].outputs:
            for j in consumers.get(t, []):
                if j in seen:
                    continue
                if ops[j].conversion:
                    return False
                if not ops[j].float_compute:
                    continue  # reads the float only for its shape
                seen.add(j)
                if not to_outputs(j, seen):
                    return False
        return True

    where = {}
    for i, op in enumerate(ops):
        if not op.float_compute:
            continue
        if from_inputs(i, set()):
            where[i] = "input"
        elif to_outputs(i, set()):
            where[i] = "output"
        else:
            where[i] = "inside"
    return where


def _float_ops(ops, graph_inputs, graph_outputs, layer_names) -> list[FloatOp]:
    where = _classify(ops, graph_inputs, graph_outputs)
    return [FloatOp(ops[i].kind, ops[i].name, layer_of(ops[i].name, layer_names), where[i],
                    ops[i].kind in DATA_MOVEMENT) for i in sorted(where)]


# -- TFLite -------------------------------------------------------------------------------
def _list(values) -> list:
    """A flatbuffer object-API vector (None, a list or a NumPy array) as a list."""
    return [] if values is None else list(values)


def _enum_names(enum) -> dict[int, str]:
    return {value: key for key, value in vars(enum).items() if not key.startswith("_") and isinstance(value, int)}


def tflite_facts(content: bytes, *, bn_names=(), layer_names=()) -> ArtifactFacts:
    """Facts of a TFLite flatbuffer, read from its schema (no interpreter)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.python.schema_util import get_builtin_code_from_operator_code

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}
    codes = [op_names.get(get_builtin_code_from_operator_code(c), "CUSTOM") if c.customCode is None
             else c.customCode.decode() if isinstance(c.customCode, bytes) else str(c.customCode)
             for c in model.operatorCodes]
    buffers = _list(model.buffers)
    counts: collections.Counter = collections.Counter()
    ops: list[Op] = []
    weights: collections.Counter = collections.Counter()
    biases: collections.Counter = collections.Counter()
    activations: collections.Counter = collections.Counter()
    per_channel = per_tensor = 0
    bn_derived = []
    inputs, outputs = [], []
    graph_inputs: set[str] = set()
    graph_outputs: set[str] = set()
    for g, subgraph in enumerate(_list(model.subgraphs)):
        tensors = _list(subgraph.tensors)

        def constant(index: int) -> bool:
            buffer = buffers[tensors[index].buffer] if tensors[index].buffer < len(buffers) else None
            return buffer is not None and (buffer.data is not None and len(buffer.data) > 0 or buffer.size > 0)

        def dtype(index: int) -> str:
            return type_names.get(tensors[index].type, str(tensors[index].type))

        def key(index: int) -> str:
            return f"{g}:{index}"

        def scaled(index: int) -> bool:
            q = tensors[index].quantization
            return q is not None and q.scale is not None and len(q.scale) > 0 and bool(np.any(q.scale))

        active = set(_list(subgraph.inputs))
        for operator in _list(subgraph.operators):
            active.update(i for i in operator.outputs if i >= 0)
        for index in active:
            activations[dtype(index)] += 1
        if g == 0:
            for index in _list(subgraph.inputs):
                inputs.append(_tflite_io(tensors[index], dtype(index)))
            for index in _list(subgraph.outputs):
                outputs.append(_tflite_io(tensors[index], dtype(index)))
        graph_inputs |= {key(i) for i in _list(subgraph.inputs)}
        graph_outputs |= {key(i) for i in _list(subgraph.outputs)}
        for operator in _list(subgraph.operators):
            kind = codes[operator.opcodeIndex]
            counts[kind] += 1
            ins = [i for i in _list(operator.inputs) if i >= 0]
            outs = [i for i in _list(operator.outputs) if i >= 0]
            name = tensors[outs[0]].name.decode() if outs and tensors[outs[0]].name else kind
            live = [i for i in ins if not constant(i)] + outs
            conversion = kind in ("QUANTIZE", "DEQUANTIZE")
            floating = not conversion and any(dtype(i) in ("float32", "float16", "float64") for i in live)
            floats = {i for i in live if dtype(i) in ("float32", "float16", "float64")}
            ops.append(Op(kind, name, [key(i) for i in ins if i in floats and not constant(i)],
                          [key(i) for i in outs if i in floats], floating, conversion))
            if is_bn_derived(kind, name, bn_names):
                bn_derived.append(name)
            if kind in TFLITE_LINEAR:
                for position, index in enumerate(_list(operator.inputs)):
                    if index < 0 or not constant(index):
                        continue
                    if position == 1:
                        weights[dtype(index)] += 1
                        if scaled(index):
                            if len(tensors[index].quantization.scale) > 1:
                                per_channel += 1
                            else:
                                per_tensor += 1
                    elif position == 2:
                        biases[dtype(index)] += 1
    return ArtifactFacts(
        kind="tflite", bytes=len(content), ops=dict(counts),
        float_ops=_float_ops(ops, graph_inputs, graph_outputs, layer_names), bn_derived=bn_derived,
        weights=dict(weights), biases=dict(biases), activations=dict(activations),
        per_channel_weights=per_channel, per_tensor_weights=per_tensor, inputs=inputs, outputs=outputs,
    )


def _tflite_io(tensor, dtype: str) -> TensorIO:
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    q = tensor.quantization
    if dtype in QUANTIZED_TYPES and q is not None and q.scale is not None and len(q.scale):
        return TensorIO(name, dtype, float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None else 0)
    return TensorIO(name, dtype)


# -- ONNX ---------------------------------------------------------------------------------
_ONNX_FLOAT = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}


def onnx_facts(proto, *, size: int | None = None, bn_names=(), layer_names=()) -> ArtifactFacts:
    """Facts of an ONNX QDQ graph (``proto`` an ``onnx.ModelProto``)."""
    from bnfreeze.io.interrupts import import_native

    onnx = import_native("onnx")
    graph = proto.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # a graph shape inference cannot read: judge by names alone
        inferred = graph
    elem = {}
    for value in [*inferred.value_info, *inferred.input, *inferred.output]:
        if value.type.HasField("tensor_type"):
            elem[value.name] = value.type.tensor_type.elem_type
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    initializers[node.output[0]] = attribute.t
    for name, init in initializers.items():
        elem.setdefault(name, init.data_type)
    type_name = {v: k.lower() for k, v in onnx.TensorProto.DataType.items()}

    def dtype_of(name: str) -> str:
        code = elem.get(name)
        if code is None:
            return "unknown"
        return {"float": "float32", "double": "float64"}.get(type_name.get(code, str(code)), type_name.get(code, str(code)))

    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                consumers[name].append(node)
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input if i.name not in initializers}

    def is_float(name: str) -> bool:
        return dtype_of(name) in ("float32", "float16", "float64", "bfloat16")

    counts: collections.Counter = collections.Counter()
    ops: list[Op] = []
    bn_derived = []
    weights: collections.Counter = collections.Counter()
    biases: collections.Counter = collections.Counter()
    activations: collections.Counter = collections.Counter()
    per_channel = per_tensor = 0
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        counts[node.op_type] += 1
        live_in = [n for n in node.input if n and n not in initializers]
        outs = [n for n in node.output if n]
        conversion = node.op_type in ("QuantizeLinear", "DequantizeLinear")
        if node.op_type == "QuantizeLinear" and outs:
            activations[dtype_of(outs[0])] += 1
        floating = False
        if not conversion and any(is_float(o) for o in outs):
            reads_dequantized = all(
                not is_float(n) or (producer.get(n) is not None and producer[n].op_type == "DequantizeLinear")
                for n in node.input if n)
            writes_quantized = all(
                not is_float(o) or (o not in graph_outputs and consumers.get(o)
                                    and all(c.op_type == "QuantizeLinear" for c in consumers[o]))
                for o in outs)
            floating = not (reads_dequantized and writes_quantized)
        ops.append(Op(node.op_type, node.name or (outs[0] if outs else node.op_type),
                      [n for n in live_in if is_float(n)], [o for o in outs if is_float(o)], floating, conversion))
        if is_bn_derived(node.op_type, node.name, bn_names):
            bn_derived.append(node.name)
        if node.op_type in ONNX_LINEAR:
            for position, name in enumerate(node.input):
                if position not in (1, 2) or not name:
                    continue
                source = producer.get(name)
                if source is not None and source.op_type == "DequantizeLinear":
                    stored = source.input[0]
                    if stored not in initializers:
                        continue
                    (weights if position == 1 else biases)[dtype_of(stored)] += 1
                    if position == 1:
                        scale = initializers.get(source.input[1]) if len(source.input) > 1 else None
                        count = int(np.prod(scale.dims)) if scale is not None and len(scale.dims) else 1
                        if count > 1:
                            per_channel += 1
                        else:
                            per_tensor += 1
                elif name in initializers:
                    (weights if position == 1 else biases)[dtype_of(name)] += 1
    inputs = [TensorIO(i.name, dtype_of(i.name)) for i in graph.input if i.name not in initializers]
    outputs = [TensorIO(o.name, dtype_of(o.name)) for o in graph.output]
    return ArtifactFacts(
        kind="onnx", bytes=size if size is not None else proto.ByteSize(), ops=dict(counts),
        float_ops=_float_ops(ops, graph_inputs, graph_outputs, layer_names), bn_derived=bn_derived,
        weights=dict(weights), biases=dict(biases), activations=dict(activations),
        per_channel_weights=per_channel, per_tensor_weights=per_tensor, inputs=inputs, outputs=outputs,
    )


def file_facts(path, kind: str, *, bn_names=(), layer_names=()) -> ArtifactFacts:
    """:func:`tflite_facts` or :func:`onnx_facts` of the file at ``path``."""
    path = Path(path)
    if kind == "tflite":
        return tflite_facts(path.read_bytes(), bn_names=bn_names, layer_names=layer_names)
    from bnfreeze.io.interrupts import import_native

    onnx = import_native("onnx")
    return onnx_facts(onnx.load(str(path)), size=path.stat().st_size, bn_names=bn_names, layer_names=layer_names)
