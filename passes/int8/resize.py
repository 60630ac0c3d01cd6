"""int8 RESIZE_NEAREST_NEIGHBOR (tflite reference_ops::ResizeNearestNeighbor): a pure gather.

TFLite picks each output row's (column's) source with ``GetNearestNeighbor``, in float32:
``scale = in / (float)out`` (``(in-1) / (float)(out-1)`` with align_corners),
``v = (o + (half_pixel_centers ? 0.5f : 0)) * scale``, source ``round(v)`` (half away from zero)
with align_corners else ``floor(v)``, clamped to ``in-1`` (and to 0 with half_pixel_centers).
That mapping is evaluated here at compile time, so the kernel has no float arithmetic: the
source index is ``o * in // out`` where that closed form gives the same mapping (e.g. integer
upsampling factors), else it is read from an int32 table as long as the output row (column).
"""
import numpy as np
from tvm import te, tirx

from .requantize import i32


def nearest_source_indices(in_size, out_size, align_corners, half_pixel_centers) -> np.ndarray:
    """GetNearestNeighbor for every output index, with TFLite's float32 arithmetic."""
    f32 = np.float32
    if align_corners and out_size > 1:
        scale = f32(in_size - 1) / f32(out_size - 1)
    else:
        scale = f32(in_size) / f32(out_size)
    scaled = (np.arange(out_size, dtype=f32) + f32(0.5 if half_pixel_centers else 0.0)) * scale
    exact = scaled.astype(np.float64)  # + 0.5 is exact in float64: no double rounding below
    source = np.sign(exact) * np.floor(np.abs(exact) + 0.5) if align_corners else np.floor(exact)
    source = np.minimum(source, in_size - 1)
    if half_pixel_centers:
        source = np.maximum(source, 0)
    return source.astype(np.int32)


def _closed_form(table: np.ndarray, in_size) -> bool:
    """Whether ``table`` is ``o * in // out`` (then the kernel computes it instead of reading it)."""
    return bool(np.array_equal(table, np.arange(len(table)) * in_size // len(table)))


def resize_nearest_nhwc_int8(out_shape, in_shape, align_corners, half_pixel_centers):
    """(TE builder, tables): the builder takes ``x`` (NHWC int8), then the int32 ``tables``
    (source rows and/or columns whose mapping has no closed form, in that order)."""
    tables, axes = [], []
    for axis in (1, 2):
        in_size = int(in_shape[axis])
        table = nearest_source_indices(in_size, int(out_shape[axis]), align_corners, half_pixel_centers)
        axes.append(in_size if _closed_form(table, in_size) else None)
        if axes[-1] is None:
            tables.append(table)

    def compute(x, *table_args):
        table_args = iter(table_args)
        source = []
        for in_size, out_size in zip(axes, out_shape[1:3]):
            if in_size is None:
                source.append(lambda o, t=next(table_args): t[o])
            else:
                source.append(lambda o, n=in_size, m=out_size: tirx.floordiv(o * i32(n), i32(m)))
        return te.compute(out_shape, lambda n, y, xx, c: x[n, source[0](y), source[1](xx), c], name="resize")

    return compute, tables


def bilinear_scale_10(in_size, out_size, align_corners) -> int:
    """TFLite's ResizeBilinearInteger step between output positions, in 1/1024 input pixels."""
    if align_corners and out_size > 1:
        return ((1 << 10) * (in_size - 1) + (out_size - 1) // 2) // (out_size - 1)
    return ((1 << 10) * in_size + out_size // 2) // out_size


def resize_bilinear_nhwc_int8(out_shape, in_shape, align_corners, half_pixel_centers):
    """TE builder for int8 RESIZE_BILINEAR (tflite reference_ops::ResizeBilinearInteger, no float).

    Each output row (column) reads source rows ``lower``/``upper`` with weights ``1024 - frac`` and
    ``frac``; the four products are summed and divided by 2^20, rounding half away from zero
    (TFLM's non-single-rounding build). The input size is the output's quantization: no requantization.
    Everything fits int32: the weights of one axis add up to 1024 and each is at least -512, so
    |sum| <= 128 * 2048 * 2048 = 2^29.
    """
    axes = []
    for axis in (1, 2):
        in_size, out_size = int(in_shape[axis]), int(out_shape[axis])
        axes.append((in_size, bilinear_scale_10(in_size, out_size, align_corners)))

    def source(o, in_size, scale):
        scaled = o * i32(scale) + i32(scale // 2 - (1 << 9) if half_pixel_centers else 0)
        lower = tirx.max(tirx.truncdiv(scaled, i32(1 << 10)), i32(0))
        upper = tirx.min(tirx.truncdiv(scaled + i32((1 << 10) - 1), i32(1 << 10)), i32(in_size - 1))
        frac = scaled - lower * i32(1 << 10)
        return lower, upper, i32(1 << 10) - frac, frac

    def compute(x):
        def interpolate(n, y, xx, c):
            y0, y1, wy0, wy1 = source(y, *axes[0])
            x0, x1, wx0, wx1 = source(xx, *axes[1])
            at = lambda iy, ix: x[n, iy, ix, c].astype("int32")  # noqa: E731
            total = (at(y0, x0) * wy0 * wx0 + at(y1, x0) * wy1 * wx0
                     + at(y0, x1) * wy0 * wx1 + at(y1, x1) * wy1 * wx1)
            half = tirx.if_then_else(total > i32(0), i32(1 << 19), i32(-(1 << 19)))
            return tirx.truncdiv(total + half, i32(1 << 20)).astype("int8")

        return te.compute(out_shape, interpolate, name="resize_bilinear")

    return compute
