"""QOperator → QDQ: rewrite an int8 ONNX model in onnxruntime's QOperator form into the equivalent
QDQ graph, which passes/lower_onnx_qdq.py lowers (TVM's ONNX frontend has no QLinear converters).

Each QLinear node becomes DequantizeLinear of its inputs, the float op, QuantizeLinear of its
output, with the same scales and zero points — the form whose arithmetic ONNX defines QLinearConv
by. A QLinearConv bias (int32, implied scale ``x_scale·w_scale``) gets that scale explicitly. Ops
onnxruntime's quantizer leaves on int8 tensors (MaxPool, Resize, Reshape, ...) keep their input's
quantization: they are wrapped the same way with the input's scale and zero point.
"""
import numpy as np
import onnx
from onnx import helper, numpy_helper

from tvm_tinyseg.errors import UnsupportedModelError

MICROSOFT = "com.microsoft"
# op: (float op, [(x, scale, zero point) input positions], (y scale, y zero point) input positions)
_QLINEAR = {
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearSigmoid": ("Sigmoid", [(0, 1, 2)], (3, 4)),
    "QLinearLeakyRelu": ("LeakyRelu", [(0, 1, 2)], (3, 4)),
}
# int8 in, int8 out with the input's quantization
_DATA_MOVEMENT = frozenset({"MaxPool", "Resize", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze"})


def is_qoperator(model: onnx.ModelProto) -> bool:
    return any(n.op_type in _QLINEAR or n.op_type == "QLinearConcat" for n in model.graph.node)


class _Rewriter:
    def __init__(self, graph):
        self.initializers = {i.name: i for i in graph.initializer}
        self.qparams = {}  # int8 tensor name -> (scale name, zero point name)
        self.nodes, self.new_initializers, self.count = [], [], 0

    def _name(self, base):
        self.count += 1
        return f"{base}_qdq{self.count}"

    def dequantize(self, x, scale, zero_point, axis=None):
        out = self._name(x + "_dq")
        attrs = {} if axis is None else {"axis": axis}
        self.nodes.append(helper.make_node("DequantizeLinear", [x, scale, zero_point], [out], name=out, **attrs))
        return out

    def quantize(self, value, y, scale, zero_point):
        name = self._name(y + "_q")
        self.nodes.append(helper.make_node("QuantizeLinear", [value, scale, zero_point], [y], name=name))
        self.qparams[y] = (scale, zero_point)

    def constant(self, base, array):
        name = self._name(base)
        self.new_initializers.append(numpy_helper.from_array(array, name))
        return name

    def rewrite(self, node):
        if node.op_type == "QuantizeLinear":
            self.qparams[node.output[0]] = (node.input[1], node.input[2])
            self.nodes.append(node)
        elif node.op_type in _QLINEAR:
            self._qlinear(node)
        elif node.op_type == "QLinearConcat":
            y_scale, y_zp = node.input[0], node.input[1]
            inputs = [self.dequantize(*node.input[i:i + 3]) for i in range(2, len(node.input), 3)]
            self._float_op(node, "Concat", inputs, y_scale, y_zp)
        elif node.op_type in _DATA_MOVEMENT and node.input[0] in self.qparams:
            scale, zero_point = self.qparams[node.input[0]]
            inputs = [self.dequantize(node.input[0], scale, zero_point), *node.input[1:]]
            self._float_op(node, node.op_type, inputs, scale, zero_point, domain=node.domain)
        elif node.domain == MICROSOFT or node.op_type.startswith("QLinear"):
            raise UnsupportedModelError(
                f"quantized ONNX op {node.op_type} (node '{node.name}') has no QDQ equivalent here")
        else:
            self.nodes.append(node)

    def _qlinear(self, node):
        op, positions, (y_scale, y_zp) = _QLINEAR[node.op_type]
        inputs = []
        for k, (x, scale, zero_point) in enumerate(positions):
            per_axis = node.op_type == "QLinearConv" and k == 1
            inputs.append(self.dequantize(node.input[x], node.input[scale], node.input[zero_point],
                                          axis=0 if per_axis else None))
        if node.op_type == "QLinearConv" and len(node.input) > 8 and node.input[8]:
            inputs.append(self._conv_bias(node))
        self._float_op(node, op, inputs, node.input[y_scale], node.input[y_zp])

    def _conv_bias(self, node):
        """QLinearConv's int32 bias has the implied scale x_scale·w_scale (per channel), zero point 0."""
        missing = [node.input[i] for i in (1, 4) if node.input[i] not in self.initializers]
        if missing:
            raise UnsupportedModelError(f"QLinearConv '{node.name}' scale '{missing[0]}' is not a constant")
        x_scale, w_scale = (numpy_helper.to_array(self.initializers[node.input[i]]) for i in (1, 4))
        scale = (np.float32(x_scale) * np.asarray(w_scale, np.float32)).astype(np.float32).reshape(-1)
        zero_point = np.zeros(scale.shape, np.int32)
        axis = 0 if scale.size > 1 else None
        if scale.size == 1:
            scale, zero_point = scale.reshape(()), zero_point.reshape(())
        return self.dequantize(node.input[8], self.constant(node.name + "_bias_scale", scale),
                               self.constant(node.name + "_bias_zp", zero_point), axis=axis)

    def _float_op(self, node, op, inputs, y_scale, y_zp, domain=""):
        value = self._name(node.output[0] + "_float")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.nodes.append(helper.make_node(op, inputs, [value], name=node.name, domain=domain or None, **attrs))
        self.quantize(value, node.output[0], y_scale, y_zp)


def qoperator_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with its QLinear nodes written as DequantizeLinear → op → QuantizeLinear."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    rewriter = _Rewriter(model.graph)
    for node in model.graph.node:
        rewriter.rewrite(node)
    del model.graph.node[:]
    model.graph.node.extend(rewriter.nodes)
    model.graph.initializer.extend(rewriter.new_initializers)
    del model.graph.value_info[:]  # int8 intermediate types changed to float where ops moved
    kept = [o for o in model.opset_import if o.domain != MICROSOFT]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model
