"""StreamRowChains: a chain of row-local kernels runs as a pipeline of row rings, so the tensors
between its stages never exist whole.

    a = k0(x)   b = k1(a)   y = k2(b)        →   y = chain(x)   (a, b: rings of a few rows)

A kernel is *row-local* when its outermost loop of extent > 1 walks its output's rows, iteration
``h`` storing only output row ``h`` (the form MCUSchedule leaves convolutions, depthwise
convolutions, pooling and elementwise kernels in). Consecutive kernels where each output has one
consumer, the next kernel, form a chain. The chain kernel loops over the rows of its finest stage
(ticks); at each tick the stages before it compute the rows it needs next, the stages after it every
row whose input rows exist, each reading its input from the previous stage's ring (row ``r`` in slot
``r % rows``) and writing its own ring:

    for t in range(H_0):                          (k0 the finest here)
        k0 row t: x → ring0[t % R0]
        for h in range(start_1(t), done_1(t)):  k1 row h: ring0 → ring1[h % R1]
        for h in range(start_2(t), done_2(t)):  k2 row h: ring1 → y

Each row of each stage is computed exactly once (no recomputation: 0 extra MACs). Which input rows
an output row reads comes from the kernel's own index expressions (TVM's integer analyzer, as in
passes/row_overwrite.py), so padding, strides and pooling windows are whatever the kernel does;
``done_s(t)`` is fitted to ``clamp((a*t + b) // d, 0, cap)`` but for a few edge ticks (a chain whose
schedule has no such form is not streamed). A ring holds the rows from the lowest one its consumer still needs to the newest
one written: 3 rows between two 3x3 "same" convolutions. Rings are kernel-local buffers, which
codegen/tir_to_c.py lifts into the kernel's arena workspace: the arena planner sees them as such.
Run after MCUSchedule and RollStreamWindows (it works on the scheduled kernels' plain loops).
"""
import dataclasses
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax, tirx

from .grouping import call_tir_parts
from .lifetime import OUTPUT_IN_STORAGE_ATTR, STORAGE_OP_ATTR, LifetimeTable
from .mac_count import MACS_ATTR, count_macs
from .row_access import buffer_accesses, loops_in, lower_blocks, outer_row_loop
from .structural_memo import structural_memo

RING_PREFIX = "tinyseg_ring"  # ring buffers: always lifted into the arena (codegen/tir_to_c.py)
CHAIN_ATTR = "tinyseg.row_chain"  # on a chain kernel: the tensors whose rows it streams
MAX_ROWS_PER_TICK = 16  # bound of the schedule fit's slope search
MAX_EXCEPTIONS = 4  # ticks where a stage's rows may differ from the fitted line


@dataclass(frozen=True)
class RowChain:
    """Steps ``steps`` (consecutive, of the module the chain was found in) streamed as one kernel;
    ``tensors`` are the intermediates that become rings of ``ring_rows`` rows (``ring_bytes``)."""

    steps: tuple
    tensors: tuple
    ring_rows: tuple
    ring_bytes: tuple
    tensor_bytes: tuple  # the whole intermediates' bytes, for the report

    def to_json(self) -> dict:
        return {"steps": list(self.steps), "rings": [
            {"tensor": t, "rows": r, "bytes": b, "tensor_bytes": n}
            for t, r, b, n in zip(self.tensors, self.ring_rows, self.ring_bytes, self.tensor_bytes)],
            "recomputed_macs": 0}


@dataclass
class _Stage:
    func: tirx.PrimFunc  # lowered: plain loops
    rows: int  # output rows
    reads: list = None  # per output row: (lowest, highest) row of the chained input it reads
    chained: int = None  # parameter index of the chained input


def _bounds(loop, indices, axis, h):
    analyzer = tvm.sym.Analyzer()
    for inner in loops_in(loop.body):
        analyzer.bind(inner.loop_var, tvm.ir.Range.from_min_extent(inner.min, inner.extent))
    at_row = {loop.loop_var: tirx.const(h, str(loop.loop_var.ty.dtype))}
    lows, highs = [], []
    for index in indices:
        b = analyzer.const_int_bound(tvm_ffi.structural_map(index[axis], (tirx.Var, lambda v: at_row.get(v, v))))
        lows.append(b.min_value)
        highs.append(b.max_value)
    return min(lows), max(highs)


def _nhwc_rows(buffer):
    shape = [int(s) for s in buffer.ty.shape]
    return shape[1] if len(shape) == 4 and shape[0] == 1 else None


@structural_memo()
def row_stage(func: tirx.PrimFunc, chained: int = None):
    """The kernel as a chain stage (None if it is not row-local): iteration ``h`` of its row loop
    stores (and re-reads) output row ``h`` only, and with ``chained`` every read of that input is
    inside the loop."""
    if func.attrs is not None and (STORAGE_OP_ATTR in func.attrs or CHAIN_ATTR in func.attrs):
        return None
    lowered = lower_blocks(func)
    loop = outer_row_loop(lowered.body)
    out = lowered.params[-1]
    rows = _nhwc_rows(out)
    if loop is None or rows is None or int(loop.extent) != rows or not isinstance(loop.min, tirx.IntImm) \
            or int(loop.min) != 0:
        return None
    allocs = []
    tvm_ffi.structural_walk(lowered.body, (tirx.AllocBuffer, allocs.append))
    for alloc in allocs:  # accumulators: moved into the row loop, so each must hold one row's values
        accesses = buffer_accesses(loop.body, alloc.buffer, True) + buffer_accesses(loop.body, alloc.buffer, False)
        if _nhwc_rows(alloc.buffer) != rows or len(accesses) != len(
                buffer_accesses(lowered.body, alloc.buffer, True) + buffer_accesses(lowered.body, alloc.buffer, False)) \
                or any(_bounds(loop, accesses, 1, h) != (h, h) for h in range(rows)):
            return None
    stores, loads = buffer_accesses(loop.body, out, True), buffer_accesses(loop.body, out, False)
    if not stores or len(stores) != len(buffer_accesses(lowered.body, out, True)) or \
            len(loads) != len(buffer_accesses(lowered.body, out, False)):
        return None
    for h in range(rows):
        if _bounds(loop, stores + loads, 1, h) != (h, h):
            return None
    stage = _Stage(lowered, rows)
    if chained is None:
        return stage
    src = lowered.params[chained]
    in_rows = _nhwc_rows(src)
    reads = buffer_accesses(loop.body, src, False)
    if in_rows is None or not reads or len(reads) != len(buffer_accesses(lowered.body, src, False)):
        return None
    stage.chained = chained
    stage.reads = []
    for h in range(rows):
        lo, hi = _bounds(loop, reads, 1, h)
        stage.reads.append((min(max(lo, 0), in_rows - 1), min(max(hi, 0), in_rows - 1)))
    return stage


def tick_stage(stages) -> int:
    """The stage whose rows the ticks walk: the finest (most rows), so no stage computes more than a
    few rows per tick (rings stay near the kernel height both down and up the resolutions)."""
    return max(range(len(stages)), key=lambda k: (stages[k].rows, -k))


def _schedule(stages):
    """Per stage the rows done after each tick, and each intermediate's ring rows. Ticks walk the
    tick stage's rows; stages before it compute the rows it (through the stages between) needs
    next, stages after it every row whose input rows exist. Within a tick the stages run in chain
    order. None when a stage would read a row not computed yet."""
    anchor = tick_stage(stages)
    ticks = stages[anchor].rows
    done = [None] * len(stages)
    done[anchor] = [t + 1 for t in range(ticks)]
    for s in range(anchor - 1, -1, -1):  # pull: the producer rows the consumer's rows read
        consumer, rows, low = stages[s + 1], [], 0
        for t in range(ticks):
            if done[s + 1][t]:
                low = max(low, consumer.reads[done[s + 1][t] - 1][1] + 1)
            rows.append(low)
        done[s] = rows
    for s in range(anchor + 1, len(stages)):  # push: every row whose input rows exist
        consumer, rows, computable = stages[s], [], 0
        for t in range(ticks):
            while computable < consumer.rows and consumer.reads[computable][1] < done[s - 1][t]:
                computable += 1
            rows.append(computable)
        done[s] = rows
    if done[-1][-1] != stages[-1].rows:
        return None
    rings = []
    for s in range(len(stages) - 1):
        consumer, produced = stages[s + 1], done[s]
        lowest_later = [r[0] for r in consumer.reads]  # lowest input row this row or a later one reads
        for r in range(len(lowest_later) - 2, -1, -1):
            lowest_later[r] = min(lowest_later[r], lowest_later[r + 1])
        ring = 1
        for t in range(ticks):
            started = done[s + 1][t - 1] if t else 0
            if done[s + 1][t] > started and consumer.reads[done[s + 1][t] - 1][1] >= produced[t]:
                return None  # (cannot happen by construction: a guard for the generated code)
            if started < consumer.rows:
                ring = max(ring, produced[t] - lowest_later[started])
        rings.append(ring)
    return done, rings


def _fit(values):
    """(a, b, d, exceptions): ``clamp((a*t + b) // d, 0, values[-1])`` equals ``values[t]`` at
    every tick but at most MAX_EXCEPTIONS ({tick: value}: the edges, where padding clamps the rows
    read), or None."""
    cap, middle = values[-1], len(values) // 2
    for d in (1, 2, 4, 8):
        for a in range(0, MAX_ROWS_PER_TICK * d + 1):
            low = values[middle] * d - a * middle
            for b in range(low, low + d):
                exceptions = {}
                for t, v in enumerate(values):
                    if min(max((a * t + b) // d, 0), cap) != v:
                        exceptions[t] = v
                        if len(exceptions) > MAX_EXCEPTIONS:
                            break
                else:
                    return a, b, d, exceptions
    return None


def _rows_done(fit, cap, t):
    a, b, d, exceptions = fit
    dtype = str(t.ty.dtype)
    c = lambda v: tirx.const(v, dtype)  # noqa: E731
    rows = tirx.min(tirx.max(tirx.floordiv(c(a) * t + c(b), c(d)), c(0)), c(cap))
    for tick, value in sorted(exceptions.items()):
        rows = tirx.Select(t == c(tick), c(value), rows)
    return rows


def plan_chain(mod: tvm.IRModule, table: LifetimeTable, steps) -> RowChain:
    """The RowChain of consecutive ``steps`` (None when they cannot stream)."""
    stages = _stages(mod, table, steps)
    if stages is None:
        return None
    schedule = _schedule(stages)
    if schedule is None:
        return None
    done, rings = schedule
    anchor = tick_stage(stages)
    if any(_fit(d) is None for k, d in enumerate(done) if k != anchor):
        return None
    names = [table.steps[i].output for i in steps[:-1]]
    row_bytes = [table.tensors[n].nbytes // table.tensors[n].shape[1] for n in names]
    return RowChain(tuple(steps), tuple(names), tuple(rings), tuple(r * b for r, b in zip(rings, row_bytes)),
                    tuple(table.tensors[n].nbytes for n in names))


def _link(table, step):
    """Parameter index at which ``step`` reads the previous step's output, when that output is
    a plain RAM tensor read there only (else None)."""
    previous = table.steps[step - 1]
    tensor = table.tensors[previous.output]
    current = table.steps[step]
    if tensor.is_output or tensor.in_storage or tensor.consumers != [step] or previous.kind != "kernel" \
            or current.kind != "kernel" or current.args.count(tensor.name) != 1:
        return None
    return current.args.index(tensor.name)


def _stages(mod, table, steps):
    stages = []
    for k, step in enumerate(steps):
        chained = _link(table, step) if k else None
        if k and chained is None:
            return None
        stage = row_stage(mod[table.steps[step].kernel], chained)
        if stage is None:
            return None
        stages.append(stage)
    return stages


def find_chains(mod: tvm.IRModule, table: LifetimeTable) -> list:
    """Every maximal chain of two or more row-local kernels that can stream."""
    def stage(step, chained):
        return row_stage(mod[table.steps[step].kernel], chained)

    runs, current = [], []
    for step in table.steps:
        i = step.index
        chained = _link(table, i) if current else None
        if current and chained is not None and stage(i, chained) is not None:
            current.append(i)
            continue
        if len(current) > 1:
            runs.append(current)
        current = [i] if step.kind == "kernel" and stage(i, None) is not None else []
    if len(current) > 1:
        runs.append(current)
    chains = []
    for run in runs:
        chain = plan_chain(mod, table, run)
        if chain is not None:
            chains.append(chain)
    return chains


def _fresh(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """A copy of ``func`` with new variables (the same kernel may be two stages of a chain)."""
    renamed = {}

    def fresh(v):
        if v not in renamed:
            renamed[v] = tirx.Var(v.name, v.ty)
        return renamed[v]

    params = [fresh(p) for p in func.params]
    body = tvm_ffi.structural_map(func.body, (tirx.Var, fresh))
    return tirx.PrimFunc(params, body, func.ret_type, func.attrs)


def _into_ring(stmt, buffer, ring, rows):
    """Every access of ``buffer`` in ``stmt`` goes to ``ring``, row ``h`` to slot ``h % rows``."""

    def index(indices):
        indices = list(indices)
        indices[1] = tirx.floormod(indices[1], tirx.const(rows, str(indices[1].ty.dtype)))
        return indices

    def load(node):
        return tirx.BufferLoad(ring, index(node.indices)) if node.source.same_as(buffer) else node

    def store(node):
        return tirx.BufferStore(ring, node.value, index(node.indices)) if node.buffer.same_as(buffer) else node

    return tvm_ffi.structural_map(stmt, [(tvm.ir.expr.TensorLoad, load), (tirx.BufferStore, store)])


def _row_range(body, start, end):
    """The stage's row loop alone, over rows ``start .. end``: its kernel-local buffers (one row's
    accumulators, checked by row_stage) allocated inside it, loops of extent 1 around it bound to 0."""
    allocs, unit = [], {}
    while not (isinstance(body, tirx.For) and int(body.extent) > 1):
        if isinstance(body, tirx.For):
            unit[body.loop_var] = body.min
            body = body.body
        elif isinstance(body, tirx.SeqStmt):
            allocs += [tirx.AllocBuffer(s.buffer) for s in body.seq if isinstance(s, tirx.AllocBuffer)]
            (body,) = [s for s in body.seq if not isinstance(s, (tirx.AllocBuffer, tirx.DeclBuffer))]
        else:
            body = body.body
    inner = body.body
    for alloc in allocs:
        inner = _sink(inner, alloc)
    loop = tirx.For(body.loop_var, start, end - start, body.kind, inner)
    return tvm_ffi.structural_map(loop, (tirx.Var, lambda v: unit.get(v, v)))


def _uses(stmt, buffer) -> bool:
    return bool(buffer_accesses(stmt, buffer, True) or buffer_accesses(stmt, buffer, False))


def _sink(stmt, alloc):
    """``alloc`` placed in the innermost statement holding every access of its buffer (what TVM's
    PlanAndUpdateBufferAllocationLocation does for block-form TIR): an accumulator then shrinks to
    the values one iteration needs."""
    if isinstance(stmt, tirx.For):
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, _sink(stmt.body, alloc),
                        annotations=stmt.annotations)
    if isinstance(stmt, tirx.SeqStmt):
        users = [i for i, s in enumerate(stmt.seq) if _uses(s, alloc.buffer)]
        if len(users) == 1 and not isinstance(stmt.seq[users[0]], (tirx.AllocBuffer, tirx.DeclBuffer)):
            seq = list(stmt.seq)
            seq[users[0]] = _sink(seq[users[0]], alloc)
            return tirx.SeqStmt(seq)
    return tirx.SeqStmt([alloc, stmt])


def chain_kernel(mod: tvm.IRModule, table: LifetimeTable, chain: RowChain):
    """(the chain's PrimFunc, the relax arguments' step positions): see the module docstring."""
    stages = _stages(mod, table, chain.steps)
    done, rings = _schedule(stages)
    stages = [dataclasses.replace(s, func=_fresh(s.func)) for s in stages]
    anchor = tick_stage(stages)
    tick_dtype = str(outer_row_loop(stages[anchor].func.body).loop_var.ty.dtype)
    tick = tirx.Var("tick", tvm.ir.PrimType(tick_dtype))
    params, args, allocs, bodies = [], [], [], []
    ring = None
    for k, (stage, step) in enumerate(zip(stages, chain.steps)):
        func = stage.func
        body = func.body
        for position, param in enumerate(func.params[:-1]):
            if position == stage.chained:
                body = _into_ring(body, param, ring, rings[k - 1])
            else:
                params.append(param)
                args.append((step, position))
        out = func.params[-1]
        if k == len(stages) - 1:
            params.append(out)
        else:
            shape = list(out.ty.shape)
            shape[1] = tirx.const(rings[k], str(shape[1].ty.dtype))
            new_ring = tirx.decl_buffer(shape, str(out.ty.dtype), name=f"{RING_PREFIX}{k}")
            allocs.append(tirx.AllocBuffer(new_ring))
            body = _into_ring(body, out, new_ring, rings[k])
            ring = new_ring
        if k == anchor:
            bodies.append(_row_range(body, tick, tick + tirx.const(1, tick_dtype)))
            continue
        fit, cap = _fit(done[k]), done[k][-1]
        start = tirx.Select(tick == tirx.const(0, tick_dtype), tirx.const(0, tick_dtype),
                            _rows_done(fit, cap, tick - tirx.const(1, tick_dtype)))
        bodies.append(_row_range(body, start, _rows_done(fit, cap, tick)))
    ticks = tirx.For(tick, tirx.const(0, tick_dtype), tirx.const(stages[anchor].rows, tick_dtype),
                     tirx.ForKind.SERIAL, tirx.SeqStmt(bodies))
    func = tirx.PrimFunc(params, tirx.SeqStmt(allocs + [ticks]))
    func = func.with_attr("tirx.noalias", True).with_attr(CHAIN_ATTR, [str(t) for t in chain.tensors])
    func = func.with_attr(MACS_ATTR, sum(count_macs(mod[table.steps[i].kernel]) for i in chain.steps))
    last = mod[table.steps[chain.steps[-1]].kernel]
    if last.attrs is not None and OUTPUT_IN_STORAGE_ATTR in last.attrs:  # the chain writes a spill row by row
        func = func.with_attr(OUTPUT_IN_STORAGE_ATTR, True)
    return func, args


@relax.expr_functor.mutator
class _Chainer(relax.PyExprMutator):
    """Replaces each chain's bindings by one call of its kernel."""

    def __init__(self, mod):
        super().__init__(mod)
        self.kernels = {}  # last step -> (GlobalVar, args as (step, position))
        self.inner = set()  # the other steps of the chains
        self.step = 0
        self.calls = {}  # step -> its original call_tir

    def add(self, chain, gv, args):
        self.kernels[chain.steps[-1]] = (gv, args)
        self.inner.update(chain.steps[:-1])

    def visit_var_binding_(self, binding):
        kernel, _ = call_tir_parts(binding.value)
        if kernel is None:
            super().visit_var_binding_(binding)
            return
        index, self.step = self.step, self.step + 1
        self.calls[index] = binding.value
        if index in self.inner:
            return  # its tensor becomes a ring inside the chain kernel
        if index not in self.kernels:
            super().visit_var_binding_(binding)
            return
        gv, args = self.kernels[index]
        values = [self.visit_expr(call_tir_parts(self.calls[step])[1][position]) for step, position in args]
        call = relax.call_tir(gv, relax.Tuple(values), binding.var.ty)
        var = binding.var
        new_var = self.builder_.emit(call, name_hint=var.name) if isinstance(var, relax.DataflowVar) \
            else self.builder_.emit_output(call, name_hint=var.name)
        self.set_var_remap(var, new_var)


def StreamRowChains(chains):  # noqa: N802 - a pass, named like TVM's
    """Run each RowChain (found on the module this pass is given) as one row-pipelined kernel."""

    @tvm.transform.module_pass(opt_level=0, name="StreamRowChains")
    def transform(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not chains:
            return mod
        from .lifetime import analyze_lifetimes

        table = analyze_lifetimes(mod["main"], mod)
        chainer = _Chainer(mod)
        for chain in chains:
            func, args = chain_kernel(mod, table, chain)
            name = "row_chain_" + "_".join(table.steps[i].kernel for i in (chain.steps[0], chain.steps[-1]))
            chainer.add(chain, chainer.builder_.add_func(func, name), args)
        chainer.builder_.update_func(mod.get_global_var("main"), chainer.visit_expr(mod["main"]))
        return relax.transform.DeadCodeElimination()(chainer.builder_.finalize())

    return transform
