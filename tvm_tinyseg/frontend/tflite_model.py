"""Load and validate a .tflite flatbuffer, then import it with TVM's Relax TFLite frontend."""
import importlib
import os

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.tflite import tflite_frontend

from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError
from tvm_tinyseg.passes.tile_to_resize import TileToNearestResize

from . import input_shapes as input_shapes_
from .model import ImportedModel, TensorInfo
from .tflite_converter import ConverterFixes, ConverterMismatch, builtin_code
from .tflite_multipliers import check_multipliers
from .tflite_spatial import QUANTIZED_DATA_MOVEMENT, SPATIAL_INT8_OPS, SpatialOpsConverter, check_spatial_ops
from .tflite_verify import verify_tflite


def _tflite(name):  # the tflite package's star-imports shadow generic names: import explicitly
    return importlib.import_module("tflite." + name)


_TENSOR_TYPES = {0: "float32", 2: "int32", 9: "int8", 3: "uint8", 7: "int16", 4: "int64", 6: "bool"}

# Ops with an integer lowering (passes/lower_fake_quant.py) or exact int8 data movement.
SUPPORTED_INT8_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "MAX_POOL_2D", "AVERAGE_POOL_2D",
    "CONCATENATION", "ADD", "MUL", "LOGISTIC", "RESIZE_NEAREST_NEIGHBOR", "PAD", "PADV2",
    "RESHAPE", "QUANTIZE", "DEQUANTIZE",
    # activations and elementwise ops (passes/int8/activation_rules.py)
    "RELU", "RELU6", "RELU_N1_TO_1", "LEAKY_RELU", "HARD_SWISH", "TANH", "PRELU", "SOFTMAX",
    "SUB", "MINIMUM", "MAXIMUM", "SQUARED_DIFFERENCE",
    # data movement, or folded into a dilated convolution (tflite_converter.py)
    "TILE", "EXPAND_DIMS", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND"}) | SPATIAL_INT8_OPS


class _OperatorConverter(SpatialOpsConverter, ConverterFixes):
    """TVM's TFLite converter with the fixes of tflite_converter.py and these gaps closed:

    * it refuses quantized RESIZE_NEAREST_NEIGHBOR and PAD, although both only move int8 values
      (PAD fills with the zero point) and need no requantization;
    * it refuses quantized PRELU and ignores SOFTMAX's beta (see convert_prelu/convert_softmax);
    * it crashes on an omitted optional input (index -1, e.g. a conv without bias): trailing
      omitted inputs are dropped, which is what the converters expect for "no bias".

    The spatial and data-movement ops' gaps are closed by SpatialOpsConverter (tflite_spatial.py).
    """

    _SUPPORTED_QUANTIZED_OPS = tflite_frontend.OperatorConverter._SUPPORTED_QUANTIZED_OPS | {
        "RESIZE_NEAREST_NEIGHBOR", "PAD", "PADV2", "PRELU"} | QUANTIZED_DATA_MOVEMENT

    def convert_prelu(self, op):
        """PRELU as ``where(x >= 0, x, x * alpha)`` (TFLite's definition, alpha broadcast
        numpy-style), in float or between dequantize/quantize; TVM's converter refuses the
        quantized op and flattens the float one into a 1-D nn.prelu."""
        x, alpha = self.get_input_tensors(op)
        output = self.get_output_tensors(op)[0]
        x_expr, alpha_expr = self.get_tensor_expr(x), self.get_tensor_expr(alpha)
        if x.qnn_params:
            x_expr, alpha_expr = self.dequantize(x_expr, x), self.dequantize(alpha_expr, alpha)
        x_expr = self.bb.normalize(x_expr)
        negative = relax.op.multiply(x_expr, alpha_expr)
        out = relax.op.where(relax.op.greater_equal(x_expr, relax.const(0.0, "float32")), x_expr, negative)
        return self.quantize(out, output) if output.qnn_params else out

    def convert_softmax(self, op):
        """TVM's converter ignores ``beta``: refuse the (rare) models that set another one."""
        options = _tflite("SoftmaxOptions").SoftmaxOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        if options.Beta() != 1.0:
            raise tvm.error.OpNotImplemented(f"SOFTMAX with beta {options.Beta():g} (only beta 1 is supported)")
        return super().convert_softmax(op)

    def get_input_tensors(self, op):
        indices = list(op.InputsAsNumpy())
        while indices and indices[-1] < 0:
            indices.pop()
        return self.get_tensors(indices)


def _converter_ops(model, subgraph):
    """The op names the converter has a conversion for."""
    converter = _OperatorConverter(model, subgraph, tflite_frontend.ExprTable(), relax.BlockBuilder())
    return frozenset(converter.convert_map)


def _op_names(model, subgraph):
    names = {v: k for k, v in vars(_tflite("BuiltinOperator").BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for i in range(subgraph.OperatorsLength()):
        ops.append(names.get(builtin_code(model.OperatorCodes(subgraph.Operators(i).OpcodeIndex())), "CUSTOM"))
    return ops


def _tensor_info(subgraph, index) -> TensorInfo:
    t = subgraph.Tensors(index)
    dtype = _TENSOR_TYPES.get(t.Type(), f"type{t.Type()}")
    info = TensorInfo(t.Name().decode(), tuple(int(s) for s in t.ShapeAsNumpy()), dtype)
    quant = t.Quantization()
    if quant is not None and quant.ScaleLength() == 1:
        info.scale, info.zero_point = float(quant.Scale(0)), int(quant.ZeroPoint(0))
    return info


# Per-axis (per-channel) quantization is supported on the axis TFLite quantizes weights and biases
# along: the output channels. {op: {input position: axis}}
PER_AXIS_INPUTS = {"CONV_2D": {1: 0, 2: 0}, "DEPTHWISE_CONV_2D": {1: 3, 2: 0}, "TRANSPOSE_CONV": {1: 0, 3: 0}}


def _per_axis(subgraph, index):
    quant = subgraph.Tensors(index).Quantization()
    if quant is None or quant.ScaleLength() <= 1:
        return None
    return quant.QuantizedDimension()


# Ops with a window and their options table; TFLite's kernels hold SAME padding in int16 fields
# (PaddingValues), so a window that needs more computes with a wrapped padding there.
_WINDOW_OPTIONS = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                   "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions"}
MAX_PADDING = 32767
_SAME = 0  # tflite.Padding.SAME


# Input counts TFLite Micro's kernels accept (conv_common.cc, depthwise_conv_common.cc, transpose_conv.cc)
INPUT_COUNTS = {"CONV_2D": (2, 3), "DEPTHWISE_CONV_2D": (2, 3), "TRANSPOSE_CONV": (3, 4)}
# Where an op's optional bias is; it holds one value per output channel (LiteRT checks this; TFLite
# Micro reads past a shorter bias).
BIAS_INPUT = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "TRANSPOSE_CONV": 3, "FULLY_CONNECTED": 2}


def _check_inputs(path, subgraph, ops):
    """Every op reads a tensor first (TFLite marks only later, optional inputs as omitted, -1), the
    convolutions take as many inputs as TFLite Micro's kernels accept, and a bias holds one value per
    output channel."""
    for i, op_name in enumerate(ops):
        op = subgraph.Operators(i)
        if op.InputsLength() and op.Inputs(0) < 0:
            raise ModelFileError(f"{path}: {op_name} (operator #{i}) has its first input omitted (-1)")
        if op.InputsLength() not in INPUT_COUNTS.get(op_name, (op.InputsLength(),)):
            raise ModelFileError(f"{path}: {op_name} (operator #{i}) has {op.InputsLength()} inputs; TFLite "
                                 f"takes {' or '.join(map(str, INPUT_COUNTS[op_name]))}")
        position = BIAS_INPUT.get(op_name)
        if position is None or op.InputsLength() <= position or op.Inputs(position) < 0 or op.OutputsLength() < 1:
            continue
        bias, output = _tensor_info(subgraph, op.Inputs(position)), _tensor_info(subgraph, op.Outputs(0))
        channels = output.shape[-1] if output.shape else 1
        if int(np.prod(bias.shape)) != channels:
            raise ModelFileError(f"{path}: {op_name} (operator #{i}) bias '{bias.name}' has shape {list(bias.shape)}; "
                                 f"its output has {channels} channels")


def _check_padding(path, subgraph, ops):
    for i, op_name in enumerate(ops):
        table = _WINDOW_OPTIONS.get(op_name)
        op = subgraph.Operators(i)
        if table is None or op.BuiltinOptions() is None or op.InputsLength() < 1:
            continue
        options = getattr(_tflite(table), table)()
        options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        if options.Padding() != _SAME:
            continue
        if table == "Pool2DOptions":
            window, dilation = (options.FilterHeight(), options.FilterWidth()), (1, 1)
        elif op.InputsLength() >= 2 and op.Inputs(1) >= 0:
            window = tuple(int(s) for s in subgraph.Tensors(op.Inputs(1)).ShapeAsNumpy()[1:3])
            dilation = (options.DilationHFactor(), options.DilationWFactor())
        else:
            continue
        size = tuple(int(s) for s in subgraph.Tensors(op.Inputs(0)).ShapeAsNumpy()[1:3])
        for n, k, stride, d in zip(size, window, (options.StrideH(), options.StrideW()), dilation):
            if stride <= 0 or len(size) < 2:
                continue
            total = max(((n + stride - 1) // stride - 1) * stride + (k - 1) * d + 1 - n, 0)
            if total - total // 2 > MAX_PADDING:
                raise UnsupportedModelError(
                    f"{path}: {op_name} (operator #{i}) needs a SAME padding of {total} for a window of {k}; "
                    f"TFLite holds padding in 16 bits (at most {MAX_PADDING} a side) and would compute another result")


def _check_quantization(path, subgraph, ops):
    """int8 only (uint8 only as a model input/output converted by QUANTIZE), per-axis only on
    weights/biases along the output channels."""
    boundary = {int(t) for t in subgraph.InputsAsNumpy()} | {int(t) for t in subgraph.OutputsAsNumpy()}
    for i, op_name in enumerate(ops):
        op = subgraph.Operators(i)
        inputs = [int(j) for j in op.InputsAsNumpy()]
        for position, index in enumerate(inputs + [int(j) for j in op.OutputsAsNumpy()]):
            if index < 0:
                continue
            tensor = _tensor_info(subgraph, index)
            if tensor.dtype == "uint8" and op_name == "QUANTIZE" and index in boundary:
                continue
            if tensor.dtype in ("uint8", "int16"):
                raise UnsupportedModelError(
                    f"{path}: {op_name} (operator #{i}) uses {tensor.dtype} tensor '{tensor.name}'; "
                    "only int8 (or float32) quantization is supported")
            axis = _per_axis(subgraph, index)
            allowed = PER_AXIS_INPUTS.get(op_name, {}).get(position) if position < len(inputs) else None
            if axis is not None and axis != allowed:
                expected = "per-tensor quantization" if allowed is None else f"axis {allowed} (output channels)"
                raise UnsupportedModelError(
                    f"{path}: {op_name} (operator #{i}) tensor '{tensor.name}' is quantized per-axis on axis "
                    f"{axis}; expected {expected}")


def _display_name(model, subgraph, i, op_name):
    if op_name != "CUSTOM":
        return op_name
    code = model.OperatorCodes(subgraph.Operators(i).OpcodeIndex()).CustomCode()
    return f"CUSTOM '{code.decode(errors='replace')}'" if code else "CUSTOM"


def _check_ops_supported(path, model, subgraph, ops, converter_ops):
    """All unsupported ops in one line, each with its count: ops TVM's converter does not know,
    and ops with an int8 output that have no integer lowering."""
    unsupported = {}  # display name -> operator indices, in order of first appearance
    for i, op_name in enumerate(ops):
        outputs = subgraph.Operators(i).OutputsAsNumpy()
        int8_output = any(_tensor_info(subgraph, int(j)).dtype == "int8" for j in outputs)
        if op_name not in converter_ops or (int8_output and op_name not in SUPPORTED_INT8_OPS):
            unsupported.setdefault(_display_name(model, subgraph, i, op_name), []).append(i)
    if unsupported:
        counts = ", ".join(f"{name} ({len(indices)})" for name, indices in unsupported.items())
        name, indices = next(iter(unsupported.items()))
        first = subgraph.Operators(indices[0])
        output = _tensor_info(subgraph, int(first.Outputs(0))).name if first.OutputsLength() else "none"
        raise UnsupportedModelError(
            f"{path}: unsupported ops: {counts} (first: {name} operator #{indices[0]}, output '{output}')")


def _input_shapes(path, subgraph, input_shapes) -> dict:
    """Each input's static shape (see input_shapes.py)."""
    shapes, names = {}, []
    for i in subgraph.InputsAsNumpy():
        tensor = subgraph.Tensors(int(i))
        name = tensor.Name().decode()
        names.append(name)
        dims = [int(s) for s in tensor.ShapeAsNumpy()]
        if tensor.ShapeSignatureLength():
            dims = [None if s < 0 else d for d, s in zip(dims, tensor.ShapeSignatureAsNumpy())]
        shapes[name] = input_shapes_.resolve(path, name, dims, input_shapes)
    input_shapes_.check_known(path, input_shapes, names)
    return shapes


def _declare_shapes(path, data, subgraph, shapes) -> bytes:
    """The file with every tensor's declared shape as LiteRT infers it from the input ``shapes``:
    TVM's converters read declared shapes, which are placeholders (1) in dynamic dimensions."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise UnsupportedModelError(f"{path}: dynamic dimensions other than the batch need ai-edge-litert "
                                    "(pip install ai-edge-litert) to infer the shapes inside the model") from None
    interpreter = Interpreter(model_content=data)
    for detail in interpreter.get_input_details():
        interpreter.resize_tensor_input(detail["index"], list(shapes[detail["name"]]))
    try:
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as err:
        raise UnsupportedModelError(f"{path}: the input shapes given do not fit the model "
                                    f"({str(err).strip().splitlines()[0]})") from None
    patched = bytearray(data)
    for detail in interpreter.get_tensor_details():
        tensor = subgraph.Tensors(int(detail["index"]))
        offset = tensor._tab.Offset(4)  # Tensor.shape
        if not offset or tensor.ShapeLength() != len(detail["shape"]):
            continue
        start = tensor._tab.Vector(offset)
        patched[start:start + 4 * len(detail["shape"])] = np.asarray(detail["shape"], "<i4").tobytes()
    return bytes(patched)


TFLITE_SCHEMA_VERSION = 3


def load_tflite(path: str, input_shapes: dict = None) -> ImportedModel:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(f"{path}: not a TFLite flatbuffer (file identifier 'TFL3' missing)")
    n_subgraphs = verify_tflite(path, data)  # every read below stays inside the file
    if n_subgraphs != 1:
        raise UnsupportedModelError(f"{path}: {n_subgraphs} subgraphs; only single-subgraph models are supported")
    model = _tflite("Model").Model.GetRootAsModel(data, 0)
    if model.Version() != TFLITE_SCHEMA_VERSION:  # TFLite Micro and LiteRT refuse other versions too
        raise ModelFileError(f"{path}: TFLite schema version {model.Version()}; only version "
                             f"{TFLITE_SCHEMA_VERSION} is supported (as by TFLite Micro and LiteRT)")
    subgraph = model.Subgraphs(0)
    shapes = _input_shapes(path, subgraph, input_shapes)
    declared = {_tensor_info(subgraph, i).name: _tensor_info(subgraph, i).shape for i in subgraph.InputsAsNumpy()}
    if any(tuple(shapes[name]) != declared[name] for name in shapes):
        data = _declare_shapes(path, data, subgraph, shapes)
        model = _tflite("Model").Model.GetRootAsModel(data, 0)
        subgraph = model.Subgraphs(0)
    ops = _op_names(model, subgraph)
    inputs = [_tensor_info(subgraph, i) for i in subgraph.InputsAsNumpy()]
    outputs = [_tensor_info(subgraph, i) for i in subgraph.OutputsAsNumpy()]
    _check_inputs(path, subgraph, ops)
    _check_quantization(path, subgraph, ops)
    check_multipliers(path, subgraph, ops)
    _check_padding(path, subgraph, ops)
    check_spatial_ops(path, subgraph, ops)
    _check_ops_supported(path, model, subgraph, ops, _converter_ops(model, subgraph))
    try:
        mod = tflite_frontend.from_tflite(model, shape_dict=shapes, op_converter=_OperatorConverter)
    except tvm.error.OpNotImplemented as err:
        raise UnsupportedModelError(f"{path}: {str(err).strip().splitlines()[0]}") from None
    except ConverterMismatch as err:
        raise ConverterMismatch(f"{path}: {err}") from None
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: TVM's TFLite frontend could not import the model: {first}") from None
    mod = TileToNearestResize()(mod)  # Keras 3's UpSampling2D(nearest) as the resize it is
    return ImportedModel(os.fspath(path), "tflite", mod, inputs, outputs, ops)
