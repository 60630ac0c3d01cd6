"""The requantization multipliers TFLite Micro's int8 kernels abort on while preparing a model.

TFLite Micro derives ADD's and SUB's rescalings with ``QuantizeMultiplierSmallerThanOneExp`` and
SOFTMAX's input scaling with ``QuantizeMultiplierGreaterThanOne``
(tensorflow/lite/kernels/internal/quantization_util.cc; the callers are micro/kernels/add_common.cc,
sub_common.cc, softmax_common.cc). A multiplier on the wrong side of 1 fails a ``TFLITE_CHECK``
and the interpreter aborts without a message. Such a model has no reference output to match, so it
is refused here, naming the op and its scales, rather than compiled into a program nobody can check.
The arithmetic repeats TFLite Micro's: ADD in double, SUB in float (its ``twice_max_input_scale``
is a float), so that the same files are refused.
"""
import math

import numpy as np

from tvm_tinyseg.errors import UnsupportedModelError

ADD_SUB_LEFT_SHIFT = 20  # int8 ADD/SUB scale inputs up by 2^20 before rescaling
SOFTMAX_SCALED_DIFF_INTEGER_BITS = 5
_INT8 = 9  # tflite.TensorType.INT8


def _quantized_shift(multiplier: float) -> int:
    """The shift ``QuantizeMultiplier`` gives ``multiplier`` (frexp, the Q31 significand rounded
    half away from zero, a significand of 2^31 carried into the shift, shifts below -31 flushed)."""
    significand, shift = math.frexp(multiplier)
    if math.floor(abs(significand) * (1 << 31) + 0.5) == 1 << 31:
        shift += 1
    return 0 if shift < -31 else shift


def _smaller_than_one_ok(multiplier: float) -> bool:
    return 0.0 < multiplier < 1.0 and _quantized_shift(multiplier) <= 0


def _scale(subgraph, index):
    tensor = subgraph.Tensors(index)
    quant = tensor.Quantization()
    if tensor.Type() != _INT8 or quant is None or quant.ScaleLength() == 0:
        return None
    return np.float32(quant.Scale(0))


def _add_multipliers(s1, s2, s_out):
    twice_max = 2.0 * float(max(s1, s2))
    return float(s1) / twice_max, float(s2) / twice_max, twice_max / ((1 << ADD_SUB_LEFT_SHIFT) * float(s_out))


def _sub_multipliers(s1, s2, s_out):
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        twice_max = np.float32(2) * max(s1, s2)
        return (float(s1 / twice_max), float(s2 / twice_max),
                float(twice_max / (np.float32(1 << ADD_SUB_LEFT_SHIFT) * s_out)))


_RESCALINGS = {"ADD": _add_multipliers, "SUB": _sub_multipliers}


def check_multipliers(path, subgraph, ops) -> None:
    """Refuse int8 ADD, SUB and SOFTMAX ops whose scales make TFLite Micro's Prepare abort."""
    for i, op_name in enumerate(ops):
        op = subgraph.Operators(i)
        scales = [_scale(subgraph, int(t)) if t >= 0 else None
                  for t in list(op.InputsAsNumpy()) + list(op.OutputsAsNumpy())]
        if op_name in _RESCALINGS and len(scales) == 3 and None not in scales:
            names = ("first input", "second input", "output")
            for name, multiplier in zip(names, _RESCALINGS[op_name](*scales)):
                if not _smaller_than_one_ok(multiplier):
                    raise UnsupportedModelError(
                        f"{path}: {op_name} (operator #{i}) scales {scales[0]:g}, {scales[1]:g} -> {scales[2]:g} "
                        f"give its {name} a rescaling of {multiplier:.3g}, outside (0, 1): TFLite Micro "
                        "aborts on it (QuantizeMultiplierSmallerThanOneExp)")
        elif op_name == "SOFTMAX" and len(scales) == 2 and scales[0] is not None:
            multiplier = min(float(scales[0]) * (1 << (31 - SOFTMAX_SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
            if not multiplier > 1.0:
                raise UnsupportedModelError(
                    f"{path}: SOFTMAX (operator #{i}) input scale {scales[0]:g} is below 2^-26: TFLite Micro "
                    "aborts on it (QuantizeMultiplierGreaterThanOne)")
