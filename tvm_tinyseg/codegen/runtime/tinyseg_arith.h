/* Integer arithmetic shared by the generated kernels: an exact copy of TFLite Micro's
 * (gemmlowp, double-rounding) MultiplyByQuantizedMultiplier, so int8 outputs match TFLM bit for bit.
 * Right shifts of negative values are arithmetic on gcc, clang and arm-none-eabi-gcc. */
#ifndef TINYSEG_ARITH_H
#define TINYSEG_ARITH_H
#include <stdint.h>
#include <string.h>
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

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

/* The int8 dot products of a convolution's reduction over input channels, for TILE output channels
 * at once (code generated with --mcpu for a core with the DSP extension calls these, see
 * passes/dsp_dot_products.py): acc[k] += sum over c < n of (x[c] + x_offset) * w[k * w_stride + c].
 * With the DSP extension four channels take one load of x, two SXTAB16 (x + offset in 16-bit lanes)
 * and, per output channel, one load of w, two SXTB16 and two SMLAD; the sums are those of the
 * portable loop (int32 products of int16 lanes, added mod 2^32), so the result is bit-identical.
 * Elsewhere, and for the last n % 4 channels, the portable loop. Four accumulators at a time: eight
 * and their operands would not fit Cortex-M's registers. */
/* Inlined at every call, so the stride and channel count are constants there (gcc -O2 gives up
 * inlining when a kernel calls the helpers from several places). */
#if defined(__GNUC__)
#define TINYSEG_DOT_INLINE static inline __attribute__((always_inline))
#else
#define TINYSEG_DOT_INLINE static inline
#endif

static inline uint32_t tinyseg_load_s8x4(const int8_t *p) {
  uint32_t v; /* an unaligned 32-bit load on Armv7-M and later */
  memcpy(&v, p, sizeof(v));
  return v;
}

#if defined(__ARM_FEATURE_DSP)
static inline int16x2_t tinyseg_offset_pair(int32_t offset) {
  return (int16x2_t)(((uint32_t)offset & 0xFFFFu) * 0x10001u);
}

/* SXTB16 of the word rotated by 8 (bytes 1 and 3): one instruction; gcc does not fuse the rotation */
static inline int16x2_t tinyseg_sxtb16_ror8(uint32_t v) {
#if defined(__GNUC__)
  int16x2_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
#else
  return __sxtb16((int8x4_t)((v >> 8) | (v << 24)));
#endif
}

static inline int16x2_t tinyseg_sxtab16_ror8(int16x2_t a, uint32_t v) {
#if defined(__GNUC__)
  int16x2_t r;
  __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
  return r;
#else
  return __sxtab16(a, (int8x4_t)((v >> 8) | (v << 24)));
#endif
}

/* a += x02 . (w0, w2) + x13 . (w1, w3) for the four weights at w */
#define TINYSEG_SMLAD_S8X4(a, w, x02, x13)                 \
  do {                                                     \
    const uint32_t w4_ = tinyseg_load_s8x4(w);             \
    (a) = __smlad(__sxtb16((int8x4_t)w4_), (x02), (a));    \
    (a) = __smlad(tinyseg_sxtb16_ror8(w4_), (x13), (a));   \
  } while (0)
#endif

TINYSEG_DOT_INLINE void tinyseg_dot_s8x4(int32_t *acc, const int8_t *x, const int8_t *w, int32_t w_stride, int32_t n,
                                        int32_t x_offset) {
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  int32_t c = 0;
#if defined(__ARM_FEATURE_DSP)
  const int16x2_t offsets = tinyseg_offset_pair(x_offset);
  for (; c + 4 <= n; c += 4) {
    const uint32_t x4 = tinyseg_load_s8x4(x + c);
    const int16x2_t x02 = __sxtab16(offsets, (int8x4_t)x4), x13 = tinyseg_sxtab16_ror8(offsets, x4);
    const int8_t *wc = w + c;
    TINYSEG_SMLAD_S8X4(a0, wc, x02, x13);
    TINYSEG_SMLAD_S8X4(a1, wc + w_stride, x02, x13);
    TINYSEG_SMLAD_S8X4(a2, wc + 2 * w_stride, x02, x13);
    TINYSEG_SMLAD_S8X4(a3, wc + 3 * w_stride, x02, x13);
  }
#endif
  for (; c < n; ++c) {
    const int32_t v = x[c] + x_offset;
    a0 += v * w[c];
    a1 += v * w[w_stride + c];
    a2 += v * w[2 * w_stride + c];
    a3 += v * w[3 * w_stride + c];
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

TINYSEG_DOT_INLINE void tinyseg_dot_s8x8(int32_t *acc, const int8_t *x, const int8_t *w, int32_t w_stride, int32_t n,
                                        int32_t x_offset) {
  tinyseg_dot_s8x4(acc, x, w, w_stride, n, x_offset);
  tinyseg_dot_s8x4(acc + 4, x, w + 4 * w_stride, w_stride, n, x_offset);
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
