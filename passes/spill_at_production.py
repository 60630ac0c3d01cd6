"""WriteSpillsAtProduction: a tensor spilled to memory-mapped storage is written there by the kernel
producing it, so it never exists whole in RAM.

    t = R.call_tir(k, args)                       t_stored = R.call_tir(k_to_storage, args)
    y = R.call_tir(pool, (t,))            →       y = R.call_tir(pool, (t_stored,))
    t_stored = R.call_tir(tinyseg_spill, (t,))

The readers between production and spill read the stored tensor in place (a pointer into the mapped
pool), like the fused fetches after it. ``k_to_storage`` is a copy of ``k`` with the attribute
``tinyseg.output_in_storage`` (passes/lifetime.py then places its output in the storage pool). With
row-streamed chains (passes/stream_row_chains.py) the producer is the last stage of a chain, which
so writes the tensor to storage row by row: a U-Net skip needs no RAM at all. Memory-mapped storage
with fused fetches only; whole spills only (a partial spill keeps rows in RAM).
"""
import tvm
from tvm import relax

from .grouping import call_tir_parts
from .lifetime import OUTPUT_IN_STORAGE_ATTR, STORAGE_OP_ATTR


def _attr(mod, kernel, key):
    attrs = mod[kernel].attrs
    return attrs[key] if attrs is not None and key in attrs else None


@relax.expr_functor.mutator
class _Writer(relax.PyExprMutator):
    def __init__(self, mod, func):
        super().__init__(mod)
        self.mod = mod
        producers = {}
        self.stored_of = {}  # produced var -> the var of its stored copy
        for block in func.body.blocks:
            for binding in block.bindings:
                kernel, args = call_tir_parts(binding.value)
                if kernel is None:
                    continue
                if str(_attr(mod, kernel, STORAGE_OP_ATTR)) != "spill":
                    if _attr(mod, kernel, STORAGE_OP_ATTR) is None:
                        producers[binding.var] = binding.value
                    continue
                (source,) = args
                whole = [int(s) for s in source.ty.shape.values] == [int(s) for s in binding.var.ty.shape.values]
                if source in producers and whole:
                    self.stored_of[source] = binding.var
        self.kernels = {}

    def _to_storage(self, kernel):
        if kernel not in self.kernels:
            func = self.mod[kernel].with_attr(OUTPUT_IN_STORAGE_ATTR, True)
            self.kernels[kernel] = self.builder_.add_func(func, kernel.name_hint + "_to_storage")
        return self.kernels[kernel]

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        if var in self.stored_of:
            stored = self.stored_of[var]
            kernel, args = call_tir_parts(value)
            call = relax.call_tir(self._to_storage(kernel), relax.Tuple([self.visit_expr(a) for a in args]),
                                  stored.ty)
            new = self.builder_.emit(call, name_hint=stored.name) if isinstance(stored, relax.DataflowVar) \
                else self.builder_.emit_output(call, name_hint=stored.name)
            self.set_var_remap(var, new)
            self.set_var_remap(stored, new)
            return
        if var in self.stored_of.values():
            return  # the spill copy: the producer wrote the tensor there
        super().visit_var_binding_(binding)


@tvm.transform.module_pass(opt_level=0, name="WriteSpillsAtProduction")
def WriteSpillsAtProduction(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:  # noqa: N802
    """Producers of whole spills to memory-mapped storage write there directly (module docstring)."""
    writer = _Writer(mod, mod["main"])
    if not writer.stored_of:
        return mod
    writer.builder_.update_func(mod.get_global_var("main"), writer.visit_expr(mod["main"]))
    return relax.transform.DeadCodeElimination()(writer.builder_.finalize())
