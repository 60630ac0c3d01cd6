"""TinySeg inside TVM's own build: the registered Relax pipeline ``"tinyseg"``.

    import tvm_tinyseg.pipeline  # registers the pipeline and the tinyseg.* PassContext options
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 160_000, "tinyseg.storage": "mmap"}):
        ex = tvm.compile(mod, "llvm", relax_pipeline="tinyseg")

The pipeline runs the same passes as ``tinyseg compile`` (integer lowering, data-movement fusion,
spill insertion under the budget, MCU schedule) and then TVM's usual lowering for the Relax VM, so
a model compiled this way runs on any TVM target; ``tvm_tinyseg.driver.compile_model`` is the path
to standalone C for microcontrollers. The memory report of the last build is ``last_memory_report()``.
"""
import dataclasses

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu

from tvm_tinyseg.pass_config import current_options, register_options

_LAST_REPORT = {}


def last_memory_report() -> dict:
    """Arena/storage figures of the most recent build through the "tinyseg" pipeline."""
    return dict(_LAST_REPORT)


@relax.pipeline.register_pipeline("tinyseg")
def tinyseg_pipeline(**overrides):
    """The "tinyseg" Relax pipeline; ``overrides`` (ram_budget, storage, fuse_fetch, planner, enable)
    take precedence over the PassContext's ``tinyseg.*`` options."""

    @tvm.transform.module_pass(opt_level=0, name="TinySegPipeline")
    def _pipeline(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm_tinyseg.driver import arena_buffers, kernel_passes, moved_bytes, overwrites_of, storage_buffers
        from tvm_tinyseg.codegen.tir_to_c import CKernels
        from tvm_tinyseg.passes.arena_planner import plan_arena
        from tvm_tinyseg.passes.lifetime import analyze_lifetimes

        options = dataclasses.replace(current_options(ctx), **overrides)
        target = tvm.target.Target.current(allow_none=True) or tvm.target.Target("llvm")
        if target.kind.name != "c":
            # The Relax VM has no storage device: spilled tensors stay addressable memory (the
            # memory-mapped case); block and remote storage need the C runtime (tinyseg compile).
            options = dataclasses.replace(options, storage="mmap")
        with target:
            mod = tvm.transform.Sequential(kernel_passes(options))(mod)
            table = analyze_lifetimes(mod["main"], mod)
            arena = plan_arena(arena_buffers(table, CKernels("", {}), overwrites_of(mod, table, options)),
                               options.planner)
            _LAST_REPORT.clear()
            _LAST_REPORT.update(arena_bytes=arena.size, storage_bytes=plan_arena(storage_buffers(table)).size,
                                moved_bytes=moved_bytes(table, mod), storage=options.storage,
                                ram_budget=options.ram_budget)
            # cpu.dataflow_lower_passes minus RewriteDataflowReshape, which would turn the spill and
            # fetch copies into reshapes (views), silently undoing the spill
            lower = [relax.transform.ToNonDataflow(), relax.transform.RemovePurityChecking(),
                     relax.transform.CallTIRRewrite()]
            return tvm.transform.Sequential(lower + cpu.finalize_passes(target))(mod)

    return _pipeline


register_options()
