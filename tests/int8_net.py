"""A small int8 network writer for tests: TFLiteBuilder plus quantization bookkeeping that keeps
every output spread over the int8 range (so exactness checks prove something)."""
import math

import numpy as np

from tflite_builder import TFLiteBuilder

H, W, C = 7, 9, 3
ODD = (1, H, W, C)
EVEN = (1, 8, 10, C)        # 3x3 stride-2 SAME: pad 0 before, 1 after (odd sizes: 1 and 1)
IN_Q = (0.047, -7)          # input scale, zero point
INT8_STD = 73.9             # standard deviation of uniformly random int8 codes


def _out_size(size, kernel, stride, padding, dilation=1):
    if padding == "SAME":
        return -(-size // stride)
    return (size - (kernel - 1) * dilation - 1) // stride + 1


class Net:
    """TFLiteBuilder plus the shape and quantization of each activation, from which weights,
    biases and output quantizations are derived that keep outputs spread over int8."""

    def __init__(self, shape=ODD, seed=20241101):
        self.b = TFLiteBuilder()
        self.rng = np.random.default_rng(seed)
        self.info = {}
        self.x = self.activation("x", shape, *IN_Q)

    def activation(self, name, shape, scale, zero_point, data=None):
        t = self.b.tensor(f"{name}{len(self.info)}", shape, np.int8, data=data, quant=(scale, zero_point))
        self.info[t] = ([int(s) for s in shape], float(np.float32(scale)), int(zero_point))
        return t

    def shape(self, t):
        return self.info[t][0]

    def qparams(self, t):
        return self.info[t][1:]

    def const(self, name, data, dtype=np.int32):
        data = np.asarray(data, dtype)
        return self.b.tensor(name, data.shape, dtype, data=data)

    def _weights(self, shape, axis):
        """Random int8 weights, symmetric per-channel quantization along ``axis``."""
        scales = self.rng.uniform(0.002, 0.02, shape[axis]).astype(np.float32)
        data = self.rng.integers(-127, 128, shape, dtype=np.int8)
        return self.b.tensor("w", shape, np.int8, data=data, quant=(scales, [0] * len(scales), axis)), scales

    def _bias(self, in_scale, w_scales):
        scales = np.float32(in_scale) * w_scales
        data = self.rng.integers(-4000, 4000, len(w_scales), dtype=np.int32)
        return self.b.tensor("b", [len(w_scales)], np.int32, data=data, quant=(scales, [0] * len(scales), 0))

    @staticmethod
    def _out_quant(in_scale, w_scales, taps, zero_point):
        """Output quantization putting the accumulator's standard deviation at ~40 codes."""
        spread = math.sqrt(taps) * INT8_STD * INT8_STD * in_scale * float(np.mean(w_scales))
        return spread / 40.0, zero_point

    def conv(self, x, out_channels, kernel=3, stride=1, padding="SAME", dilation=1, activation="NONE",
             bias=True, out_zp=5, out_q=None):
        """CONV_2D. ``bias``: True, False (2 inputs) or None (an empty optional input, index -1)."""
        (_, h, w, c), (in_scale, _) = self.shape(x), self.qparams(x)
        weights, w_scales = self._weights([out_channels, kernel, kernel, c], 0)
        shape = [1, _out_size(h, kernel, stride, padding, dilation), _out_size(w, kernel, stride, padding, dilation),
                 out_channels]
        y = self.activation("conv", shape, *(out_q or self._out_quant(in_scale, w_scales, kernel * kernel * c, out_zp)))
        inputs = [x, weights] + ([self._bias(in_scale, w_scales)] if bias else [-1] if bias is None else [])
        self.b.op("CONV_2D", inputs, [y], options=("Conv2DOptions", {
            "padding": padding, "stride_h": stride, "stride_w": stride, "dilation_h_factor": dilation,
            "dilation_w_factor": dilation, "fused_activation_function": activation}))
        return y

    def depthwise(self, x, kernel=3, stride=1, padding="SAME", multiplier=1, activation="NONE", out_zp=-3):
        (_, h, w, c), (in_scale, _) = self.shape(x), self.qparams(x)
        weights, w_scales = self._weights([1, kernel, kernel, c * multiplier], 3)
        shape = [1, _out_size(h, kernel, stride, padding), _out_size(w, kernel, stride, padding), c * multiplier]
        y = self.activation("dwconv", shape, *self._out_quant(in_scale, w_scales, kernel * kernel, out_zp))
        self.b.op("DEPTHWISE_CONV_2D", [x, weights, self._bias(in_scale, w_scales)], [y],
                  options=("DepthwiseConv2DOptions", {
                      "padding": padding, "stride_h": stride, "stride_w": stride, "depth_multiplier": multiplier,
                      "fused_activation_function": activation}))
        return y

    def transpose_conv(self, x, out_channels, kernel, stride, padding, bias, out_zp=9, activation="NONE"):
        """TRANSPOSE_CONV. ``bias``: True, False (3 inputs) or None (an empty optional input, -1)."""
        (_, h, w, c), (in_scale, _) = self.shape(x), self.qparams(x)
        weights, w_scales = self._weights([out_channels, kernel, kernel, c], 0)
        size = (lambda n: n * stride) if padding == "SAME" else (lambda n: (n - 1) * stride + kernel)
        shape = [1, size(h), size(w), out_channels]
        taps = max(1.0, (kernel / stride) ** 2) * c  # input pixels summed per output, on average
        y = self.activation("tconv", shape, *self._out_quant(in_scale, w_scales, taps, out_zp))
        inputs = [self.const("output_shape", shape), weights, x]
        if bias or bias is None:
            inputs.append(self._bias(in_scale, w_scales) if bias else -1)
        self.b.op("TRANSPOSE_CONV", inputs, [y], options=("TransposeConvOptions", {
            "padding": padding, "stride_h": stride, "stride_w": stride, "fused_activation_function": activation}))
        return y

    def pool(self, x, op, size, stride, padding, activation="NONE"):
        _, h, w, c = self.shape(x)
        kh, kw = size
        shape = [1, _out_size(h, kh, stride, padding), _out_size(w, kw, stride, padding), c]
        y = self.activation("pool", shape, *self.qparams(x))
        self.b.op(op, [x], [y], options=("Pool2DOptions", {
            "padding": padding, "stride_h": stride, "stride_w": stride, "filter_height": kh,
            "filter_width": kw, "fused_activation_function": activation}))
        return y

    def requantize(self, x, scale, zero_point):
        y = self.activation("requantized", self.shape(x), scale, zero_point)
        self.b.op("QUANTIZE", [x], [y])
        return y

    def binary(self, op, a, b, out_q, activation="NONE"):
        shape = list(np.broadcast_shapes(tuple(self.shape(a)), tuple(self.shape(b))))
        y = self.activation(op.lower(), shape, *out_q)
        table = "AddOptions" if op == "ADD" else "MulOptions"
        self.b.op(op, [a, b], [y], options=(table, {"fused_activation_function": activation}))
        return y

    def channel_constant(self, scale, zero_point):
        """A constant [1, 1, 1, C] int8 operand (for broadcasting)."""
        shape = [1, 1, 1, self.shape(self.x)[3]]
        return self.activation("k", shape, scale, zero_point, data=self.rng.integers(-128, 128, shape, dtype=np.int8))

    def concat(self, inputs, axis):
        shape = list(self.shape(inputs[0]))
        shape[axis] = sum(self.shape(t)[axis] for t in inputs)
        y = self.activation("concat", shape, *self.qparams(inputs[0]))
        self.b.op("CONCATENATION", inputs, [y], options=("ConcatenationOptions", {"axis": axis}))
        return y

    def resize_nearest(self, x, size, half_pixel_centers=False, align_corners=False):
        n, _, _, c = self.shape(x)
        y = self.activation("resized", [n, *size, c], *self.qparams(x))
        self.b.op("RESIZE_NEAREST_NEIGHBOR", [x, self.const("size", size)], [y],
                  options=("ResizeNearestNeighborOptions", {"align_corners": align_corners,
                                                            "half_pixel_centers": half_pixel_centers}))
        return y

    def pad(self, x, paddings, value=None):
        """PAD (with the zero point), or PADV2 with the int8 code ``value``."""
        shape = [s + a + b for s, (a, b) in zip(self.shape(x), paddings)]
        y = self.activation("padded", shape, *self.qparams(x))
        inputs = [x, self.const("paddings", paddings)]
        if value is not None:
            inputs.append(self.b.tensor("pad_value", [1], np.int8, data=[value], quant=self.qparams(x)))
        self.b.op("PAD" if value is None else "PADV2", inputs, [y])
        return y

    def reshape(self, x, shape):
        y = self.activation("reshaped", shape, *self.qparams(x))
        self.b.op("RESHAPE", [x, self.const("shape", shape)], [y], options=("ReshapeOptions", {"new_shape": shape}))
        return y

    def logistic(self, x, out_q=(1.0 / 256.0, -128)):
        y = self.activation("sigmoid", self.shape(x), *out_q)
        self.b.op("LOGISTIC", [x], [y])
        return y

    def save(self, path, y):
        self.b.save(str(path), inputs=[self.x], outputs=[y])
        return str(path)
