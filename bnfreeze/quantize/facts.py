"""What a quantized artifact holds, read from the file itself: ops per type, ops left in float,
BN-derived quantized ops, the types of its weights and activations, its size.

Both formats are reduced to the same picture: a list of :class:`Op` over
named tensors, each tensor constant or not and float or not. An op
*computes in float* when it does arithmetic on float values:

* TFLite: any of its non-constant inputs or outputs is a float tensor;
  ``QUANTIZE``/``DEQUANTIZE`` are conversions, not computations.
* ONNX QDQ: a QDQ file puts *every* op between ``DequantizeLinear`` and
  ``QuantizeLinear``; which of them really run in integers is the runtime's
  choice. So the float ops of an ONNX file are read from the graph
  onnxruntime itself runs (CPU provider, ``ORT_ENABLE_ALL``, saved with
  ``optimized_model_filepath``): there a quantized op has become an integer
  kernel (``QLinearConv``, ``QGemm``, ``QLinearSoftmax``, ...) and an op that
  writes float values between a ``DequantizeLinear`` and a ``QuantizeLinear``
  runs in float. Ops whose outputs are not floats (``Shape``, integer
  ``Cast``) compute shapes, not values.

Ops that do no rounding arithmetic — moving values (transpose, reshape, ...)
or selecting one (max pooling) — are listed as *exact* when they run on
floats: requantized with the scale they read, they lose nothing. Every float op also says where it
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

#: Ops that move or select values without rounding arithmetic (TFLite builtin names and ONNX op types).
EXACT = {
    "MAX_POOL_2D", "REDUCE_MAX", "MaxPool", "GlobalMaxPool", "ReduceMax", "ReorderInput", "ReorderOutput",
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
    exact: bool  # moves or selects values, no rounding arithmetic

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
        return [op for op in self.float_ops if not op.exact]

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
                    ops[i].kind in EXACT) for i in sorted(where)]


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
_FLOAT_CODES = {1, 10, 11, 16}  # float, float16, double, bfloat16


class _OnnxGraph:
    """Element types, producers and consumers of an ONNX graph's tensors."""

    def __init__(self, proto):
        from bnfreeze.io.interrupts import import_native

        onnx = import_native("onnx")
        self.graph = graph = proto.graph
        try:
            inferred = onnx.shape_inference.infer_shapes(proto).graph
        except Exception:  # a graph shape inference cannot read: judge by what the graph declares
            inferred = graph
        self.elem = {}
        for value in [*inferred.value_info, *inferred.input, *inferred.output]:
            if value.type.HasField("tensor_type"):
                self.elem[value.name] = value.type.tensor_type.elem_type
        self.initializers = {init.name: init for init in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attribute in node.attribute:
                    if attribute.name == "value":
                        self.initializers[node.output[0]] = attribute.t
        for name, init in self.initializers.items():
            self.elem.setdefault(name, init.data_type)
        for node in graph.node:  # outputs shape inference could not type (onnxruntime's own domains)
            floats = any(self.elem.get(n) in _FLOAT_CODES for n in node.input if n and n not in self.initializers)
            for out in node.output:
                if out and out not in self.elem and node.op_type != "QuantizeLinear":
                    if node.op_type == "DequantizeLinear" or floats:
                        self.elem[out] = 1
        self.type_name = {v: k.lower() for k, v in onnx.TensorProto.DataType.items()}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = collections.defaultdict(list)
        for node in graph.node:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}
        self.inputs = {i.name for i in graph.input if i.name not in self.initializers}

    def dtype(self, name: str) -> str:
        code = self.elem.get(name)
        if code is None:
            return "unknown"
        text = self.type_name.get(code, str(code))
        return {"float": "float32", "double": "float64"}.get(text, text)

    def is_float(self, name: str) -> bool:
        return self.dtype(name) in ("float32", "float16", "float64", "bfloat16")

    def ops(self, *, qdq_contract: bool) -> list[Op]:
        """The graph as :class:`Op` s. ``qdq_contract``: an op between DequantizeLinear and QuantizeLinear counts
        as quantized (a QDQ file's promise); otherwise any op writing floats computes in float (a runtime graph)."""
        ops = []
        for node in self.graph.node:
            if node.op_type == "Constant":
                continue
            outs = [n for n in node.output if n]
            conversion = node.op_type in ("QuantizeLinear", "DequantizeLinear")
            floating = not conversion and any(self.is_float(o) for o in outs)
            if floating and qdq_contract:
                reads_dequantized = all(
                    not self.is_float(n) or n in self.initializers
                    or (n in self.producer and self.producer[n].op_type == "DequantizeLinear")
                    for n in node.input if n)
                writes_quantized = all(
                    not self.is_float(o) or (o not in self.outputs and self.consumers.get(o)
                                             and all(c.op_type == "QuantizeLinear" for c in self.consumers[o]))
                    for o in outs)
                floating = not (reads_dequantized and writes_quantized)
            live = [n for n in node.input if n and n not in self.initializers and self.is_float(n)]
            ops.append(Op(node.op_type, node.name or (outs[0] if outs else node.op_type), live,
                          [o for o in outs if self.is_float(o)], floating, conversion))
        return ops


def onnx_facts(proto, *, runtime=None, size: int | None = None, bn_names=(), layer_names=()) -> ArtifactFacts:
    """Facts of an ONNX QDQ graph (``proto`` an ``onnx.ModelProto``).

    ``runtime``: the graph onnxruntime runs for it (:func:`runtime_graph`);
    the float ops are read from it when given, else from the QDQ contract.
    """
    file = _OnnxGraph(proto)
    counts: collections.Counter = collections.Counter()
    bn_derived = []
    weights: collections.Counter = collections.Counter()
    biases: collections.Counter = collections.Counter()
    activations: collections.Counter = collections.Counter()
    per_channel = per_tensor = 0
    for node in file.graph.node:
        if node.op_type == "Constant":
            continue
        counts[node.op_type] += 1
        if node.op_type == "QuantizeLinear" and node.output:
            activations[file.dtype(node.output[0])] += 1
        if is_bn_derived(node.op_type, node.name, bn_names):
            bn_derived.append(node.name)
        if node.op_type not in ONNX_LINEAR:
            continue
        for position, name in enumerate(node.input):
            if position not in (1, 2) or not name:
                continue
            source = file.producer.get(name)
            if source is not None and source.op_type == "DequantizeLinear":
                stored = source.input[0]
                if stored not in file.initializers:
                    continue
                (weights if position == 1 else biases)[file.dtype(stored)] += 1
                if position == 1:
                    scale = file.initializers.get(source.input[1]) if len(source.input) > 1 else None
                    count = int(np.prod(scale.dims)) if scale is not None and len(scale.dims) else 1
                    if count > 1:
                        per_channel += 1
                    else:
                        per_tensor += 1
            elif name in file.initializers:
                (weights if position == 1 else biases)[file.dtype(name)] += 1
    ran = _OnnxGraph(runtime) if runtime is not None else file
    float_ops = _float_ops(ran.ops(qdq_contract=runtime is None), ran.inputs, ran.outputs, layer_names)
    inputs = [TensorIO(i.name, file.dtype(i.name)) for i in file.graph.input if i.name not in file.initializers]
    outputs = [TensorIO(o.name, file.dtype(o.name)) for o in file.graph.output]
    return ArtifactFacts(
        kind="onnx", bytes=size if size is not None else proto.ByteSize(), ops=dict(counts), float_ops=float_ops,
        bn_derived=bn_derived, weights=dict(weights), biases=dict(biases), activations=dict(activations),
        per_channel_weights=per_channel, per_tensor_weights=per_tensor, inputs=inputs, outputs=outputs,
    )


def runtime_graph(path):
    """The graph onnxruntime's CPU provider runs for the ONNX file at ``path`` (``ORT_ENABLE_ALL``, the default)."""
    import tempfile

    from bnfreeze.io.interrupts import import_native

    ort = import_native("onnxruntime")
    onnx = import_native("onnx")
    with tempfile.TemporaryDirectory(prefix="bnfreeze-ort-") as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        options.log_severity_level = 3  # its warning that the saved graph is specific to this machine
        ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        return onnx.load(str(Path(folder) / "optimized.onnx"))


def file_facts(path, kind: str, *, bn_names=(), layer_names=()) -> ArtifactFacts:
    """:func:`tflite_facts` or :func:`onnx_facts` (float ops as onnxruntime runs it) of the file at ``path``."""
    path = Path(path)
    if kind == "tflite":
        return tflite_facts(path.read_bytes(), bn_names=bn_names, layer_names=layer_names)
    from bnfreeze.io.interrupts import import_native

    onnx = import_native("onnx")
    return onnx_facts(onnx.load(str(path)), runtime=runtime_graph(path), size=path.stat().st_size,
                      bn_names=bn_names, layer_names=layer_names)
