"""int8 SOFTMAX over the last axis, bit-exact with TFLite Micro (micro/kernels/softmax_common.cc
Prepare, reference_ops::Softmax with gemmlowp fixed point).

Per row: ``d = x - max(row)`` (an integer in [-255, 0]); ``exp(d)`` is gemmlowp's
``exp_on_negative_values`` of ``d`` rescaled to Q5.26 by ``input_multiplier`` (``beta *
in_scale * 2^26``) — a function of ``d`` alone, so both ``exp(d)`` (Q0.31) and its Q12.19
accumulation term are int32 tables built at compile time (0 where ``d < diff_min``, which TFLM
skips). At run time, in TIR: the row maximum and the row sum of the Q12.19 terms; then per element
``tinyseg_softmax_unsat`` (codegen/runtime/tinyseg_arith.h): the sum's reciprocal (``GetReciprocal``:
count leading zeros, gemmlowp's ``one_over_one_plus_x_for_x_in_0_1``, three Newton-Raphson steps in
Q2.29), ``RoundingDivideByPOT(SRDHM(reciprocal, exp(d)), exponent)``; minus 128, clamped. The
reciprocal is a C helper because, as TIR, MCUSchedule would inline its Newton-Raphson chain into one
exponentially large expression; being ``const``, its call is hoisted out of the channel loop.
"""
import math

import numpy as np
import tvm
from tvm import te, tirx

from tvm_tinyseg.errors import UnsupportedModelError

from .lut import _exp_on_negative_values, _multiply_by_quantized_multiplier, _rescale
from .requantize import clamp_to_int8, i32, quantize_multiplier

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12
OUTPUT_SCALE = np.float32(1.0 / 256.0)
OUTPUT_ZERO_POINT = -128
UNSAT_OUTPUT = "tinyseg_softmax_unsat"  # codegen/runtime/tinyseg_arith.h


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


def softmax_int8(out_shape, input_scale, input_zp, output_scale, output_zp, lo, hi, beta=1.0):
    """(TE builder, tables): the builder takes ``x`` and the two int32 exp tables."""
    del input_zp  # differences of codes do not depend on it
    if int(output_zp) != OUTPUT_ZERO_POINT or np.float32(output_scale) != OUTPUT_SCALE:
        raise UnsupportedModelError(
            f"int8 SOFTMAX needs output scale 1/256 and zero point -128 (TFLite Micro checks both), got "
            f"scale {float(output_scale):.9g} and zero point {int(output_zp)}")
    target = tvm.target.Target.current(allow_none=True)
    if target is not None and target.kind.name != "c":
        raise UnsupportedModelError(f"int8 SOFTMAX is only implemented for the C target, not {target.kind.name}")
    tables = exp_tables(input_scale, beta)
    outer, depth = list(out_shape[:-1]), int(out_shape[-1])

    def compute(x, exp_q0, exp_accumulated):
        c = te.reduce_axis((0, depth), "c")
        row_max = te.compute(outer, lambda *i: te.max(x[(*i, c)].astype("int32"), axis=c), name="row_max")
        c2 = te.reduce_axis((0, depth), "c2")
        total = te.compute(outer, lambda *i: te.sum(exp_accumulated[row_max[i] - x[(*i, c2)].astype("int32")],
                                                     axis=c2), name="sum_of_exps")

        def value(*index):
            i = index[:-1]
            e = exp_q0[row_max[i] - x[index].astype("int32")]
            return clamp_to_int8(tirx.call_extern("int32", UNSAT_OUTPUT, total[i], e) + i32(OUTPUT_ZERO_POINT), lo, hi)

        return te.compute(out_shape, value, name="softmax")

    return compute, list(tables)
