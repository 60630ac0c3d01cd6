"""int8 SOFTMAX over the last axis, bit-exact with TFLite Micro (micro/kernels/softmax_common.cc
Prepare, reference_ops::Softmax with gemmlowp fixed point).

Per row: ``d = x - max(row)`` (an integer in [-255, 0]); ``exp(d)`` is gemmlowp's
``exp_on_negative_values`` of ``d`` rescaled to Q5.26 by ``input_multiplier`` (``beta *
in_scale * 2^26``) — a function of ``d`` alone, so both ``exp(d)`` (Q0.31) and its Q12.19
accumulation term are int32 tables built at compile time (0 where ``d < diff_min``, which TFLM
skips). At run time: the row sum of the Q12.19 terms, its reciprocal (``GetReciprocal``: count
leading zeros, then gemmlowp's ``one_over_one_plus_x_for_x_in_0_1``, three Newton-Raphson steps in
Q2.29), and per element ``RoundingDivideByPOT(SRDHM(reciprocal, exp(d)), exponent) - 128``.
The fixed-point arithmetic is written in TIR (int64 products, truncating division) so the same
kernel runs in C and on the Relax VM.
"""
import math

import numpy as np
from tvm import te, tirx

from tvm_tinyseg.errors import UnsupportedModelError

from .lut import _exp_on_negative_values, _multiply_by_quantized_multiplier, _rescale
from .requantize import clamp_to_int8, i32, quantize_multiplier

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12
OUTPUT_SCALE = np.float32(1.0 / 256.0)
OUTPUT_ZERO_POINT = -128


def _i64(value):
    return tirx.const(value, "int64")


def exp_tables(input_scale, beta=1.0) -> tuple:
    """(exp Q0.31, exp as a Q12.19 accumulation term), each indexed by ``-d`` for d in [-255, 0]."""
    real_multiplier = min(float(beta) * float(np.float32(input_scale)) * (1 << (31 - SCALED_DIFF_INTEGER_BITS)),
                          (1 << 31) - 1.0)
    if not real_multiplier > 1.0:
        raise UnsupportedModelError(f"int8 SOFTMAX input scale {float(input_scale):.9g} is too small for TFLite Micro")
    multiplier, left_shift = quantize_multiplier(real_multiplier)
    diff_min = -math.floor(1.0 * ((1 << SCALED_DIFF_INTEGER_BITS) - 1)
                           * (1 << (31 - SCALED_DIFF_INTEGER_BITS)) / (1 << left_shift))
    exp_q0 = np.zeros(256, np.int32)
    for minus_d in range(256):
        if -minus_d >= diff_min:
            scaled = _multiply_by_quantized_multiplier(-minus_d, multiplier, left_shift)
            exp_q0[minus_d] = _exp_on_negative_values(scaled, SCALED_DIFF_INTEGER_BITS)
    accumulated = np.array([_rescale(int(e), 0, ACCUMULATION_INTEGER_BITS) for e in exp_q0], np.int32)
    return exp_q0, accumulated


# ---- gemmlowp int32 fixed point in TIR --------------------------------------------------------
def _srdhm(a, b):
    """SaturatingRoundingDoublingHighMul (int32)."""
    ab = a.astype("int64") * b.astype("int64")
    nudge = tirx.if_then_else(ab >= _i64(0), _i64(1 << 30), _i64(1 - (1 << 30)))
    high = tirx.truncdiv(ab + nudge, _i64(1 << 31)).astype("int32")
    return tirx.if_then_else(tirx.all(a == i32(-(1 << 31)), b == i32(-(1 << 31))), i32((1 << 31) - 1), high)


def _saturating_left_shift(x, exponent: int):
    """SaturatingRoundingMultiplyByPOT with a positive exponent."""
    threshold = (1 << (31 - exponent)) - 1
    return tirx.if_then_else(x > i32(threshold), i32((1 << 31) - 1), tirx.if_then_else(
        x < i32(-threshold), i32(-(1 << 31)), x * i32(1 << exponent)))


def _rounding_divide_by_pot(x, exponent):
    mask = (tirx.shift_left(_i64(1), exponent.astype("int64")) - _i64(1)).astype("int32")
    threshold = tirx.shift_right(mask, i32(1)) + tirx.if_then_else(x < i32(0), i32(1), i32(0))
    return tirx.shift_right(x, exponent) + tirx.if_then_else(tirx.bitwise_and(x, mask) > threshold, i32(1), i32(0))


def _one_over_one_plus_x_for_x_in_0_1(a):
    """gemmlowp: 1 / (1 + a), a and result in Q0.31 (Newton-Raphson in Q2.29)."""
    s = a.astype("int64") + _i64((1 << 31) - 1)  # RoundingHalfSum(a, One)
    half_denominator = tirx.truncdiv(s + tirx.if_then_else(s >= _i64(0), _i64(1), _i64(-1)), _i64(2)).astype("int32")
    x = i32(1515870810) + _srdhm(half_denominator, i32(-1010580540))
    for _ in range(3):
        one_minus_half_denominator_times_x = i32(1 << 29) - _srdhm(half_denominator, x)
        x = x + _saturating_left_shift(_srdhm(x, one_minus_half_denominator_times_x), 2)
    return _saturating_left_shift(x, 1)


def _count_leading_zeros(x):
    """Leading zero bits of a positive int32, by comparisons (no target intrinsic needed)."""
    wide = x.astype("int64")
    total = i32(0)
    for bit in range(32):
        total = total + tirx.if_then_else(wide < _i64(1 << bit), i32(1), i32(0))
    return total


def softmax_int8(out_shape, input_scale, input_zp, output_scale, output_zp, lo, hi, beta=1.0):
    """(TE builder, tables): the builder takes ``x`` and the two int32 exp tables."""
    del input_zp  # differences of codes do not depend on it
    if int(output_zp) != OUTPUT_ZERO_POINT or np.float32(output_scale) != OUTPUT_SCALE:
        raise UnsupportedModelError(
            f"int8 SOFTMAX needs output scale 1/256 and zero point -128 (TFLite Micro checks both), got "
            f"scale {float(output_scale):.9g} and zero point {int(output_zp)}")
    tables = exp_tables(input_scale, beta)
    outer, depth = list(out_shape[:-1]), int(out_shape[-1])

    def compute(x, exp_q0, exp_accumulated):
        c = te.reduce_axis((0, depth), "c")
        row_max = te.compute(outer, lambda *i: te.max(x[(*i, c)].astype("int32"), axis=c), name="row_max")
        c2 = te.reduce_axis((0, depth), "c2")
        total = te.compute(outer, lambda *i: te.sum(exp_accumulated[row_max[i] - x[(*i, c2)].astype("int32")],
                                                     axis=c2), name="sum_of_exps")

        def reciprocal(*i):
            headroom = _count_leading_zeros(total[i])
            shifted_minus_one = (tirx.shift_left(total[i].astype("int64"), headroom.astype("int64"))
                                 - _i64(1 << 31)).astype("int32")
            return _one_over_one_plus_x_for_x_in_0_1(shifted_minus_one)

        scale = te.compute(outer, reciprocal, name="reciprocal")
        # exponent = num_bits_over_unit + 31 - 8, num_bits_over_unit = 12 - headroom
        exponent = te.compute(outer, lambda *i: i32(ACCUMULATION_INTEGER_BITS + 23) - _count_leading_zeros(total[i]),
                              name="exponent")

        def value(*index):
            i = index[:-1]
            e = exp_q0[row_max[i] - x[index].astype("int32")]
            return clamp_to_int8(_rounding_divide_by_pot(_srdhm(scale[i], e), exponent[i]) + i32(OUTPUT_ZERO_POINT),
                                 lo, hi)

        return te.compute(out_shape, value, name="softmax")

    return compute, list(tables)
