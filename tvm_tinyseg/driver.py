"""The compile driver: model file → Relax → int8 kernels → memory plan → C sources + memory.json.

Each stage hands the next a plain object (ImportedModel, IRModule, LifetimeTable, ArenaPlan,
CKernels) so tests and benchmarks can stop at any of them.
"""
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field

import tvm
from tvm import relax

from tvm_tinyseg.codegen import emit_c
from tvm_tinyseg.codegen.tir_to_c import CKernels, build_c_kernels
from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.frontend import ImportedModel, load_model
from tvm_tinyseg.pass_config import TinySegOptions, current_options
from tvm_tinyseg.passes.arena_planner import ArenaPlan, Buffer, peak_live_bytes, plan_arena
from tvm_tinyseg.passes.fuse_into_consumer import FuseDataMovementIntoConsumer
from tvm_tinyseg.passes.insert_spill_fetch import InsertSpillFetch
from tvm_tinyseg.passes.lifetime import LifetimeTable, analyze_lifetimes
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE, BudgetError
from tvm_tinyseg.passes.lower_fake_quant import LowerFakeQuantToInteger
from tvm_tinyseg.passes.mcu_schedule import MCUSchedule
from tvm_tinyseg.passes.row_overwrite import find_overwrites, with_overwrites
from tvm_tinyseg.passes.stream_stored_rows import STREAM_BYTES_ATTR, RollStreamWindows, StreamStoredRows
from tvm_tinyseg.targets import check_mcpu

RUNTIME_DIR = os.path.join(os.path.dirname(emit_c.__file__), "runtime")
C_TARGET = "c"
STORAGE_BACKENDS = {"mmap": "storage_buffer.c", "file": "storage_file.c", "uart": "storage_remote.c"}
# Headers a backend needs beside tinyseg_storage.h; the link itself (link_*.c) comes with the platform.
STORAGE_HEADERS = {"mmap": ("tinyseg_backend.h",), "file": ("tinyseg_backend.h",), "uart": ("tinyseg_link.h",)}


def kernel_passes(options: TinySegOptions):
    """Relax → one ``call_tir`` per kernel, each scheduled to need no workspace. With TinySeg
    enabled, data-movement kernels are computed inside their consumers and idle tensors spilled."""
    tinyseg = [
        FuseDataMovementIntoConsumer(),
        InsertSpillFetch(ram_budget=options.ram_budget, storage=options.storage, fuse_fetch=options.fuse_fetch,
                         planner=options.planner, overwrite_rows=options.overwrite_rows),
    ] if options.enable else []
    return [
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
        *tinyseg,
        StreamStoredRows,
        MCUSchedule,
        RollStreamWindows,
    ]


def lower_to_kernels(mod: tvm.IRModule, options: TinySegOptions = None) -> tvm.IRModule:
    with tvm.target.Target(C_TARGET):
        return tvm.transform.Sequential(kernel_passes(options or TinySegOptions()))(mod)


def arena_buffers(table: LifetimeTable, kernels: CKernels, overwrites=()) -> list:
    """Everything the arena holds: input, activations, output (but not spilled copies) and the
    (ideally empty) per-kernel workspaces; ``overwrites`` (passes/row_overwrite.py) let outputs
    share bytes with the input rows they no longer need."""
    buffers = [Buffer(t.name, t.nbytes, t.first, t.last) for t in table.ram_tensors()]
    for step in table.steps:
        nbytes = kernels.workspace_bytes.get(step.kernel, 0)
        if nbytes:
            buffers.append(Buffer(emit_c.workspace_buffer(step.index), nbytes, step.index, step.index))
    return with_overwrites(buffers, overwrites)


def overwrites_of(mod: tvm.IRModule, table: LifetimeTable, options: TinySegOptions) -> list:
    return find_overwrites(mod, table) if options.enable and options.overwrite_rows else []


def storage_buffers(table: LifetimeTable) -> list:
    return [Buffer(t.name, t.nbytes, t.first, t.last) for t in table.storage_tensors()]


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
    return report


def moved_bytes(table: LifetimeTable, mod: tvm.IRModule) -> int:
    """Bytes written to and read from storage per inference: each spill writes its tensor; a fetch
    or an in-place reader reads it once, a streaming kernel the row windows it counted."""
    total = 0
    for step in table.steps:
        stored = [a for a in step.args if isinstance(a, str) and table.tensors[a].in_storage]
        if step.kind == "spill":
            total += table.tensors[step.output].nbytes
        elif stored:
            attrs = mod[step.kernel].attrs if step.kind == "kernel" else None
            streamed = attrs is not None and STREAM_BYTES_ATTR in attrs
            total += int(attrs[STREAM_BYTES_ATTR]) if streamed else sum(table.tensors[a].nbytes for a in stored)
    return total


@dataclass
class CompileResult:
    model: ImportedModel
    mod: tvm.IRModule  # after kernel_passes
    table: LifetimeTable
    kernels: CKernels
    plan: ArenaPlan
    storage_plan: ArenaPlan
    options: TinySegOptions
    files: dict = field(default_factory=dict)  # file name -> text
    mcpu: str = None  # the CPU the C is meant for (recorded only; the C is the same for all)

    @property
    def memory_report(self) -> dict:
        inp = self.table.tensors[self.table.inputs[0]]
        out = self.table.tensors[self.table.output]
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
            "moved_bytes": moved_bytes(self.table, self.mod),
            "spilled": spill_report(self.table),
            "weight_bytes": self.table.weight_bytes(),
            "input_bytes": inp.nbytes,
            "output_bytes": out.nbytes,
            "peak_live_bytes": self.table.peak_live_bytes(),
            "lower_bound_bytes": self.table.largest_tensor_bytes(),
            # what no placement of this plan's buffers can beat (overwrite pairs sharing bytes)
            "plan_bound_bytes": peak_live_bytes(self.plan.buffers),
            "overwrites": [{"output": b.name, "input": b.overwrites, "lead_bytes": b.lead}
                           for b in self.plan.buffers if b.overwrites],
            "workspace_bytes": sum(self.kernels.workspace_bytes.values()),
            "kernels": sum(1 for s in self.table.steps if s.kind == "kernel"),
        }

    @property
    def io_spec(self) -> dict:
        """Shapes and dtypes of the runner's input and output buffers (read by ``tinyseg run``)."""
        spec = {}
        for role, name in (("input", self.table.inputs[0]), ("output", self.table.output)):
            tensor = self.table.tensors[name]
            spec[role] = {"shape": list(tensor.shape), "dtype": tensor.dtype}
        return spec

    def write(self, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        for name, text in self.files.items():
            with open(os.path.join(out_dir, name), "w") as f:
                f.write(text)
        for name in ("tinyseg_arith.h", "tinyseg_storage.h", STORAGE_BACKENDS[self.options.storage],
                     *STORAGE_HEADERS.get(self.options.storage, ())):
            shutil.copy(os.path.join(RUNTIME_DIR, name), out_dir)
        for name, report in (("memory.json", self.memory_report), ("io.json", self.io_spec)):
            with open(os.path.join(out_dir, name), "w") as f:
                json.dump(report, f, indent=2)
                f.write("\n")


MAX_BUDGET_ROUNDS = 3


def _compile(model, options):
    mod = lower_to_kernels(model.mod, options)
    table = analyze_lifetimes(mod["main"], mod)
    kernels = build_c_kernels(mod)
    buffers = arena_buffers(table, kernels, overwrites_of(mod, table, options))
    return mod, table, kernels, plan_arena(buffers, options.planner)


def _plan_within_budget(model, options):
    """Compile, and if buffers the spill planner could not foresee (the row windows of streamed
    fetches) push the arena over the budget, plan again for a budget tighter by the overshoot."""
    budget, planned = options.ram_budget, options.ram_budget
    for _ in range(MAX_BUDGET_ROUNDS):
        compiled = _compile(model, dataclasses.replace(options, ram_budget=planned))
        arena = compiled[3].size
        if budget <= 0 or arena <= budget:
            return compiled
        planned -= arena - budget
        if planned <= 0:
            break
    smallest = _compile(model, dataclasses.replace(options, ram_budget=SMALLEST_FEASIBLE))[3].size
    raise BudgetError(f"RAM budget {budget} B cannot be met: the smallest feasible arena is {smallest} B; "
                      f"set the budget (tinyseg.ram_budget, --ram-budget) to {smallest} or more")


def resolve_options(tinyseg: bool = True, **overrides) -> TinySegOptions:
    """The current PassContext's TinySeg options, with explicit (non-None) overrides applied."""
    options = dataclasses.replace(current_options(), **{k: v for k, v in overrides.items() if v is not None})
    return dataclasses.replace(options, enable=options.enable and tinyseg)


def compile_model(path, out_dir=None, *, tinyseg: bool = True, ram_budget: int = None, storage: str = None,
                  fuse_fetch: bool = None, planner: str = None, mcpu: str = None,
                  input_shapes: dict = None) -> CompileResult:
    """Compile a .tflite/.onnx model to standalone C; write it to ``out_dir`` when given.

    Options not given here come from the current ``PassContext`` (``tinyseg.*`` keys), then from
    the defaults (no RAM budget: nothing spilled). ``mcpu`` (``targets.MCPUS``) is recorded in
    memory.json. ``input_shapes`` ({input name: shape}, tvmc's ``--input-shapes``) fixes dynamic input
    dimensions other than the batch (which is fixed to 1)."""
    if mcpu is not None:
        check_mcpu(mcpu)
    options = resolve_options(tinyseg, ram_budget=ram_budget, storage=storage, fuse_fetch=fuse_fetch,
                              planner=planner)
    model = load_model(path, input_shapes)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError(
            f"{path}: {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "only single-input, single-output models are supported")
    try:
        mod, table, kernels, plan = _plan_within_budget(model, options)
    except UnsupportedModelError as err:  # raised inside a pass, which does not know the file
        raise UnsupportedModelError(f"{path}: {err}") from None
    storage_plan = plan_arena(storage_buffers(table), options.planner)
    result = CompileResult(model, mod, table, kernels, plan, storage_plan, options, mcpu=mcpu)
    result.files = {
        "tinyseg_model.h": emit_c.emit_model_header(table, plan.size, storage_plan.size),
        "tinyseg_model.c": emit_c.emit_model_source(table, plan.offsets, plan.size, kernels, storage_plan.offsets,
                                                    mapped_storage=options.storage == "mmap"),
    }
    if out_dir is not None:
        result.write(out_dir)
    return result
