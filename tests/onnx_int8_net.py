"""A small U-Net-like float ONNX net built with onnx.helper, and its int8 quantization by
onnxruntime.quantization (QDQ or QOperator form, per-channel weights) on seeded calibration data."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INPUT_SHAPE = (1, 3, 16, 16)
OPSET = 17


def _conv_weights(rng, out_channels, in_channels, k):
    scale = 1.0 / np.sqrt(in_channels * k * k)
    return (rng.standard_normal((out_channels, in_channels, k, k)) * scale).astype(np.float32)


def float_unet(seed=0) -> onnx.ModelProto:
    """Conv+Relu, MaxPool, Conv+Clip(0,6), residual Add, ConvTranspose, Resize nearest, Concat,
    1x1 Conv, Sigmoid: the ops of a small segmentation U-Net, in NCHW."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def conv(name, x, out_channels, in_channels, k, pads, transposed=False, stride=1):
        w = _conv_weights(rng, out_channels, in_channels, k)
        if transposed:
            w = np.ascontiguousarray(w.transpose(1, 0, 2, 3))  # (C_in, C_out, kH, kW)
        b = (rng.standard_normal(out_channels) * 0.1).astype(np.float32)
        nodes.append(helper.make_node("ConvTranspose" if transposed else "Conv", [x, const(name + "_w", w),
                                      const(name + "_b", b)], [name], name=name, kernel_shape=[k, k],
                                      pads=pads, strides=[stride, stride]))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    a = node("Relu", [conv("conv1", "x", 8, 3, 3, [1, 1, 1, 1])], "relu1")
    p = node("MaxPool", [a], "pool", kernel_shape=[2, 2], strides=[2, 2])
    b = node("Clip", [conv("conv2", p, 8, 8, 3, [1, 1, 1, 1]), const("zero", np.float32(0)),
                      const("six", np.float32(6))], "relu6")
    c = conv("conv3", b, 8, 8, 3, [1, 0, 1, 2])  # asymmetric padding
    r = node("Add", [b, c], "residual")
    u = conv("up", r, 8, 8, 2, [0, 0, 0, 0], transposed=True, stride=2)
    u2 = node("Resize", [r, "", const("scales", np.array([1, 1, 2, 2], np.float32))], "resize", mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # as PyTorch exports it
    cat = node("Concat", [a, u, u2], "concat", axis=1)
    head = conv("head", cat, 2, 24, 1, [0, 0, 0, 0])
    node("Sigmoid", [head], "y")
    graph = helper.make_graph(
        nodes, "unet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, INPUT_SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 2, 16, 16))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Calibration:
    def __init__(self, seed, count=8):
        rng = np.random.default_rng(seed)
        self._batches = iter([{"x": rng.standard_normal(INPUT_SHAPE).astype(np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self._batches, None)


def quantized_unet(float_path, out_path, quant_format="QDQ", activation_type="QInt8", seed=0):
    """onnxruntime's static quantization of ``float_path`` (per-channel int8 weights)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(float_path), str(out_path), _Calibration(seed), quant_format=QuantFormat[quant_format],
                    per_channel=True, activation_type=QuantType[activation_type], weight_type=QuantType.QInt8)
    return out_path
