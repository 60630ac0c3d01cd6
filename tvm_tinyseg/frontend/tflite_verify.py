"""Verify a .tflite flatbuffer before anything reads it.

The generated ``tflite`` accessors trust every offset and length in the file: a flipped byte makes
them raise anything from ``struct.error`` to ``UnicodeDecodeError`` deep inside TVM's frontend, or
read garbage silently (Python's negative indexing). The flatbuffers Python package has no verifier,
so this module checks, like the C++ ``flatbuffers::Verifier``, that every table, vtable, vector and
string the compiler or TVM's frontend reads lies inside the file, then checks that the model's
indices (opcodes, tensors, buffers), shapes, constant data sizes and quantization parameters agree.
Any violation is a one-line :class:`ModelFileError` naming the broken part.
"""
import struct

import numpy as np

from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError

# Bytes per element of the TensorType enum values (schema.fbs); other types are named but not sized.
TENSOR_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}
MAX_TENSOR_BYTES = (1 << 31) - 1  # generated kernels index tensors with int32
MAX_RANK = 8

# Field slots (declaration order in schema.fbs) of the tables read here.
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 1, 2, 4
OPCODE_DEPRECATED_BUILTIN, OPCODE_CUSTOM_CODE, OPCODE_BUILTIN = 0, 1, 3
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS, SUBGRAPH_NAME = 0, 1, 2, 3, 4
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER, TENSOR_NAME, TENSOR_QUANT, TENSOR_SIGNATURE = 0, 1, 2, 3, 4, 7
QUANT_MIN, QUANT_MAX, QUANT_SCALE, QUANT_ZERO_POINT, QUANT_DIMENSION = 0, 1, 2, 3, 6
OP_OPCODE_INDEX, OP_INPUTS, OP_OUTPUTS, OP_OPTIONS, OP_CUSTOM_OPTIONS = 0, 1, 2, 4, 5
OP_INTERMEDIATES, OP_OPTIONS_2 = 8, 12
BUFFER_DATA = 0


class _Broken(Exception):
    """A structural violation; ``verify_tflite`` adds the file name."""


class _Unsupported(Exception):
    """A well-formed tensor the generated code cannot hold (empty, or too large to index)."""


class _Table:
    """One flatbuffer table whose vtable has been checked to lie in the file."""

    def __init__(self, reader, pos, what):
        self.reader, self.pos, self.what = reader, pos, what
        reader.need(pos, 4, what)
        vtable = pos - reader.i32(pos)
        reader.need(vtable, 4, f"{what} vtable")
        self.vtable_bytes, self.object_bytes = reader.u16(vtable), reader.u16(vtable + 2)
        if self.vtable_bytes < 4 or self.vtable_bytes % 2:
            raise _Broken(f"{what} has a vtable of {self.vtable_bytes} bytes")
        reader.need(vtable, self.vtable_bytes, f"{what} vtable")
        reader.need(pos, max(self.object_bytes, 4), what)
        self.vtable = vtable

    def check_fields(self):
        """Every field of a table whose schema is not spelled out here starts inside the table."""
        for entry in range(4, self.vtable_bytes, 2):
            if self.reader.u16(self.vtable + entry) >= max(self.object_bytes, 4):
                raise _Broken(f"{self.what} field {(entry - 4) // 2} lies outside its table")

    def field(self, slot, nbytes):
        """Absolute position of field ``slot`` (``nbytes`` wide), or None when it is absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vtable_bytes:
            return None
        offset = self.reader.u16(self.vtable + entry)
        if offset == 0:
            return None
        if offset + nbytes > self.object_bytes:
            raise _Broken(f"{self.what} field {slot} lies outside its table")
        return self.pos + offset

    def scalar(self, slot, fmt, default=0):
        pos = self.field(slot, struct.calcsize(fmt))
        return default if pos is None else struct.unpack_from("<" + fmt, self.reader.data, pos)[0]

    def _target(self, slot, what):
        pos = self.field(slot, 4)
        return None if pos is None else pos + self.reader.u32(pos)

    def table(self, slot, what):
        target = self._target(slot, what)
        return None if target is None else _Table(self.reader, target, what)

    def vector(self, slot, fmt, what):
        """A vector of scalars as a numpy array (empty when absent)."""
        target = self._target(slot, what)
        if target is None:
            return np.zeros(0, np.dtype("<" + fmt))
        length = self.reader.u32(target)
        size = np.dtype(fmt).itemsize
        self.reader.need(target + 4, length * size, f"{what} ({length} elements)")
        return np.frombuffer(self.reader.data, np.dtype("<" + fmt), length, target + 4)

    def tables(self, slot, what):
        """A vector of tables."""
        offsets = self.vector(slot, "u4", f"the {what} vector")
        first = self._target(slot, what)
        return [_Table(self.reader, first + 4 + 4 * i + int(o), f"{what} #{i}") for i, o in enumerate(offsets)]

    def string(self, slot, what):
        raw = self.vector(slot, "u1", what).tobytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Broken(f"{what} is not valid UTF-8") from None


class _Reader:
    def __init__(self, data):
        self.data = data

    def need(self, pos, nbytes, what):
        if pos < 0 or nbytes < 0 or pos + nbytes > len(self.data):
            raise _Broken(f"{what} at byte {pos} runs past the end of the file ({len(self.data)} bytes)")

    def u16(self, pos):
        self.need(pos, 2, "a vtable entry")
        return struct.unpack_from("<H", self.data, pos)[0]

    def i32(self, pos):
        self.need(pos, 4, "a table header")
        return struct.unpack_from("<i", self.data, pos)[0]

    def u32(self, pos):
        self.need(pos, 4, "an offset")
        return struct.unpack_from("<I", self.data, pos)[0]


def _check_index(index, limit, what, optional=False):
    if not (-1 if optional else 0) <= index < limit:
        raise _Broken(f"{what} refers to #{index}, but there are {limit}")


def _verify_tensor(tensor, buffers, i):
    what = f"tensor #{i}"
    name = tensor.string(TENSOR_NAME, f"{what} name")
    what = f"tensor #{i} '{name}'"
    shape = tensor.vector(TENSOR_SHAPE, "i4", f"{what} shape")
    tensor.vector(TENSOR_SIGNATURE, "i4", f"{what} shape signature")
    if len(shape) > MAX_RANK or np.any(shape < 0):
        raise _Broken(f"{what} has an invalid shape {shape.tolist()}")
    if np.any(shape == 0):
        raise _Unsupported(f"{what} is empty (shape {shape.tolist()}); the generated code needs non-empty tensors")
    tensor_type = tensor.scalar(TENSOR_TYPE, "b")
    buffer_index = tensor.scalar(TENSOR_BUFFER, "I")
    _check_index(buffer_index, len(buffers), f"{what} buffer")
    itemsize = TENSOR_TYPE_BYTES.get(tensor_type)
    nbytes = int(np.prod(shape.astype(np.int64))) * (itemsize or 1)
    if nbytes > MAX_TENSOR_BYTES:
        raise _Unsupported(f"{what} has {nbytes} bytes; tensors are limited to 2 GiB")
    data = buffers[buffer_index].vector(BUFFER_DATA, "u1", f"buffer #{buffer_index} data")
    if len(data) and itemsize and len(data) != nbytes:
        raise _Broken(f"{what} has {len(data)} data bytes but its shape {shape.tolist()} needs {nbytes}")
    _verify_quantization(tensor.table(TENSOR_QUANT, f"{what} quantization"), shape, what)


def _verify_quantization(quant, shape, what):
    if quant is None:
        return
    quant.vector(QUANT_MIN, "f4", f"{what} min")
    quant.vector(QUANT_MAX, "f4", f"{what} max")
    scale = quant.vector(QUANT_SCALE, "f4", f"{what} scales")
    zero_point = quant.vector(QUANT_ZERO_POINT, "i8", f"{what} zero points")
    if len(scale) == 0:
        return  # not quantized
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise _Broken(f"{what} has a non-positive or non-finite quantization scale")
    if len(zero_point) not in (len(scale), 0):
        raise _Broken(f"{what} has {len(scale)} scales but {len(zero_point)} zero points")
    axis = quant.scalar(QUANT_DIMENSION, "i")
    if len(scale) > 1 and not (0 <= axis < len(shape) and shape[axis] == len(scale)):
        raise _Broken(f"{what} has {len(scale)} per-axis scales on axis {axis} of shape {shape.tolist()}")


def _verify_subgraph(subgraph, n_opcodes, buffers):
    tensors = subgraph.tables(SUBGRAPH_TENSORS, "tensor")
    for i, tensor in enumerate(tensors):
        _verify_tensor(tensor, buffers, i)
    subgraph.string(SUBGRAPH_NAME, "subgraph name")
    for slot, role in ((SUBGRAPH_INPUTS, "subgraph input"), (SUBGRAPH_OUTPUTS, "subgraph output")):
        indices = subgraph.vector(slot, "i4", f"{role}s")
        if len(indices) == 0:
            raise _Broken(f"the subgraph has no {role}s")
        for index in indices:
            _check_index(int(index), len(tensors), role)
    for i, op in enumerate(subgraph.tables(SUBGRAPH_OPERATORS, "operator")):
        _check_index(op.scalar(OP_OPCODE_INDEX, "I"), n_opcodes, f"operator #{i} opcode")
        for slot, role, optional in ((OP_INPUTS, "input", True), (OP_OUTPUTS, "output", False),
                                     (OP_INTERMEDIATES, "intermediate", False)):
            for index in op.vector(slot, "i4", f"operator #{i} {role}s"):
                _check_index(int(index), len(tensors), f"operator #{i} {role}", optional)
        for slot in (OP_OPTIONS, OP_OPTIONS_2):
            options = op.table(slot, f"operator #{i} options")
            if options is not None:
                options.check_fields()
        op.vector(OP_CUSTOM_OPTIONS, "u1", f"operator #{i} custom options")


def verify_tflite(path: str, data: bytes) -> int:
    """Check the flatbuffer's structure and indices; return its number of subgraphs."""
    try:
        reader = _Reader(data)
        model = _Table(reader, reader.u32(0), "the model table")
        opcodes = model.tables(MODEL_OPERATOR_CODES, "operator code")
        for i, opcode in enumerate(opcodes):
            opcode.string(OPCODE_CUSTOM_CODE, f"operator code #{i} custom name")
            opcode.scalar(OPCODE_DEPRECATED_BUILTIN, "b")
            opcode.scalar(OPCODE_BUILTIN, "i")
        buffers = model.tables(MODEL_BUFFERS, "buffer")
        subgraphs = model.tables(MODEL_SUBGRAPHS, "subgraph")
        if not subgraphs:
            raise _Broken("the model has no subgraph")
        _verify_subgraph(subgraphs[0], len(opcodes), buffers)
        return len(subgraphs)
    except _Broken as err:
        raise ModelFileError(f"{path}: malformed TFLite flatbuffer: {err}") from None
    except _Unsupported as err:
        raise UnsupportedModelError(f"{path}: {err}") from None
