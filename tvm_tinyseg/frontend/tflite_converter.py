"""Corrections to TVM 0.27's TFLite operator converter (tvm.relax.frontend.tflite).

* TRANSPOSE_CONV: TVM ignores the op's fused activation (a float RELU/RELU6 silently vanishes,
  an int8 one leaves the output unclamped); it is applied here like every other op's.
* Quantized fused activations: TVM rounds the clamp bounds half to even (Python's ``round``);
  TFLite (``CalculateActivationRangeQuantized``) rounds ``f / scale`` in float32, half away from
  zero. A bound on a tie, e.g. RELU6 with scale 0.8, differed by one code.
* FULLY_CONNECTED without ``keep_num_dims`` flattens its leading dimensions in TFLite; TVM
  keeps them.
* Guard: every converted op's inferred output shape must be the one the model declares; a
  converter that misreads an attribute (a stride, a padding, a flag) usually changes it, and
  that is reported as the converter's failure (ConverterMismatch) rather than compiled.
"""
import importlib

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.tflite import tflite_frontend


def _tflite(name):  # the tflite package's star-imports shadow generic names: import explicitly
    return importlib.import_module("tflite." + name)


_Activation = _tflite("ActivationFunctionType").ActivationFunctionType
_QUANTIZED_RANGES = {_Activation.RELU: (0.0, None), _Activation.RELU6: (0.0, 6.0),
                     _Activation.RELU_N1_TO_1: (-1.0, 1.0)}
_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _round_half_away(value: np.float32) -> int:
    return int(np.sign(value) * np.floor(np.abs(np.float64(value)) + 0.5))


class ConverterMismatch(RuntimeError):
    """TVM's converter built something other than what the model declares: a bug of the
    converter (an internal error), not of the model."""


def _static_shape(expr):
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    values = getattr(ty.shape, "values", None)
    if values is None or not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


class ConverterFixes(tflite_frontend.OperatorConverter):
    """TVM's converter with the fixes of the module docstring."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.convert_map = {name: self._shape_checked(name, convert) for name, convert in self.convert_map.items()}

    def _shape_checked(self, name, convert):
        def checked(op):
            out = convert(op=op)
            outputs = self.get_output_tensors(op)
            if out is None or isinstance(out, relax.Tuple) or len(outputs) != 1:
                return out
            out = self.bb.normalize(out)
            declared = [int(s) for s in outputs[0].tensor.ShapeAsNumpy()] \
                if outputs[0].tensor.ShapeLength() else None
            inferred = _static_shape(out)
            if declared is not None and inferred is not None and declared != inferred \
                    and not (declared == [] and inferred in ([], [1])):
                raise ConverterMismatch(
                    f"TVM's TFLite converter made {name} output '{outputs[0].tensor.Name().decode()}' "
                    f"of shape {inferred}, the model declares {declared}")
            return out
        return checked

    def convert_fully_connected(self, op):
        out = self.bb.normalize(super().convert_fully_connected(op))
        declared = [int(s) for s in self.get_output_tensors(op)[0].tensor.ShapeAsNumpy()]
        inferred = _static_shape(out)
        if inferred is not None and inferred != declared and np.prod(inferred) == np.prod(declared):
            return relax.op.reshape(out, declared)
        return out

    def convert_qnn_fused_activation_function(self, expr, fused_activation_fn, scale, zero_point, dtype):
        if fused_activation_fn == _Activation.NONE:
            return expr
        if fused_activation_fn not in _QUANTIZED_RANGES:
            return super().convert_qnn_fused_activation_function(expr, fused_activation_fn, scale, zero_point, dtype)
        qmin, qmax = _INT_RANGES[dtype]
        low, high = _QUANTIZED_RANGES[fused_activation_fn]

        def quantized(value):
            return int(zero_point) + _round_half_away(np.float32(value) / np.float32(scale))

        lo = max(qmin, quantized(low))
        hi = qmax if high is None else min(qmax, quantized(high))
        return relax.op.clip(expr, min=float(lo), max=float(hi))

    def convert_transpose_conv(self, op):
        out = super().convert_transpose_conv(op)
        options = _tflite("TransposeConvOptions").TransposeConvOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        activation = options.FusedActivationFunction()
        output = self.get_output_tensors(op)[0]
        if not output.qnn_params:
            return self.convert_fused_activation_function(out, activation)
        return self.convert_qnn_fused_activation_function(
            out, activation, tflite_frontend.get_scalar_from_constant(output.qnn_params["scale"]),
            tflite_frontend.get_scalar_from_constant(output.qnn_params["zero_point"]),
            self.get_tensor_type_str(output.tensor.Type()))
