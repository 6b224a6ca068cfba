"""Reading a ``.tflite`` flatbuffer through before the TFLite runtime sees it.

The TFLite interpreter trusts the file: a truncated or bit-flipped model
makes it read past the end of the buffer or index tensors that are not
there, and the process dies with a segmentation fault (exit 139, no
message). So every offset, vector length and index of the file is walked
here, in Python (TensorFlow's generated schema reader, which raises where
C++ would crash), and a file that does not hold together is bad input with
one line. Weights whose bits flipped still load; ``verify`` then reports how
far they are off.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from bnfreeze.errors import InputError

#: Dimensions a tensor shape may have; far more than any real model uses.
_MAX_RANK = 16


def check_flatbuffer(path) -> None:
    """Raise :class:`InputError` naming ``path`` unless it is a structurally sound TFLite model."""
    path = Path(path)
    data = path.read_bytes()
    try:
        _walk(data)
    except _Damaged as exc:
        raise InputError(f"{path}: not a usable TFLite model ({exc}); the file is truncated or damaged") from None
    except (struct.error, IndexError, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise InputError(f"{path}: not a usable TFLite model (its flatbuffer cannot be read: "
                         f"{type(exc).__name__}); the file is truncated or damaged") from None


class _Damaged(Exception):
    pass


def _count(value: int, limit: int, what: str) -> int:
    if not 0 <= value <= limit:
        raise _Damaged(f"{what} {value} is impossible in a file of {limit} bytes")
    return value


def _indices(values, length: int, low: int, high: int, what: str) -> None:
    if length == 0:
        return
    array = np.asarray(values)
    if array.size != length or (array.size and (array.min() < low or array.max() >= high)):
        raise _Damaged(f"{what} points outside its table")


def _walk(data: bytes) -> None:
    from tensorflow.lite.python import schema_py_generated as schema

    size = len(data)
    if size < 16 or data[4:8] != b"TFL3":
        raise _Damaged("no TFL3 identifier")
    model = schema.Model.GetRootAs(data, 0)
    buffers = _count(model.BuffersLength(), size, "buffer count")
    codes = _count(model.OperatorCodesLength(), size, "operator code count")
    subgraphs = _count(model.SubgraphsLength(), size, "subgraph count")
    if subgraphs == 0:
        raise _Damaged("no subgraph")
    for index in range(buffers):
        buffer = model.Buffers(index)
        if buffer is None:
            raise _Damaged(f"buffer {index} is missing")
        if _count(buffer.DataLength(), size, f"buffer {index}'s length"):
            buffer.DataAsNumpy()  # raises where the bytes run past the end of the file
        offset, length = buffer.Offset(), buffer.Size()
        if offset > 1 and (offset + length > size):
            raise _Damaged(f"buffer {index} lies beyond the end of the file")
    for index in range(codes):
        code = model.OperatorCodes(index)
        if code is None:
            raise _Damaged(f"operator code {index} is missing")
        code.BuiltinCode(), code.DeprecatedBuiltinCode(), code.Version()
        _string(code, 6, size, f"operator code {index}'s custom name")
    for index in range(subgraphs):
        graph = model.Subgraphs(index)
        if graph is None:
            raise _Damaged(f"subgraph {index} is missing")
        _string(graph, 12, size, f"subgraph {index}'s name")
        tensors = _count(graph.TensorsLength(), size, "tensor count")
        operators = _count(graph.OperatorsLength(), size, "operator count")
        for t in range(tensors):
            tensor = graph.Tensors(t)
            if tensor is None:
                raise _Damaged(f"tensor {t} is missing")
            tensor.Type()
            _string(tensor, 10, size, f"tensor {t}'s name")
            if not 0 <= tensor.Buffer() < max(buffers, 1):
                raise _Damaged(f"tensor {t} names buffer {tensor.Buffer()} of {buffers}")
            rank = tensor.ShapeLength()
            if rank > _MAX_RANK or tensor.ShapeSignatureLength() > _MAX_RANK:
                raise _Damaged(f"tensor {t} has rank {rank}")
            if rank:
                shape = np.asarray(tensor.ShapeAsNumpy(), dtype=np.int64)
                if np.any(shape < -1) or np.prod(np.maximum(shape, 1), dtype=np.float64) > 2.0**40:
                    raise _Damaged(f"tensor {t} has shape {shape.tolist()}")
            if tensor.ShapeSignatureLength():
                tensor.ShapeSignatureAsNumpy()
            _quantization(tensor, t, rank, size)
            _buffer_fits(model, tensor, t, size)
        for o in range(operators):
            operator = graph.Operators(o)
            if operator is None:
                raise _Damaged(f"operator {o} is missing")
            if not 0 <= operator.OpcodeIndex() < codes:
                raise _Damaged(f"operator {o} names operator code {operator.OpcodeIndex()} of {codes}")
            _indices(operator.InputsAsNumpy(), operator.InputsLength(), -1, tensors, f"operator {o}'s inputs")
            _indices(operator.OutputsAsNumpy(), operator.OutputsLength(), 0, tensors, f"operator {o}'s outputs")
            _indices(operator.IntermediatesAsNumpy(), operator.IntermediatesLength(), 0, tensors,
                     f"operator {o}'s intermediates")
            _count(operator.CustomOptionsLength(), size, f"operator {o}'s custom options")
            _count(operator.MutatingVariableInputsLength(), size, f"operator {o}'s variable inputs")
            if not 0 <= operator.BuiltinOptionsType() < 256:
                raise _Damaged(f"operator {o} has options of type {operator.BuiltinOptionsType()}")
            if operator.BuiltinOptionsType():
                table = operator.BuiltinOptions()
                if table is None or not 0 <= table.Pos < size:
                    raise _Damaged(f"operator {o}'s options lie outside the file")
                _table_fields(table, size, f"operator {o}'s options")
        _indices(graph.InputsAsNumpy(), graph.InputsLength(), 0, tensors, f"subgraph {index}'s inputs")
        _indices(graph.OutputsAsNumpy(), graph.OutputsLength(), 0, tensors, f"subgraph {index}'s outputs")
    for index in range(_count(model.SignatureDefsLength(), size, "signature count")):
        signature = model.SignatureDefs(index)
        if signature is None:
            raise _Damaged(f"signature {index} is missing")
        _string(signature, 8, size, f"signature {index}'s key")
        sub = signature.SubgraphIndex()
        if not 0 <= sub < subgraphs:
            raise _Damaged(f"signature {index} names subgraph {sub} of {subgraphs}")
        limit = model.Subgraphs(sub).TensorsLength()
        for count, entry in ((signature.InputsLength(), signature.Inputs), (signature.OutputsLength(), signature.Outputs)):
            for i in range(_count(count, size, "signature tensor count")):
                item = entry(i)
                if item is None or not 0 <= item.TensorIndex() < limit:
                    raise _Damaged(f"signature {index} names a tensor outside its subgraph")
                _string(item, 4, size, f"signature {index}'s tensor name")
    for index in range(_count(model.MetadataLength(), size, "metadata count")):
        entry = model.Metadata(index)
        if entry is None or not 0 <= entry.Buffer() < max(buffers, 1):
            raise _Damaged(f"metadata {index} names a buffer outside the table")
        _string(entry, 4, size, f"metadata {index}'s name")


def _string(table, slot: int, size: int, what: str) -> None:
    """A string field (vtable ``slot`` of the generated schema) lies inside the file, NUL included.

    Python's flatbuffers reader slices the bytes and so quietly shortens a
    string whose length runs past the end; the interpreter's C++ reads on.
    """
    import flatbuffers.number_types as N

    tab = table._tab
    field = tab.Offset(slot)
    if not field:
        return
    where = tab.Pos + field
    if where + 4 > size:
        raise _Damaged(f"{what} lies outside the file")
    start = where + tab.Get(N.UOffsetTFlags, where)
    if not 0 <= start <= size - 4:
        raise _Damaged(f"{what} lies outside the file")
    length = tab.Get(N.UOffsetTFlags, start)
    if start + 4 + length >= size:
        raise _Damaged(f"{what} runs past the end of the file")


def _table_fields(table, size: int, what: str) -> None:
    """Every field offset of a flatbuffer table stays inside the file."""
    import flatbuffers.number_types as N

    vtable = table.Pos - table.Get(N.SOffsetTFlags, table.Pos)
    if not 0 <= vtable < size - 4:
        raise _Damaged(f"{what}: field table outside the file")
    vsize = table.Get(N.VOffsetTFlags, vtable)
    if vsize < 4 or vtable + vsize > size:
        raise _Damaged(f"{what}: field table of {vsize} bytes")
    for slot in range(4, vsize, 2):
        offset = table.Get(N.VOffsetTFlags, vtable + slot)
        if offset and table.Pos + offset + 4 > size:
            raise _Damaged(f"{what}: a field lies outside the file")


def _quantization(tensor, t: int, rank: int, size: int) -> None:
    quantization = tensor.Quantization()
    if quantization is None:
        return
    for length in (quantization.ScaleLength(), quantization.ZeroPointLength(), quantization.MinLength(),
                   quantization.MaxLength()):
        _count(length, size, f"tensor {t}'s quantization length")
    if quantization.ScaleLength():
        quantization.ScaleAsNumpy()
    if quantization.ZeroPointLength():
        quantization.ZeroPointAsNumpy()
        if quantization.ZeroPointLength() != quantization.ScaleLength():
            raise _Damaged(f"tensor {t} has {quantization.ZeroPointLength()} zero points for "
                           f"{quantization.ScaleLength()} scales")
    if quantization.ScaleLength() > 1 and not 0 <= quantization.QuantizedDimension() < max(rank, 1):
        raise _Damaged(f"tensor {t} is quantized along axis {quantization.QuantizedDimension()} of {rank}")


_ITEM_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 14: 4, 15: 8, 16: 4}


def _buffer_fits(model, tensor, t: int, size: int) -> None:
    """A constant tensor's data has exactly the bytes its shape and type need."""
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return
    length = buffer.DataLength() or (buffer.Size() if buffer.Offset() > 1 else 0)
    item = _ITEM_BYTES.get(tensor.Type())
    if not length or item is None or tensor.Sparsity() is not None:
        return
    shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else np.zeros(0, np.int64)
    if np.any(np.asarray(shape) < 0):
        return
    needed = int(np.prod(shape, dtype=np.int64)) * item
    if needed != length:
        raise _Damaged(f"tensor {t} holds {length} bytes for a shape that needs {needed}")
