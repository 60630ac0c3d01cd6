"""LowerQuantizedResizeAndMean: int8 RESIZE_BILINEAR and MEAN as TFLM-exact integer kernels.

TVM's TFLite frontend imports both as float regions; this pass, run before
LowerFakeQuantToInteger, replaces each region by one ``call_tir`` of an int8 kernel:

    quantize(image.resize2d(dequantize(x), method="linear"))  →  call_tir(qresize_bilinear, x)
    quantize(mean(dequantize(x), axis))                       →  call_tir(qmean, x)

TFLite Micro's bilinear resize interpolates the int8 codes in 10-bit fixed point and keeps the
input's quantization (the frontend refuses a different output quantization); its mean folds
``1/N`` into the requantization multiplier (passes/int8/reduce.py).
"""
import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

from tvm_tinyseg.errors import UnsupportedModelError

from .int8 import reduce, resize

_QUANTIZE, _DEQUANTIZE = Op.get("relax.quantize"), Op.get("relax.dequantize")
_RESIZE, _MEAN = Op.get("relax.image.resize2d"), Op.get("relax.mean")
# TVM's frontend maps TFLite's flags to a coordinate mode; TFLite refuses both flags at once.
_BILINEAR_FLAGS = {"asymmetric": (False, False), "align_corners": (True, False), "half_pixel": (False, True)}


def _scalar_qparams(call):
    scale, zero_point = (arg.value.numpy() for arg in call.args[1:3])
    if scale.size != 1:
        raise UnsupportedModelError("per-channel quantization of an activation")
    return np.float32(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0])


def _shape(expr):
    return [int(s) for s in expr.ty.shape.values]


@relax.expr_functor.mutator
class _Lowerer(relax.PyExprMutator):
    def __init__(self, mod, func):
        super().__init__(mod)
        self.producer = {b.var: b.value for block in func.body.blocks for b in block.bindings}

    def _region(self, value):
        """``quantize(op(dequantize(x)))`` with op resize2d/mean → (op call, dequantize call), else None."""
        if not (isinstance(value, relax.Call) and value.op == _QUANTIZE):
            return None
        core = self.producer.get(value.args[0])
        if not (isinstance(core, relax.Call) and core.op in (_RESIZE, _MEAN)):
            return None
        source = self.producer.get(core.args[0])
        if not (isinstance(source, relax.Call) and source.op == _DEQUANTIZE
                and str(source.args[0].ty.dtype) == "int8"):
            return None
        return core, source

    def visit_var_binding_(self, binding):
        region = self._region(binding.value)
        if region is None:
            super().visit_var_binding_(binding)
            return
        core, dequantized = region
        x = self.visit_expr(dequantized.args[0])
        in_q, out_q = _scalar_qparams(dequantized), _scalar_qparams(binding.value)
        if core.op == _RESIZE:
            call = self._bilinear(core, x, in_q, out_q)
        else:
            call = self._mean(core, x, in_q, out_q)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(call, name_hint=binding.var.name))

    def _bilinear(self, call, x, in_q, out_q):
        attrs = call.attrs
        mode = str(attrs.coordinate_transformation_mode)
        if str(attrs.method) != "linear" or str(attrs.layout) != "NHWC" or mode not in _BILINEAR_FLAGS:
            raise UnsupportedModelError(
                f"int8 resize2d with method {attrs.method}, layout {attrs.layout} and coordinate "
                f"transformation {mode} (only TFLite's bilinear)")
        if in_q != out_q:
            raise UnsupportedModelError("RESIZE_BILINEAR output quantized differently from its input")
        fn = resize.resize_bilinear_nhwc_int8(_shape(call), _shape(call.args[0]), *_BILINEAR_FLAGS[mode])
        return self.builder_.call_te(fn, x, primfunc_name_hint="qresize_bilinear")

    def _mean(self, call, x, in_q, out_q):
        in_shape = _shape(call.args[0])
        axes = sorted({int(a) % len(in_shape) for a in call.attrs.axis})
        count = int(np.prod([in_shape[a] for a in axes]))
        multiplier, shift = reduce.mean_multiplier(in_q[0], out_q[0], count)
        fn = reduce.mean_int8(_shape(call), in_shape, axes, bool(call.attrs.keepdims), in_q[1], out_q[1],
                              multiplier, shift)
        return self.builder_.call_te(fn, x, primfunc_name_hint="qmean")


@tvm.transform.module_pass(opt_level=0, name="LowerQuantizedResizeAndMean")
class LowerQuantizedResizeAndMean:
    """Replace int8 bilinear-resize and mean regions by TFLM-exact kernels (see module docstring)."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                lowerer = _Lowerer(mod, func)
                lowerer.builder_.update_func(gv, lowerer.visit_expr(func))
                mod = relax.transform.DeadCodeElimination()(lowerer.builder_.finalize())
        return mod
