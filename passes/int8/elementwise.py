"""int8 elementwise kernels (QUANTIZE int8→int8 and float→int8, ADD, SUB, MUL, SQUARED_DIFFERENCE,
MINIMUM, MAXIMUM, PRELU, table lookups) with TFLite Micro's reference arithmetic; binary ops
broadcast numpy-style like TFLite's broadcasting kernels."""
import numpy as np
from tvm import te, tirx

from tvm_tinyseg.errors import UnsupportedModelError

from .requantize import clamp_to_int8, i32, mbqm, quantize_multiplier

ADD_LEFT_SHIFT = 20  # TFLM add.cc: int8 inputs are shifted left by 20 bits before rescaling


def broadcast_reader(tensor, out_rank):
    shape = [int(s) for s in tensor.shape]
    lead = out_rank - len(shape)

    def read(*index):
        picked = [i32(0) if shape[d] == 1 else index[lead + d] for d in range(len(shape))]
        return tensor[tuple(picked)].astype("int32")

    return read


def requantize_int8(out_shape, input_scale, input_zp, output_scale, output_zp, lo, hi, out_dtype="int8"):
    """QUANTIZE int8 → int8 (tflite reference_ops::Requantize); also uint8 ↔ int8 at a model's
    input or output (``x`` uint8, or ``out_dtype`` "uint8" with ``lo, hi`` = 0, 255)."""
    multiplier, shift = quantize_multiplier(float(input_scale) / float(output_scale))

    def compute(x):
        read = broadcast_reader(x, len(out_shape))
        return te.compute(out_shape, lambda *i: tirx.max(tirx.min(
            mbqm(read(*i) - i32(input_zp), multiplier, shift) + i32(output_zp), i32(hi)), i32(lo)).astype(out_dtype),
            name="requantize")

    return compute


def add_int8(out_shape, scales, zero_points, output_scale, output_zp, lo, hi):
    """ADD int8 (tflite reference_integer_ops::Add): both inputs rescaled to a common scale in
    Q(31-20), summed, then rescaled to the output."""
    twice_max = 2.0 * max(float(s) for s in scales)
    in_mult = [quantize_multiplier(float(s) / twice_max) for s in scales]
    out_mult, out_shift = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * float(output_scale)))

    def compute(a, b):
        readers = [broadcast_reader(t, len(out_shape)) for t in (a, b)]

        def value(*i):
            scaled = [mbqm((r(*i) - i32(zp)) * i32(1 << ADD_LEFT_SHIFT), m, s)
                      for r, zp, (m, s) in zip(readers, zero_points, in_mult)]
            return clamp_to_int8(mbqm(scaled[0] + scaled[1], out_mult, out_shift) + i32(output_zp), lo, hi)

        return te.compute(out_shape, value, name="add")

    return compute


def mul_int8(out_shape, scales, zero_points, output_scale, output_zp, lo, hi):
    """MUL int8 (tflite reference_integer_ops::Mul)."""
    multiplier, shift = quantize_multiplier(float(scales[0]) * float(scales[1]) / float(output_scale))

    def compute(a, b):
        ra, rb = (broadcast_reader(t, len(out_shape)) for t in (a, b))

        def value(*i):
            product = (ra(*i) - i32(zero_points[0])) * (rb(*i) - i32(zero_points[1]))
            return clamp_to_int8(mbqm(product, multiplier, shift) + i32(output_zp), lo, hi)

        return te.compute(out_shape, value, name="mul")

    return compute


def table_lookup_int8(out_shape):
    """y = table[x + 128] for a 256-entry int8 table computed at compile time."""

    def compute(x, table):
        return te.compute(out_shape, lambda *i: table[x[i].astype("int32") + i32(128)], name="lookup")

    return compute


def sub_int8(out_shape, scales, zero_points, output_scale, output_zp, lo, hi):
    """SUB int8 (tflite reference_ops::Sub / BroadcastQuantSubSlow): ADD's arithmetic on the
    difference, except that TFLM's Prepare computes the multipliers from float32 quotients."""
    f32 = np.float32
    twice_max = f32(2) * max(f32(s) for s in scales)
    in_mult = [quantize_multiplier(float(f32(s) / twice_max)) for s in scales]
    out_mult, out_shift = quantize_multiplier(float(twice_max / (f32(1 << ADD_LEFT_SHIFT) * f32(output_scale))))

    def compute(a, b):
        readers = [broadcast_reader(t, len(out_shape)) for t in (a, b)]

        def value(*i):
            scaled = [mbqm((r(*i) - i32(zp)) * i32(1 << ADD_LEFT_SHIFT), m, s)
                      for r, zp, (m, s) in zip(readers, zero_points, in_mult)]
            return clamp_to_int8(mbqm(scaled[0] - scaled[1], out_mult, out_shift) + i32(output_zp), lo, hi)

        return te.compute(out_shape, value, name="sub")

    return compute


SQUARED_DIFFERENCE_LEFT_SHIFT = 7  # TFLM squared_difference.cc, int8


def squared_difference_int8(out_shape, scales, zero_points, output_scale, output_zp, lo, hi):
    """SQUARED_DIFFERENCE int8 (TFLM squared_difference.cc): both inputs rescaled to a common
    Q(31-7) scale, the difference squared, rescaled to the output."""
    twice_max = 2.0 * float(max(np.float32(s) for s in scales))
    in_mult = [quantize_multiplier(float(np.float32(s)) / twice_max) for s in scales]
    out_mult, out_shift = quantize_multiplier(
        twice_max * twice_max / float(np.float32(1 << (2 * SQUARED_DIFFERENCE_LEFT_SHIFT)) * np.float32(output_scale)))

    def compute(a, b):
        readers = [broadcast_reader(t, len(out_shape)) for t in (a, b)]

        def value(*i):
            scaled = [mbqm((r(*i) - i32(zp)) * i32(1 << SQUARED_DIFFERENCE_LEFT_SHIFT), m, s)
                      for r, zp, (m, s) in zip(readers, zero_points, in_mult)]
            difference = scaled[0] - scaled[1]
            return clamp_to_int8(mbqm(difference * difference, out_mult, out_shift) + i32(output_zp), lo, hi)

        return te.compute(out_shape, value, name="squared_difference")

    return compute


def _min_max_int8(name, pick):
    def builder(out_shape, scales, zero_points, output_scale, output_zp, lo, hi):
        """MINIMUM/MAXIMUM int8 (TFLM maximum_minimum.cc): compares the raw codes, which is only
        meaningful when inputs and output share one quantization (as TFLite's converter writes)."""
        quantizations = {(float(np.float32(s)), int(z)) for s, z in zip(scales, zero_points)}
        if quantizations != {(float(np.float32(output_scale)), int(output_zp))}:
            raise UnsupportedModelError(
                f"int8 {name.upper()} whose inputs and output are quantized differently "
                f"({sorted(quantizations)} vs output {(float(output_scale), int(output_zp))})")

        def compute(a, b):
            ra, rb = (broadcast_reader(t, len(out_shape)) for t in (a, b))
            return te.compute(out_shape, lambda *i: clamp_to_int8(pick(ra(*i), rb(*i)), lo, hi), name=name)

        return compute

    return builder


minimum_int8 = _min_max_int8("minimum", tirx.min)
maximum_int8 = _min_max_int8("maximum", tirx.max)


def prelu_int8(out_shape, in_q, alpha_q, out_q, lo, hi):
    """PRELU int8 (tflite reference_ops::BroadcastPrelu4DSlow), alpha broadcast numpy-style."""
    (in_scale, in_zp), (alpha_scale, alpha_zp), (out_scale, out_zp) = in_q, alpha_q, out_q
    identity = quantize_multiplier(float(in_scale) / float(out_scale))
    scaled_alpha = quantize_multiplier(float(in_scale) * float(alpha_scale) / float(out_scale))

    def compute(x, alpha):
        rx, ralpha = (broadcast_reader(t, len(out_shape)) for t in (x, alpha))

        def value(*i):
            v = rx(*i) - i32(in_zp)
            y = tirx.if_then_else(v >= i32(0), mbqm(v, *identity),
                                  mbqm(v * (ralpha(*i) - i32(alpha_zp)), *scaled_alpha))
            return clamp_to_int8(y + i32(out_zp), lo, hi)

        return te.compute(out_shape, value, name="prelu")

    return compute


def quantize_float_int8(out_shape, output_scale, output_zp, lo, hi):
    """QUANTIZE float32 → int8 of a model input (tflite reference_ops::AffineQuantize):
    ``round(x / scale) + zp`` with a float32 division and rounding half away from zero."""
    scale = tirx.const(float(np.float32(output_scale)), "float32")

    def compute(x):
        def value(*i):
            v = x[i] / scale
            truncated = tirx.trunc(v)
            away = tirx.if_then_else(v < tirx.const(0.0, "float32"), tirx.const(-1.0, "float32"),
                                     tirx.const(1.0, "float32"))
            fraction = v - truncated  # exact in float32
            tie_or_more = tirx.any(fraction >= tirx.const(0.5, "float32"), fraction <= tirx.const(-0.5, "float32"))
            rounded = tirx.if_then_else(tie_or_more, truncated + away, truncated)
            # clamp in float first: converting an out-of-range float to int32 is undefined in C
            bounded = tirx.max(tirx.min(rounded, tirx.const(256.0, "float32")), tirx.const(-256.0, "float32"))
            return clamp_to_int8(bounded.astype("int32") + i32(output_zp), lo, hi)

        return te.compute(out_shape, value, name="quantize")

    return compute
