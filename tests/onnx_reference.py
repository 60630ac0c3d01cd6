"""onnxruntime as the reference for quantized (QDQ) ONNX models, made exact on every x86 CPU.

On x86 CPUs with AVX2 but without VNNI (e.g. AMD EPYC before Zen 4), onnxruntime's 8-bit
convolution kernels multiply unsigned by signed bytes and sum pairs of products in 16 bits with
saturation (vpmaddubsw): with uint8 activations and int8 weights, or int8 activations whose zero
point is -128, a QLinearConv then gives other values than the operator defines (255·127·2 saturates
to 32767; up to 44 LSB at a U-Net's output). Its uint8 × uint8 kernels widen first and are exact.
So the reference model stores every int8 tensor of its QuantizeLinear/DequantizeLinear pairs as
uint8 (value + 128, zero point + 128): by ONNX's definition the same model, (q − zp)·scale for each,
computed without saturation wherever the tests run. Models with int8 inputs or outputs, QOperator
models (QLinearConv …) and zero points that are not initializers are left as they are.
"""
import numpy as np
import onnx
from onnx import numpy_helper

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def _as_uint8(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its int8 quantized tensors re-encoded as uint8 (see the module); unchanged where
    that would change its interface or cannot be done for every tensor."""
    graph = model.graph
    if any(value.type.tensor_type.elem_type == onnx.TensorProto.INT8 for value in [*graph.input, *graph.output]):
        return model
    initializers = {t.name: t for t in graph.initializer}
    int8 = {name for name, t in initializers.items() if t.data_type == onnx.TensorProto.INT8}
    for node in graph.node:
        for position, name in enumerate(node.input):
            # int8 initializers may only be a DequantizeLinear's data or a Q/DQ's zero point
            if name in int8 and not (node.op_type in QDQ_OPS and position == 2
                                     or node.op_type == "DequantizeLinear" and position == 0):
                return model
        if node.op_type in QDQ_OPS and len(node.input) > 2 and node.input[2] not in initializers:
            return model
    for index, tensor in enumerate(graph.initializer):
        if tensor.name in int8:
            values = numpy_helper.to_array(tensor).astype(np.int16) + 128
            graph.initializer[index].CopyFrom(numpy_helper.from_array(values.astype(np.uint8), tensor.name))
    del graph.value_info[:]  # intermediate int8 types no longer hold; onnxruntime infers them again
    return model


def session(path, options=None):
    """An onnxruntime session (CPU) on ``path``, exact on CPUs without VNNI (see the module)."""
    import onnxruntime

    model = _as_uint8(onnx.load(str(path)))
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnxruntime_output(path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's output of ``path``'s first output on input ``x``."""
    ort = session(path)
    return ort.run(None, {ort.get_inputs()[0].name: x})[0]
