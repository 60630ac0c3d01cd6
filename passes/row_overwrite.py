"""Which kernels may write their output over the rows of an input they no longer need.

A convolution computing output row ``r`` reads input rows ``r*s - p .. r*s - p + k - 1``; once it
has moved past row ``r``, input rows below ``r*s - p`` are dead. If the output buffer starts far
enough *below* the input buffer, every output row lands on input rows that are already dead, and
the two buffers may share most of their bytes (TinySeg's in-place convolution). This module
derives that distance — the *lead* — from a kernel's scheduled TIR, so it holds for whatever the
kernel really does (pad, stride, transposed convolutions, concatenated or streamed inputs):

* the kernel must be one loop nest whose outermost loop of extent > 1 walks the output's rows:
  every store to the output inside iteration ``h`` hits rows ``lo_w(h) .. hi_w(h)`` and no load of
  the input or store to the output happens outside that loop;
* with ``lo_r(h)`` the lowest input row any load of iteration ``h`` *or later* may touch (bounds of
  the index expressions over the inner loops' ranges; guards are ignored, which only lowers it),
  the output may start ``lead`` bytes below the input, where
  ``lead = max_h ((hi_w(h) + 1) * output_row_bytes - lo_r(h) * input_row_bytes)``.

The arena planner (passes/arena_planner.py) then lets the output overlap the input as long as
``offset(output) + lead <= offset(input)``.
"""
import dataclasses
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import tirx

from .lifetime import STORAGE_OP_ATTR, LifetimeTable
from .row_access import buffer_accesses, loops_in, lower_blocks, outer_row_loop
from .structural_memo import structural_memo


@dataclass(frozen=True)
class Overwrite:
    """At its step, ``output`` may overwrite ``input`` if it starts ``lead`` bytes below it."""

    input: str
    output: str
    lead: int


def _row_axis(shape) -> int:
    """The outermost axis of extent > 1 (H of an NHWC tensor)."""
    return next((i for i, extent in enumerate(shape) if int(extent) > 1), 0)


def _row_bytes(buffer, axis: int) -> int:
    elements = 1
    for extent in buffer.shape[axis + 1:]:
        elements *= int(extent)
    return elements * tvm.runtime.DataType(str(buffer.dtype)).bits // 8


@structural_memo()
def row_overwrite_lead(func: tirx.PrimFunc, input_param: int, output_param: int):
    """The lead in bytes letting parameter ``output_param`` of ``func`` overwrite the rows of
    parameter ``input_param`` (see module docstring), or None when the kernel does not qualify or
    sharing would save nothing."""
    lowered = lower_blocks(func)
    src = lowered.params[input_param]
    dst = lowered.params[output_param]
    loop = outer_row_loop(lowered.body)
    if loop is None:
        return None
    reads, writes = buffer_accesses(loop.body, src, False), buffer_accesses(loop.body, dst, True)
    if (not reads or not writes or len(reads) != len(buffer_accesses(lowered.body, src, False))
            or len(writes) != len(buffer_accesses(lowered.body, dst, True))):
        return None  # an access outside the row loop
    src_axis, dst_axis = _row_axis(src.shape), _row_axis(dst.shape)
    src_row, dst_row = _row_bytes(src, src_axis), _row_bytes(dst, dst_axis)
    analyzer = tvm.sym.Analyzer()
    for inner in loops_in(loop.body):
        analyzer.bind(inner.loop_var, tvm.ir.Range.from_min_extent(inner.min, inner.extent))

    def bound(index, row: int):
        at_row = {loop.loop_var: tirx.const(row, str(loop.loop_var.ty.dtype))}
        return analyzer.const_int_bound(tvm_ffi.structural_map(index, (tirx.Var, lambda v: at_row.get(v, v))))

    rows = range(int(loop.extent))
    lowest_read = [max(0, min(bound(i[src_axis], h).min_value for i in reads)) for h in rows]
    highest_write = [max(bound(i[dst_axis], h).max_value for i in writes) for h in rows]
    for h in reversed(rows[:-1]):  # later iterations read too: the lowest row still needed
        lowest_read[h] = min(lowest_read[h], lowest_read[h + 1])
    lead = max(0, max((hi + 1) * dst_row - lo * src_row for lo, hi in zip(lowest_read, highest_write)))
    return lead if lead < dst_row * int(dst.shape[dst_axis]) else None  # else disjoint buffers are smaller


def find_overwrites(mod: tvm.IRModule, table: LifetimeTable) -> list:
    """Every (input, output) pair of a kernel step where the output may overwrite an input dying
    there; a step may have several (e.g. both inputs of a fused concat + conv)."""
    found = []
    for step in table.steps:
        if step.kind != "kernel" or STORAGE_OP_ATTR in (mod[step.kernel].attrs or {}):
            continue
        for position, name in enumerate(step.args):
            tensor = table.tensors.get(name) if isinstance(name, str) else None
            if (tensor is None or tensor.in_storage or tensor.is_output or tensor.external
                    or table.tensors[step.output].external or tensor.last != step.index
                    or step.args.count(name) > 1):
                continue
            lead = row_overwrite_lead(mod[step.kernel], position, len(step.args))
            if lead is not None:
                found.append(Overwrite(name, step.output, lead))
    return found


def with_overwrites(buffers, overwrites) -> list:
    """``buffers`` with each output given the input it may overwrite — of its candidates, the one
    whose arena buffer really ends where the output starts (a spilled input left RAM earlier), with
    the most bytes saved."""
    by_name = {b.name: b for b in buffers}
    result = []
    for buf in buffers:
        best, best_saved = None, 0
        for o in overwrites:
            partner = by_name.get(o.input)
            if o.output != buf.name or partner is None or partner.last != buf.first:
                continue
            saved = partner.nbytes + buf.nbytes - max(o.lead + partner.nbytes, buf.nbytes)
            if saved > best_saved:
                best, best_saved = o, saved
        result.append(dataclasses.replace(buf, overwrites=best.input, lead=best.lead) if best else buf)
    return result
