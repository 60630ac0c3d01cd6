"""A small float32 network writer for tests (TFLiteBuilder plus shape bookkeeping), and the
reference it is checked against: LiteRT with its reference kernels."""
import numpy as np

from tflite_builder import TFLiteBuilder

ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")


def _out_size(size, kernel, stride, padding, dilation=1):
    if padding == "SAME":
        return -(-size // stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


class FloatNet:
    """One float32 input ``x``; seeded weights keep each output's spread near its input's (feed
    inputs spread over about [-10, 10] and every fused activation clips a part of the outputs)."""

    def __init__(self, shape=(1, 7, 9, 3), seed=20241102, shape_signature=None):
        self.b = TFLiteBuilder()
        self.rng = np.random.default_rng(seed)
        self.shapes = {}
        self.x = self.tensor("x", shape, shape_signature=shape_signature)

    def tensor(self, name, shape, data=None, dtype=np.float32, shape_signature=None):
        t = self.b.tensor(f"{name}{len(self.shapes)}", shape, dtype, data=data, shape_signature=shape_signature)
        self.shapes[t] = [int(s) for s in shape]
        return t

    def const(self, name, data, dtype=np.int32):
        data = np.asarray(data, dtype)
        return self.tensor(name, data.shape, data=data, dtype=dtype)

    def shape(self, t):
        return self.shapes[t]

    def _weights(self, shape, fan_in):
        return self.tensor("w", shape, data=self.rng.standard_normal(shape) * (1.5 / np.sqrt(fan_in)))

    def _bias(self, n):
        return self.tensor("b", [n], data=self.rng.uniform(-1, 1, n))

    def conv(self, x, out_channels, kernel=3, stride=1, padding="SAME", dilation=1, activation="NONE"):
        _, h, w, c = self.shape(x)
        shape = [1, _out_size(h, kernel, stride, padding, dilation), _out_size(w, kernel, stride, padding, dilation),
                 out_channels]
        y = self.tensor("conv", shape)
        self.b.op("CONV_2D", [x, self._weights([out_channels, kernel, kernel, c], kernel * kernel * c),
                              self._bias(out_channels)], [y],
                  options=("Conv2DOptions", {"padding": padding, "stride_h": stride, "stride_w": stride,
                                             "dilation_h_factor": dilation, "dilation_w_factor": dilation,
                                             "fused_activation_function": activation}))
        return y

    def depthwise(self, x, kernel=3, stride=1, padding="SAME", multiplier=1, dilation=1, activation="NONE"):
        _, h, w, c = self.shape(x)
        shape = [1, _out_size(h, kernel, stride, padding, dilation), _out_size(w, kernel, stride, padding, dilation),
                 c * multiplier]
        y = self.tensor("dwconv", shape)
        self.b.op("DEPTHWISE_CONV_2D", [x, self._weights([1, kernel, kernel, c * multiplier], kernel * kernel),
                                        self._bias(c * multiplier)], [y],
                  options=("DepthwiseConv2DOptions", {
                      "padding": padding, "stride_h": stride, "stride_w": stride, "depth_multiplier": multiplier,
                      "dilation_h_factor": dilation, "dilation_w_factor": dilation,
                      "fused_activation_function": activation}))
        return y

    def transpose_conv(self, x, out_channels, kernel=3, stride=2, padding="SAME", activation="NONE"):
        _, h, w, c = self.shape(x)
        size = (lambda n: n * stride) if padding == "SAME" else (lambda n: (n - 1) * stride + kernel)
        shape = [1, size(h), size(w), out_channels]
        y = self.tensor("tconv", shape)
        self.b.op("TRANSPOSE_CONV", [self.const("output_shape", shape),
                                     self._weights([out_channels, kernel, kernel, c], c * 2),
                                     x, self._bias(out_channels)], [y],
                  options=("TransposeConvOptions", {"padding": padding, "stride_h": stride, "stride_w": stride,
                                                    "fused_activation_function": activation}))
        return y

    def fully_connected(self, x, units, activation="NONE"):
        *lead, c = self.shape(x)
        y = self.tensor("fc", [int(np.prod(lead)), units])
        self.b.op("FULLY_CONNECTED", [x, self._weights([units, c], c), self._bias(units)], [y],
                  options=("FullyConnectedOptions", {"fused_activation_function": activation}))
        return y

    def pool(self, x, op, size, stride, padding, activation="NONE"):
        _, h, w, c = self.shape(x)
        kh, kw = size
        y = self.tensor("pool", [1, _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding), c])
        self.b.op(op, [x], [y], options=("Pool2DOptions", {
            "padding": padding, "stride_h": stride, "stride_w": stride, "filter_height": kh,
            "filter_width": kw, "fused_activation_function": activation}))
        return y

    def channel_constant(self, low=-4.0, high=4.0):
        shape = [1, 1, 1, self.shape(self.x)[3]]
        return self.tensor("k", shape, data=self.rng.uniform(low, high, shape))

    def binary(self, op, a, b, activation="NONE"):
        y = self.tensor(op.lower(), list(np.broadcast_shapes(tuple(self.shape(a)), tuple(self.shape(b)))))
        table = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}[op]
        self.b.op(op, [a, b], [y], options=(table, {"fused_activation_function": activation}))
        return y

    def concat(self, inputs, axis, activation="NONE"):
        shape = list(self.shape(inputs[0]))
        shape[axis] = sum(self.shape(t)[axis] for t in inputs)
        y = self.tensor("concat", shape)
        self.b.op("CONCATENATION", inputs, [y], options=("ConcatenationOptions", {
            "axis": axis, "fused_activation_function": activation}))
        return y

    def save(self, path, y):
        self.b.save(str(path), inputs=[self.x], outputs=[y])
        return str(path)


def litert_reference(path, x: np.ndarray) -> np.ndarray:
    """LiteRT's output for ``x`` with its reference (not optimized) kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
