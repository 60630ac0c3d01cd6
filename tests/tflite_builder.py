"""Write small .tflite models without TensorFlow, for tests.

Uses only the flatbuffer builder functions generated in the ``tflite`` package plus ``flatbuffers``::

    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.int8, quant=(0.05, -3))
    w = b.tensor("w", [8, 3, 3, 3], np.int8, data=weights, quant=([0.01] * 8, [0] * 8, 0))
    y = b.tensor("y", [1, 4, 4, 8], np.int8, quant=(0.1, 5))
    b.op("CONV_2D", [x, w, bias], [y],
         options=("Conv2DOptions", {"padding": "SAME", "stride_h": 1, "stride_w": 1}))
    data = b.serialize(inputs=[x], outputs=[y])

Option tables are written generically: each ``field_name`` of the dict calls the generated
``<Table>Add<FieldName>`` function, so any builtin options table of the schema works (Conv2D,
DepthwiseConv2D, TransposeConv, Pool2D, Concatenation, Add, Mul, ResizeNearestNeighbor, Reshape,
...). String values of enum fields (``padding``, ``fused_activation_function``) are looked up by
name; lists become int32 vectors (e.g. ReshapeOptions ``new_shape``). Optional inputs can be
given as -1.
"""
import importlib
import re

import flatbuffers
import numpy as np


def _schema(name):
    """A generated tflite submodule (``tflite/__init__`` star-imports shadow names like ``Start``)."""
    return importlib.import_module("tflite." + name)


_BuiltinOperator = _schema("BuiltinOperator").BuiltinOperator
_BuiltinOptions = _schema("BuiltinOptions").BuiltinOptions
_TensorType = _schema("TensorType").TensorType

_TENSOR_TYPES = {
    np.dtype(np.float32): _TensorType.FLOAT32,
    np.dtype(np.int32): _TensorType.INT32,
    np.dtype(np.int64): _TensorType.INT64,
    np.dtype(np.int16): _TensorType.INT16,
    np.dtype(np.int8): _TensorType.INT8,
    np.dtype(np.uint8): _TensorType.UINT8,
    np.dtype(np.bool_): _TensorType.BOOL,
}

# Option fields whose values may be given as enum member names.
_ENUM_FIELDS = {
    "padding": _schema("Padding").Padding,
    "fused_activation_function": _schema("ActivationFunctionType").ActivationFunctionType,
    "quantized_bias_type": _TensorType,
}

_PLACEHOLDER_FOR_GREATER_OP_CODES = 127
_BUFFER_ALIGNMENT = 16


def _camel(snake):
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _snake(camel):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _enum_value(enum_cls, field, value):
    if isinstance(value, str):
        if not hasattr(enum_cls, value.upper()):
            raise ValueError(f"unknown {field} {value!r}")
        return getattr(enum_cls, value.upper())
    return int(value)


class TFLiteBuilder:
    """Collects tensors and operators of one subgraph; ``serialize`` writes the model."""

    def __init__(self, description="tinyseg test model"):
        self.description = description
        self._buffers = [b""]  # buffer 0 is the schema's empty sentinel
        self._tensors = []     # (name, shape, tensor type, buffer index, quantization or None)
        self._opcodes = []     # (builtin operator code, custom code or None), index = opcode index
        self._ops = []         # (opcode index, inputs, outputs, options or None)

    # ---- graph construction ------------------------------------------------------------
    def tensor(self, name, shape, dtype=np.float32, data=None, quant=None, shape_signature=None):
        """Add a tensor and return its index.

        ``data`` makes it a constant; ``quant`` is ``(scale, zero_point)`` for per-tensor or
        ``(scales, zero_points, axis)`` for per-axis quantization; ``shape_signature`` (-1 for a
        dynamic dimension) is written beside the shape when given.
        """
        dtype = np.dtype(dtype)
        if dtype not in _TENSOR_TYPES:
            raise ValueError(f"unsupported tensor dtype {dtype}")
        shape = [int(s) for s in shape]
        buffer = 0
        if data is not None:
            array = np.ascontiguousarray(np.asarray(data).astype(dtype, copy=False))
            if array.size != int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f"tensor {name!r}: data has {array.size} elements, "
                                 f"shape {shape} needs {int(np.prod(shape))}")
            self._buffers.append(array.tobytes())
            buffer = len(self._buffers) - 1
        signature = None if shape_signature is None else [int(s) for s in shape_signature]
        self._tensors.append((name, shape, _TENSOR_TYPES[dtype], buffer, self._quant(quant), signature))
        return len(self._tensors) - 1

    @staticmethod
    def _quant(quant):
        if quant is None:
            return None
        if len(quant) == 2:
            scale, zero_point = quant
            return [float(scale)], [int(zero_point)], 0
        scales, zero_points, axis = quant
        scales = [float(s) for s in np.atleast_1d(scales)]
        zero_points = [int(z) for z in np.atleast_1d(zero_points)]
        if len(scales) != len(zero_points):
            raise ValueError("quantization needs as many zero points as scales")
        return scales, zero_points, int(axis)

    def op(self, code, inputs, outputs, options=None, custom_code=None):
        """Add an operator. ``code`` is a BuiltinOperator name (``"CONV_2D"``) or number;
        ``options`` is ``None`` or ``(options table name, {field_name: value})``; ``custom_code``
        names a ``"CUSTOM"`` op's implementation."""
        if isinstance(code, str):
            if not hasattr(_BuiltinOperator, code):
                raise ValueError(f"unknown builtin operator {code!r}")
            code = getattr(_BuiltinOperator, code)
        if options is not None:
            table, fields = options
            if not hasattr(_BuiltinOptions, table):
                raise ValueError(f"unknown builtin options table {table!r}")
            options = (table, dict(fields))
        if (code, custom_code) not in self._opcodes:
            self._opcodes.append((code, custom_code))
        self._ops.append((self._opcodes.index((code, custom_code)), [int(i) for i in inputs],
                          [int(o) for o in outputs], options))

    # ---- serialization -----------------------------------------------------------------
    def serialize(self, inputs, outputs, subgraphs=1):
        """The model as .tflite bytes, with the given tensor indices as subgraph inputs/outputs.
        ``subgraphs`` > 1 repeats the subgraph (a model with several subgraphs, for error tests)."""
        fb = flatbuffers.Builder(1024)
        model, subgraph, operator_code = (_schema(n) for n in ("Model", "SubGraph", "OperatorCode"))

        buffers = [self._write_buffer(fb, data) for data in self._buffers]
        tensors = [self._write_tensor(fb, *t) for t in self._tensors]
        operators = [self._write_operator(fb, *o) for o in self._ops]

        tensor_vec = _offset_vector(fb, subgraph.SubGraphStartTensorsVector, tensors)
        input_vec = _int32_vector(fb, subgraph.SubGraphStartInputsVector, inputs)
        output_vec = _int32_vector(fb, subgraph.SubGraphStartOutputsVector, outputs)
        operator_vec = _offset_vector(fb, subgraph.SubGraphStartOperatorsVector, operators)
        name = fb.CreateString("main")
        subgraph.SubGraphStart(fb)
        subgraph.SubGraphAddTensors(fb, tensor_vec)
        subgraph.SubGraphAddInputs(fb, input_vec)
        subgraph.SubGraphAddOutputs(fb, output_vec)
        subgraph.SubGraphAddOperators(fb, operator_vec)
        subgraph.SubGraphAddName(fb, name)
        subgraph_offset = subgraph.SubGraphEnd(fb)

        opcodes = []
        for code, custom_code in self._opcodes:
            custom = fb.CreateString(custom_code) if custom_code is not None else None
            operator_code.OperatorCodeStart(fb)
            operator_code.OperatorCodeAddDeprecatedBuiltinCode(
                fb, min(code, _PLACEHOLDER_FOR_GREATER_OP_CODES))
            operator_code.OperatorCodeAddBuiltinCode(fb, code)
            operator_code.OperatorCodeAddVersion(fb, 1)
            if custom is not None:
                operator_code.OperatorCodeAddCustomCode(fb, custom)
            opcodes.append(operator_code.OperatorCodeEnd(fb))

        opcode_vec = _offset_vector(fb, model.ModelStartOperatorCodesVector, opcodes)
        subgraph_vec = _offset_vector(fb, model.ModelStartSubgraphsVector, [subgraph_offset] * subgraphs)
        buffer_vec = _offset_vector(fb, model.ModelStartBuffersVector, buffers)
        description = fb.CreateString(self.description)
        model.ModelStart(fb)
        model.ModelAddVersion(fb, 3)
        model.ModelAddOperatorCodes(fb, opcode_vec)
        model.ModelAddSubgraphs(fb, subgraph_vec)
        model.ModelAddDescription(fb, description)
        model.ModelAddBuffers(fb, buffer_vec)
        fb.Finish(model.ModelEnd(fb), file_identifier=b"TFL3")
        return bytes(fb.Output())

    def save(self, path, inputs, outputs, subgraphs=1):
        """Serialize to ``path``; returns the bytes written."""
        data = self.serialize(inputs, outputs, subgraphs)
        with open(path, "wb") as f:
            f.write(data)
        return data

    @staticmethod
    def _write_buffer(fb, data):
        buffer = _schema("Buffer")
        vec = None
        if data:
            fb.StartVector(1, len(data), _BUFFER_ALIGNMENT)
            fb.head = fb.head - len(data)
            fb.Bytes[fb.head:fb.head + len(data)] = data
            vec = fb.EndVector()
        buffer.BufferStart(fb)
        if vec is not None:
            buffer.BufferAddData(fb, vec)
        return buffer.BufferEnd(fb)

    @staticmethod
    def _write_tensor(fb, name, shape, tensor_type, buffer_index, quant, signature):
        tensor, qparams = _schema("Tensor"), _schema("QuantizationParameters")
        name_offset = fb.CreateString(name)
        shape_vec = _int32_vector(fb, tensor.TensorStartShapeVector, shape)
        signature_vec = None if signature is None else _int32_vector(fb, tensor.TensorStartShapeSignatureVector,
                                                                     signature)
        quant_offset = None
        if quant is not None:
            scales, zero_points, axis = quant
            scale_vec = _vector(fb, qparams.QuantizationParametersStartScaleVector,
                                fb.PrependFloat32, scales)
            zp_vec = _vector(fb, qparams.QuantizationParametersStartZeroPointVector,
                             fb.PrependInt64, zero_points)
            qparams.QuantizationParametersStart(fb)
            qparams.QuantizationParametersAddScale(fb, scale_vec)
            qparams.QuantizationParametersAddZeroPoint(fb, zp_vec)
            qparams.QuantizationParametersAddQuantizedDimension(fb, axis)
            quant_offset = qparams.QuantizationParametersEnd(fb)
        tensor.TensorStart(fb)
        tensor.TensorAddShape(fb, shape_vec)
        tensor.TensorAddType(fb, tensor_type)
        tensor.TensorAddBuffer(fb, buffer_index)
        tensor.TensorAddName(fb, name_offset)
        if quant_offset is not None:
            tensor.TensorAddQuantization(fb, quant_offset)
        if signature_vec is not None:
            tensor.TensorAddShapeSignature(fb, signature_vec)
        return tensor.TensorEnd(fb)

    @staticmethod
    def _write_operator(fb, opcode_index, inputs, outputs, options):
        operator = _schema("Operator")
        options_offset = _write_options(fb, *options) if options is not None else None
        input_vec = _int32_vector(fb, operator.OperatorStartInputsVector, inputs)
        output_vec = _int32_vector(fb, operator.OperatorStartOutputsVector, outputs)
        operator.OperatorStart(fb)
        operator.OperatorAddOpcodeIndex(fb, opcode_index)
        operator.OperatorAddInputs(fb, input_vec)
        operator.OperatorAddOutputs(fb, output_vec)
        if options_offset is not None:
            operator.OperatorAddBuiltinOptionsType(fb, getattr(_BuiltinOptions, options[0]))
            operator.OperatorAddBuiltinOptions(fb, options_offset)
        return operator.OperatorEnd(fb)


def _write_options(fb, table, fields):
    """Build one builtin options table from ``{snake_case_field: value}``."""
    module = _schema(table)
    values = []  # (add function, value); vectors must be built before the table starts
    for field, value in fields.items():
        add = getattr(module, f"{table}Add{_camel(field)}", None)
        if add is None:
            known = sorted(_snake(n[len(table) + 3:]) for n in dir(module)
                           if n.startswith(table + "Add"))
            raise ValueError(f"{table} has no field {field!r} (fields: {', '.join(known)})")
        if isinstance(value, (list, tuple, np.ndarray)):
            start = getattr(module, f"{table}Start{_camel(field)}Vector")
            values.append((add, _int32_vector(fb, start, value)))
        elif field in _ENUM_FIELDS:
            values.append((add, _enum_value(_ENUM_FIELDS[field], field, value)))
        elif isinstance(value, bool):
            values.append((add, value))
        elif isinstance(value, (int, np.integer)):
            values.append((add, int(value)))
        elif isinstance(value, (float, np.floating)):
            values.append((add, float(value)))
        else:
            raise ValueError(f"{table}.{field}: unsupported value {value!r}")
    getattr(module, f"{table}Start")(fb)
    for add, value in values:
        add(fb, value)
    return getattr(module, f"{table}End")(fb)


def _vector(fb, start, prepend, values):
    values = list(values)
    start(fb, len(values))
    for v in reversed(values):
        prepend(v)
    return fb.EndVector()


def _int32_vector(fb, start, values):
    return _vector(fb, start, fb.PrependInt32, [int(v) for v in values])


def _offset_vector(fb, start, offsets):
    return _vector(fb, start, fb.PrependUOffsetTRelative, offsets)
