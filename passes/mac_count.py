"""Multiply-accumulates of a kernel, counted in its TIR (for profiles and instructions per MAC)."""
import tvm_ffi
from tvm import s_tir, tirx
from tvm.ir import TensorLoad  # what tirx.BufferLoad builds

MACS_ATTR = "tinyseg.macs"  # on a kernel whose blocks were lowered away: the MACs of what it computes


def _is_multiply_accumulate(block) -> bool:
    """``acc[...] = acc[...] + a * b``: a convolution's (or dense layer's) reduction update."""
    body = block.body
    if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tirx.Add):
        return False
    total = body.value
    return (isinstance(total.a, TensorLoad) and total.a.source.same_as(body.buffer)
            and isinstance(total.b, tirx.Mul))


def count_macs(func: tirx.PrimFunc) -> int:
    """Multiply-accumulates of a kernel: the iteration domain of every multiply-accumulate
    reduction block (a transposed convolution's gather visits only the taps that hit); a kernel
    built from others without blocks (a row-streamed chain) carries their total as MACS_ATTR."""
    if func.attrs is not None and MACS_ATTR in func.attrs:
        return int(func.attrs[MACS_ATTR])
    macs = []

    def visit(block):
        reduces = any(int(iv.iter_type) != 0 for iv in block.iter_vars)
        if reduces and _is_multiply_accumulate(block):
            n = 1
            for iv in block.iter_vars:
                n *= int(iv.dom.extent)
            macs.append(n)

    tvm_ffi.structural_walk(func.body, (s_tir.SBlock, visit))
    return sum(macs)
