"""Compile-time 256-entry tables for int8 unary activations, bit-exact with TFLite Micro.

Each function emulates one TFLM kernel — its Prepare (multipliers computed from the float32
scales exactly as the C++ does, float32 or double) and its integer Eval — for every int8 input,
so the generated code is a single table lookup per element:

* RELU (micro/kernels/activations_common.cc, ``ReluQuantized``): multiplier from the float32
  quotient ``in_scale / out_scale``; ``zp_out + MBQM(x - zp_in)`` clamped to ``[max(-128, zp_out), 127]``.
* RELU6 (``Relu6Quantized``): no requantization at all; the input codes are clamped to
  ``[zp_in, zp_in + round(6 / in_scale)]`` — the output quantization is never read.
* LEAKY_RELU (leaky_relu_common.cc, reference_ops::QuantizeLeakyRelu): the identity multiplier
  from the float32 quotient, the alpha one in double (a negative alpha gives a negative
  multiplier). This is what the PyPI tflite-micro build does; newer TFLM sources compute alpha in
  float32 and negate the result instead, which differs by 1 on some codes.
* HARD_SWISH (hard_swish_common.cc, reference_ops::HardSwish): int16 fixed point with int16
  multipliers; the final product uses the truncating SaturatingDoublingHighMul.
* TANH (micro/kernels/tanh.cc, reference_integer_ops::Tanh): like LOGISTIC (see lut.py), Q4.27
  input, gemmlowp ``tanh``; the result is in 1/128 steps and TFLM never reads the output
  quantization, so anything but scale 1/128, zero point 0 is rejected.
* RELU_N1_TO_1 (TFLM has no kernel; LiteRT's kernels/activations.cc ``ReluN1To1Eval``): like
  RELU with the activation range ``[zp_out + round(-1/out_scale), zp_out + round(1/out_scale)]``.
"""
import math

import numpy as np

from tvm_tinyseg.errors import UnsupportedModelError

from .lut import (INT32_MAX, _exp_on_negative_values, _multiply_by_quantized_multiplier, _rescale,
                  _rounding_divide_by_pot, _rounding_half_sum, _srdhm, _wrap32)
from .requantize import quantize_multiplier

INT8_CODES = np.arange(-128, 128)
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
TANH_INPUT_INTEGER_BITS = 4
TANH_OUTPUT_SCALE = np.float32(1.0 / 128.0)


def _f32(x) -> np.float32:
    return np.float32(x)


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _table(values) -> np.ndarray:
    return np.clip(np.array(values, dtype=np.int64), -128, 127).astype(np.int8)


def relu_lut(in_scale, in_zp, out_scale, out_zp, act_min=0.0, act_max=None) -> np.ndarray:
    """RELU (``act_max=None``) or LiteRT's RELU_N1_TO_1 (``act_min=-1, act_max=1``)."""
    multiplier, shift = quantize_multiplier(float(_f32(in_scale) / _f32(out_scale)))
    out_scale = _f32(out_scale)
    lo = max(-128, int(out_zp) + _round_half_away(float(_f32(act_min) / out_scale)))
    hi = 127 if act_max is None else min(127, int(out_zp) + _round_half_away(float(_f32(act_max) / out_scale)))
    return _table([min(max(int(out_zp) + _multiply_by_quantized_multiplier(int(q) - int(in_zp), multiplier, shift),
                           lo), hi) for q in INT8_CODES])


def relu6_lut(in_scale, in_zp) -> np.ndarray:
    six = min(max(_round_half_away(float(_f32(6.0) / _f32(in_scale))) + int(in_zp), -128), 127)
    return _table(np.clip(INT8_CODES, int(in_zp), six))


def leaky_relu_lut(in_scale, in_zp, out_scale, out_zp, alpha) -> np.ndarray:
    alpha_multiplier, alpha_shift = quantize_multiplier(
        float(_f32(in_scale)) * float(_f32(alpha)) / float(_f32(out_scale)))
    identity_multiplier, identity_shift = quantize_multiplier(float(_f32(in_scale) / _f32(out_scale)))
    values = []
    for q in INT8_CODES:
        x = int(q) - int(in_zp)
        if x >= 0:
            y = _multiply_by_quantized_multiplier(x, identity_multiplier, identity_shift)
        else:  # a negative alpha gives a negative multiplier, used as it is
            y = _multiply_by_quantized_multiplier(x, alpha_multiplier, alpha_shift)
        values.append(int(out_zp) + y)
    return _table(values)


# ---- HARD_SWISH: int16 fixed point ------------------------------------------------------------
def _to_int16(x: int) -> int:
    return ((x + (1 << 15)) & 0xFFFF) - (1 << 15)


def _srdhm16(a: int, b: int) -> int:
    """gemmlowp::SaturatingRoundingDoublingHighMul for int16."""
    if a == b == INT16_MIN:
        return INT16_MAX
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    q = abs(ab + nudge) >> 15
    return _to_int16(q if ab + nudge >= 0 else -q)


def _sdhm16(a: int, b: int) -> int:
    """reference_ops::SaturatingDoublingHighMul: like the above, rounding toward zero."""
    if a == b == INT16_MIN:
        return INT16_MAX
    ab = a * b
    q = abs(ab) >> 15
    return _to_int16(q if ab >= 0 else -q)


def _rounding_divide_by_pot16(x: int, exponent: int) -> int:
    """gemmlowp::RoundingDivideByPOT on int16: the mask ``(1 << exponent) - 1`` is truncated to
    int16, so from exponent 16 on the result is +1 for x >= 0 and -1 below (TFLM does this)."""
    mask = _to_int16((1 << exponent) - 1)
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return _to_int16((x >> exponent) + (1 if (x & mask) > threshold else 0))


def _saturating_left_shift16(x: int, amount: int) -> int:
    return min(max(x * (1 << amount), INT16_MIN), INT16_MAX)


def _int16_multiplier(multiplier32: int) -> int:
    """DownScaleInt32ToInt16Multiplier."""
    if multiplier32 >= INT32_MAX - (1 << 15):
        return INT16_MAX
    return (multiplier32 + (1 << 15)) >> 16


def hard_swish_lut(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    hires_input_scale = _f32(1.0 / 128.0) * _f32(in_scale)
    output_multiplier, output_exponent = quantize_multiplier(float(hires_input_scale / _f32(out_scale)))
    reluish_multiplier, reluish_exponent = quantize_multiplier(float(hires_input_scale / _f32(3.0 / 32768.0)))
    if output_exponent > 0:
        raise UnsupportedModelError(
            f"int8 HARD_SWISH with input scale {float(in_scale):.9g} more than 128 times the output scale "
            f"{float(out_scale):.9g} (TFLite Micro refuses it too)")
    output_multiplier, reluish_multiplier = _int16_multiplier(output_multiplier), _int16_multiplier(reluish_multiplier)
    values = []
    for q in INT8_CODES:
        hires = _to_int16(_to_int16(int(q) - int(in_zp)) * (1 << 7))
        preshift_output = _srdhm16(hires, output_multiplier)
        reluish = hires
        if reluish_exponent > 0:
            reluish = _saturating_left_shift16(reluish, reluish_exponent - 1)
        reluish = _srdhm16(reluish, reluish_multiplier)
        if reluish_exponent > 0:
            reluish = _saturating_left_shift16(reluish, 1)
        if reluish_exponent < 0:
            reluish = _rounding_divide_by_pot16(reluish, -reluish_exponent)
        reluish = _to_int16((reluish + (1 << 15)) >> 1)
        y = _rounding_divide_by_pot16(_sdhm16(reluish, preshift_output), -output_exponent)
        values.append(_to_int16(y + int(out_zp)))
    return _table(values)


# ---- TANH -------------------------------------------------------------------------------------
def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """gemmlowp: (1 - a) / (1 + a) for a in [0, 1); Q0.31 in and out, Newton-Raphson in Q2.29."""
    half_denominator = _rounding_half_sum(a, INT32_MAX)
    one_q2 = 1 << 29
    x = _wrap32(1515870810 + _srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus_half_denominator_times_x = _wrap32(one_q2 - _srdhm(half_denominator, x))
        x = _wrap32(x + _rescale(_srdhm(x, one_minus_half_denominator_times_x), 4, 2))
    return _rescale(_wrap32(x - one_q2), 2, 0)


def _fixed_point_tanh(a: int, integer_bits: int) -> int:
    """gemmlowp::tanh: a in Q(integer_bits), result in Q0.31."""
    if a == 0:
        return 0
    negative_abs = a if a < 0 else _wrap32(-a)
    # ExactMulByPot<1> only relabels the raw value as Q(integer_bits + 1).
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(_exp_on_negative_values(negative_abs, integer_bits + 1))
    return _wrap32(-t) if a < 0 else t


def tanh_lut(in_scale, in_zp, out_scale, out_zp) -> np.ndarray:
    if int(out_zp) != 0 or _f32(out_scale) != TANH_OUTPUT_SCALE:
        raise UnsupportedModelError(
            f"int8 TANH needs output scale 1/128 and zero point 0, got scale {float(out_scale):.9g} "
            f"and zero point {int(out_zp)}")
    scale = float(_f32(in_scale))
    q, left_shift = math.frexp(scale * float(1 << (31 - TANH_INPUT_INTEGER_BITS)))
    multiplier = int(math.floor(q * (1 << 31) + 0.5))
    if not 0 <= left_shift <= 62:
        raise UnsupportedModelError(f"TANH input scale {scale:.9g} is outside the range TFLite Micro supports")
    radius = math.floor(1.0 * ((1 << TANH_INPUT_INTEGER_BITS) - 1)
                        * (1 << (31 - TANH_INPUT_INTEGER_BITS)) / (1 << left_shift))
    values = []
    for q_in in INT8_CODES:
        x = int(q_in) - int(in_zp)
        if x <= -radius:
            values.append(-128)
        elif x >= radius:
            values.append(127)
        else:
            x_q4 = _multiply_by_quantized_multiplier(x, multiplier, left_shift)
            values.append(_rounding_divide_by_pot(_fixed_point_tanh(x_q4, TANH_INPUT_INTEGER_BITS), 31 - 7))
    return _table(values)
