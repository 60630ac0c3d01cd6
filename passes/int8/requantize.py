"""TFLite's fixed-point requantization: multipliers/shifts computed at compile time, the rounding
done at run time with gemmlowp's double rounding. For the C target it is a call of the static
inline ``tinyseg_mbqm`` (codegen/runtime/tinyseg_arith.h); for any other target (the Relax VM on
LLVM, through the registered "tinyseg" pipeline) the same arithmetic is written in TIR."""
import math

import numpy as np
import tvm
from tvm import tirx

MBQM = "tinyseg_mbqm"
SHIFT_COUNT_MASK = 31  # TINYSEG_SHIFT_COUNT_MASK of tinyseg_arith.h


def quantize_multiplier(real_multiplier: float) -> tuple:
    """tflite::QuantizeMultiplier: ``real ≈ m · 2^(shift-31)`` with ``m`` a Q31 int32."""
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))  # round half away from 0
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def multipliers(real_multipliers) -> tuple:
    """Per-channel (multiplier, shift) int32 arrays."""
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(real_multipliers)]
    return (np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32))


def i32(value):
    return tirx.const(int(value), "int32")


def _as_expr(value):
    return i32(value) if isinstance(value, (int, np.integer)) else value


def mbqm(x, multiplier, shift):
    """MultiplyByQuantizedMultiplier(x, multiplier, shift), bit-exact with TFLite Micro."""
    target = tvm.target.Target.current(allow_none=True)
    if target is None or target.kind.name == "c":
        return tirx.call_extern("int32", MBQM, x, _as_expr(multiplier), _as_expr(shift))
    return _mbqm_tir(x, _as_expr(multiplier), _as_expr(shift))


def _mbqm_tir(x, multiplier, shift):
    """The arithmetic of tinyseg_arith.h in TIR (common subexpressions are left to TVM's CSE)."""
    i64 = lambda v: tirx.const(v, "int64")  # noqa: E731
    # the shift count taken modulo 32, as TFLM's reference build executes it (see tinyseg_arith.h)
    left = tirx.bitwise_and(tirx.max(shift, i32(0)), i32(SHIFT_COUNT_MASK))
    right = tirx.max(-shift, i32(0))
    # TFLM's x * (1 << left_shift), an int32 product (a uint32 shift would be cast back to int32,
    # and TVM's simplifier drops int32 casts between uint32 and int64, losing the sign)
    a = x * tirx.shift_left(i32(1), left)
    ab = a.astype("int64") * multiplier.astype("int64")
    # gemmlowp's truncating (ab + nudge) / 2^31 equals floor((ab + 2^30) / 2^31) for every ab
    high = tirx.if_then_else(
        tirx.all(a == i32(-(1 << 31)), multiplier == i32(-(1 << 31))),
        i32((1 << 31) - 1), tirx.shift_right(ab + i64(1 << 30), i64(31)).astype("int32"))
    mask = (tirx.shift_left(i64(1), right.astype("int64")) - i64(1)).astype("int32")
    threshold = tirx.shift_right(mask, i32(1)) + tirx.if_then_else(high < i32(0), i32(1), i32(0))
    return tirx.shift_right(high, right) + tirx.if_then_else(tirx.bitwise_and(high, mask) > threshold, i32(1), i32(0))


def clamp_to_int8(x, lo: int, hi: int):
    return tirx.max(tirx.min(x, i32(hi)), i32(lo)).astype("int8")
