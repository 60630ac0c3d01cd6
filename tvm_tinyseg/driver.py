"""The compile driver: model file → Relax → int8 kernels → memory plan → C sources + memory.json.

Each stage hands the next a plain object (ImportedModel, IRModule, MemoryPlan, CKernels) so
tests and benchmarks can stop at any of them; the memory plan is tvm_tinyseg/memory_planning.py's.
"""
import dataclasses
import os
from dataclasses import dataclass, field

import tvm
from tvm import relax

from tvm_tinyseg import __version__
from tvm_tinyseg.codegen import emit_c
from tvm_tinyseg.codegen.c_api import DEFAULT_MODULE_NAME, check_module_name, rename
from tvm_tinyseg.codegen.model_files import write_model_dir
from tvm_tinyseg.codegen.tir_to_c import CKernels, build_c_kernels
from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.frontend import ImportedModel, load_model
from tvm_tinyseg.pass_config import TinySegOptions, current_options
from tvm_tinyseg.memory_planning import MemoryPlan, plan_memory
from tvm_tinyseg.model_dir import STORAGE_BACKENDS
from tvm_tinyseg.passes.arena_planner import ArenaPlan
from tvm_tinyseg.passes.fuse_into_consumer import FuseDataMovementIntoConsumer
from tvm_tinyseg.passes.lifetime import LifetimeTable
from tvm_tinyseg.passes.lower_fake_quant import LowerFakeQuantToInteger
from tvm_tinyseg.passes.lower_onnx_qdq import LowerQDQToInteger
from tvm_tinyseg.passes.lower_spatial_int8 import LowerQuantizedResizeAndMean
from tvm_tinyseg.targets import check_mcpu

C_TARGET = "c"


def kernel_passes(options: TinySegOptions):
    """Relax → one ``call_tir`` per kernel, before memory planning. With TinySeg enabled,
    data-movement kernels are computed inside their consumers."""
    return [
        LowerQDQToInteger(),
        LowerQuantizedResizeAndMean(),
        LowerFakeQuantToInteger(),
        # TFLite's NHWC transposed conv has no legalization; its NCHW form has.
        relax.transform.ConvertLayout({"relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        # Before any copy kernel exists: RewriteDataflowReshape would turn a spill into a reshape.
        relax.transform.RewriteDataflowReshape(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.DeadCodeElimination(),
        *([FuseDataMovementIntoConsumer()] if options.enable else []),
    ]


def lower_to_kernels(mod: tvm.IRModule, options: TinySegOptions = None) -> MemoryPlan:
    """Kernels and their memory plan (memory_planning.plan_memory): spills inserted, every kernel
    scheduled to need no workspace."""
    options = options or TinySegOptions()
    with tvm.target.Target(C_TARGET):
        return plan_memory(tvm.transform.Sequential(kernel_passes(options))(mod), options)


def spill_report(table: LifetimeTable) -> list:
    """Each spilled tensor: its bytes, the step after which it is written, the steps reading it back."""
    report = []
    for step in table.steps:
        if step.kind == "spill":
            stored = table.tensors[step.output]
            readers = [table.steps[c] for c in stored.consumers]
            whole = table.tensors[step.args[0]]
            partial = stored.nbytes < whole.nbytes  # rows stored / rows of the tensor
            report.append({"tensor": step.args[0], "bytes": stored.nbytes, "spilled_after_step": step.index - 1,
                           "rows": [int(stored.shape[1]), int(whole.shape[1])] if partial else None,
                           "fetched_for_steps": [r.index + (1 if r.kind == "fetch" else 0) for r in readers],
                           "in_place": any(r.kind == "kernel" for r in readers)})
        elif table.tensors[step.output].in_storage:  # written to storage by its producer
            stored = table.tensors[step.output]
            report.append({"tensor": step.output, "bytes": stored.nbytes, "spilled_after_step": step.index - 1,
                           "rows": None, "fetched_for_steps": list(stored.consumers), "in_place": True,
                           "written_by_producer": True})
    return report


@dataclass
class CompileResult:
    model: ImportedModel
    memory: MemoryPlan
    kernels: CKernels
    options: TinySegOptions
    files: dict = field(default_factory=dict)  # file name -> text
    mcpu: str = None  # the CPU the C is meant for (recorded only; the C is the same for all)
    module_name: str = DEFAULT_MODULE_NAME  # prefix of every C symbol, macro and file name

    @property
    def mod(self) -> tvm.IRModule:  # the kernels, spills inserted
        return self.memory.mod

    @property
    def table(self) -> LifetimeTable:
        return self.memory.table

    @property
    def plan(self) -> ArenaPlan:
        return self.memory.arena

    @property
    def storage_plan(self) -> ArenaPlan:
        return self.memory.storage

    @property
    def memory_report(self) -> dict:
        return {
            "model": os.path.basename(self.model.path),
            "target": C_TARGET,
            "mcpu": self.mcpu,
            "tinyseg": self.options.enable,
            "planner": self.plan.algorithm,
            "ram_budget": self.options.ram_budget,
            "storage": self.options.storage,
            "fuse_fetch": self.options.fuse_fetch,
            "arena_bytes": self.plan.size,
            "storage_bytes": self.storage_plan.size,
            "moved_bytes": self.memory.moved_bytes,
            "spilled": spill_report(self.table),
            "streamed_chains": [chain.to_json() for chain in self.memory.chains],
            "recomputed_macs": 0,  # row streaming computes every row once
            "weight_bytes": self.table.weight_bytes(),
            "input_bytes": sum(self.table.tensors[t].nbytes for t in self.table.inputs),
            "output_bytes": sum(self.table.tensors[t].nbytes for t in self.table.outputs),
            "peak_live_bytes": self.table.peak_live_bytes(),
            "lower_bound_bytes": self.table.largest_tensor_bytes(),
            # what no placement of this plan's buffers can beat (overwrite pairs sharing bytes)
            "plan_bound_bytes": self.memory.lower_bound,
            "overwrites": [{"output": b.name, "input": b.overwrites, "lead_bytes": b.lead}
                           for b in self.plan.buffers if b.overwrites],
            "workspace_bytes": sum(self.kernels.workspace_bytes.values()),
            "kernels": sum(1 for s in self.table.steps if s.kind == "kernel"),
        }

    @property
    def io_spec(self) -> dict:
        """The runner's inputs and outputs in model order (shape, dtype, bytes, scale, zero point;
        read by ``tinyseg run``); ``input``/``output`` repeat the first of each."""
        io = emit_c.io_tensors(self.table, self.model.inputs, self.model.outputs)
        return {"module_name": self.module_name, "input": io["inputs"][0], "output": io["outputs"][0], **io}

    def write(self, out_dir: str) -> None:
        backend = STORAGE_BACKENDS["model"][self.options.storage]
        runtime = ["tinyseg_arith.h", "tinyseg_storage.h", *backend.sources, *backend.headers]
        write_model_dir(out_dir, self.files, runtime, ["tinyseg_model.c", *backend.sources], self.module_name,
                        __version__, {"memory.json": self.memory_report, "io.json": self.io_spec})


def resolve_options(tinyseg: bool = True, **overrides) -> TinySegOptions:
    """The current PassContext's TinySeg options, with explicit (non-None) overrides applied."""
    options = dataclasses.replace(current_options(), **{k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(options, enable=options.enable and tinyseg)


def compile_model(path, out_dir=None, *, tinyseg: bool = True, ram_budget: int = None, storage: str = None,
                  fuse_fetch: bool = None, planner: str = None, mcpu: str = None,
                  module_name: str = DEFAULT_MODULE_NAME, input_shapes: dict = None) -> CompileResult:
    """Compile a .tflite/.onnx model to standalone C; write it to ``out_dir`` when given.

    Options not given here come from the current ``PassContext`` (``tinyseg.*`` keys), then from
    the defaults (no RAM budget: nothing spilled). ``mcpu`` (``targets.MCPUS``) is recorded in
    memory.json. ``module_name`` prefixes every C symbol, macro and file (``NAME_run``, ``NAME_model.h``).
    ``input_shapes`` ({input name: shape}, tvmc's ``--input-shapes``) fixes dynamic input dimensions
    other than the batch (which is fixed to 1)."""
    if mcpu is not None:
        check_mcpu(mcpu)
    check_module_name(module_name)
    options = resolve_options(tinyseg, ram_budget=ram_budget, storage=storage, fuse_fetch=fuse_fetch,
                              planner=planner)
    model = load_model(path, input_shapes)
    try:
        memory = lower_to_kernels(model.mod, options)
    except UnsupportedModelError as err:  # raised inside a pass, which does not know the file
        raise UnsupportedModelError(f"{path}: {err}") from None
    kernels = build_c_kernels(memory.mod)
    table, plan, storage_plan = memory.table, memory.arena, memory.storage
    result = CompileResult(model, memory, kernels, options, mcpu=mcpu, module_name=module_name)
    io = result.io_spec
    files = {
        "tinyseg_model.h": emit_c.emit_model_header(table, plan.size, storage_plan.size, io, plan.offsets, __version__),
        "tinyseg_model.c": emit_c.emit_model_source(table, plan.offsets, plan.size, kernels, io, storage_plan.offsets,
                                                    mapped_storage=options.storage == "mmap"),
    }
    result.files = {rename(name, module_name): rename(text, module_name) for name, text in files.items()}
    if out_dir is not None:
        result.write(out_dir)
    return result
