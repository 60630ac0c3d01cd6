"""Load and validate an .onnx model, then import it with TVM's Relax ONNX frontend."""
import contextlib
import io
import os

import numpy as np
import onnx
from onnx import numpy_helper
from tvm.relax.frontend.onnx import from_onnx
from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError
from tvm_tinyseg.passes.lower_onnx_qdq import QARITH_ATTR

from . import input_shapes as input_shapes_
from .model import ImportedModel, TensorInfo
from .onnx_qoperator import is_qoperator, qoperator_to_qdq

_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
           onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64"}


_PADS = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"}
# String attributes and the values the ONNX spec allows (onnxruntime refuses others when it loads
# the model; TVM's converters would fail later, inside a pass, with an internal error).
_STRING_ATTRIBUTES = {
    ("Resize", "mode"): {"nearest", "linear", "cubic"},
    ("Resize", "coordinate_transformation_mode"): {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                                   "align_corners", "asymmetric", "tf_crop_and_resize"},
    ("Resize", "nearest_mode"): {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"},
    ("Resize", "keep_aspect_ratio_policy"): {"stretch", "not_larger", "not_smaller"},
    **{(op, "auto_pad"): _PADS for op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool")},
}


def _check_string_attributes(path, graph) -> None:
    for i, node in enumerate(graph.node):
        for attr in node.attribute:
            allowed = _STRING_ATTRIBUTES.get((node.op_type, attr.name))
            if allowed is not None and attr.s.decode(errors="replace") not in allowed:
                raise ModelFileError(f"{path}: {node.op_type} node #{i} '{node.name}': attribute {attr.name} is "
                                     f"{attr.s.decode(errors='replace')!r}; ONNX allows {', '.join(sorted(allowed))}")


def _check_clip_bounds(path, graph, initializers) -> None:
    """ONNX's Clip with min > max gives max everywhere; TVM's clip gives min: refuse it."""
    for i, node in enumerate(graph.node):
        if node.op_type != "Clip" or len(node.input) < 3 or not all(n in initializers for n in node.input[1:3]):
            continue
        low, high = (float(onnx.numpy_helper.to_array(initializers[n]).reshape(-1)[0]) for n in node.input[1:3])
        if low > high:
            raise UnsupportedModelError(f"{path}: Clip node #{i} '{node.name}': min {low} is above max {high} "
                                        "(every output would be max); refusing it rather than computing min")


def _check_resize_scales(path, model, initializers) -> None:
    """onnxruntime's Resize maps output pixel x through the given ``scales`` (asymmetric: x / scale)
    and makes ``int(size * scale)`` pixels; TVM's resize maps through the sizes' ratio. They agree
    when ``size * scale`` is a whole number of pixels: refuse any other constant scale."""
    resizes = [(i, node) for i, node in enumerate(model.graph.node)
               if node.op_type == "Resize" and len(node.input) >= 3 and node.input[2] in initializers]
    if not resizes:
        return
    graph = onnx.shape_inference.infer_shapes(model).graph
    dims = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.value_info, *graph.output]}
    for i, node in resizes:
        scales = onnx.numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32).reshape(-1)
        sizes = dims.get(node.input[0])
        if sizes is None or len(sizes) != len(scales):
            continue
        for size, scale in zip(sizes, scales):
            pixels = np.float32(size) * scale if size else None
            if pixels is not None and pixels != np.floor(pixels):
                raise UnsupportedModelError(
                    f"{path}: Resize node #{i} '{node.name}': scale {float(scale):.8g} of an axis of {size} gives "
                    f"{float(pixels):.8g} pixels; only scales giving whole sizes are supported")


def _value_info(path, value, input_shapes) -> TensorInfo:
    tensor_type = value.type.tensor_type
    dims = [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim]
    shape = input_shapes_.resolve(path, value.name, dims, input_shapes)
    return TensorInfo(value.name, shape, _DTYPES.get(tensor_type.elem_type, f"onnx{tensor_type.elem_type}"))


# int8 ONNX comes in QDQ form (QuantizeLinear/DequantizeLinear around float ops; QOperator models
# are rewritten into it first), lowered with ONNX's QLinear arithmetic by passes/lower_onnx_qdq.py.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
QUANTIZATION_OPS = frozenset({"DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul",
                              "QLinearConcat", "QLinearSigmoid", "ConvInteger", "MatMulInteger"})


def _quantized_dtype(node, initializers) -> str:
    """The integer type a quantization node works in: its zero point's, a dequantized constant's,
    else uint8 (QuantizeLinear's default)."""
    typed = [initializers[n] for n in node.input[2:3] if n in initializers]
    if not typed and node.op_type == "DequantizeLinear" and node.input[0] in initializers:
        typed = [initializers[node.input[0]]]
    if typed:
        return _DTYPES.get(typed[0].data_type, onnx.TensorProto.DataType.Name(typed[0].data_type).lower())
    return "uint8"


def _check_quantization(path, graph, initializers) -> bool:
    """Whether the model is int8/uint8 QDQ; raises on any other quantized form."""
    qdq = False
    for i, node in enumerate(graph.node):
        if node.op_type in QUANTIZATION_OPS or node.domain not in ("", "ai.onnx"):
            raise UnsupportedModelError(
                f"{path}: quantized ONNX op {node.op_type} (node #{i} '{node.name}'); "
                "quantize with QuantFormat.QDQ (QuantizeLinear/DequantizeLinear around float ops)")
        if node.op_type in QDQ_OPS:
            dtype = _quantized_dtype(node, initializers)
            if dtype not in ("int8", "uint8", "int32"):
                raise UnsupportedModelError(
                    f"{path}: quantized ONNX model ({node.op_type} node #{i} '{node.name}', {dtype}); only int8 "
                    "and uint8 quantization is supported")
            scale = initializers.get(node.input[1]) if len(node.input) > 1 else None
            if scale is not None and np.any(numpy_helper.to_array(scale) <= 0):
                raise ModelFileError(f"{path}: {node.op_type} node #{i} '{node.name}' scale '{scale.name}' is not "
                                     "positive")
            qdq = True
    return qdq


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}


def _non_finite(values) -> str:
    """'' when every value is finite, else how many are not and the first one."""
    values = np.asarray(values, np.float64).reshape(-1)
    bad = values[~np.isfinite(values)]
    return f"{len(bad)} non-finite values (first: {bad[0]})" if len(bad) else ""


def _attribute_values(attribute):
    if attribute.type == onnx.AttributeProto.FLOAT:
        return [attribute.f]
    if attribute.type == onnx.AttributeProto.FLOATS:
        return list(attribute.floats)
    if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in _FLOAT_TYPES:
        return numpy_helper.to_array(attribute.t)
    return []


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _initializer_arrays(path, graph) -> dict:
    """Name → value of every initializer, each of whose data must fill its declared dims exactly
    (onnx's checker does not look)."""
    arrays = {}
    for init in graph.initializer:
        try:
            arrays[init.name] = numpy_helper.to_array(init)
        except Exception as err:  # noqa: BLE001 (numpy's reshape, a missing external file, ...)
            raise ModelFileError(f"{path}: initializer '{init.name}' does not hold its declared shape "
                                 f"{list(init.dims)} ({_first_line(err)})") from None
    return arrays


def _check_finite(path, graph, arrays):
    """NaN or infinity in a float initializer or attribute (a Constant's value, an epsilon, an
    alpha), and a batch normalization whose variance + epsilon is not positive, make onnxruntime
    compute NaN or infinity: refused with the tensor's or node's name."""
    for init in graph.initializer:
        if init.data_type in _FLOAT_TYPES and (problem := _non_finite(arrays[init.name])):
            raise ModelFileError(f"{path}: initializer '{init.name}' holds {problem}")
    for i, node in enumerate(graph.node):
        for attribute in node.attribute:
            if problem := _non_finite(_attribute_values(attribute)):
                raise ModelFileError(f"{path}: {node.op_type} node #{i} '{node.name}' attribute "
                                     f"'{attribute.name}' holds {problem}")
        if node.op_type == "BatchNormalization" and len(node.input) > 4 and node.input[4] in arrays:
            epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
            variance = arrays[node.input[4]].astype(np.float32)
            denominator = variance + np.float32(epsilon)
            if np.any(denominator <= 0):
                channel = int(np.argmax(denominator.reshape(-1) <= 0))
                raise ModelFileError(
                    f"{path}: BatchNormalization node #{i} '{node.name}': variance + epsilon is "
                    f"{float(denominator.reshape(-1)[channel]):g} in channel {channel} (must be positive)")


def load_onnx(path: str, input_shapes: dict = None) -> ImportedModel:
    with open(path, "rb") as f:
        if f.read(8)[4:8] == b"TFL3":
            raise ModelFileError(f"{path}: a TFLite flatbuffer, not an ONNX model; name it .tflite")
    try:
        model = onnx.load(path)
        # full_check adds ONNX's strict shape inference, which onnxruntime runs too: it refuses
        # attributes no op accepts (negative pads, a kernel larger than its padded input, ...)
        onnx.checker.check_model(model, full_check=True)
    except Exception as err:
        first = _first_line(err)
        raise ModelFileError(f"{path}: malformed ONNX model ({first})") from None
    if is_qoperator(model):
        try:
            model = qoperator_to_qdq(model)
        except UnsupportedModelError as err:
            raise UnsupportedModelError(f"{path}: {err}") from None
    graph = model.graph
    _check_string_attributes(path, graph)
    initializers = {i.name: i for i in graph.initializer}
    _check_finite(path, graph, _initializer_arrays(path, graph))
    _check_clip_bounds(path, graph, initializers)
    _check_resize_scales(path, model, initializers)
    inputs = [_value_info(path, v, input_shapes) for v in graph.input if v.name not in initializers]
    input_shapes_.check_known(path, input_shapes, [t.name for t in inputs])
    outputs = [TensorInfo(v.name, tuple(int(d.dim_value) for d in v.type.tensor_type.shape.dim),
                          _DTYPES.get(v.type.tensor_type.elem_type, "?")) for v in graph.output]
    ops = [node.op_type for node in graph.node]
    quantized = _check_quantization(path, graph, initializers)
    known = _get_convert_map()
    for i, node in enumerate(graph.node):
        if node.op_type not in known:
            raise UnsupportedModelError(
                f"{path}: unsupported op {node.op_type} (node #{i} '{node.name}'); "
                "TVM's ONNX frontend has no converter")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the frontend prints its failures as well as raising
            mod = from_onnx(model, shape_dict={t.name: t.shape for t in inputs}, opset=opset,
                            keep_params_in_input=False)
    except Exception as err:
        first = _first_line(err)
        raise UnsupportedModelError(f"{path}: TVM's ONNX frontend could not import the model: {first}") from None
    if quantized:  # lowered with ONNX's requantization, not TFLite's (passes/lower_onnx_qdq.py)
        mod["main"] = mod["main"].with_attr(QARITH_ATTR, "onnx")
    return ImportedModel(os.fspath(path), "onnx", mod, inputs, outputs, ops)
