"""LowerQDQToInteger: rewrite an int8 ONNX model in QDQ form into int8 kernels with ONNX's
QLinear arithmetic (passes/int8/onnx_qlinear.py), not TFLite Micro's.

TVM's ONNX frontend imports QuantizeLinear/DequantizeLinear as ``quantize``/``dequantize`` around
float NCHW ops. This pass rewrites every region rooted at a ``quantize`` of a float value — the
regions onnxruntime fuses into QLinear kernels — into one int8 kernel. The int8 tensors are laid
out NHWC, like TFLite's, so TinySeg streams and spills their rows: the input quantize and the
output dequantize transpose (the model keeps its float NCHW input and output), weights are
transposed at compile time.

    quantize(x)  (x a float model input)                            →  call_tir(qquantize, x)
    quantize(add(conv2d(DQ(x), DQ(W)), reshape(DQ(b))))              →  call_tir(qlinear_conv, x, W, b, scale)
    quantize(add(conv2d_transpose(DQ(x), DQ(W)), reshape(DQ(b))))    →  call_tir(qlinear_conv_transpose, ...)
    quantize(add(DQ(a), DQ(b)))                                      →  call_tir(qlinear_add, a, b)
    quantize(concat(DQ(a), DQ(b), ...))                              →  concat(a or table(a), ...)
    quantize(max_pool2d(DQ(x)))                                      →  max_pool2d(x)   (then a table if rescaled)
    quantize(resize2d(DQ(x), nearest))                               →  call_tir(qresize_nearest, x, rows, cols)
    quantize(f(DQ(x))), f in sigmoid, relu, leaky relu, clip, identity  →  call_tir(qlookup, x, table)

A relu or clip between the op and its quantize (onnxruntime's quantizer usually folds them into
the output range) becomes the kernel's clamp. A region that reads float constants (weights the
quantizer left in float, e.g. QOperator's ConvTranspose) is computed in float as written, between
a dequantize kernel and a quantize kernel. uint8 tensors are computed as int8 (codes and zero
points moved by -128). It runs only on functions the ONNX frontend marked with
``QARITH_ATTR = "onnx"``; TFLite's fake-quant graphs are left to LowerFakeQuantToInteger.
"""
import numpy as np
import tvm
from tvm import relax
from tvm.ir import Op

from tvm_tinyseg.errors import UnsupportedModelError

from .int8 import elementwise, onnx_qlinear as ql

QARITH_ATTR = "tinyseg.quant_arithmetic"
INT8_MIN, INT8_MAX = ql.INT8_MIN, ql.INT8_MAX
NHWC_FROM_NCHW = (0, 2, 3, 1)
OPAQUE = 8  # relay's kOpaque op pattern: FuseOps never fuses the kernel
UINT8_OFFSET = 128  # a uint8 code q is the int8 code q - 128 with the zero point moved by -128

_OP = {name: Op.get("relax." + name) for name in (
    "quantize", "dequantize", "clip", "nn.relu", "nn.conv2d", "nn.conv2d_transpose", "add", "sigmoid",
    "concat", "nn.max_pool2d", "reshape", "image.resize2d")}
# float elementwise ops whose quantized form is a table of the input code
_UNARY = {"sigmoid": ql.sigmoid, "nn.relu": lambda v: np.maximum(v, np.float32(0))}


def _is(value, name) -> bool:
    return isinstance(value, relax.Call) and value.op == _OP[name]


def _op_name(value) -> str:
    op = getattr(value, "op", None)
    return getattr(op, "name", type(value).__name__).replace("relax.", "")


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _shape(expr) -> list:
    return [int(s) for s in expr.ty.shape.values]


def _nhwc(shape) -> list:
    """The NHWC shape of an NCHW shape (other ranks: unchanged)."""
    return [shape[d] for d in NHWC_FROM_NCHW] if len(shape) == 4 else list(shape)


def _nhwc_axis(axis: int, rank: int) -> int:
    axis %= rank
    return NHWC_FROM_NCHW.index(axis) if rank == 4 else axis


def _nhwc_constant(array: np.ndarray, rank: int) -> np.ndarray:
    """A constant operand of a rank-``rank`` NCHW op, broadcast-aligned and transposed to NHWC."""
    array = array.reshape((1,) * (rank - array.ndim) + array.shape)
    return np.ascontiguousarray(array.transpose(NHWC_FROM_NCHW)) if rank == 4 else array


def _constant(expr) -> np.ndarray:
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    raise UnsupportedModelError(f"expected a constant quantization parameter, got {type(expr).__name__}")


def _scalar(value) -> float:
    return float(value.value) if hasattr(value, "value") else float(_constant(value))


def _as_int8(array: np.ndarray) -> np.ndarray:
    """uint8 codes as the equivalent int8 codes (int8 unchanged)."""
    return (array.astype(np.int16) - UINT8_OFFSET).astype(np.int8) if array.dtype == np.uint8 else array


class _QParams:
    """Scale(s) and zero point(s) of a quantize/dequantize call; a uint8 zero point is given in
    int8 terms (every kernel computes with ``q - zp``, which the shift leaves unchanged)."""

    def __init__(self, call):
        self.scale = _constant(call.args[1]).astype(np.float32).reshape(-1)
        zero_point = _constant(call.args[2])
        self.zero_point = zero_point.astype(np.int64).reshape(-1) - (UINT8_OFFSET if zero_point.dtype == np.uint8
                                                                     else 0)
        self.axis = int(call.attrs.axis)

    def scalar(self) -> tuple:
        if self.scale.size != 1 or self.zero_point.size != 1:
            raise UnsupportedModelError("per-channel quantization is only supported on convolution weights")
        return np.float32(self.scale[0]), int(self.zero_point[0])


@relax.expr_functor.mutator
class _Lowerer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        super().__init__(mod)
        self.producer, self.float_values = {}, {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self.producer[binding.var] = binding.value

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        if _is(value, "quantize") and _dtype(value.args[0]) == "float32":
            lowered = self._lower_quantize(var, value)
            if not isinstance(var, relax.DataflowVar) and _dtype(var) != "int8":
                raise UnsupportedModelError(f"model output '{var.name}' is {_dtype(var)}; expected float or int8")
            if not isinstance(var, relax.DataflowVar) and len(_shape(var)) == 4:  # an int8 NCHW model output
                lowered = relax.op.permute_dims(self.builder_.emit(lowered), [0, 3, 1, 2])
            self._bind(var, lowered)
        elif isinstance(var, relax.DataflowVar):
            if isinstance(value, relax.Call) and _dtype(var) != "float32":
                raise UnsupportedModelError(
                    f"{_op_name(value)} on {_dtype(var)} ('{var.name}') outside a QuantizeLinear/DequantizeLinear "
                    "pair has no integer lowering")
            # float values are read through self.producer by the regions that use them; one that
            # no region uses is dropped, one that an unsupported op uses fails at that op
        elif _is(value, "dequantize"):  # the float model output
            scale, zp = _QParams(value).scalar()
            if _dtype(value.args[0]) not in ("int8", "uint8"):
                raise UnsupportedModelError(f"model output '{var.name}' is {_dtype(value.args[0])}, expected int8")
            x, _ = self._dequantized(var, "the model output")
            self._bind(var, self._call(ql.dequantize_output(_shape(var), zp), [x, self._scale(scale)], "qdequantize"))
        elif _dtype(var) == "float32":
            raise UnsupportedModelError(
                f"quantized ONNX model ends in a float {_op_name(value)}; expected a DequantizeLinear output")
        else:
            super().visit_var_binding_(binding)

    def _bind(self, var, expr):
        emit = self.builder_.emit if isinstance(var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(var, emit(expr, name_hint=var.name))

    def _float_producer(self, expr):
        return self.producer.get(expr) if isinstance(expr, relax.Var) else expr

    def _dequantized(self, expr, what: str):
        """``dequantize(src)`` → (src rewritten, its _QParams)."""
        value = self._float_producer(expr)
        if value is None:
            raise UnsupportedModelError(f"{what} is the float model input '{expr.name}' (not quantized)")
        if not _is(value, "dequantize"):
            raise UnsupportedModelError(f"{what} is {_op_name(value)}, expected a DequantizeLinear of int8")
        source = value.args[0]
        if _dtype(source) not in ("int8", "uint8"):
            raise UnsupportedModelError(f"{what} is {_dtype(source)}; only int8/uint8 activations and weights "
                                        "are supported")
        if isinstance(source, tvm.ir.GenericConst):
            return relax.const(_as_int8(_constant(source)), "int8"), _QParams(value)
        if source not in self.producer:
            if _dtype(source) != "int8":
                raise UnsupportedModelError(f"model input '{source.name}' is {_dtype(source)}; expected float or int8")
            if len(_shape(source)) != 4:
                return source, _QParams(value)
            # an int8 NCHW model input
            return self.builder_.emit(relax.op.permute_dims(source, NHWC_FROM_NCHW)), _QParams(value)
        return self.visit_expr(source), _QParams(value)

    def _activation(self, expr, rank, what):
        """An int8 operand of an elementwise op: a lowered tensor, or a constant made NHWC."""
        x, q = self._dequantized(expr, what)
        if isinstance(x, tvm.ir.GenericConst):
            x = relax.const(_nhwc_constant(_constant(x), rank), "int8")
        return x, q

    def _call(self, builder, args, name):
        return self.builder_.call_te(builder, *args, primfunc_name_hint=name)

    # -- the region under one quantize ------------------------------------------------------
    def _lower_quantize(self, var, q):
        out_scale, out_zp = _QParams(q).scalar()
        out_shape = _nhwc(_shape(var))
        if isinstance(q.args[0], relax.Var) and q.args[0] not in self.producer:  # a float model input
            return self._call(ql.quantize_float_input(out_shape, out_zp), [q.args[0], self._scale(out_scale)],
                              "qquantize")
        if self._has_float_operand(q.args[0]):
            # opaque: fused into a later consumer it would keep the float tensor alive (and spilled:
            # the spill machinery cannot stream a tensor into a kernel that transposes it)
            return self.builder_.call_te(ql.quantize_float_input(out_shape, out_zp), self._float_region(q.args[0]),
                                         self._scale(out_scale), primfunc_name_hint="qquantize",
                                         primfunc_attrs={"op_pattern": OPAQUE})
        core = self._float_producer(q.args[0])
        lo, hi = INT8_MIN, INT8_MAX
        # relu/clip right before the quantize of a kernel with a requantizing epilogue: its clamp
        inner = self._float_producer(core.args[0]) if _is(core, "nn.relu") or _is(core, "clip") else None
        if inner is not None and not _is(inner, "dequantize"):
            bounds = (0.0, np.inf) if _is(core, "nn.relu") else (_scalar(core.args[1]), _scalar(core.args[2]))
            lo = max(lo, self._code(bounds[0], out_scale, out_zp))
            hi = min(hi, self._code(bounds[1], out_scale, out_zp))
            core = inner

        conv_call, bias = self._split_bias(core)
        if conv_call is not None:
            return self._lower_conv(conv_call, bias, out_scale, out_zp, out_shape, lo, hi)
        if _is(core, "add"):
            (a, qa), (b, qb) = (self._activation(arg, len(out_shape), "an input of Add") for arg in core.args)
            (sa, za), (sb, zb) = qa.scalar(), qb.scalar()
            ratios = relax.const(ql.add_ratios((sa, sb), out_scale), "float32")
            return self._call(ql.add_int8(out_shape, (za, zb), out_zp, lo, hi), [a, b, ratios], "qlinear_add")
        if _is(core, "concat"):
            return self._clamped(self._lower_concat(core, out_scale, out_zp), lo, hi)
        if _is(core, "nn.max_pool2d") or _is(core, "image.resize2d"):
            x, in_q = self._dequantized(core.args[0], f"the input of {_op_name(core)}")
            moved = self._lower_max_pool(core, x) if _is(core, "nn.max_pool2d") else self._lower_resize(core, x)
            return self._rescaled(moved, in_q, out_scale, out_zp, lo, hi, out_shape)
        return self._lower_unary(var, q, core, out_scale, out_zp, out_shape)

    # -- float regions: ops the quantizer left in float (float weights), as onnxruntime runs them --
    def _float_args(self, value):
        for arg in value.args:
            yield from (arg.fields if isinstance(arg, relax.Tuple) else [arg])

    def _has_float_operand(self, expr) -> bool:
        """Whether the region under a quantize reads a float tensor constant or float model input
        (not only dequantized int8): onnxruntime computes such a region in float. Scalars (e.g. a
        Clip's bounds) are parameters, not weights."""
        if isinstance(expr, tvm.ir.GenericConst):
            return _dtype(expr) == "float32" and _constant(expr).size > 1
        value = self._float_producer(expr)
        if value is None:
            return _dtype(expr) == "float32"
        if not isinstance(value, relax.Call) or _is(value, "dequantize"):
            return False
        return any(self._has_float_operand(arg) for arg in self._float_args(value)
                   if isinstance(arg, (relax.Var, tvm.ir.GenericConst)) and isinstance(arg.ty, relax.TensorType))

    def _float_region(self, expr):
        """The float NCHW value of ``expr``: its ops re-emitted, dequantized int8 inputs converted
        from NHWC by a dequantize kernel, constants (dequantized at compile time) kept."""
        if isinstance(expr, tvm.ir.GenericConst) or expr not in self.producer:
            return expr
        if expr not in self.float_values:
            value = self.producer[expr]
            if _is(value, "dequantize") and not isinstance(value.args[0], tvm.ir.GenericConst):
                scale, zp = _QParams(value).scalar()
                x, _ = self._dequantized(expr, "a float op's input")
                emitted = self._call(ql.dequantize_output(_shape(expr), zp), [x, self._scale(scale)], "qdequantize")
            elif isinstance(value, relax.Call):
                args = [relax.Tuple([self._float_region(f) for f in a.fields]) if isinstance(a, relax.Tuple)
                        else self._float_region(a) for a in value.args]
                emitted = self.builder_.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
            else:
                raise UnsupportedModelError(f"float value '{expr.name}' ({type(value).__name__}) in a quantized model")
            self.float_values[expr] = emitted
        return self.float_values[expr]

    @staticmethod
    def _scale(scale):
        return relax.const(np.array([scale], np.float32), "float32")

    @staticmethod
    def _code(real, scale, zp) -> int:
        """QuantizeLinear of one real value (for activation bounds)."""
        if np.isinf(real):
            return INT8_MAX if real > 0 else INT8_MIN
        return int(np.clip(np.rint(np.float32(real) / np.float32(scale)) + zp, INT8_MIN, INT8_MAX))

    def _clamped(self, expr, lo, hi):
        if (lo, hi) == (INT8_MIN, INT8_MAX):
            return expr
        return relax.op.clip(self.builder_.emit(expr), lo, hi)

    def _rescaled(self, x, in_q, out_scale, out_zp, lo, hi, out_shape):
        """Data movement keeps the input's codes; a different output scale is a table lookup."""
        in_scale, in_zp = in_q.scalar()
        if (in_scale, in_zp) == (out_scale, out_zp):
            return self._clamped(x, lo, hi)
        table = ql.lookup_table(lambda v: v, in_scale, in_zp, out_scale, out_zp, lo, hi)
        return self._call(elementwise.table_lookup_int8(out_shape), [x, relax.const(table, "int8")], "qrequantize")

    def _lower_unary(self, var, q, core, out_scale, out_zp, out_shape):
        if _is(core, "dequantize"):
            function, source = (lambda v: v), q.args[0]
        elif _is(core, "clip"):
            low, high = _scalar(core.args[1]), _scalar(core.args[2])
            function, source = (lambda v: np.clip(v, np.float32(low), np.float32(high))), core.args[0]
        elif _op_name(core) == "nn.leakyrelu":
            function, source = ql.leaky_relu(float(core.attrs.alpha)), core.args[0]
        elif _op_name(core) in _UNARY:
            function, source = _UNARY[_op_name(core)], core.args[0]
        else:
            raise UnsupportedModelError(
                f"quantized {_op_name(core)} (result '{var.name}') cannot be lowered to integer arithmetic")
        x, in_q = self._activation(source, len(out_shape), f"the input of {_op_name(core)}")
        table = ql.lookup_table(function, *in_q.scalar(), out_scale, out_zp)
        if _is(core, "dequantize") and np.array_equal(table, np.arange(INT8_MIN, INT8_MAX + 1)):
            return x  # Q(DQ(x)) with the same parameters
        name = "qlinear_sigmoid" if _is(core, "sigmoid") else "qlookup"
        return self._call(elementwise.table_lookup_int8(out_shape), [x, relax.const(table, "int8")], name)

    # -- convolutions -----------------------------------------------------------------------
    def _split_bias(self, value):
        """``conv`` or ``add(conv, reshape(DQ(int32 bias)))`` → (conv call, bias DQ call or None)."""
        if _is(value, "nn.conv2d") or _is(value, "nn.conv2d_transpose"):
            return value, None
        if not _is(value, "add"):
            return None, None
        for conv_arg, bias_arg in ((value.args[0], value.args[1]), (value.args[1], value.args[0])):
            conv_call, bias = self._float_producer(conv_arg), self._float_producer(bias_arg)
            if _is(bias, "reshape"):
                bias = self._float_producer(bias.args[0])
            if (_is(conv_call, "nn.conv2d") or _is(conv_call, "nn.conv2d_transpose")) \
                    and _is(bias, "dequantize") and isinstance(bias.args[0], tvm.ir.GenericConst):
                return conv_call, bias
        return None, None

    def _lower_conv(self, call, bias_dq, out_scale, out_zp, out_shape, lo, hi):
        transposed = _is(call, "nn.conv2d_transpose")
        attrs = call.attrs
        expected = "IOHW" if transposed else "OIHW"
        if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != expected:
            raise UnsupportedModelError(
                f"convolution layout {attrs.data_layout}/{attrs.kernel_layout} (expected NCHW/{expected})")
        x, in_q = self._dequantized(call.args[0], "the input of a convolution")
        w, w_q = self._dequantized(call.args[1], "the weight of a convolution")
        if not isinstance(w, tvm.ir.GenericConst):
            raise UnsupportedModelError("convolution weights must be constant")
        if np.any(w_q.zero_point != 0):
            raise UnsupportedModelError("weight zero points must be 0 (symmetric int8 weights)")
        out_axis = 1 if transposed else 0
        out_channels = out_shape[3]
        if w_q.scale.size > 1 and (w_q.axis != out_axis or w_q.scale.size != out_channels):
            raise UnsupportedModelError(
                f"convolution weights quantized per-axis on axis {w_q.axis}; expected the output-channel axis")
        in_scale, in_zp = in_q.scalar()
        w_scales = np.broadcast_to(w_q.scale, (out_channels,))
        # OIHW (Conv) or IOHW (ConvTranspose) → OHWI
        weights = np.ascontiguousarray(_constant(w).transpose((1, 2, 3, 0) if transposed else (0, 2, 3, 1)))
        args = [x, relax.const(weights, "int8")]
        if bias_dq is not None:
            bias_q = _QParams(bias_dq)
            accumulator_scales = np.float32(in_scale) * w_scales.astype(np.float32)
            if np.any(bias_q.zero_point != 0) or not np.allclose(
                    np.broadcast_to(bias_q.scale, (out_channels,)), accumulator_scales, rtol=1e-6, atol=0):
                raise UnsupportedModelError("convolution bias not quantized with scale x_scale·w_scale, zero point 0")
            bias = _constant(bias_dq.args[0]).astype(np.int32).reshape(-1)
            args.append(relax.const(np.broadcast_to(bias, (out_channels,)).copy(), "int32"))
        args.append(relax.const(ql.output_scales(in_scale, w_scales, out_scale), "float32"))
        padding = [int(p) for p in attrs.padding][:2]
        strides, dilation = [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation]
        common = dict(zp_in=in_zp, zp_out=out_zp, lo=lo, hi=hi, has_bias=bias_dq is not None)
        if transposed:
            if int(attrs.groups) != 1:
                raise UnsupportedModelError("grouped ConvTranspose")
            builder = ql.conv2d_transpose_nhwc_int8(out_shape, strides, padding, dilation, **common)
            return self._call(builder, args, "qlinear_conv_transpose")
        builder = ql.conv2d_nhwc_int8(out_shape, strides, padding, dilation, int(attrs.groups), **common)
        return self._call(builder, args, "qlinear_conv")

    # -- data movement ----------------------------------------------------------------------
    def _lower_concat(self, call, out_scale, out_zp):
        sources = []
        for field in call.args[0].fields:
            x, q = self._dequantized(field, "an input of Concat")
            sources.append(self.builder_.emit(self._rescaled(x, q, out_scale, out_zp, INT8_MIN, INT8_MAX,
                                                             _nhwc(_shape(field)))))
        return relax.op.concat(sources, axis=_nhwc_axis(int(call.attrs.axis), len(_shape(call))))

    def _lower_max_pool(self, call, x):
        attrs = call.attrs
        if str(attrs.layout) != "NCHW":
            raise UnsupportedModelError(f"MaxPool layout {attrs.layout} (expected NCHW)")
        pooled = relax.op.nn.max_pool2d(x, attrs.pool_size, attrs.strides, attrs.padding, attrs.dilation,
                                        attrs.ceil_mode, attrs.count_include_pad, "NHWC")
        return self.builder_.emit(pooled)

    def _lower_resize(self, call, x):
        attrs = call.attrs
        mode, rounding = str(attrs.coordinate_transformation_mode), str(attrs.rounding_method)
        if str(attrs.method) != "nearest_neighbor" or str(attrs.layout) != "NCHW":
            raise UnsupportedModelError(f"int8 Resize with method {attrs.method} (only nearest)")
        in_shape, out_shape = _nhwc(_shape(call.args[0])), _nhwc(_shape(call))
        tables = []
        for axis in (1, 2):
            scale = np.float32(out_shape[axis]) / np.float32(in_shape[axis])
            try:
                tables.append(ql.nearest_source_indices(in_shape[axis], out_shape[axis], scale, mode,
                                                        rounding or "round_prefer_floor"))
            except (KeyError, ValueError):
                raise UnsupportedModelError(
                    f"int8 Resize with coordinate_transformation_mode {mode}, nearest_mode {rounding}") from None
        builder, tables = ql.resize_nearest_nhwc_int8(out_shape, in_shape, *tables)
        return self._call(builder, [x, *(relax.const(t, "int32") for t in tables)], "qresize_nearest")


@tvm.transform.module_pass(opt_level=0, name="LowerQDQToInteger")
class LowerQDQToInteger:
    """Replace the QDQ regions of an int8 ONNX model by kernels with ONNX's QLinear arithmetic."""

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function) or (func.attrs or {}).get(QARITH_ATTR) != "onnx":
                continue
            lowerer = _Lowerer(mod, func)
            lowerer.builder_.update_func(gv, lowerer.visit_expr(func))
            mod = relax.transform.DeadCodeElimination()(lowerer.builder_.finalize())
            mod = relax.transform.CanonicalizeBindings()(mod)
        return mod
