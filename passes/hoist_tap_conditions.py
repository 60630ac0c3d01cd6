"""HoistTapConditions: test whether a convolution tap is inside the input once per tap, not once
per multiply-accumulate.

The int8 convolutions (passes/int8/conv.py) skip out-of-bounds taps with
``acc = acc + if_then_else(inside, x - zp, 0) * w``, where ``inside`` depends on the kernel
position but not on the channel being reduced. On lowered loops this pass rewrites

    for rc: acc[i] = acc[i] + if_then_else(c, a, 0) * b      (c free of rc; one or more stores)
 => if c: for rc: acc[i] = acc[i] + a * b

(a skipped tap added 0, so this is exact), then moves each conjunct of such an ``if`` out of the
enclosing loops it does not depend on: the row test runs once per kernel row, the column test
once per kernel column. A loop whose body selects between two operands at a constant channel
(a concatenation read by the convolution: ``if_then_else(k <= rc, p1[...], p0[...])``) is split
there into two loops without the select.
"""
import tvm
import tvm_ffi
from tvm import tirx

IF_THEN_ELSE = tirx.if_then_else(tirx.Var("c", "bool"), 0, 0).op


def _uses(expr, var) -> bool:
    found = []
    tvm_ffi.structural_walk(expr, (tirx.Var, lambda v: found.append(v) if v.same_as(var) else None))
    return bool(found)


def _is_zero(expr) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr) == 0


def _guarded_product(value):
    """(c, a, b) for ``if_then_else(c, a, 0) * b`` (either operand order, under a cast or not)."""
    if not isinstance(value, tirx.Mul):
        return None
    for guarded, other in ((value.a, value.b), (value.b, value.a)):
        cast = isinstance(guarded, tirx.Cast)
        call = guarded.value if cast else guarded
        if (isinstance(call, tvm.ir.Call) and call.op.same_as(IF_THEN_ELSE)
                and _is_zero(call.args[2])):
            a = tirx.Cast(guarded.dtype, call.args[1]) if cast else call.args[1]
            return call.args[0], a, other
    return None


def _guarded_accumulation(stmt):
    """(c, store without the guard) for ``buf[i] = buf[i] + if_then_else(c, a, 0) * b``."""
    if not isinstance(stmt, tirx.BufferStore) or not isinstance(stmt.value, tirx.Add):
        return None
    acc, product = stmt.value.a, stmt.value.b
    if not (isinstance(acc, tvm.ir.expr.TensorLoad) and acc.source.same_as(stmt.buffer)
            and tvm_ffi.structural_equal(acc.indices, stmt.indices)):
        return None
    parts = _guarded_product(product)
    if parts is None:
        return None
    cond, a, b = parts
    return cond, tirx.BufferStore(stmt.buffer, acc + a * b, stmt.indices)


def _statements(body):
    return list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]


def _conjuncts(cond):
    return _conjuncts(cond.a) + _conjuncts(cond.b) if isinstance(cond, tirx.And) else [cond]


def _all(conds):
    return tirx.all(*conds) if len(conds) > 1 else conds[0]


def _if(cond, then_case):
    return tirx.IfThenElse(cond, then_case, None)


def _with_body(loop, body):
    return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, body, loop.thread_binding, loop.annotations)


def _unguard(loop):
    """``for: guarded accumulations with one condition free of the loop`` -> ``if c: for: ...``."""
    stmts = _statements(loop.body)
    parts = [_guarded_accumulation(s) for s in stmts]
    if not all(parts):
        return None
    cond = parts[0][0]
    if any(not tvm_ffi.structural_equal(c, cond) for c, _ in parts) or _uses(cond, loop.loop_var):
        return None
    stores = [store for _, store in parts]
    return _if(cond, _with_body(loop, tirx.SeqStmt(stores) if len(stores) > 1 else stores[0]))


def _hoist_invariant_conjuncts(loop):
    """``for: if c1 and c2: body`` with c1 free of the loop -> ``if c1: for: if c2: body``."""
    inner = loop.body
    if not isinstance(inner, tirx.IfThenElse) or inner.else_case is not None:
        return None
    conjuncts = _conjuncts(inner.condition)
    outside = [c for c in conjuncts if not _uses(c, loop.loop_var)]
    if not outside:
        return None
    inside = [c for c in conjuncts if _uses(c, loop.loop_var)]
    body = _if(_all(inside), inner.then_case) if inside else inner.then_case
    return _if(_all(outside), _with_body(loop, body))


def _channel_split(loop):
    """The constant ``k`` of the first ``if_then_else(k <= v, ...)`` / ``(v < k)`` in the body of
    an innermost loop, ``v`` the loop variable, ``min < k < min + extent``."""
    var, found, nested = loop.loop_var, [], []
    tvm_ffi.structural_walk(loop.body, (tirx.For, nested.append))
    if nested:
        return None  # (copying nested loops would bind their variables twice)

    def visit(call):
        if found or not call.op.same_as(IF_THEN_ELSE):
            return
        cond = call.args[0]
        if isinstance(cond, tirx.LE) and cond.b.same_as(var) and isinstance(cond.a, tirx.IntImm):
            found.append(int(cond.a))
        elif isinstance(cond, tirx.LT) and cond.a.same_as(var) and isinstance(cond.b, tirx.IntImm):
            found.append(int(cond.b))

    tvm_ffi.structural_walk(loop.body, (tvm.ir.Call, visit))
    if not found or not isinstance(loop.min, tirx.IntImm) or not isinstance(loop.extent, tirx.IntImm):
        return None
    lo, hi = int(loop.min), int(loop.min) + int(loop.extent)
    return found[0] if lo < found[0] < hi else None


def _split_at_channel(loop):
    """``for v in [lo, hi)`` selecting at ``k`` -> ``for v in [lo, k)`` + ``for v in [k, hi)``,
    each with the select resolved by the simplifier."""
    k = _channel_split(loop)
    if k is None:
        return None
    analyzer = tvm.sym.Analyzer()
    lo, hi, dtype = int(loop.min), int(loop.min) + int(loop.extent), str(loop.min.ty)
    halves = []
    for start, stop in ((lo, k), (k, hi)):
        var = tirx.Var(loop.loop_var.name, dtype)  # a fresh variable per loop keeps the TIR in SSA form
        body = tvm_ffi.structural_map(loop.body, (tirx.Var, lambda v: var if v.same_as(loop.loop_var) else v))
        with analyzer.constraint_scope(tirx.all(var >= start, var < stop)):
            body = tvm_ffi.structural_map(body, (tvm.ir.Call, lambda c: _resolve(c, analyzer)))
        halves.append(tirx.For(var, tirx.const(start, dtype), tirx.const(stop - start, dtype), loop.kind,
                               body, loop.thread_binding, loop.annotations))
    return tirx.SeqStmt(halves)


def _resolve(call, analyzer):
    if not call.op.same_as(IF_THEN_ELSE):
        return call
    cond = analyzer.simplify(call.args[0])
    if isinstance(cond, tirx.IntImm):
        return call.args[1] if int(cond) else call.args[2]
    return call


def _rewrite_loop(loop):
    unguarded = _unguard(loop)
    if unguarded is not None:  # the loop it made is not visited again: split it here
        split = _split_at_channel(unguarded.then_case)
        return unguarded if split is None else _if(unguarded.condition, split)
    for rewrite in (_hoist_invariant_conjuncts, _split_at_channel):
        result = rewrite(loop)
        if result is not None:
            return result
    return loop


@tirx.transform.prim_func_pass(opt_level=0, name="TinySegHoistTapConditions")
def HoistTapConditions(func, mod, ctx):
    """Move tap bounds tests out of the channel loops (see module docstring)."""
    def rewrite_if(node):
        # a rewritten inner loop may leave ``if c1: if c2: ...``; the next loop up sees one ``if``
        if (isinstance(node, tirx.IfThenElse) and node.else_case is None
                and isinstance(node.then_case, tirx.IfThenElse) and node.then_case.else_case is None):
            return _if(tirx.all(node.condition, node.then_case.condition), node.then_case.then_case)
        return node

    body = tvm_ffi.structural_map(func.body, ((tirx.For, _rewrite_loop), (tirx.IfThenElse, rewrite_if)))
    return func.with_body(body)
