"""int8 convolutions as single TE computes: int32 accumulation of (x - zp_in)·w over in-bounds
taps (TFLite skips padded taps, which equals padding x with zp_in), then bias, per-channel
requantization, output zero point and the activation clamp — no intermediate buffer."""
from tvm import te, tirx

from .requantize import clamp_to_int8, i32, mbqm


def _requantize(acc, bias, multiplier, shift, zp_out, lo, hi):
    def epilogue(n, y, x, o):
        total = acc[n, y, x, o] + bias[o] if bias is not None else acc[n, y, x, o]
        return clamp_to_int8(mbqm(total, multiplier[o], shift[o]) + i32(zp_out), lo, hi)

    return te.compute(acc.shape, epilogue, name="requantize")


def conv2d_accumulator(x, w, out_shape, strides, padding, dilation, groups, zp_in):
    """The int32 sum of ``(x - zp_in)·w`` over the in-bounds taps of each output: x NHWC int8,
    w OHWI int8 (I = C/groups), ``padding`` (top, left). Shared by the TFLite and ONNX kernels,
    which differ only in their requantization."""
    sh, sw = strides
    dh, dw = dilation
    top, left = padding
    _, height, width, _ = x.shape
    out_channels, kh, kw, group_channels = w.shape
    per_group = out_channels // groups
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rc = te.reduce_axis((0, group_channels), "rc")

    def tap_sum(n, y, xx, o):
        iy = y * sh + ry * dh - top
        ix = xx * sw + rx * dw - left
        ic = rc if groups == 1 else (o // per_group) * group_channels + rc
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        value = tirx.if_then_else(inside, x[n, iy, ix, ic].astype("int32") - i32(zp_in), i32(0))
        return te.sum(value * w[o, ry, rx, rc].astype("int32"), axis=[ry, rx, rc])

    return te.compute(out_shape, tap_sum, name="acc")


def conv2d_nhwc_int8(out_shape, strides, padding, dilation, groups, zp_in, zp_out, lo, hi, has_bias):
    """TE builder for CONV_2D / DEPTHWISE_CONV_2D: x NHWC int8, w OHWI int8 (I = C/groups).

    ``padding`` is (top, left); taps outside the input are skipped.
    """

    def compute(x, w, *rest):
        bias, multiplier, shift = rest if has_bias else (None, *rest)
        acc = conv2d_accumulator(x, w, out_shape, strides, padding, dilation, groups, zp_in)
        return _requantize(acc, bias, multiplier, shift, zp_out, lo, hi)

    return compute


def conv2d_transpose_accumulator(x, w, out_shape, strides, padding, zp_in):
    """The int32 sum of a transposed convolution as a gather over the taps that hit: out[oy] sums
    (x[iy] - zp_in)·w[ky] over oy = iy·s + ky - pad, i.e. ky ≡ oy + pad (mod s). Each output visits
    only its ceil(k/s) taps per axis (a quarter of them for 2x2 stride 2), never a zero-stuffed
    input. x NHWC int8, w OHWI int8, ``padding`` (top, left); every tap is summed in int32 (order
    does not matter, it is exact). Shared by the TFLite and ONNX kernels."""
    sh, sw = strides
    top, left = padding
    _, height, width, _ = x.shape
    _, kh, kw, in_channels = w.shape
    jy = te.reduce_axis((0, -(-int(kh) // sh)), "jy")
    jx = te.reduce_axis((0, -(-int(kw) // sw)), "jx")
    rc = te.reduce_axis((0, in_channels), "rc")

    def tap_sum(n, y, xx, o):
        ty, tx = y + top, xx + left
        ry, rx = tirx.floormod(ty, sh) + jy * sh, tirx.floormod(tx, sw) + jx * sw
        iy, ix = tirx.floordiv(ty, sh) - jy, tirx.floordiv(tx, sw) - jx
        # with k not a multiple of s the last tap of some phases lies past the kernel
        ragged_y, ragged_x = int(kh) % sh != 0, int(kw) % sw != 0
        hit = tirx.all(iy >= 0, ix >= 0, iy < height, ix < width,
                       *([ry < kh] if ragged_y else []), *([rx < kw] if ragged_x else []))
        value = tirx.if_then_else(hit, x[n, iy, ix, rc].astype("int32") - i32(zp_in), i32(0))
        ry, rx = tirx.min(ry, kh - 1) if ragged_y else ry, tirx.min(rx, kw - 1) if ragged_x else rx
        weight = w[o, ry, rx, rc].astype("int32")
        return te.sum(value * weight, axis=[jy, jx, rc])

    return te.compute(out_shape, tap_sum, name="acc")


def conv2d_transpose_nhwc_int8(out_shape, strides, padding, zp_in, zp_out, lo, hi, has_bias):
    """TE builder for TRANSPOSE_CONV: ``conv2d_transpose_accumulator``, then TFLite's
    requantization. x NHWC int8, w OHWI int8."""

    def compute(x, w, *rest):
        bias, multiplier, shift = rest if has_bias else (None, *rest)
        acc = conv2d_transpose_accumulator(x, w, out_shape, strides, padding, zp_in)
        return _requantize(acc, bias, multiplier, shift, zp_out, lo, hi)

    return compute
