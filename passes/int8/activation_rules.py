"""Lowering rules of LowerFakeQuantToInteger for int8 activations and the elementwise ops that
come with them, mixed into its mutator (passes/lower_fake_quant.py).

Each rule recognises the float expression TVM's TFLite frontend (plus our _OperatorConverter)
writes for one TFLite op between ``dequantize`` and ``quantize``, and emits the TFLM-exact kernel:

    relu(dq(x)) · clip(dq(x), 0, 6) · clip(dq(x), -1, 1) · leakyrelu(dq(x)) · tanh(dq(x))
    dq(x) * clip(dq(x) + 3, 0, 6) / 6                  (HARD_SWISH)      →  256-entry table lookup
    where(dq(x) >= 0, dq(x), dq(x) * dq(alpha))        (PRELU)           →  qprelu
    softmax(dq(x), axis=-1)                                              →  qsoftmax
    subtract(dq(a), dq(b)) · minimum · maximum · (dq(a) - dq(b))²        →  qsub, qminimum, ...
    quantize(x) of a float model input                                   →  qquantize
    quantize(dq(x)) from a uint8 model input / to a uint8 model output    →  qrequantize
"""
import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

from tvm_tinyseg.errors import UnsupportedModelError

from . import activation_luts, elementwise, softmax

_OPS = {name: Op.get("relax." + name) for name in (
    "dequantize", "nn.relu", "clip", "nn.leakyrelu", "tanh", "divide", "multiply", "add", "where",
    "greater_equal", "nn.softmax", "subtract", "minimum", "maximum")}
INT8_RANGE = (-128, 127)


def _is(value, name) -> bool:
    return isinstance(value, relax.Call) and value.op == _OPS[name]


def _scalar(expr):
    """The value of a scalar constant (a one-element tensor or an immediate like clip's bounds), else None."""
    if isinstance(expr, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):
        return float(expr.value)
    if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().size == 1:
        return float(expr.value.numpy().reshape(-1)[0])
    return None


def _scale_zero_point(call) -> tuple:
    """(float32 scale, int zero point) of a per-tensor quantize/dequantize call."""
    scale, zero_point = (_scalar(a) for a in call.args[1:3])
    if scale is None or zero_point is None:
        raise UnsupportedModelError("uint8 model input/output with per-axis quantization")
    return np.float32(scale), int(zero_point)


def _round_half_away(x) -> int:
    return int(np.sign(x) * np.floor(np.abs(x) + 0.5))


class ActivationRules:
    """Mixin for the _Lowerer of lower_fake_quant.py (uses its ``_float_producer``,
    ``_dequantized`` and ``builder_``)."""

    def _lower_activation(self, quantize_call, out_q, out_shape, lo, hi):
        """The int8 kernel for ``quantize(core)`` if ``core`` is one of this module's ops, else None."""
        source = quantize_call.args[0]
        out_scale, out_zp = out_q.scalar()
        if isinstance(source, relax.Var) and source not in self.producer:  # a float model input
            return self.builder_.call_te(elementwise.quantize_float_int8(out_shape, out_scale, out_zp, lo, hi),
                                         self.visit_expr(source), primfunc_name_hint="qquantize")
        core = self._float_producer(source)
        if _is(core, "dequantize") and "uint8" in (str(core.args[0].ty.dtype), str(quantize_call.ty.dtype)):
            return self._lower_uint8_boundary(core, quantize_call, out_shape)
        table = self._activation_table(core, out_scale, out_zp)
        if table is not None:
            x, table = table
            table = np.clip(table, lo, hi).astype(np.int8)
            return self.builder_.call_te(elementwise.table_lookup_int8(out_shape), x, relax.const(table, "int8"),
                                         primfunc_name_hint="qactivation")
        if _is(core, "where"):
            return self._lower_prelu(core, out_q, out_shape, lo, hi)
        if _is(core, "nn.softmax"):
            return self._lower_softmax(core, out_q, out_shape, lo, hi)
        core, lo, hi = self._fused_float_activation(core, out_q, lo, hi)
        binary = {"subtract": (elementwise.sub_int8, "qsub"), "minimum": (elementwise.minimum_int8, "qminimum"),
                  "maximum": (elementwise.maximum_int8, "qmaximum")}
        for name, (kernel, hint) in binary.items():
            if _is(core, name):
                return self._lower_binary(core, kernel, hint, out_q, out_shape, lo, hi)
        if _is(core, "multiply") and self._squared_difference(core) is not None:
            return self._lower_binary(self._squared_difference(core), elementwise.squared_difference_int8,
                                      "qsquared_difference", out_q, out_shape, lo, hi)
        return None

    def _lower_uint8_boundary(self, dequantize, quantize_call, out_shape):
        """QUANTIZE uint8 → int8 of a model input or int8 → uint8 of a model output (the frontend
        only lets uint8 through there): a requantization, clamped to the output type's range."""
        (in_scale, in_zp), (out_scale, out_zp) = (_scale_zero_point(c) for c in (dequantize, quantize_call))
        out_dtype = str(quantize_call.ty.dtype)
        lo, hi = (0, 255) if out_dtype == "uint8" else INT8_RANGE
        x = self.visit_expr(dequantize.args[0])
        fn = elementwise.requantize_int8(out_shape, in_scale, in_zp, out_scale, out_zp, lo, hi, out_dtype)
        return self.builder_.call_te(fn, x, primfunc_name_hint="qrequantize")

    def _fused_float_activation(self, core, out_q, lo, hi):
        """A SUB's fused RELU/RELU6/RELU_N1_TO_1 arrives as relu/clip around the float subtract:
        (the subtract, lo, hi narrowed like TFLM's CalculateActivationRangeQuantized), else as given."""
        if not (_is(core, "nn.relu") or _is(core, "clip")):
            return core, lo, hi
        inner = self._float_producer(core.args[0])
        if not _is(inner, "subtract"):
            return core, lo, hi
        scale, zp = out_q.scalar()
        if _is(core, "nn.relu"):
            return inner, max(lo, zp), hi
        bounds = [zp + _round_half_away(np.float32(_scalar(b)) / scale) for b in core.args[1:3]]
        return inner, max(lo, bounds[0]), min(hi, bounds[1])

    def _unary_input(self, expr, op_name):
        """``dequantize(x)`` → (x rewritten, in_scale, in_zp)."""
        x, in_q = self._dequantized(expr, f"the input of a {op_name}")
        return (x, *in_q.scalar())

    def _activation_table(self, core, out_scale, out_zp):
        """(int8 input, 256-entry table) for a unary activation of a dequantized tensor, else None."""
        hard_swish_input = self._hard_swish_input(core)
        if hard_swish_input is not None:
            x, s, z = self._unary_input(hard_swish_input, "HARD_SWISH")
            return x, activation_luts.hard_swish_lut(s, z, out_scale, out_zp)
        if not (isinstance(core, relax.Call) and core.args and _is(self._float_producer(core.args[0]), "dequantize")):
            return None
        if _is(core, "nn.relu"):
            x, s, z = self._unary_input(core.args[0], "RELU")
            return x, activation_luts.relu_lut(s, z, out_scale, out_zp)
        if _is(core, "clip"):
            bounds = (_scalar(core.args[1]), _scalar(core.args[2]))
            if bounds == (0.0, 6.0):
                x, s, z = self._unary_input(core.args[0], "RELU6")
                return x, activation_luts.relu6_lut(s, z)
            if bounds == (-1.0, 1.0):
                x, s, z = self._unary_input(core.args[0], "RELU_N1_TO_1")
                return x, activation_luts.relu_lut(s, z, out_scale, out_zp, act_min=-1.0, act_max=1.0)
            raise UnsupportedModelError(f"quantized clip to {bounds} (only RELU6 and RELU_N1_TO_1 ranges)")
        if _is(core, "nn.leakyrelu"):
            x, s, z = self._unary_input(core.args[0], "LEAKY_RELU")
            return x, activation_luts.leaky_relu_lut(s, z, out_scale, out_zp, np.float32(core.attrs.alpha))
        if _is(core, "tanh"):
            x, s, z = self._unary_input(core.args[0], "TANH")
            return x, activation_luts.tanh_lut(s, z, out_scale, out_zp)
        return None

    def _hard_swish_input(self, core):
        """``divide(multiply(d, clip(add(d, 3), 0, 6)), 6)`` (the frontend's HARD_SWISH) → d, else None."""
        if not (_is(core, "divide") and _scalar(core.args[1]) == 6.0):
            return None
        product = self._float_producer(core.args[0])
        if not _is(product, "multiply"):
            return None
        d, relu6 = product.args
        relu6 = self._float_producer(relu6)
        if not (_is(relu6, "clip") and (_scalar(relu6.args[1]), _scalar(relu6.args[2])) == (0.0, 6.0)):
            return None
        shifted = self._float_producer(relu6.args[0])
        if _is(shifted, "add") and shifted.args[0].same_as(d) and _scalar(shifted.args[1]) == 3.0 \
                and _is(self._float_producer(d), "dequantize"):
            return d
        return None

    def _squared_difference(self, core):
        """``multiply(s, s)`` with ``s = subtract(a, b)`` (SQUARED_DIFFERENCE) → the subtract, else None."""
        a, b = core.args
        difference = self._float_producer(a)
        return difference if a.same_as(b) and _is(difference, "subtract") else None

    def _lower_prelu(self, where, out_q, out_shape, lo, hi):
        """``where(d >= 0, d, d * dq(alpha))``, written by _OperatorConverter.convert_prelu."""
        condition, positive, negative = (self._float_producer(a) for a in where.args)
        negative_args = negative.args if _is(negative, "multiply") else ()
        if not (_is(condition, "greater_equal") and condition.args[0].same_as(where.args[1])
                and _scalar(condition.args[1]) == 0.0 and len(negative_args) == 2
                and negative_args[0].same_as(where.args[1])):
            raise UnsupportedModelError("quantized where (select) that is not a PRELU")
        x, in_q = self._dequantized(where.args[1], "the input of a PRELU")
        alpha, alpha_q = self._dequantized(negative_args[1], "the alpha of a PRELU")
        fn = elementwise.prelu_int8(out_shape, in_q.scalar(), alpha_q.scalar(), out_q.scalar(), lo, hi)
        return self.builder_.call_te(fn, x, alpha, primfunc_name_hint="qprelu")

    def _lower_softmax(self, call, out_q, out_shape, lo, hi):
        rank = len(out_shape)
        if int(call.attrs.axis) not in (-1, rank - 1):
            raise UnsupportedModelError(f"int8 SOFTMAX over axis {int(call.attrs.axis)} (TFLite: the last axis only)")
        x, in_q = self._dequantized(call.args[0], "the input of a SOFTMAX")
        fn, tables = softmax.softmax_int8(out_shape, *in_q.scalar(), *out_q.scalar(), lo, hi)
        return self.builder_.call_te(fn, x, *(relax.const(t, "int32") for t in tables),
                                     primfunc_name_hint="qsoftmax")
