"""LowerFakeQuantToInteger: rewrite TVM's fake-quantized TFLite import into integer kernels.

TVM's TFLite frontend imports an int8 op as ``quantize(op(dequantize(x), dequantize(w)) + bias)``
in float32. This pass finds every such region — rooted at a ``quantize`` whose input is float —
and replaces it with one ``call_tir`` of an int8 kernel that follows TFLite Micro's reference
arithmetic bit for bit (per-channel multipliers/shifts, gemmlowp double rounding). A following
``clip`` (a fused RELU/RELU6) is folded into the kernel's clamp. Run it before FoldConstant, so
weights stay int8 (FoldConstant would turn ``dequantize(w)`` into float32 weights).

    quantize(add(conv2d(dequantize(x), dequantize(W)), dequantize(b)))  →  call_tir(qconv2d, x, W', b, M, S)
    quantize(add(dequantize(a), dequantize(b)))                         →  call_tir(qadd, a, b)
    quantize(sigmoid(dequantize(x)))                                    →  call_tir(qlookup, x, table)
    quantize(concat(dequantize(a), dequantize(b)))  (same qparams)      →  concat(a, b)
    astype(avg_pool2d(astype(x, int32)), int8)                          →  call_tir(qavg_pool2d, x)
    resize2d(x, method="nearest_neighbor")  (int8)                      →  call_tir(qresize_nearest, x, ...)

Anything quantized that is not one of these patterns raises UnsupportedModelError naming the op.
"""
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

from tvm_tinyseg.errors import UnsupportedModelError

from .int8 import conv, elementwise, lut, pool, resize
from .int8.activation_rules import ActivationRules
from .int8.requantize import multipliers

_OP = {name: Op.get("relax." + name) for name in (
    "quantize", "dequantize", "clip", "nn.relu", "nn.conv2d", "nn.conv2d_transpose", "add",
    "multiply", "sigmoid", "concat", "astype", "nn.avg_pool2d", "reshape",
    "image.resize2d")}
INT8_MIN, INT8_MAX = -128, 127


@dataclass(frozen=True)
class QParams:
    """Quantization of one tensor: float32 scale(s), zero point(s) and the per-channel axis."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    def scalar(self) -> tuple:
        if not self.per_tensor:
            raise UnsupportedModelError("per-channel quantization is only supported on weights")
        return np.float32(self.scale.reshape(-1)[0]), int(self.zero_point.reshape(-1)[0])

    def same_as(self, other: "QParams") -> bool:
        return self.scalar() == other.scalar()


def _constant(expr) -> np.ndarray:
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    raise UnsupportedModelError(f"expected a constant quantization parameter, got {type(expr).__name__}")


def _qparams(call) -> QParams:
    return QParams(_constant(call.args[1]).astype(np.float32),
                   _constant(call.args[2]).astype(np.int64), int(call.attrs.axis))


def _op_name(value) -> str:
    op = getattr(value, "op", None)
    return getattr(op, "name", type(value).__name__).replace("relax.", "")


def _is(value, name) -> bool:
    return isinstance(value, relax.Call) and value.op == _OP[name]


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _quantized(value, q: QParams) -> int:
    """Real value → int8 code in q's scale (TFLite rounds half away from zero)."""
    scale, zp = q.scalar()
    scaled = float(value) / float(scale)
    return int(np.sign(scaled) * np.floor(abs(scaled) + 0.5)) + zp


def _to_ohwi(weights: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(weights, [layout.index(c) for c in "OHWI"]))


@relax.expr_functor.mutator
class _Lowerer(relax.PyExprMutator, ActivationRules):
    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        super().__init__(mod)
        self.producer = {}
        users = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self.producer[binding.var] = binding.value
                for arg in getattr(binding.value, "args", []):
                    if isinstance(arg, relax.Var):
                        users[arg] = users.get(arg, 0) + 1
        # A clip that is the only user of an int8 kernel's result is that kernel's activation.
        self.fused_clip, self.clip_source = {}, {}
        for var, value in self.producer.items():
            if _is(value, "clip") and isinstance(value.args[0], relax.Var) \
                    and users.get(value.args[0]) == 1 and self._kernel_root(self.producer.get(value.args[0])):
                self.fused_clip[value.args[0]] = (int(value.args[1].value), int(value.args[2].value))
                self.clip_source[var] = value.args[0]

    def _kernel_root(self, value) -> bool:
        if _is(value, "quantize"):
            return _dtype(value.args[0]) == "float32"
        return self._avg_pool_input(value) is not None

    def _avg_pool_input(self, value):
        """``astype(avg_pool2d(astype(x, int32)), int8)`` → the avg_pool2d call, else None."""
        if not (_is(value, "astype") and _dtype(value) == "int8"):
            return None
        pooled = self.producer.get(value.args[0])
        if _is(pooled, "nn.avg_pool2d") and _is(self.producer.get(pooled.args[0]), "astype"):
            return pooled
        return None

    # -- binding dispatch -------------------------------------------------------------------
    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        if var in self.clip_source:  # folded into its producer's kernel
            self._bind(var, self.visit_expr(self.clip_source[var]))
        elif self._kernel_root(value):
            lo, hi = self.fused_clip.get(var, (INT8_MIN, INT8_MAX))
            if _is(value, "quantize"):
                replacement = self._lower_quantize(var, value, lo, hi)
            else:
                replacement = self._lower_avg_pool(self._avg_pool_input(value), lo, hi)
            self._bind(var, replacement)
        elif _is(value, "image.resize2d") and _dtype(value) == "int8":
            self._bind(var, self._lower_resize(value))
        else:
            super().visit_var_binding_(binding)

    def _bind(self, var, expr):
        if isinstance(var, relax.DataflowVar):
            new_var = self.builder_.emit(expr, name_hint=var.name)
        else:
            new_var = self.builder_.emit_output(expr, name_hint=var.name)
        self.set_var_remap(var, new_var)

    # -- operands ---------------------------------------------------------------------------
    def _dequantized(self, expr, what: str):
        """``dequantize(src)`` → (src rewritten, its QParams)."""
        value = self.producer.get(expr) if isinstance(expr, relax.Var) else expr
        if not _is(value, "dequantize"):
            raise UnsupportedModelError(f"{what} is {_op_name(value)}, expected a dequantized int8 tensor")
        source = value.args[0]
        if _dtype(source) != "int8":
            raise UnsupportedModelError(f"{what} is {_dtype(source)}; only int8 activations and weights are supported")
        return (source if isinstance(source, tvm.ir.GenericConst) else self.visit_expr(source)), _qparams(value)

    def _float_producer(self, expr):
        return self.producer.get(expr) if isinstance(expr, relax.Var) else expr

    # -- lowering rules ---------------------------------------------------------------------
    def _lower_quantize(self, var, q, lo, hi):
        out_q = _qparams(q)
        out_scale, out_zp = out_q.scalar()
        out_shape = [int(s) for s in var.ty.shape.values]
        activation = self._lower_activation(q, out_q, out_shape, lo, hi)  # activation_rules.py
        if activation is not None:
            return activation
        core = self._float_producer(q.args[0])
        # Fused activations stay in float before quantize: relu, relu6 = clip(0, 6), ...
        if _is(core, "nn.relu"):
            lo, core = max(lo, out_zp), self._float_producer(core.args[0])
        elif _is(core, "clip") and _dtype(core) == "float32":
            lo = max(lo, _quantized(core.args[1].value, out_q))
            hi = min(hi, _quantized(core.args[2].value, out_q))
            core = self._float_producer(core.args[0])
        lo, hi = max(lo, INT8_MIN), min(hi, INT8_MAX)

        if _is(core, "add"):
            conv_call, bias = self._split_bias(core)
            if conv_call is not None:
                return self._lower_conv(conv_call, bias, out_q, out_shape, lo, hi)
            return self._lower_binary(core, elementwise.add_int8, "qadd", out_q, out_shape, lo, hi)
        if _is(core, "nn.conv2d") or _is(core, "nn.conv2d_transpose"):
            return self._lower_conv(core, None, out_q, out_shape, lo, hi)
        if _is(core, "multiply"):
            return self._lower_binary(core, elementwise.mul_int8, "qmul", out_q, out_shape, lo, hi)
        if _is(core, "sigmoid"):
            x, in_q = self._dequantized(core.args[0], "the input of a LOGISTIC")
            table = lut.tflm_logistic_lut(*in_q.scalar(), out_scale, out_zp)
            table = np.clip(table, lo, hi).astype(np.int8)
            return self.builder_.call_te(elementwise.table_lookup_int8(out_shape), x, relax.const(table, "int8"),
                                         primfunc_name_hint="qlogistic")
        if _is(core, "concat"):
            return self._lower_concat(core, out_q, lo, hi)
        if _is(core, "dequantize"):
            x, in_q = self._dequantized(q.args[0], "the input of a QUANTIZE")
            if in_q.same_as(out_q) and (lo, hi) == (INT8_MIN, INT8_MAX):
                return x
            return self.builder_.call_te(
                elementwise.requantize_int8(out_shape, *in_q.scalar(), out_scale, out_zp, lo, hi), x,
                primfunc_name_hint="qrequantize")
        raise UnsupportedModelError(
            f"quantized {_op_name(core)} (result '{var.name}') cannot be lowered to integer arithmetic")

    def _split_bias(self, add):
        """``add(conv, dequantize(int32 const))`` → (conv call, int32 bias), else (None, None)."""
        for conv_arg, bias_arg in ((add.args[0], add.args[1]), (add.args[1], add.args[0])):
            conv_call, bias = self._float_producer(conv_arg), self._float_producer(bias_arg)
            if (_is(conv_call, "nn.conv2d") or _is(conv_call, "nn.conv2d_transpose")) \
                    and _is(bias, "dequantize") and isinstance(bias.args[0], tvm.ir.GenericConst):
                return conv_call, _constant(bias.args[0])
        return None, None

    def _lower_conv(self, call, bias, out_q, out_shape, lo, hi):
        transposed = _is(call, "nn.conv2d_transpose")
        attrs = call.attrs
        if str(attrs.data_layout) != "NHWC":
            raise UnsupportedModelError(f"convolution data layout {attrs.data_layout} (expected NHWC)")
        x, in_q = self._dequantized(call.args[0], "the input of a convolution")
        layout = str(attrs.kernel_layout)
        weights, w_q = self._weights(call.args[1], layout)
        out_channels = weights.shape[0]
        if np.any(w_q.zero_point != 0):
            raise UnsupportedModelError("weight zero points must be 0 (symmetric int8 weights)")
        in_scale, in_zp = in_q.scalar()
        out_scale, out_zp = out_q.scalar()
        w_scales = np.broadcast_to(w_q.scale.reshape(-1), (out_channels,))
        real = [float(np.float64(in_scale) * np.float64(s) / np.float64(out_scale)) for s in w_scales]
        multiplier, shift = multipliers(real)
        padding = [int(p) for p in attrs.padding]
        common = dict(zp_in=in_zp, zp_out=out_zp, lo=lo, hi=hi, has_bias=bias is not None)
        strides = [int(s) for s in attrs.strides]
        if transposed:
            if any(int(d) != 1 for d in attrs.dilation) or any(int(p) for p in attrs.output_padding):
                raise UnsupportedModelError("transposed convolution with dilation or output padding")
            builder = conv.conv2d_transpose_nhwc_int8(out_shape, strides, padding[:2], **common)
            name = "qconv2d_transpose"
        else:
            builder = conv.conv2d_nhwc_int8(out_shape, strides, padding[:2], [int(d) for d in attrs.dilation],
                                            int(attrs.groups), **common)
            name = "qdepthwise_conv2d" if int(attrs.groups) > 1 else "qconv2d"
        args = [x, relax.const(weights, "int8")]
        if bias is not None:
            args.append(relax.const(np.broadcast_to(bias.astype(np.int32), (out_channels,)).copy(), "int32"))
        args += [relax.const(multiplier, "int32"), relax.const(shift, "int32")]
        return self.builder_.call_te(builder, *args, primfunc_name_hint=name)

    def _weights(self, expr, layout):
        """Constant int8 weights in OHWI and their QParams; follows the reshape TVM inserts
        between a depthwise kernel's dequantize and its conv2d."""
        value = self._float_producer(expr)
        shape = None
        if _is(value, "reshape"):
            shape = [int(s) for s in value.ty.shape.values]
            expr = value.args[0]
        w, w_q = self._dequantized(expr, "the weight of a convolution")
        if not isinstance(w, tvm.ir.GenericConst):
            raise UnsupportedModelError("convolution weights must be constant")
        weights = _constant(w)
        if shape is not None:
            weights = weights.reshape(shape)
            if not w_q.per_tensor and w_q.scale.size != shape[layout.index("O")]:
                raise UnsupportedModelError(
                    "depthwise convolution with a depth multiplier > 1 and per-channel weights")
        elif not w_q.per_tensor and w_q.axis != layout.index("O"):
            raise UnsupportedModelError(
                f"weight quantized per-axis on axis {w_q.axis} ({layout[w_q.axis]}), expected the output-channel axis")
        return _to_ohwi(weights, layout), w_q

    def _lower_binary(self, call, kernel, name, out_q, out_shape, lo, hi):
        (a, qa), (b, qb) = (self._dequantized(arg, f"an input of {_op_name(call)}") for arg in call.args[:2])
        (sa, za), (sb, zb) = qa.scalar(), qb.scalar()
        fn = kernel(out_shape, (sa, sb), (za, zb), *out_q.scalar(), lo, hi)
        return self.builder_.call_te(fn, a, b, primfunc_name_hint=name)

    def _lower_concat(self, call, out_q, lo, hi):
        sources = []
        for field in call.args[0].fields:
            source, q = self._dequantized(field, "an input of CONCATENATION")
            if not q.same_as(out_q):
                raise UnsupportedModelError(
                    "CONCATENATION inputs with scale/zero point different from the output's "
                    f"({q.scalar()} vs {out_q.scalar()}); TFLite Micro rejects such models too")
            sources.append(source)
        joined = relax.op.concat(sources, axis=int(call.attrs.axis))
        if (lo, hi) == (INT8_MIN, INT8_MAX):
            return joined
        return relax.op.clip(self.builder_.emit(joined), lo, hi)

    def _lower_avg_pool(self, pool_call, lo, hi):
        attrs = pool_call.attrs
        x = self.visit_expr(self.producer[pool_call.args[0]].args[0])
        out_shape = [int(s) for s in pool_call.ty.shape.values]
        fn = pool.avg_pool2d_nhwc_int8(out_shape, [int(s) for s in attrs.pool_size], [int(s) for s in attrs.strides],
                                       [int(p) for p in attrs.padding][:2], lo, hi)
        return self.builder_.call_te(fn, x, primfunc_name_hint="qavg_pool2d")

    def _lower_resize(self, call):
        """int8 resize2d: TVM's legalization computes source indices in float with 7-digit literals
        and rounds ties to even, which differs from TFLite; use TFLite's mapping instead. The
        frontend maps TFLite's flags to (coordinate mode, rounding): (asymmetric, "") = neither,
        (align_corners, "") = align_corners, (half_pixel, round_prefer_ceil) = half_pixel_centers,
        (half_pixel, "") = both."""
        attrs = call.attrs
        mode, rounding = str(attrs.coordinate_transformation_mode), str(attrs.rounding_method)
        flags = {("asymmetric", ""): (False, False), ("align_corners", ""): (True, False),
                 ("half_pixel", "round_prefer_ceil"): (False, True), ("half_pixel", ""): (True, True)}
        if str(attrs.method) != "nearest_neighbor" or str(attrs.layout) != "NHWC" or (mode, rounding) not in flags:
            raise UnsupportedModelError(
                f"int8 resize2d with method {attrs.method}, layout {attrs.layout}, coordinate "
                f"transformation {mode} and rounding '{rounding}' (only TFLite's nearest neighbor)")
        x = self.visit_expr(call.args[0])
        in_shape = [int(s) for s in call.args[0].ty.shape.values]
        out_shape = [int(s) for s in call.ty.shape.values]
        fn, tables = resize.resize_nearest_nhwc_int8(out_shape, in_shape, *flags[(mode, rounding)])
        return self.builder_.call_te(fn, x, *(relax.const(t, "int32") for t in tables),
                                     primfunc_name_hint="qresize_nearest")


def _check_fully_lowered(func: relax.Function) -> None:
    """After lowering, float values may only remain as the model's float output/input conversion."""
    output = func.body.body
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not isinstance(binding.var.ty, relax.TensorType):
                continue
            if _dtype(binding.var) == "float32" and not (_is(value, "dequantize") and binding.var.same_as(output)):
                raise UnsupportedModelError(
                    f"quantized model has a float {_op_name(value)} ('{binding.var.name}') "
                    "that has no integer lowering")


def _quantized_function(func: relax.Function) -> bool:
    """Quantized: has a quantize, or takes int8 (a model of only int8 pooling or data movement
    has no quantize, but still needs its average pools and resizes lowered)."""
    return any(_dtype(p) == "int8" for p in func.params if isinstance(p.ty, relax.TensorType)) \
        or any(_is(b.value, "quantize") for blk in func.body.blocks for b in blk.bindings)


@tvm.transform.module_pass(opt_level=0, name="LowerFakeQuantToInteger")
class LowerFakeQuantToInteger:
    """Replace fake-quantized float regions by TFLM-exact int8 kernels (see module docstring)."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            if not _quantized_function(func):
                continue  # a float model: nothing to lower
            lowerer = _Lowerer(mod, func)
            lowerer.builder_.update_func(gv, lowerer.visit_expr(func))
            mod = relax.transform.DeadCodeElimination()(lowerer.builder_.finalize())
            mod = relax.transform.CanonicalizeBindings()(mod)  # drop the aliases of folded clips
            _check_fully_lowered(mod[gv])
        return mod
