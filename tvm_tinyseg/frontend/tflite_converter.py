"""Corrections to TVM 0.27's TFLite operator converter (tvm.relax.frontend.tflite).

* TRANSPOSE_CONV: TVM ignores the op's fused activation (a float RELU/RELU6 silently vanishes,
  an int8 one leaves the output unclamped); it is applied here like every other op's.
* Quantized fused activations: TVM rounds the clamp bounds half to even (Python's ``round``);
  TFLite (``CalculateActivationRangeQuantized``) rounds ``f / scale`` in float32, half away from
  zero. A bound on a tie, e.g. RELU6 with scale 0.8, differed by one code.
* FULLY_CONNECTED without ``keep_num_dims`` flattens its leading dimensions in TFLite; TVM
  keeps them.
* Shape arithmetic is folded: SHAPE of a tensor whose shape is static (the batch fixed to 1),
  and STRIDED_SLICE/PACK/CONCATENATION/EXPAND_DIMS/... of constants, become constants, so the
  RESHAPE/TILE/TRANSPOSE_CONV they feed (Keras 3 exports with a dynamic batch) see constant
  shapes as TVM's converters require.
* EXPAND_DIMS: TVM's converter calls ``relax.op.expand_dims`` with a stale signature (fails).
* TILE and EXPAND_DIMS on int8 only move values: accepted quantized.
* SPACE_TO_BATCH_ND → CONV_2D/DEPTHWISE_CONV_2D → BATCH_TO_SPACE_ND (TensorFlow's export of a
  dilated convolution) becomes one convolution with dilation = the block shape and padding =
  SPACE_TO_BATCH's paddings less BATCH_TO_SPACE's crops; the two ops alone are refused (TVM
  imports them as packed calls that have no C).
* Operator codes are read as TFLite reads them (``GetBuiltinCode`` in schema_utils.cc): the larger
  of ``builtin_code`` and ``deprecated_builtin_code``. The ``tflite`` package's ``BuiltinCode()``
  returns the deprecated field whenever the new one is below 127, so a file whose two fields
  disagree (CONV_2D in one, CONCATENATION in the other) was compiled as another op than TFLite runs.
* Guard: every converted op's inferred output shape must be the one the model declares; a
  converter that misreads an attribute (a stride, a padding, a flag) usually changes it, and
  that is reported as the converter's failure (ConverterMismatch) rather than compiled.
"""
import importlib

import flatbuffers.number_types
import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.tflite import tflite_frontend

from tvm_tinyseg.errors import ModelFileError


def _tflite(name):  # the tflite package's star-imports shadow generic names: import explicitly
    return importlib.import_module("tflite." + name)


_Activation = _tflite("ActivationFunctionType").ActivationFunctionType
_QUANTIZED_RANGES = {_Activation.RELU: (0.0, None), _Activation.RELU6: (0.0, 6.0),
                     _Activation.RELU_N1_TO_1: (-1.0, 1.0)}
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _round_half_away(value: np.float32) -> int:
    return int(np.sign(value) * np.floor(np.abs(np.float64(value)) + 0.5))


_BUILTIN_CODE_SLOT = 10  # OperatorCode.builtin_code's vtable offset (schema.fbs field 3)


def builtin_code(opcode) -> int:
    """The builtin operator an ``OperatorCode`` names, as TFLite reads it:
    max(builtin_code, deprecated_builtin_code), not the tflite package's ``BuiltinCode()``."""
    field = opcode._tab.Offset(_BUILTIN_CODE_SLOT)
    new = opcode._tab.Get(flatbuffers.number_types.Int32Flags, field + opcode._tab.Pos) if field else 0
    return max(new, opcode.DeprecatedBuiltinCode())


class ConverterMismatch(ModelFileError):
    """An op's output shape, as computed from its inputs and attributes, is not the shape the
    model declares: a damaged or inconsistent file (TFLite Micro would run past its buffers), or
    an attribute TVM's converter misread — which the differential tests against LiteRT guard."""


# Data movement TVM refuses quantized although it needs no requantization.
_QUANTIZED_DATA_MOVEMENT = frozenset({"SHAPE", "TILE", "EXPAND_DIMS", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"})
_INTEGER_TYPES = ("int32", "int64")


def _strided_slice(x, begin, end, strides, options):
    if options.EllipsisMask() or options.NewAxisMask():
        return None
    index = []
    for axis, (b, e, s) in enumerate(zip(begin, end, strides)):
        if options.ShrinkAxisMask() >> axis & 1:
            index.append(int(b))
            continue
        index.append(slice(None if options.BeginMask() >> axis & 1 else int(b),
                           None if options.EndMask() >> axis & 1 else int(e), int(s)))
    return x[tuple(index)]


def _options(op, table):
    options = _tflite(table).__dict__[table]()
    raw = op.BuiltinOptions()
    if raw is None:
        return None
    options.Init(raw.Bytes, raw.Pos)
    return options


# op name -> (op, input values) -> folded value, or None when it cannot be folded here
_FOLDERS = {
    "STRIDED_SLICE": lambda op, v: _strided_slice(*v, _options(op, "StridedSliceOptions")),
    "PACK": lambda op, v: np.stack(v, axis=_options(op, "PackOptions").Axis()),
    "CONCATENATION": lambda op, v: np.concatenate(v, axis=_options(op, "ConcatenationOptions").Axis()),
    "EXPAND_DIMS": lambda op, v: np.expand_dims(v[0], int(np.asarray(v[1]).reshape(-1)[0])),
    "SQUEEZE": lambda op, v: np.squeeze(v[0], axis=tuple(_options(op, "SqueezeOptions").SqueezeDimsAsNumpy())
                                        if _options(op, "SqueezeOptions").SqueezeDimsLength() else None),
    "GATHER": lambda op, v: np.take(v[0], v[1], axis=_options(op, "GatherOptions").Axis()),
    "ADD": lambda op, v: v[0] + v[1],
    "SUB": lambda op, v: v[0] - v[1],
    "MUL": lambda op, v: v[0] * v[1],
    "FLOOR_DIV": lambda op, v: v[0] // v[1],
    "CAST": lambda op, v: v[0],
    "RESHAPE": lambda op, v: v[0],  # the output's declared shape is applied by the caller
}


def _static_shape(expr):
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    values = getattr(ty.shape, "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def _declared_shape(tensor):
    """The shape the file declares, None for dimensions its signature leaves open (other than the
    batch, which is fixed to 1). No dimensions declare a scalar, as TFLite Micro reads them (an op
    computing more than one value into it is refused: TFLite Micro would write past it)."""
    shape = [int(s) for s in tensor.ShapeAsNumpy()]
    if tensor.ShapeSignatureLength():
        signature = tensor.ShapeSignatureAsNumpy()
        shape = [s if (k == 0 or signature[k] >= 0) else None for k, s in enumerate(shape)]
    return shape


def _agrees(declared, inferred):
    """Whether the shapes agree; an empty inferred shape is the model's fault, reported later."""
    if (declared == [] and inferred in ([], [1])) or 0 in inferred:
        return True
    return len(declared) == len(inferred) and all(d is None or d == i for d, i in zip(declared, inferred))


class ConverterFixes(tflite_frontend.OperatorConverter):
    """TVM's converter with the fixes of the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._SUPPORTED_QUANTIZED_OPS = type(self)._SUPPORTED_QUANTIZED_OPS | _QUANTIZED_DATA_MOVEMENT
        self.folded = {}  # tensor index -> numpy value computed at import time
        # op position -> (dilation, padding), None for S2B/B2S; no model: a converter only listing its ops
        self.dilated = self._dilated_convs() if self.subgraph is not None else {}
        self.convert_map = {name: self._shape_checked(name, convert) for name, convert in self.convert_map.items()}

    # -- dilated convolutions ----------------------------------------------------------------
    def _dilated_convs(self):
        """{conv op position: (block, padding top/left/bottom/right)} for each S2B → conv → B2S."""
        producer, consumers = {}, {}
        ops = [self.subgraph.Operators(i) for i in range(self.subgraph.OperatorsLength())]
        for i, op in enumerate(ops):
            for t in op.OutputsAsNumpy():
                producer[int(t)] = i
            for t in op.InputsAsNumpy():
                consumers.setdefault(int(t), []).append(i)
        graph_outputs = {int(t) for t in self.subgraph.OutputsAsNumpy()}
        found = {}
        names = [self._op_name(op) for op in ops]
        for i, op in enumerate(ops):
            if names[i] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                continue
            x, out = int(op.Inputs(0)), int(op.Outputs(0))
            s2b, b2s = producer.get(x), (consumers.get(out) or [None])[0]
            if s2b is None or b2s is None or len(consumers[x]) != 1 or len(consumers[out]) != 1 \
                    or x in graph_outputs or out in graph_outputs \
                    or names[s2b] != "SPACE_TO_BATCH_ND" or names[b2s] != "BATCH_TO_SPACE_ND":
                continue
            table = "Conv2DOptions" if names[i] == "CONV_2D" else "DepthwiseConv2DOptions"
            options = _options(op, table)
            s2b_inputs, b2s_inputs = self.get_input_tensors(ops[s2b]), self.get_input_tensors(ops[b2s])
            values = [self._constant_value(t) for t in (*s2b_inputs[1:], *b2s_inputs[1:])]
            if any(v is None for v in values) or options.Padding() != _tflite("Padding").Padding.VALID \
                    or (options.StrideH(), options.StrideW(), options.DilationHFactor(),
                        options.DilationWFactor()) != (1, 1, 1, 1):
                continue
            block, paddings, block_again, crops = (np.asarray(v).astype(np.int64) for v in values)
            pad = paddings - crops
            if block.shape != (2,) or not np.array_equal(block, block_again) or np.any(pad < 0):
                continue
            found[op._tab.Pos] = (tuple(int(b) for b in block),
                                  (int(pad[0, 0]), int(pad[1, 0]), int(pad[0, 1]), int(pad[1, 1])))
            found[ops[s2b]._tab.Pos] = found[ops[b2s]._tab.Pos] = None  # identities around it
        return found

    def get_op_code_str(self, op):
        """The op's name from its code read as TFLite reads it (see builtin_code)."""
        code = builtin_code(self.model.OperatorCodes(op.OpcodeIndex()))
        if code == _tflite("BuiltinOperator").BuiltinOperator.CUSTOM or code not in self.builtin_op_code:
            raise NotImplementedError(f"TFLite operator with code {code} is not supported")
        return self.builtin_op_code[code]

    def _op_name(self, op):
        try:
            return self.get_op_code_str(op)
        except NotImplementedError:  # a custom op: reported by the loader's check
            return "CUSTOM"

    def convert_conv(self, op, conv_type):
        out = super().convert_conv(op, conv_type)
        if self.dilated.get(op._tab.Pos) is None:
            return out
        dilation, padding = self.dilated[op._tab.Pos]

        def dilated(expr):
            if isinstance(expr, relax.Call) and expr.op == tvm.ir.Op.get("relax.nn.conv2d"):
                a = expr.attrs
                return relax.op.nn.conv2d(expr.args[0], expr.args[1], strides=a.strides, padding=padding,
                                          dilation=dilation, groups=a.groups, data_layout=a.data_layout,
                                          kernel_layout=a.kernel_layout, out_layout=a.out_layout,
                                          out_dtype=a.out_dtype)
            if isinstance(expr, relax.Call):
                return relax.Call(expr.op, [dilated(arg) for arg in expr.args], expr.attrs, expr.ty_args)
            if isinstance(expr, relax.Tuple):
                return relax.Tuple([dilated(field) for field in expr.fields])
            return expr

        return dilated(out)

    def _identity_or_refused(self, op, name):
        if op._tab.Pos not in self.dilated:
            raise tvm.error.OpNotImplemented(f"{name} is only supported around a convolution (a dilated convolution)")
        return self.get_tensor_expr(self.get_input_tensors(op)[0])

    def convert_space_to_batch_nd(self, op):
        return self._identity_or_refused(op, "SPACE_TO_BATCH_ND")

    def convert_batch_to_space_nd(self, op):
        return self._identity_or_refused(op, "BATCH_TO_SPACE_ND")

    # -- folding shape arithmetic -------------------------------------------------------------
    def has_expr(self, input_tensor_idx):
        return input_tensor_idx not in self.folded and super().has_expr(input_tensor_idx)

    def get_tensor_value(self, tensor_wrapper, is_sparse=False):
        if tensor_wrapper.tensor_idx in self.folded:
            return self.folded[tensor_wrapper.tensor_idx]
        return super().get_tensor_value(tensor_wrapper, is_sparse)

    def _constant_value(self, tensor):
        if tensor.tensor_idx in self.folded:
            return self.folded[tensor.tensor_idx]
        if super().has_expr(tensor.tensor_idx) or tensor.buffer is None or not tensor.buffer.DataLength():
            return None
        return self.get_tensor_value(tensor)

    def _fold(self, name, op):
        """The op's output as a numpy constant when it is shape arithmetic on known values."""
        outputs = self.get_output_tensors(op)
        if len(outputs) != 1 or self.get_tensor_type_str(outputs[0].tensor.Type()) not in _INTEGER_TYPES:
            return None
        inputs = self.get_input_tensors(op)
        dtype = self.get_tensor_type_str(outputs[0].tensor.Type())
        if name == "SHAPE":
            shape = _static_shape(self.bb.normalize(self.get_tensor_expr(inputs[0])))
            return None if shape is None else np.array(shape, dtype)
        values = [self._constant_value(t) for t in inputs]
        if name not in _FOLDERS or any(v is None for v in values):
            return None
        value = _FOLDERS[name](op, values)
        if value is None:
            return None
        if name == "RESHAPE":
            value = value.reshape([int(s) for s in outputs[0].tensor.ShapeAsNumpy()])
        return np.asarray(value).astype(dtype)

    def _shape_checked(self, name, convert):
        def check(output, inferred):
            declared = _declared_shape(output.tensor)
            if declared is not None and inferred is not None and not _agrees(declared, inferred):
                raise ConverterMismatch(
                    f"{name} output '{output.tensor.Name().decode()}' is declared {declared}, "
                    f"but the op computes {inferred} from its inputs")

        def checked(op):
            folded = self._fold(name, op)
            if folded is not None:  # shape arithmetic: its declared shape is checked too
                check(self.get_output_tensors(op)[0], list(folded.shape))
                self.folded[self.get_output_tensors(op)[0].tensor_idx] = folded
                return None
            outputs = self.get_output_tensors(op)
            if name == "TRANSPOSE_CONV":  # TFLite's output has the shape its first input holds
                requested = self._constant_value(self.get_input_tensors(op)[0])
                if requested is not None:
                    check(outputs[0], [int(v) for v in np.asarray(requested).reshape(-1)])
            out = convert(op=op)
            if out is None or isinstance(out, relax.Tuple) or len(outputs) != 1 \
                    or op._tab.Pos in self.dilated and name != "BATCH_TO_SPACE_ND":
                return out  # inside a dilated conv, shapes are the fused conv's until BATCH_TO_SPACE_ND
            out = self.bb.normalize(out)
            check(outputs[0], _static_shape(out))
            return out
        return checked

    def convert_fully_connected(self, op):
        out = self.bb.normalize(super().convert_fully_connected(op))
        declared = [int(s) for s in self.get_output_tensors(op)[0].tensor.ShapeAsNumpy()]
        inferred = _static_shape(out)
        if inferred is not None and inferred != declared and np.prod(inferred) == np.prod(declared):
            return relax.op.reshape(out, declared)
        return out

    def convert_expand_dims(self, op):
        data, axis = self.get_input_tensors(op)
        axis = int(np.asarray(self.get_tensor_value(axis)).reshape(-1)[0])
        rank = len(data.tensor.ShapeAsNumpy())
        return relax.op.expand_dims(self.get_tensor_expr(data), axis + rank + 1 if axis < 0 else axis)

    def convert_fused_activation_function(self, in_expr, fused_activation_fn):
        """TVM applies a fused TANH; TFLite's float kernels ignore it (they clamp for RELU, RELU6
        and RELU_N1_TO_1 only), so the two would differ: refused."""
        if fused_activation_fn == _Activation.TANH:
            raise tvm.error.OpNotImplemented("fused activation TANH: TFLite's kernels ignore it and TVM's frontend "
                                             "applies tanh; refusing rather than computing either")
        return super().convert_fused_activation_function(in_expr, fused_activation_fn)

    def convert_qnn_fused_activation_function(self, expr, fused_activation_fn, scale, zero_point, dtype):
        if fused_activation_fn == _Activation.NONE:
            return expr
        if fused_activation_fn not in _QUANTIZED_RANGES:
            return super().convert_qnn_fused_activation_function(expr, fused_activation_fn, scale, zero_point, dtype)
        qmin, qmax = _INT_RANGES[dtype]
        low, high = _QUANTIZED_RANGES[fused_activation_fn]

        def quantized(value):
            return int(zero_point) + _round_half_away(np.float32(value) / np.float32(scale))

        lo = max(qmin, quantized(low))
        hi = qmax if high is None else min(qmax, quantized(high))
        return relax.op.clip(expr, min=float(lo), max=float(hi))

    def convert_transpose_conv(self, op):
        out = super().convert_transpose_conv(op)
        options = _tflite("TransposeConvOptions").TransposeConvOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        activation = options.FusedActivationFunction()
        output = self.get_output_tensors(op)[0]
        if not output.qnn_params:
            return self.convert_fused_activation_function(out, activation)
        return self.convert_qnn_fused_activation_function(
            out, activation, tflite_frontend.get_scalar_from_constant(output.qnn_params["scale"]),
            tflite_frontend.get_scalar_from_constant(output.qnn_params["zero_point"]),
            self.get_tensor_type_str(output.tensor.Type()))
