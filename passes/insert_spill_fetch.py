"""InsertSpillFetch: move long-living tensors out of RAM while they are idle.

For every chosen spill (passes/spill_planner.py) of a tensor ``t`` idle between steps a and b::

    t = R.call_tir(k, ...)                   t = R.call_tir(k, ...)
    ...  (uses up to step a)                 ...  (uses up to step a)
                                      →      t_stored = R.call_tir(tinyseg_spill, (t,))       # after step a
    ...  (t idle)                            ...
    y = R.call_tir(consumer, (.., t, ..))    t_fetched = R.call_tir(tinyseg_fetch, (t_stored,))
                                             y = R.call_tir(consumer, (.., t_fetched, ..))

``tinyseg_spill``/``tinyseg_fetch`` are identity copies tagged with the PrimFunc attribute
``tinyseg.storage_op``; the C emitter turns them into calls of the storage interface and gives
``t_stored`` a place in the storage pool instead of the arena. With fused fetching the fetch is
grouped with its consumer and merged by FuseTIR: for memory-mapped storage MCUSchedule inlines the
copy, so the consumer reads the stored tensor in place; for block and remote storage the copy is a
``tinyseg_stream`` block that StreamStoredRows turns into row-window reads. Either way ``t`` needs
no RAM again.

The pass only rewrites: the spill set is chosen by the memory planning stage
(tvm_tinyseg/memory_planning.py), which also runs this pass.
"""
import tvm
from tvm import relax, te

from .grouping import call_tir_parts, group_into_consumer
from .lifetime import STORAGE_OP_ATTR, analyze_lifetimes

INJECTIVE = 2


def reads_in_place(storage: str, fuse_fetch: bool) -> bool:
    """Whether consumers read a spilled tensor straight from storage, with no RAM copy: memory-
    mapped storage is read through a pointer, block and remote storage row window by row window
    (passes/stream_stored_rows.py)."""
    return fuse_fetch


def _int64_shape(ty: relax.TensorType) -> list:
    return [tvm.tirx.IntImm("int64", int(s)) for s in ty.shape.values]  # int64, like LegalizeOps


def _kernel_of(inputs, output, op) -> tvm.tirx.PrimFunc:
    # private (no global symbol), so dead code elimination drops the copies FuseTIR merged away
    attrs = {"op_pattern": INJECTIVE, **({STORAGE_OP_ATTR: op} if op else {})}
    return te.create_prim_func([*inputs, output]).without_attr("global_symbol").with_attrs(attrs)


def _rows(shape, count) -> list:
    return [shape[0], tvm.tirx.IntImm("int64", count), *shape[2:]]


def _copy_kernel(ty: relax.TensorType, op: str, rows=None) -> tvm.tirx.PrimFunc:
    """``op`` ("spill", "fetch", "stream"): an identity copy; with ``rows = (start, stop)``, a copy
    of those rows (axis 1) only — the stored or the kept part of a partial spill."""
    shape = _int64_shape(ty)
    src = te.placeholder(shape, str(ty.dtype), "src")
    start, stop = rows or (0, int(shape[1]))
    dst = te.compute(_rows(shape, stop - start), lambda n, h, *i: src(n, h + start, *i),
                     name=f"tinyseg_{op or 'keep'}")
    return _kernel_of([src], dst, op)


def _join_kernel(ty: relax.TensorType, op: str, rows: int) -> tvm.tirx.PrimFunc:
    """The stored first ``rows`` rows (read through ``op``: "fetch" or "stream") and the kept
    rest, joined into the whole tensor; fused into the consumer it never exists."""
    shape = _int64_shape(ty)
    stored = te.placeholder(_rows(shape, rows), str(ty.dtype), "stored")
    kept = te.placeholder(_rows(shape, int(shape[1]) - rows), str(ty.dtype), "kept")
    read = te.compute(stored.shape, lambda *i: stored(*i), name=f"tinyseg_{op}")
    joined = te.compute(shape, lambda n, h, *i: tvm.tirx.if_then_else(
        h < rows, read(n, h, *i), kept(n, h - rows, *i)), name="tinyseg_join")
    return _kernel_of([stored, kept], joined, op)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, table, spills, in_place, fused_op):
        super().__init__(mod)
        self.in_place = in_place
        self.fused_op = fused_op  # "fetch" (inlined: mmap) or "stream" (row windows: block storage)
        self.spill_after = {}  # step -> [Spill]
        self.fetch_at = {}  # step -> [Spill]
        for s in spills:
            self.spill_after.setdefault(s.after, []).append(s)
            self.fetch_at.setdefault(s.until, []).append(s)
        self.var_of = {}  # tensor name -> new relax Var (for the spilled tensors)
        self.spill_of = {s.tensor: s for s in spills}
        self.name_of_step_output = {step.index: step.output for step in table.steps}
        self.stored, self.fetched, self.kept = {}, {}, {}  # tensor name -> var
        self.copy_kernels = {}
        self.step = -1

    def _kernel(self, ty, op, make=_copy_kernel, *extra):
        key = (tuple(int(s) for s in ty.shape.values), str(ty.dtype), op, make.__name__, *extra)
        if key not in self.copy_kernels:
            rows = [f"r{'_'.join(map(str, e))}" if isinstance(e, tuple) else f"r{e}" for e in extra]
            name = "_".join([f"tinyseg_{op or 'keep'}" + ("_join" if make is _join_kernel else ""),
                             "x".join(map(str, key[0])), *rows])
            self.copy_kernels[key] = self.builder_.add_func(make(ty, op, *extra), name)
        return self.copy_kernels[key]

    def _part_type(self, ty, start, stop):
        shape = [int(s) for s in ty.shape.values]
        return relax.TensorType([shape[0], stop - start, *shape[2:]], ty.dtype)

    def _emit(self, var, expr):
        if isinstance(var, relax.DataflowVar):
            return self.builder_.emit(expr, name_hint=var.name)
        return self.builder_.emit_output(expr, name_hint=var.name)

    def visit_var_binding_(self, binding):
        kernel, _ = call_tir_parts(binding.value)
        if kernel is None:
            super().visit_var_binding_(binding)
            return
        self.step += 1
        consumer = self.visit_expr(binding.value)
        _, args = call_tir_parts(consumer)
        for spill in self.fetch_at.get(self.step, []):
            stored = self.stored[spill.tensor]
            if self.in_place:
                self.fetched[spill.tensor] = stored
            else:
                ty = self.var_of[spill.tensor].ty
                self.fetched[spill.tensor] = self.builder_.emit(
                    relax.call_tir(self._kernel(ty, "fetch"), relax.Tuple([stored]), ty),
                    name_hint=spill.tensor + "_fetched")
        # consumers at or after the fetch read the fetched (or, in place, the stored) copy
        name_of = {v: name for name, v in self.var_of.items()}
        replaced = [self.fetched.get(name_of.get(a), a) if isinstance(a, relax.Var) else a for a in args]
        in_place_reads = [a for a, r in zip(args, replaced) if r is not a and self.in_place]
        if in_place_reads:
            new_var = self._emit(binding.var, self._fused_read(consumer, args, replaced, kernel, name_of))
        else:
            new_var = self._emit(binding.var, relax.call_tir(kernel, relax.Tuple(replaced), consumer.ty))
        self.set_var_remap(binding.var, new_var)
        if self.name_of_step_output[self.step] in self.spill_of:
            self.var_of[self.name_of_step_output[self.step]] = new_var
        for spill in self.spill_after.get(self.step, []):
            source = self.var_of[spill.tensor]
            if not spill.rows:
                self.stored[spill.tensor] = self.builder_.emit(
                    relax.call_tir(self._kernel(source.ty, "spill"), relax.Tuple([source]), source.ty),
                    name_hint=spill.tensor + "_stored")
                continue
            total = int(source.ty.shape.values[1])
            for op, (start, stop), into, suffix in (("spill", (0, spill.rows), self.stored, "_stored"),
                                                    (None, (spill.rows, total), self.kept, "_kept")):
                into[spill.tensor] = self.builder_.emit(
                    relax.call_tir(self._kernel(source.ty, op, _copy_kernel, (start, stop)), relax.Tuple([source]),
                                   self._part_type(source.ty, start, stop)), name_hint=spill.tensor + suffix)

    def _fused_read(self, consumer, args, replaced, kernel, name_of):
        """Group an identity fetch of each stored input (joined with its kept rows for a partial
        spill) with the consumer: after FuseTIR and MCUSchedule the consumer kernel reads the
        stored tensor in place."""
        op = self.fused_op
        fetches = []
        for original, stored in zip(args, replaced):
            if stored is original:
                continue
            rows = self.spill_of[name_of[original]].rows
            if rows:
                kept = self.kept[name_of[original]]
                read = relax.call_tir(self._kernel(original.ty, op, _join_kernel, rows),
                                      relax.Tuple([stored, kept]), original.ty)
            else:
                read = relax.call_tir(self._kernel(original.ty, op), relax.Tuple([stored]), original.ty)
            fetches.append((read, original))
        call = relax.call_tir(kernel, relax.Tuple(args), consumer.ty)
        return group_into_consumer(self.builder_, f"tinyseg_{op}_into_{kernel.name_hint}", call, fetches)


@tvm.transform.module_pass(opt_level=0, name="InsertSpillFetch")
class InsertSpillFetch:
    """Spill idle long-living tensors to storage and fetch them back (see module docstring):
    ``spills`` (passes/spill_planner.Spill) to ``storage`` (pass_config.STORAGE_KINDS), read in
    place by their consumers with ``fuse_fetch``."""

    def __init__(self, spills, *, storage: str = "file", fuse_fetch: bool = True):
        self.spills, self.storage, self.fuse_fetch = list(spills), storage, fuse_fetch

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.spills:
            return mod
        in_place = reads_in_place(self.storage, self.fuse_fetch)
        if not in_place and any(s.rows for s in self.spills):
            raise ValueError("partial spills need fused fetching (tinyseg.fuse_fetch)")
        table = analyze_lifetimes(mod["main"], mod)
        rewriter = _Rewriter(mod, table, self.spills, in_place, "fetch" if self.storage == "mmap" else "stream")
        rewriter.builder_.update_func(mod.get_global_var("main"), rewriter.visit_expr(mod["main"]))
        mod = rewriter.builder_.finalize()
        if in_place:
            mod = relax.transform.FuseTIR()(mod)
        return relax.transform.DeadCodeElimination()(mod)
