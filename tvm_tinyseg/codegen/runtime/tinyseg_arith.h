/* Integer arithmetic shared by the generated kernels: an exact copy of TFLite Micro's
 * (gemmlowp, double-rounding) MultiplyByQuantizedMultiplier, so int8 outputs match TFLM bit for bit.
 * Right shifts of negative values are arithmetic on gcc, clang and arm-none-eabi-gcc. */
#ifndef TINYSEG_ARITH_H
#define TINYSEG_ARITH_H
#include <stdint.h>

static inline int32_t tinyseg_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
  int32_t left = shift > 0 ? shift : 0;
  int32_t right = shift > 0 ? 0 : -shift;
  int32_t a = (int32_t)((uint32_t)x << left);
  int32_t high; /* SaturatingRoundingDoublingHighMul */
  if (a == INT32_MIN && multiplier == INT32_MIN) {
    high = INT32_MAX;
  } else {
    int64_t ab = (int64_t)a * (int64_t)multiplier;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)); /* int may be 16 bits */
    high = (int32_t)((ab + nudge) / (1ll << 31)); /* C division truncates toward zero */
  }
  int32_t mask = (int32_t)((1ll << right) - 1); /* RoundingDivideByPOT */
  int32_t remainder = high & mask;
  int32_t threshold = (mask >> 1) + (high < 0 ? 1 : 0);
  return (high >> right) + (remainder > threshold ? 1 : 0);
}

#endif /* TINYSEG_ARITH_H */
