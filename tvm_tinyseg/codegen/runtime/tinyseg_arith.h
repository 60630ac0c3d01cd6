/* Integer arithmetic shared by the generated kernels: an exact copy of TFLite Micro's
 * (gemmlowp, double-rounding) MultiplyByQuantizedMultiplier, so int8 outputs match TFLM bit for bit.
 * Right shifts of negative values are arithmetic on gcc, clang and arm-none-eabi-gcc. */
#ifndef TINYSEG_ARITH_H
#define TINYSEG_ARITH_H
#include <stdint.h>

/* TFLM computes x * (1 << left_shift) with a shift count that QuantizeMultiplier does not bound
 * (an output scale of 1e-30 gives 88); the reference build executes it as a 32-bit shift, whose
 * count the CPU takes modulo 32. The mask does the same without undefined behaviour. */
#define TINYSEG_SHIFT_COUNT_MASK 31

static inline int32_t tinyseg_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
  int32_t left = shift > 0 ? (shift & TINYSEG_SHIFT_COUNT_MASK) : 0;
  int32_t right = shift > 0 ? 0 : -shift;
  int32_t a = (int32_t)((uint32_t)x << left);
  int32_t high; /* SaturatingRoundingDoublingHighMul */
  if (a == INT32_MIN && multiplier == INT32_MIN) {
    high = INT32_MAX;
  } else {
    /* gemmlowp's (ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31 with C's truncating division equals
     * floor((ab + 2^30) / 2^31) for every ab: one multiply-add and a shift, no 64-bit division. */
    high = (int32_t)(((int64_t)a * (int64_t)multiplier + ((int64_t)1 << 30)) >> 31);
  }
  int32_t mask = (int32_t)(((int64_t)1 << right) - 1); /* RoundingDivideByPOT */
  int32_t remainder = high & mask;
  int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (remainder > threshold ? 1 : 0);
}

/* int8 SOFTMAX (TFLite Micro's reference_ops::Softmax with gemmlowp fixed point): the output of one
 * element before the -128 offset, from its row's Q12.19 sum of exponentials and its own exp in Q0.31:
 * RoundingDivideByPOT(SRDHM(GetReciprocal(sum), exp), num_bits_over_unit + 31 - 8).
 * The per-row parts are const, non-inlined functions so the compiler hoists them out of the channel loop. */
#if defined(__GNUC__)
#define TINYSEG_ROW_CONST __attribute__((const, noinline, unused))
#else
#define TINYSEG_ROW_CONST
#endif
static inline int32_t tinyseg_srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
  return (int32_t)((ab + nudge) / (1ll << 31));
}

static inline int32_t tinyseg_rounding_divide_by_pot(int32_t x, int32_t exponent) {
  int32_t mask = (int32_t)((1ll << exponent) - 1);
  int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + ((x & mask) > threshold ? 1 : 0);
}

static inline int32_t tinyseg_saturating_shift_left(int32_t x, int32_t exponent) {
  int32_t threshold = (int32_t)((1ll << (31 - exponent)) - 1);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return (int32_t)((uint32_t)x << exponent);
}

static int32_t TINYSEG_ROW_CONST tinyseg_softmax_headroom(int32_t sum_of_exps) {
  int32_t headroom = 0; /* CountLeadingZeros; the sum is > 0 (the row maximum contributes exp(0)) */
  while (headroom < 31 && !((uint32_t)sum_of_exps & (0x80000000u >> headroom))) headroom++;
  return headroom;
}

static int32_t TINYSEG_ROW_CONST tinyseg_softmax_reciprocal(int32_t sum_of_exps) {
  int32_t headroom = tinyseg_softmax_headroom(sum_of_exps);
  int32_t shifted_minus_one = (int32_t)(((uint32_t)sum_of_exps << headroom) - 0x80000000u);
  /* gemmlowp one_over_one_plus_x_for_x_in_0_1: Newton-Raphson in Q2.29 */
  int64_t sum = (int64_t)shifted_minus_one + INT32_MAX; /* RoundingHalfSum(x, One) */
  int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t x = (int32_t)(1515870810u + (uint32_t)tinyseg_srdhm(half_denominator, -1010580540));
  for (int i = 0; i < 3; i++) {
    int32_t residual = (int32_t)(((uint32_t)1 << 29) - (uint32_t)tinyseg_srdhm(half_denominator, x));
    x = (int32_t)((uint32_t)x + (uint32_t)tinyseg_saturating_shift_left(tinyseg_srdhm(x, residual), 2));
  }
  return tinyseg_saturating_shift_left(x, 1);
}

static inline int32_t tinyseg_softmax_unsat(int32_t sum_of_exps, int32_t exp_q0) {
  int32_t exponent = (12 - tinyseg_softmax_headroom(sum_of_exps)) + 31 - 8;
  return tinyseg_rounding_divide_by_pot(tinyseg_srdhm(tinyseg_softmax_reciprocal(sum_of_exps), exp_q0), exponent);
}

#endif /* TINYSEG_ARITH_H */
