"""The compile driver: model file → Relax → int8 kernels → memory plan → C sources + memory.json.

Each stage hands the next a plain object (ImportedModel, IRModule, MemoryPlan, CKernels) so
tests and benchmarks can stop at any of them; the memory plan is tvm_tinyseg/memory_planning.py's.
"""
import dataclasses
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tvm_tinyseg import __version__
from tvm_tinyseg.codegen import emit_c
from tvm_tinyseg.codegen.c_api import DEFAULT_MODULE_NAME, check_module_name, rename
from tvm_tinyseg.codegen.check_c import check_generated_c
from tvm_tinyseg.codegen.model_files import write_model_dir
from tvm_tinyseg.codegen.tir_to_c import CKernels, build_c_kernels
from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError
from tvm_tinyseg.frontend import ImportedModel, load_model
from tvm_tinyseg.pass_config import TinySegOptions, check_options, current_options
from tvm_tinyseg.profile import step_records
from tvm_tinyseg.memory_planning import MemoryPlan, plan_memory
from tvm_tinyseg.model_dir import STORAGE_BACKENDS
from tvm_tinyseg.output_dir import replacing
from tvm_tinyseg.passes.arena_planner import ArenaPlan
from tvm_tinyseg.passes.spill_planner import BudgetError
from tvm_tinyseg.passes.fuse_into_consumer import FuseDataMovementIntoConsumer
from tvm_tinyseg.passes.lifetime import LifetimeTable
from tvm_tinyseg.passes.lower_fake_quant import LowerFakeQuantToInteger
from tvm_tinyseg.passes.lower_onnx_qdq import LowerQDQToInteger
from tvm_tinyseg.passes.lower_spatial_int8 import LowerQuantizedResizeAndMean
from tvm_tinyseg.progress import timed
from tvm_tinyseg.targets import check_mcpu, has_dsp

C_TARGET = "c"
_log = logging.getLogger(__name__)
# Storage integrity (tinyseg_backend.h): a CRC-16 in RAM per block of block and remote storage.
INTEGRITY_BLOCK_BYTES = 16
INTEGRITY_CRC_BYTES = 2
CHECKED_STORAGE = ("file", "uart")  # mmap is read in place, where no check can intervene


def integrity_ram_bytes(pool_bytes: int) -> int:
    """RAM of the CRCs checking a storage pool of ``pool_bytes``."""
    return -(-pool_bytes // INTEGRITY_BLOCK_BYTES) * INTEGRITY_CRC_BYTES


def integrity_cost(options: TinySegOptions, pool_bytes: int) -> dict:
    """Whether storage integrity is on, and what it costs: RAM for the CRCs, and storage for
    rounding the pool up to whole blocks (the CRCs themselves are not stored)."""
    on = options.integrity and options.storage in CHECKED_STORAGE and pool_bytes > 0
    padding = -pool_bytes % INTEGRITY_BLOCK_BYTES
    return {"integrity": on, "integrity_ram_bytes": integrity_ram_bytes(pool_bytes) if on else 0,
            "integrity_storage_bytes": padding if on else 0}


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
        with timed(_log, "lowering to kernels"):
            lowered = tvm.transform.Sequential(kernel_passes(options))(mod)
        return plan_memory(lowered, options)


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
    mcpu: str = None  # the CPU the C is meant for (DSP cores get the SMLAD dot products)
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
    def integrity(self) -> dict:
        return integrity_cost(self.options, self.storage_plan.size)

    @property
    def pool_bytes(self) -> int:
        """The storage pool: the plan's, in whole integrity blocks when integrity is on."""
        return self.storage_plan.size + self.integrity["integrity_storage_bytes"]

    @property
    def memory_report(self) -> dict:
        return {
            "model": os.path.basename(self.model.path),
            "target": C_TARGET,
            "mcpu": self.mcpu,
            # kernels whose int8 dot products use the DSP extension (SXTB16/SXTAB16/SMLAD) where the
            # compiler defines __ARM_FEATURE_DSP; portable C elsewhere
            "dsp_kernels": self.kernels.dsp_kernels,
            "tinyseg": self.options.enable,
            "planner": self.plan.algorithm,
            "ram_budget": self.options.ram_budget,
            "storage": self.options.storage,
            "fuse_fetch": self.options.fuse_fetch,
            "arena_bytes": self.plan.size,
            "io_in_arena": self.options.io_in_arena,  # false: inputs and outputs in the caller's buffers
            "storage_bytes": self.pool_bytes,
            "moved_bytes": self.memory.moved_bytes,
            **self.integrity,
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
            "steps": step_records(self.table, self.mod),  # the runner's calls, for profiles
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


def _check_finite_constants(path, table: LifetimeTable) -> None:
    """Constants folded from the model's (e.g. the square root of a negative one) are finite:
    the reference computes NaN or infinity from them, and C has no literal for them."""
    for i, constant in enumerate(table.constants):
        if constant.dtype.kind == "f" and not np.all(np.isfinite(constant)):
            raise ModelFileError(f"{path}: the model's constants compute NaN or infinity "
                                 f"({np.count_nonzero(~np.isfinite(constant))} values of weight #{i})")


def resolve_options(tinyseg: bool = True, **overrides) -> TinySegOptions:
    """The current PassContext's TinySeg options, with explicit (non-None) overrides applied."""
    options = dataclasses.replace(current_options(), **{k: v for k, v in overrides.items() if v is not None})
    return check_options(dataclasses.replace(options, enable=options.enable and tinyseg))


def lower_within_budget(mod: tvm.IRModule, options: TinySegOptions) -> MemoryPlan:
    """``lower_to_kernels``, with the integrity CRCs counted in the RAM budget: when the arena and
    the CRCs of its storage pool exceed it, planned again with a budget smaller by the CRCs."""
    memory = lower_to_kernels(mod, options)
    if options.ram_budget <= 0:  # no budget, or the smallest feasible arena
        return memory
    for _ in range(4):
        crc_bytes = integrity_cost(options, memory.storage.size)["integrity_ram_bytes"]
        if memory.arena.size + crc_bytes <= options.ram_budget:
            break
        budget = options.ram_budget - crc_bytes
        try:
            memory = lower_to_kernels(mod, dataclasses.replace(options, ram_budget=budget))
        except BudgetError:
            raise BudgetError(f"RAM budget {options.ram_budget} B cannot hold both the arena (at least "
                              f"{memory.arena.size} B) and the {crc_bytes} B of CRCs that check its "
                              f"{options.storage!r} storage: raise the budget, or compile with --no-integrity "
                              "(tinyseg.integrity=false)") from None
        memory.options = options
    return memory


def compile_model(path, out_dir=None, *, tinyseg: bool = True, ram_budget: int = None, storage: str = None,
                  fuse_fetch: bool = None, planner: str = None, mcpu: str = None,
                  module_name: str = DEFAULT_MODULE_NAME, input_shapes: dict = None,
                  check_c: bool = True, integrity: bool = None, io_in_arena: bool = None) -> CompileResult:
    """Compile a .tflite/.onnx model to standalone C; write it to ``out_dir`` when given.

    Options not given here come from the current ``PassContext`` (``tinyseg.*`` keys), then from
    the defaults (no RAM budget: nothing spilled). ``mcpu`` (``targets.MCPUS``) is recorded in
    memory.json; for a DSP core (``targets.DSP_MCPUS``) the int8 dot products use SMLAD. ``module_name`` prefixes every C symbol, macro and file (``NAME_run``, ``NAME_model.h``).
    ``input_shapes`` ({input name: shape}, tvmc's ``--input-shapes``) fixes dynamic input dimensions
    other than the batch (which is fixed to 1). ``check_c`` parses the generated C with the host
    compiler first, when there is one (codegen/check_c.py): C that does not compile is an internal error.
    ``integrity`` (default on) checks 'file' and 'uart' storage with a CRC per block
    (``tinyseg.integrity``; its RAM counts in ``ram_budget``). ``out_dir`` is replaced whole
    (output_dir.replacing; files this tool did not write are kept). ``io_in_arena`` false
    (``tinyseg.io_in_arena``) leaves the inputs and outputs in the caller's buffers, outside the arena."""
    if mcpu is not None:
        check_mcpu(mcpu)
    check_module_name(module_name)
    options = resolve_options(tinyseg, ram_budget=ram_budget, storage=storage, fuse_fetch=fuse_fetch,
                              planner=planner, integrity=integrity, io_in_arena=io_in_arena)
    with timed(_log, f"import {os.path.basename(str(path))}"):
        model = load_model(path, input_shapes)
    try:
        memory = lower_within_budget(model.mod, options)
    except UnsupportedModelError as err:  # raised inside a pass, which does not know the file
        raise UnsupportedModelError(f"{path}: {err}") from None
    _check_finite_constants(path, memory.table)
    with timed(_log, "C emission"):
        kernels = build_c_kernels(memory.mod, dsp=has_dsp(mcpu))
        table, plan, storage_plan = memory.table, memory.arena, memory.storage
        result = CompileResult(model, memory, kernels, options, mcpu=mcpu, module_name=module_name)
        io = result.io_spec
        files = {
            "tinyseg_model.h": emit_c.emit_model_header(table, plan.size, result.pool_bytes, io, plan.offsets,
                                                        __version__, storage_integrity=result.integrity["integrity"]),
            "tinyseg_model.c": emit_c.emit_model_source(table, plan.offsets, plan.size, kernels, io,
                                                        storage_plan.offsets, mapped_storage=options.storage == "mmap"),
        }
    result.files = {rename(name, module_name): rename(text, module_name) for name, text in files.items()}
    if check_c:
        check_generated_c(result)
    if out_dir is not None:
        with replacing(out_dir, force=True) as staging:
            result.write(staging)
    return result
