"""Verify a .tflite flatbuffer before anything reads it.

The generated ``tflite`` accessors trust every offset and length in the file: a flipped byte makes
them raise anything from ``struct.error`` to ``UnicodeDecodeError`` deep inside TVM's frontend, or
read garbage silently (Python's negative indexing). So the whole file first passes the checks of
flatbuffers' C++ Verifier (flatbuffer_verify.py); then the model's indices (opcodes, tensors,
buffers), names, shapes, constant data (sizes, and no NaN or infinity in float constants) and
quantization parameters (the ranges TFLite Micro accepts) are checked here.
Any violation is a one-line :class:`ModelFileError` naming the broken part.
"""
import struct

import numpy as np

from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError

from .flatbuffer_verify import FlatbufferError, float_fields, union_member, verify_model_buffer

# Bytes per element of the TensorType enum values (schema.fbs); other types are named but not sized.
TENSOR_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}
MAX_TENSOR_BYTES = (1 << 31) - 1  # generated kernels index tensors with int32
MAX_RANK = 8
FLOAT_TYPES = {0: "<f4", 1: "<f2", 10: "<f8"}  # FLOAT32, FLOAT16, FLOAT64
# Zero points TFLite Micro's kernels accept: the quantized type's range (0 for int16 and int32,
# which TFLite quantizes symmetrically).
ZERO_POINT_RANGES = {9: (-128, 127), 3: (0, 255), 7: (0, 0), 2: (0, 0), 4: (0, 0)}
TYPE_NAMES = {9: "int8", 3: "uint8", 7: "int16", 2: "int32", 4: "int64"}

# Field slots (declaration order in schema.fbs) of the tables read here.
MODEL_OPERATOR_CODES, MODEL_SUBGRAPHS, MODEL_BUFFERS = 1, 2, 4
OPCODE_DEPRECATED_BUILTIN, OPCODE_CUSTOM_CODE, OPCODE_BUILTIN = 0, 1, 3
SUBGRAPH_TENSORS, SUBGRAPH_INPUTS, SUBGRAPH_OUTPUTS, SUBGRAPH_OPERATORS, SUBGRAPH_NAME = 0, 1, 2, 3, 4
TENSOR_SHAPE, TENSOR_TYPE, TENSOR_BUFFER, TENSOR_NAME, TENSOR_QUANT, TENSOR_SIGNATURE = 0, 1, 2, 3, 4, 7
QUANT_MIN, QUANT_MAX, QUANT_SCALE, QUANT_ZERO_POINT, QUANT_DIMENSION = 0, 1, 2, 3, 6
OP_OPCODE_INDEX, OP_INPUTS, OP_OUTPUTS, OP_OPTIONS_TYPE, OP_OPTIONS, OP_CUSTOM_OPTIONS = 0, 1, 2, 3, 4, 5
OP_INTERMEDIATES, OP_OPTIONS_2_TYPE, OP_OPTIONS_2 = 8, 11, 12
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 0, 1, 2


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
    buffer = buffers[buffer_index]
    if buffer.scalar(BUFFER_OFFSET, "Q") > 1:  # data appended after the flatbuffer (models over 2 GiB)
        raise _Unsupported(f"{what} keeps its data outside the flatbuffer (buffer #{buffer_index} offset/size); "
                           "such models are not supported")
    data = buffer.vector(BUFFER_DATA, "u1", f"buffer #{buffer_index} data")
    if len(data) and itemsize and len(data) != nbytes:
        raise _Broken(f"{what} has {len(data)} data bytes but its shape {shape.tolist()} needs {nbytes}")
    if len(data) and tensor_type in FLOAT_TYPES:
        values = np.frombuffer(data, FLOAT_TYPES[tensor_type])
        if not np.all(np.isfinite(values)):
            bad = values[~np.isfinite(values)][0]
            raise _Broken(f"{what} holds {np.count_nonzero(~np.isfinite(values))} non-finite constants "
                          f"(first: {bad}); TFLite would compute NaN or infinity from them")
    _verify_quantization(tensor.table(TENSOR_QUANT, f"{what} quantization"), shape, tensor_type, what)


def _verify_buffers(buffers, file_bytes):
    """Data kept after the flatbuffer (``offset``/``size``) must lie inside the file, as LiteRT checks."""
    for i, buffer in enumerate(buffers):
        offset, size = buffer.scalar(BUFFER_OFFSET, "Q"), buffer.scalar(BUFFER_SIZE, "Q")
        if offset > 1 and offset + size > file_bytes:
            raise _Broken(f"buffer #{i} data (offset {offset}, {size} bytes) lies outside the file "
                          f"({file_bytes} bytes)")


def _verify_quantization(quant, shape, tensor_type, what):
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
    if len(zero_point) != len(scale):  # TFLite Micro ignores the quantization of such a tensor
        raise _Broken(f"{what} has {len(scale)} scales but {len(zero_point)} zero points")
    low, high = ZERO_POINT_RANGES.get(tensor_type, (-(1 << 63), 1 << 63))
    outside = zero_point[(zero_point < low) | (zero_point > high)]
    if len(outside):
        raise _Broken(f"{what} has zero point {int(outside[0])}, outside [{low}, {high}] for "
                      f"{TYPE_NAMES[tensor_type]}")
    axis = quant.scalar(QUANT_DIMENSION, "i")
    if len(scale) > 1 and not (0 <= axis < len(shape) and shape[axis] == len(scale)):
        raise _Broken(f"{what} has {len(scale)} per-axis scales on axis {axis} of shape {shape.tolist()}")


def _verify_float_options(options, table_name, op_index):
    """Float options (LeakyReluOptions.alpha, SoftmaxOptions.beta, ...) must be finite."""
    for field in float_fields(table_name) if table_name else ():
        value = options.scalar((field.vtable_offset - 4) // 2, "f")
        if not np.isfinite(value):
            raise _Broken(f"operator #{op_index} {table_name}.{field.name} is {value}")


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
        for type_slot, slot, union in ((OP_OPTIONS_TYPE, OP_OPTIONS, "BuiltinOptions"),
                                       (OP_OPTIONS_2_TYPE, OP_OPTIONS_2, "BuiltinOptions2")):
            options = op.table(slot, f"operator #{i} options")
            if options is not None:
                options.check_fields()
                _verify_float_options(options, union_member(union, op.scalar(type_slot, "B")), i)
        op.vector(OP_CUSTOM_OPTIONS, "u1", f"operator #{i} custom options")


def verify_tflite(path: str, data: bytes) -> int:
    """Check the flatbuffer's structure and indices; return its number of subgraphs."""
    try:
        verify_model_buffer(data)
        reader = _Reader(data)
        model = _Table(reader, reader.u32(0), "the model table")
        opcodes = model.tables(MODEL_OPERATOR_CODES, "operator code")
        for i, opcode in enumerate(opcodes):
            opcode.string(OPCODE_CUSTOM_CODE, f"operator code #{i} custom name")
            opcode.scalar(OPCODE_DEPRECATED_BUILTIN, "b")
            opcode.scalar(OPCODE_BUILTIN, "i")
        buffers = model.tables(MODEL_BUFFERS, "buffer")
        _verify_buffers(buffers, len(data))
        subgraphs = model.tables(MODEL_SUBGRAPHS, "subgraph")
        if not subgraphs:
            raise _Broken("the model has no subgraph")
        _verify_subgraph(subgraphs[0], len(opcodes), buffers)
        return len(subgraphs)
    except (_Broken, FlatbufferError) as err:
        raise ModelFileError(f"{path}: malformed TFLite flatbuffer: {err}") from None
    except _Unsupported as err:
        raise UnsupportedModelError(f"{path}: {err}") from None
