"""TinySeg inside TVM's own build: the registered Relax pipeline ``"tinyseg"``.

    import tvm_tinyseg.pipeline  # registers the pipeline "tinyseg"
    ex = tvm.compile(mod, "llvm", relax_pipeline=relax.get_pipeline("tinyseg", ram_budget=160_000))

or, with the ``tinyseg.*`` PassContext options (registered on demand: building their registration
runs a C++ compiler once per machine and TVM version)::

    tvm_tinyseg.pass_config.register_options()
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

from tvm_tinyseg.pass_config import check_options, current_options

_LAST_PLAN = []


def last_memory_plan():
    """The MemoryPlan (tvm_tinyseg.memory_planning) of the most recent build through "tinyseg"."""
    return _LAST_PLAN[0] if _LAST_PLAN else None


def last_memory_report() -> dict:
    """Arena/storage figures of the most recent build through the "tinyseg" pipeline."""
    plan = last_memory_plan()
    if plan is None:
        return {}
    return dict(arena_bytes=plan.arena.size, storage_bytes=plan.storage.size, moved_bytes=plan.moved_bytes,
                storage=plan.options.storage, ram_budget=plan.options.ram_budget)


@relax.pipeline.register_pipeline("tinyseg")
def tinyseg_pipeline(**overrides):
    """The "tinyseg" Relax pipeline; ``overrides`` (ram_budget, storage, fuse_fetch, planner, enable,
    overwrite_rows: pass_config.TinySegOptions) take precedence over the PassContext's ``tinyseg.*``
    options."""

    @tvm.transform.module_pass(opt_level=0, name="TinySegPipeline")
    def _pipeline(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        from tvm_tinyseg.driver import kernel_passes
        from tvm_tinyseg.memory_planning import plan_memory

        options = check_options(dataclasses.replace(current_options(ctx), **overrides))
        target = tvm.target.Target.current(allow_none=True) or tvm.target.Target("llvm")
        if target.kind.name != "c":
            # The Relax VM has no storage device: spilled tensors stay addressable memory (the
            # memory-mapped case); block and remote storage need the C runtime (tinyseg compile).
            options = dataclasses.replace(options, storage="mmap")
        with target:
            plan = plan_memory(tvm.transform.Sequential(kernel_passes(options))(mod), options)
            _LAST_PLAN[:] = [plan]
            # cpu.dataflow_lower_passes minus RewriteDataflowReshape, which would turn the spill and
            # fetch copies into reshapes (views), silently undoing the spill
            lower = [relax.transform.ToNonDataflow(), relax.transform.RemovePurityChecking(),
                     relax.transform.CallTIRRewrite()]
            return tvm.transform.Sequential(lower + cpu.finalize_passes(target))(plan.mod)

    return _pipeline

