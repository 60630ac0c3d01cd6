"""Where a kernel's lowered TIR reads and writes rows: the loop-nest walks shared by the row
analyses (row_overwrite.py: how far an output may start below an input it overwrites;
stream_row_chains.py: which input rows each output row of a chained stage needs)."""
import tvm
import tvm_ffi
from tvm import s_tir, tirx


def lower_blocks(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Blocks replaced by their bindings: plain loops over multi-dimensional buffers."""
    passes = tvm.transform.Sequential([s_tir.transform.LowerInitBlock(), s_tir.transform.ConvertBlocksToOpaque(),
                                       s_tir.transform.LowerOpaqueBlock()])
    return passes(tvm.IRModule({"main": func}))["main"]


def outer_row_loop(body):
    """The outermost loop of extent > 1, if the kernel is a single loop nest down to it."""
    while True:
        if isinstance(body, tirx.For):
            if int(body.extent) > 1:
                return body
            body = body.body
        elif isinstance(body, tirx.SeqStmt):
            nests = [s for s in body.seq if not isinstance(s, (tirx.AllocBuffer, tirx.DeclBuffer))]
            if len(nests) != 1:
                return None
            body = nests[0]
        elif isinstance(body, (tirx.AttrStmt, tirx.LetStmt)):
            body = body.body
        else:
            return None


def buffer_accesses(stmt, buffer, stores: bool) -> list:
    """Index lists of the loads (or stores) of ``buffer`` inside ``stmt``."""
    found = []
    kind = tirx.BufferStore if stores else tvm.ir.expr.TensorLoad

    def visit(node):
        target = node.buffer if stores else node.source
        if target.same_as(buffer):
            found.append(list(node.indices))

    tvm_ffi.structural_walk(stmt, (kind, visit))
    return found


def loops_in(stmt) -> list:
    """Every loop inside ``stmt``."""
    loops = []
    tvm_ffi.structural_walk(stmt, (tirx.For, loops.append))
    return loops
