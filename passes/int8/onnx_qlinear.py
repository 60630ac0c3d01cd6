"""int8 kernels with ONNX's QLinear arithmetic, as onnxruntime's MLAS computes it, in NHWC like
the TFLite kernels (so TinySeg's row streaming and partial spills apply unchanged).

ONNX does not requantize in fixed point like TFLite: QLinearConv multiplies the int32 accumulator
by a float32 scale and rounds half to even (MlasRequantizeOutput: ``float(acc) * scale``, clamped to
the integer range minus the zero point, ``nearbyint``, plus the zero point), with
``scale = x_scale * w_scale[o] / y_scale`` evaluated in float32 in that order (what reproduces
onnxruntime bit for bit in tests/test_onnx_int8.py).
QuantizeLinear divides by the scale (``nearbyint(x / scale) + zp``). Integer accumulation is exact
as in TFLite; only this requantization differs, so it is a mode of its own here and TFLM's
fixed-point kernels (conv.py, elementwise.py) stay untouched.

Float scales reach the kernels as float32 constant tensors, never as TIR immediates: the C
printer writes immediates with 7 significant digits, which is not always the same float32.

Ops whose integer result depends only on one int8 input (Sigmoid, a requantizing Concat input,
Q(DQ(x)) with new parameters, Relu/Clip alone) are 256-entry tables computed at compile time with
the same float32 steps (``lookup_table``).
"""
import numpy as np
from tvm import te, tirx

from .conv import conv2d_accumulator, conv2d_transpose_accumulator
from .elementwise import broadcast_reader
from .requantize import i32

INT8_MIN, INT8_MAX = -128, 127


def f32(value):
    return tirx.const(float(np.float32(value)), "float32")


def requantize_float(scaled, zp_out: int, lo: int, hi: int):
    """MlasRequantizeOutput after its ``float(acc) * scale``: ``clamp(nearbyint(scaled) + zp)``
    (ties to even). The clamp to ``[lo - zp, hi - zp]`` comes before rounding as in MLAS; both
    bounds are integers, so it equals clamping after rounding, and keeps the int32 cast in range."""
    bounded = tirx.max(tirx.min(scaled, f32(hi - zp_out)), f32(lo - zp_out))
    return (tirx.nearbyint(bounded).astype("int32") + i32(zp_out)).astype("int8")


def output_scales(x_scale, w_scales, y_scale) -> np.ndarray:
    """QLinearConv's per-channel float32 ``x_scale * w_scale / y_scale`` (float32 steps)."""
    x, y = np.float32(x_scale), np.float32(y_scale)
    return np.array([(x * np.float32(w)) / y for w in np.atleast_1d(w_scales)], np.float32)


def _nchw(index):
    """The NCHW index of an NHWC index (other ranks: unchanged)."""
    return (index[0], index[3], index[1], index[2]) if len(index) == 4 else index


def quantize_float_input(out_shape, zp: int, lo=INT8_MIN, hi=INT8_MAX):
    """QuantizeLinear of a float NCHW model input into NHWC int8 (MlasQuantizeLinear:
    ``nearbyint(x / scale) + zp``); the kernel takes x and a one-element float32 scale."""

    def compute(x, scale):
        return te.compute(out_shape, lambda *i: requantize_float(x[_nchw(i)] / scale[0], zp, lo, hi),
                          name="quantize")

    return compute


def dequantize_output(out_shape, zp: int):
    """DequantizeLinear of the NHWC int8 model output into float NCHW: ``float(q - zp) * scale``
    (scale a one-element float32 tensor), the float32 values onnxruntime returns."""

    def nhwc(index):
        return (index[0], index[2], index[3], index[1]) if len(index) == 4 else index

    def compute(q, scale):
        return te.compute(out_shape, lambda *i: (q[nhwc(i)].astype("int32") - i32(zp)).astype("float32")
                          * scale[0], name="dequantize")

    return compute


def _requantize_stage(acc, bias, scale, zp_out, lo, hi):
    def epilogue(n, y, x, o):
        total = acc[n, y, x, o] + bias[o] if bias is not None else acc[n, y, x, o]
        return requantize_float(total.astype("float32") * scale[o], zp_out, lo, hi)

    return te.compute(acc.shape, epilogue, name="requantize")


def conv2d_nhwc_int8(out_shape, strides, padding, dilation, groups, zp_in, zp_out, lo, hi, has_bias):
    """QLinearConv: x NHWC int8, w OHWI int8 (I = C/groups, zero point 0), optional int32 bias,
    float32 per-channel scales. ``padding`` is (top, left); padded taps add nothing (x = zp_in)."""

    def compute(x, w, *rest):
        bias, scale = rest if has_bias else (None, *rest)
        acc = conv2d_accumulator(x, w, out_shape, strides, padding, dilation, groups, zp_in)
        return _requantize_stage(acc, bias, scale, zp_out, lo, hi)

    return compute


def conv2d_transpose_nhwc_int8(out_shape, strides, padding, dilation, zp_in, zp_out, lo, hi, has_bias):
    """ConvTranspose (groups 1): x NHWC int8, w OHWI int8. Undilated, conv.py's gather over the
    taps that hit; dilated, a gather over every tap: ``out[y]`` sums ``x[iy]·w[ky]`` over
    ``y = iy·s + ky·d - pad``."""
    sh, sw = strides
    dh, dw = dilation
    top, left = padding

    def dilated_accumulator(x, w):
        _, height, width, _ = x.shape
        _, kh, kw, in_channels = w.shape
        rc = te.reduce_axis((0, in_channels), "rc")
        ry = te.reduce_axis((0, kh), "ry")
        rx = te.reduce_axis((0, kw), "rx")

        def tap_sum(n, y, xx, o):
            ty, tx = y + top - ry * dh, xx + left - rx * dw
            iy, ix = tirx.floordiv(ty, sh), tirx.floordiv(tx, sw)
            hit = tirx.all(ty >= 0, tx >= 0, tirx.floormod(ty, sh) == 0, tirx.floormod(tx, sw) == 0,
                           iy < height, ix < width)
            value = tirx.if_then_else(hit, x[n, iy, ix, rc].astype("int32") - i32(zp_in), i32(0))
            return te.sum(value * w[o, ry, rx, rc].astype("int32"), axis=[ry, rx, rc])

        return te.compute(out_shape, tap_sum, name="acc")

    def compute(x, w, *rest):
        bias, scale = rest if has_bias else (None, *rest)
        if (dh, dw) == (1, 1):
            acc = conv2d_transpose_accumulator(x, w, out_shape, strides, padding, zp_in)
        else:
            acc = dilated_accumulator(x, w)
        return _requantize_stage(acc, bias, scale, zp_out, lo, hi)

    return compute


def add_ratios(scales, out_scale) -> np.ndarray:
    """QLinearAdd's float32 ``a_scale / c_scale`` and ``b_scale / c_scale``."""
    return np.array([np.float32(s) / np.float32(out_scale) for s in scales], np.float32)


def add_int8(out_shape, zero_points, out_zp: int, lo, hi):
    """QLinearAdd (MlasQLinearAdd): ``nearbyint((a - za)·ratio[0] + (b - zb)·ratio[1]) + zc``,
    ``ratio`` from ``add_ratios``; inputs broadcast numpy-style."""

    def compute(a, b, ratio):
        readers = [broadcast_reader(t, len(out_shape)) for t in (a, b)]

        def value(*i):
            terms = [(r(*i) - i32(zp)).astype("float32") * ratio[k]
                     for k, (r, zp) in enumerate(zip(readers, zero_points))]
            return requantize_float(terms[0] + terms[1], out_zp, lo, hi)

        return te.compute(out_shape, lambda *i: value(*i), name="add")

    return compute


def lookup_table(function, in_scale, in_zp, out_scale, out_zp, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """int8 table of ``Q(function(DQ(q)))`` for q = -128..127, with ONNX's float32 steps:
    ``DQ(q) = float(q - zp)·scale``, ``Q(v) = nearbyint(v / scale) + zp`` saturated."""
    codes = np.arange(INT8_MIN, INT8_MAX + 1)
    real = (codes - int(in_zp)).astype(np.float32) * np.float32(in_scale)
    values = np.asarray(function(real), np.float32)
    quantized = np.rint(values / np.float32(out_scale)).astype(np.int64) + int(out_zp)
    return np.clip(quantized, max(lo, INT8_MIN), min(hi, INT8_MAX)).astype(np.int8)


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function, evaluated in float64 and rounded once to float32."""
    return (1.0 / (1.0 + np.exp(-values.astype(np.float64)))).astype(np.float32)


def leaky_relu(alpha):
    """LeakyRelu in float32: ``v`` where ``v >= 0``, else ``v · alpha``."""
    alpha = np.float32(alpha)
    return lambda values: np.where(values >= 0, values, values * alpha)


def nearest_source_indices(in_size, out_size, scale, coordinate_mode, nearest_mode) -> np.ndarray:
    """ONNX Resize (mode "nearest") source index of every output index along one axis."""
    out = np.arange(out_size, dtype=np.float64)
    if coordinate_mode == "half_pixel":
        original = (out + 0.5) / scale - 0.5
    elif coordinate_mode == "asymmetric":
        original = out / scale
    elif coordinate_mode == "align_corners":
        original = out * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(out)
    elif coordinate_mode == "pytorch_half_pixel":
        original = (out + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(out)
    elif coordinate_mode == "tf_half_pixel_for_nn":
        original = (out + 0.5) / scale
    else:
        raise ValueError(coordinate_mode)
    rounding = {"round_prefer_floor": lambda v: np.where(v - np.floor(v) == 0.5, np.floor(v), np.round(v)),
                "round_prefer_ceil": lambda v: np.where(v - np.floor(v) == 0.5, np.ceil(v), np.round(v)),
                "floor": np.floor, "ceil": np.ceil}[nearest_mode]
    return np.clip(rounding(original), 0, in_size - 1).astype(np.int32)


def resize_nearest_nhwc_int8(out_shape, in_shape, row_table, col_table):
    """(TE builder, tables): Resize nearest as a gather. A source index that is ``o * in // out``
    (integer upsampling, e.g. asymmetric/floor or half_pixel) is computed — an affine-enough index
    lets TinySeg stream a spilled input's rows into the kernel; any other mapping is read from an
    int32 table, which the builder takes after ``x`` (rows, then columns)."""
    closed = [bool(np.array_equal(t, np.arange(len(t)) * int(in_shape[axis]) // len(t)))
              for t, axis in ((row_table, 1), (col_table, 2))]
    tables = [t for t, c in zip((row_table, col_table), closed) if not c]

    def compute(x, *table_args):
        table_args = iter(table_args)
        source = []
        for is_closed, axis in zip(closed, (1, 2)):
            if is_closed:
                source.append(lambda o, n=int(in_shape[axis]), m=int(out_shape[axis]):
                              tirx.floordiv(o * i32(n), i32(m)))
            else:
                source.append(lambda o, t=next(table_args): t[o])
        return te.compute(out_shape, lambda n, y, xx, c: x[n, source[0](y), source[1](xx), c], name="resize")

    return compute, tables
