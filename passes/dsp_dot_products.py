"""UseDSPDotProducts: int8 dot products through the Arm DSP extension's SMLAD (--mcpu cortex-m4/m7/m33/m55).

MCUSchedule leaves each int8 convolution with a reduction over contiguous input channels that
feeds a tile of output channels (REGISTER_TILES)::

    for rc in [lo, lo + n):
        acc[0] = acc[0] + (int32(x[i + rc]) + off) * int32(w[j + rc])
        ...
        acc[T-1] = acc[T-1] + (int32(x[i + rc]) + off) * int32(w[j + (T-1)·s + rc])

On lowered TIR this pass replaces such a loop by ``tinyseg_dot_s8xT(&acc[0], &x[i + lo], &w[j + lo],
s, n, off)`` (tinyseg_arith.h), which takes four channels per step with SXTAB16/SXTB16/SMLAD where
``__ARM_FEATURE_DSP`` is defined and runs the same loop in portable C elsewhere. Loops of any
other shape are left alone.
"""
import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir import TensorLoad

TILES = (8, 4)  # a tinyseg_dot_s8xT exists for these
HELPER = "tinyseg_dot_s8x{}"
DSP_LOOPS_ATTR = "tinyseg.dsp_dot_products"  # how many loops of a kernel call the helpers


def _int8_load(expr):
    """x[i] for ``int32(x[i])`` with x int8, else None."""
    if isinstance(expr, tirx.Cast) and str(expr.ty) == "int32" and isinstance(expr.value, TensorLoad):
        load = expr.value
        if str(load.source.dtype) == "int8" and len(load.indices) == 1:
            return load
    return None


def _offset_input(expr):
    """(x[i], off) for ``int32(x[i]) + off`` / ``int32(x[i]) - c`` / ``int32(x[i])``."""
    if isinstance(expr, (tirx.Add, tirx.Sub)) and isinstance(expr.b, tirx.IntImm):
        load = _int8_load(expr.a)
        if load is not None:
            return load, int(expr.b) if isinstance(expr, tirx.Add) else -int(expr.b)
    load = _int8_load(expr)
    return (load, 0) if load is not None else None


def _unit_stride(index, var) -> bool:
    coefficients = tvm.sym.detect_linear_equation(index, [var])
    return len(coefficients) == 2 and isinstance(coefficients[0], tirx.IntImm) and int(coefficients[0]) == 1


def _terms(store):
    """(acc buffer, acc index, x load, offset, w load) of ``acc[k] = acc[k] + (x + off) * w``."""
    if not (isinstance(store, tirx.BufferStore) and isinstance(store.value, tirx.Add)):
        return None
    acc, product = store.value.a, store.value.b
    if not (isinstance(acc, TensorLoad) and acc.source.same_as(store.buffer) and str(store.buffer.dtype) == "int32"
            and len(store.indices) == 1 and isinstance(store.indices[0], tirx.IntImm)
            and tvm_ffi.structural_equal(acc.indices, store.indices) and isinstance(product, tirx.Mul)):
        return None
    for a, b in ((product.a, product.b), (product.b, product.a)):
        x, w = _offset_input(a), _int8_load(b)
        if x is not None and w is not None and -32768 <= x[1] <= 32767:  # the offset fits a 16-bit lane
            return store.buffer, int(store.indices[0]), x[0], x[1], w
    return None


def _dot_product_call(loop):
    """The helper call replacing ``loop``, or None when it is not a tile of int8 dot products."""
    if loop.kind != tirx.ForKind.SERIAL:
        return None
    stores = list(loop.body.seq) if isinstance(loop.body, tirx.SeqStmt) else [loop.body]
    terms = [_terms(s) for s in stores]
    if len(stores) not in TILES or any(t is None for t in terms):
        return None
    acc, first, x, offset, w = terms[0]
    analyzer = tvm.sym.Analyzer()
    steps = [analyzer.simplify(t[4].indices[0] - w.indices[0]) for t in terms]
    if not all(isinstance(step, tirx.IntImm) for step in steps):
        return None
    stride = int(steps[1])
    for k, (buf, index, xk, offset_k, wk) in enumerate(terms):
        if not (buf.same_as(acc) and index == first + k and offset_k == offset and int(steps[k]) == k * stride
                and tvm_ffi.structural_equal(xk, x) and wk.source.same_as(w.source)):
            return None
    var = loop.loop_var
    if not (_unit_stride(x.indices[0], var) and _unit_stride(w.indices[0], var)):
        return None

    def address_at_start(load):
        index = tvm_ffi.structural_map(load.indices[0], (tirx.Var, lambda v: loop.min if v.same_as(var) else v))
        return tirx.address_of(tirx.BufferLoad(load.source, [analyzer.simplify(index)]))

    args = [tirx.address_of(tirx.BufferLoad(acc, [tirx.const(first, "int32")])), address_at_start(x),
            address_at_start(w), tirx.const(stride, "int32"), loop.extent, tirx.const(offset, "int32")]
    return tirx.Evaluate(tirx.call_extern("void", HELPER.format(len(stores)), *args))


@tirx.transform.prim_func_pass(opt_level=0, name="TinySegUseDSPDotProducts")
def UseDSPDotProducts(func, mod, ctx):
    """Replace every int8 dot-product tile loop by a tinyseg_dot_s8xT call (module docstring)."""
    replaced = []

    def rewrite(loop):
        call = _dot_product_call(loop)
        if call is None:
            return loop
        replaced.append(call)
        return call

    body = tvm_ffi.structural_map(func.body, (tirx.For, rewrite))
    return func.with_body(body).with_attr(DSP_LOOPS_ATTR, len(replaced))
