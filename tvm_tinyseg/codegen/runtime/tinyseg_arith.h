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

#endif /* TINYSEG_ARITH_H */
