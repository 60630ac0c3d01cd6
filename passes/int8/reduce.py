"""int8 MEAN (tflite reference_ops::QuantizedMeanOrSum, as TFLite Micro calls it): the int32 sum
of the raw codes over the reduced axes, minus ``zp_in · N``, requantized with the multiplier of
``s_in / s_out`` into which ``1/N`` is folded in fixed point (not as a real factor: that would
round differently), plus ``zp_out``, clamped to int8."""
from tvm import te

from .requantize import clamp_to_int8, i32, mbqm, quantize_multiplier


def mean_multiplier(in_scale, out_scale, count) -> tuple:
    """TFLM's (multiplier, shift) for a mean over ``count`` elements."""
    multiplier, shift = quantize_multiplier(float(in_scale) / float(out_scale))
    fold = min(count.bit_length() - 1, 32, 31 + shift)
    return int((multiplier << fold) // count), shift - fold


def mean_int8(out_shape, in_shape, axes, keepdims, zp_in, zp_out, multiplier, shift):
    """TE builder: ``x`` int8 of ``in_shape`` → mean over ``axes`` (sorted, non-negative)."""
    reduce_axes = [te.reduce_axis((0, int(in_shape[a])), f"r{a}") for a in axes]
    count = 1
    for a in axes:
        count *= int(in_shape[a])

    def compute(x):
        def total(*out_index):
            index, reduced, kept = [], iter(reduce_axes), iter(out_index)
            for a in range(len(in_shape)):
                if a in axes:
                    index.append(next(reduced))
                    if keepdims:
                        next(kept)  # the reduced axis' size-1 output index
                else:
                    index.append(next(kept))
            return te.sum(x[tuple(index)].astype("int32"), axis=reduce_axes)

        sums = te.compute(out_shape, total, name="mean_sum")
        return te.compute(out_shape, lambda *i: clamp_to_int8(
            mbqm(sums[i] - i32(zp_in * count), multiplier, shift) + i32(zp_out), -128, 127), name="mean")

    return compute
