"""TIR PrimFuncs → plain C functions with typed pointer arguments.

TVM 0.27's C target emits the packed FFI calling convention (DLTensor arguments, TVM headers,
TVMBackendAllocWorkspace). Microcontroller code wants ``void k(const int8_t *x, ..., int8_t *y)``
and nothing else, so we register our own TIR pipeline ``tinyseg_c``: TVM's default S-TIR lowering
with MakePackedAPI/LowerTVMBuiltin replaced by two passes:

* ``LiftWorkspace`` turns any kernel-local buffer larger than a few scalars (and every row ring of
  passes/stream_row_chains.py) into a slice of an explicit ``uint8_t *tinyseg_ws`` parameter, so no
  RAM is hidden from the memory plan;
* ``MakeUnpackedAPI`` turns buffer parameters into plain typed pointers.
"""
import re
from dataclasses import dataclass, field

import tvm
import tvm_ffi
from tvm import ir, s_tir, tirx

from tvm_tinyseg.passes.dsp_dot_products import DSP_LOOPS_ATTR, UseDSPDotProducts
from tvm_tinyseg.passes.hoist_tap_conditions import HoistTapConditions
from tvm_tinyseg.passes.lifetime import STORAGE_OP_ATTR  # spill/fetch copies become storage calls
from tvm_tinyseg.passes.structural_memo import structural_memo
from tvm_tinyseg.passes.stream_row_chains import RING_PREFIX  # rings keep rows across iterations: never on the stack

WORKSPACE_ALIGN = 16
STACK_LIMIT_BYTES = 64  # kernel-local buffers up to this size stay on the C stack
WORKSPACE_ATTR = "tinyseg.workspace_bytes"
WORKSPACE_PARAM = "tinyseg_ws"


def _align(n: int) -> int:
    return (n + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN


def _buffer_bytes(buf) -> int:
    n = tvm.runtime.DataType(str(buf.dtype)).bits // 8
    for extent in buf.shape:
        n *= int(extent)
    return n


def _pointer_var(name: str, dtype: str) -> tirx.Var:
    return tirx.Var(name, ir.PointerType(ir.PrimType(dtype)))


@tirx.transform.prim_func_pass(opt_level=0, name="TinySegLiftWorkspace")
def LiftWorkspace(func, mod, ctx):
    """Alias every large kernel-local AllocBuffer into an explicit workspace parameter."""
    allocs = []
    tvm_ffi.structural_walk(
        func.body,
        (tirx.AllocBuffer, lambda a: allocs.append(a) if _buffer_bytes(a.buffer) > STACK_LIMIT_BYTES
         or a.buffer.name.startswith(RING_PREFIX) else None),
    )
    if not allocs:
        return func.with_attr(WORKSPACE_ATTR, 0)
    workspace = _pointer_var(WORKSPACE_PARAM, "uint8")
    offsets, total = [], 0
    for alloc in allocs:
        offsets.append(total)
        total += _align(_buffer_bytes(alloc.buffer))

    def alias_into_workspace(stmt):
        for alloc, offset in zip(allocs, offsets):
            if stmt.same_as(alloc):
                return tirx.DeclBuffer(alloc.buffer, data=tirx.handle_add_byte_offset(workspace, offset))
        return stmt

    body = tvm_ffi.structural_map(func.body, (tirx.AllocBuffer, alias_into_workspace))
    lifted = tirx.PrimFunc(list(func.params) + [workspace], body, func.ret_type, func.attrs)
    return lifted.with_attr(WORKSPACE_ATTR, total)


@tirx.transform.prim_func_pass(opt_level=0, name="TinySegMakeUnpackedAPI")
def MakeUnpackedAPI(func, mod, ctx):
    """Buffer parameters become typed pointers bound by DeclBuffer (no DLTensor decoding)."""
    params, decls = [], []
    for param in func.params:
        if isinstance(param.ty, tirx.BufferType):
            pointer = _pointer_var(param.name, str(param.ty.dtype))
            decls.append(tirx.DeclBuffer(param, data=pointer))
            params.append(pointer)
        else:
            params.append(param)
    body = tirx.SeqStmt(decls + [func.body]) if decls else func.body
    return tirx.PrimFunc(params, body, func.ret_type, func.attrs)


def _lowering_passes(dsp: bool = False):
    """TVM's default S-TIR lowering (tvm/s_tir/pipeline.py) minus the packed API; with ``dsp``
    the int8 dot products call tinyseg_arith.h's SMLAD helpers."""
    return [
        s_tir.transform.CanonicalizeLoop(),
        s_tir.transform.LowerCrossThreadReduction(),
        s_tir.transform.LowerInitBlock(),
        s_tir.transform.PlanAndUpdateBufferAllocationLocation(),
        s_tir.transform.ConvertBlocksToOpaque(),
        s_tir.transform.CompactBufferAllocation(),
        s_tir.transform.LowerMatchBuffer(),
        s_tir.transform.StmtSimplify(),
        s_tir.transform.LowerOpaqueBlock(),
        tirx.transform.FlattenBuffer(),
        tirx.transform.NarrowDataType(32),
        s_tir.transform.LoopPartition(),
        tirx.transform.VectorizeLoop(False),  # scalar C: the MCU compiler vectorises if it can
        tirx.transform.StorageRewrite(),
        tirx.transform.UnrollLoop(),
        tirx.transform.StmtSimplify(),
        tirx.transform.RemoveNoOp(),
        HoistTapConditions,
        tirx.transform.StmtSimplify(),
        *([UseDSPDotProducts] if dsp else []),
        s_tir.transform.RewriteUnsafeSelect(),
        tirx.transform.CommonSubexprElim(),
        tirx.transform.VerifyMemory(),
        LiftWorkspace,
        MakeUnpackedAPI,
    ]


def _tinyseg_c_pipeline(dsp: bool):
    def pipeline():
        @tvm.transform.module_pass(opt_level=0, name="TinySegCLowering")
        def lower(mod, _ctx):
            return tvm.transform.Sequential(_lowering_passes(dsp))(mod)

        def finalize():
            return tvm.transform.Sequential([tirx.transform.LowerIntrin()])

        return lower, finalize, finalize

    return pipeline


PIPELINES = {False: "tinyseg_c", True: "tinyseg_c_dsp"}
for _dsp, _name in PIPELINES.items():
    tirx.register_tir_pipeline(_name, _tinyseg_c_pipeline(_dsp))


@dataclass
class CKernels:
    """Plain-C kernels (static functions for the runner's translation unit) and each kernel's
    workspace bytes."""

    source: str
    workspace_bytes: dict
    dsp_kernels: list = field(default_factory=list)  # kernels whose dot products call the SMLAD helpers


KERNEL_QUALIFIER = "TINYSEG_NOINLINE"
# Each kernel stays a function of its own: inlined into the runner (each is called once), the
# kernels share one register allocation: tinyunet_80x120 took 400 M instead of 312 M Cortex-M7
# instructions. No clone either: gcc 12 -O2 specialised for the constant arena addresses and
# vectorised, the last kernel of tinyunet_80x120_float gave wrong outputs (-fno-ipa-cp fixes it).
_KERNEL_QUALIFIER_DEFINITION = (
    "#if defined(__GNUC__) && !defined(__clang__)",
    f"#define {KERNEL_QUALIFIER} __attribute__((noinline, noclone))",
    "#elif defined(__GNUC__)",
    f"#define {KERNEL_QUALIFIER} __attribute__((noinline))",
    "#else",
    f"#define {KERNEL_QUALIFIER}",
    "#endif",
)

_DROPPED_LINES = ("// tvm target:", '#include "tvm/', "#define TVM_EXPORTS", "#ifdef __cplusplus",
                  'extern "C"', "#endif", "void* __tvm_ffi__library_ctx")


# TVM prints a float32 NaN or infinity constant as `nanf` / `inff`, which C does not know as values.
_NON_FINITE = re.compile(r"\b(nan|inf)f\b(?!\s*\()")


def _clean_source(source: str, kernel_names) -> str:
    """Kernels become ``static`` and not inlined (one translation unit with the runner); TVM's
    prototypes of extern helpers (math functions, tinyseg_mbqm) are dropped: their headers declare
    them. So is the FFI library context global, which nothing reads and two models would both define.
    Non-finite constants become math.h's NAN and INFINITY."""
    lines = list(_KERNEL_QUALIFIER_DEFINITION)
    for line in source.splitlines():
        if line.startswith(_DROPPED_LINES):
            continue
        if line.startswith("TVM_DLL "):
            match = re.match(r"TVM_DLL \w+ (\w+)\(", line)
            if not (match and match.group(1) in kernel_names):
                continue
            line = f"static {KERNEL_QUALIFIER} " + line[len("TVM_DLL "):]
        lines.append(_NON_FINITE.sub(lambda m: "NAN" if m.group(1) == "nan" else "INFINITY", line))
    return "\n".join(lines)


def _c_kernels(tir_mod: tvm.IRModule) -> tvm.IRModule:
    """The PrimFuncs that become C functions (storage copies become storage calls instead)."""
    return tvm.IRModule({gv: f.with_attr("global_symbol", gv.name_hint)
                         for gv, f in tir_mod.functions_items()
                         if isinstance(f, tirx.PrimFunc) and not (f.attrs is not None and STORAGE_OP_ATTR in f.attrs)})


def _lowered(tir_mod: tvm.IRModule, dsp: bool = False) -> tvm.IRModule:
    """TVM's lowering only, without C code generation."""
    return tvm.transform.Sequential(_lowering_passes(dsp))(
        tirx.transform.BindTarget(tvm.target.Target("c", host="c"))(_c_kernels(tir_mod)))


@structural_memo()
def _lowered_attributes(kernel: tirx.PrimFunc, dsp: bool) -> tuple:
    """(workspace bytes, whether its dot products call the SMLAD helpers) of ``kernel`` lowered."""
    (lowered,) = _lowered(tvm.IRModule({"kernel": kernel}), dsp).functions.values()
    return int(lowered.attrs.get(WORKSPACE_ATTR, 0)), bool(int(lowered.attrs.get(DSP_LOOPS_ATTR, 0)))


def workspace_bytes(tir_mod: tvm.IRModule) -> dict:
    """Kernel name → the workspace (``LiftWorkspace``) its C function needs, so memory planning
    can count it."""
    return {gv.name_hint: _lowered_attributes(kernel, False)[0] for gv, kernel in _c_kernels(tir_mod).functions_items()}


def build_c_kernels(tir_mod: tvm.IRModule, dsp: bool = False) -> CKernels:
    """Lower every PrimFunc of ``tir_mod`` to plain C; with ``dsp`` for a core with the Arm DSP
    extension (passes/dsp_dot_products.py)."""
    kernels = _c_kernels(tir_mod)
    source = tvm.tirx.build(kernels, target="c", pipeline=PIPELINES[dsp]).inspect_source()
    # tirx.build does not hand back the lowered module: lower each kernel again (or recall it) to
    # read the attributes it got.
    attributes = {gv.name_hint: _lowered_attributes(kernel, dsp) for gv, kernel in kernels.functions_items()}
    return CKernels(_clean_source(source, set(attributes)),
                    {name: workspace for name, (workspace, _) in attributes.items()},
                    sorted(name for name, (_, uses_dsp) in attributes.items() if uses_dsp))
