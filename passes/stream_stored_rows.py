"""StreamStoredRows: a consumer reads a tensor spilled to block storage one window of rows at a
time, through the storage interface, instead of needing it whole in RAM.

InsertSpillFetch groups the fetch of a spilled tensor with its consumer; after FuseTIR the kernel
starts with a ``tinyseg_stream`` block copying the stored tensor into a full-size buffer. This pass
computes that copy under the consumer's output-row loop, turns the buffer into a ring of as many
rows as one output row reads (row r in slot r % rows: 3 for a 3x3 convolution) and replaces each
row's element-wise copy by one call ``tinyseg_stream_read(&stored[row], &ring[slot], bytes)``. The
stored tensor's pointer is never dereferenced: it carries the tensor's offset in the storage pool
(see codegen/emit_c.py). The ring rolls: after the first output row only the rows the window slides
onto are read, so each stored row is read once. The kernel's attribute ``tinyseg.stream_read_bytes``
counts the bytes one call reads.
Run before MCUSchedule, which leaves ``tinyseg_stream`` blocks alone (row regions are derived before
MCUSchedule splits the reduction's initialisation off).
"""

import tvm
import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError

from .mcu_schedule import inline_injective_producers

STREAM_BLOCK = "tinyseg_stream"
STREAM_READ = "tinyseg_stream_read"
STREAM_BYTES_ATTR = "tinyseg.stream_read_bytes"  # bytes one call of the kernel reads from storage
STREAM_ROW_BLOCK = STREAM_BLOCK + "_row"
ROLLING_ATTR = "tinyseg.rolling"  # the rows-not-yet-in-the-ring condition, applied by RollStreamWindows


def _reader_of(sch, stream):
    """The block reading the streamed buffer (the consumer's reduction)."""
    (window,) = [w.source for w in sch.get(stream).writes]
    readers = []
    tvm_ffi.structural_walk(sch.mod["main"].body, (s_tir.SBlock, lambda b: readers.append(b.name_hint)
                                        if any(r.source.same_as(window) for r in b.reads) else None))
    if len(readers) != 1:
        raise ValueError(f"{STREAM_BLOCK}: expected one reader of the stored tensor, found {readers}")
    return sch.get_sblock(readers[0])


def _row_loop(sch, consumer):
    """The consumer's output-row loop: its second spatial loop (N, then H in NHWC)."""
    loops = sch.get_loops(consumer)
    spatial = [lp for lp, iv in zip(loops, sch.get(consumer).iter_vars) if int(iv.iter_type) == 0]
    return spatial[1] if len(spatial) > 1 else spatial[0]


def _substitute(expr, values):
    return tvm_ffi.structural_map(expr, (tirx.Var, lambda v: values.get(v, v)))


def _row_start(row_loop, pixel_loop):
    """The copy block at the start of a row: (its realize, the loop values there, source and
    destination loads of the row's first element)."""
    realize = pixel_loop.body
    block, store = realize.block, realize.block.body
    at_row_start = {row_loop.loop_var: tirx.const(0, str(row_loop.extent.ty.dtype)),
                    pixel_loop.loop_var: tirx.const(0, str(pixel_loop.extent.ty.dtype))}
    bindings = {iv.var: _substitute(value, at_row_start) for iv, value in zip(block.iter_vars, realize.iter_values)}
    src = tirx.BufferLoad(store.value.source, [_substitute(i, bindings) for i in store.value.indices])
    dst = tirx.BufferLoad(store.buffer, [_substitute(i, bindings) for i in store.indices])
    return realize, at_row_start, src, dst


def _row_read(row_loop, pixel_loop, in_bounds, rolling):
    """Replace the copy of one row (loops over W and C around the copy block) by an opaque block
    that reads the whole row with one call of the storage interface, when ``in_bounds`` holds
    (and, once RollStreamWindows has run, ``rolling``: kept as an annotation until then)."""
    realize, _, src, dst = _row_start(row_loop, pixel_loop)
    block, store = realize.block, realize.block.body
    width, channels = int(row_loop.extent), int(pixel_loop.extent)
    if channels != int(store.buffer.ty.shape[-1]) or channels != int(store.value.source.ty.shape[-1]):
        raise ValueError(f"{STREAM_BLOCK}: a row of the stored tensor is not contiguous")
    nbytes = width * channels * tvm.runtime.DataType(str(store.buffer.ty.dtype)).bits // 8

    def region(load):
        one = tirx.const(1, str(load.indices[0].ty.dtype))
        extents = [one] * (len(load.indices) - 2) + [tirx.const(width, str(one.ty.dtype)),
                                                     tirx.const(channels, str(one.ty.dtype))]
        return [tvm.ir.Range.from_min_extent(i, e) for i, e in zip(load.indices, extents)]

    def address(load):
        return tirx.call_intrin("handle", "tirx.address_of", load)

    call = tirx.Evaluate(
        tirx.call_extern("int32", STREAM_READ, address(src), address(dst), tirx.const(nbytes, "int32")))
    (src_region,), (dst_region,) = block.reads, block.writes
    row_block = s_tir.SBlock([], [tvm.ir.expr.TensorRegion(src.source, region(src), src_region.ty)],
                             [tvm.ir.expr.TensorRegion(dst.source, region(dst), dst_region.ty)],
                             STREAM_ROW_BLOCK, call, annotations={ROLLING_ATTR: rolling})
    return s_tir.SBlockRealize([], in_bounds, row_block)


@tirx.transform.prim_func_pass(opt_level=0, name="StreamStoredRows")
def StreamStoredRows(func: tirx.PrimFunc, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tirx.PrimFunc:
    """Fetch spilled tensors row window by row window (see module docstring)."""
    sch = s_tir.Schedule(func)
    try:
        stream = sch.get_sblock(STREAM_BLOCK)
    except ScheduleError:
        return func
    inline_injective_producers(sch, sch.get_sblock("root"))  # e.g. the concat between stream and conv
    row_loop_rv = _row_loop(sch, _reader_of(sch, stream))
    sch.compute_at(stream, row_loop_rv)
    stream_loops = sch.get_loops(stream)
    if sch.get(stream_loops[-3]).same_as(sch.get(row_loop_rv)):
        # one input row per output row (an upsampling reader): compute_at left no window loop
        sch.add_unit_loop(stream_loops[-2])
    output_row, slot = (sch.get(lp) for lp in sch.get_loops(stream)[-4:-2])
    # a ring of as many rows as one output row reads at most (a 3x upsampling reader of a 3x3
    # window reads 1 or 2): row r lives in slot r % slots
    slots = max(max(_extents(slot.extent, output_row)), 2)  # transform_layout cannot drop a one-row axis
    sch.transform_layout(stream, ("write", 0), lambda n, h, w, c: (n, tirx.floormod(h, slots), w, c))
    loops = [sch.get(lp) for lp in sch.get_loops(stream)]
    output_row, slot, row_loop, pixel_loop = loops[-4:]  # ... y, window row, then one NHWC row: W x C
    in_bounds, rolling = _rows_to_read(output_row, slot, row_loop, pixel_loop)
    scheduled = sch.mod["main"]
    body = tvm_ffi.structural_map(scheduled.body, (
        tirx.For, lambda loop: _row_read(loop, loop.body, in_bounds, rolling) if loop.same_as(row_loop) else loop))
    row_bytes = int(row_loop.extent) * int(pixel_loop.extent) * tvm.runtime.DataType(
        str(pixel_loop.body.block.body.buffer.ty.dtype)).bits // 8
    rows_read = _count_true(tirx.all(in_bounds, rolling), loops[:-2])
    return scheduled.with_body(body).with_attr(STREAM_BYTES_ATTR, rows_read * row_bytes)


def _rows_to_read(output_row, slot, row_loop, pixel_loop):
    """(rows in bounds, rows not already in the ring): after the first output row only the rows
    the window slid onto (the last ``stride`` of them) need reading — a rolling buffer."""
    realize, at_row_start, src, _ = _row_start(row_loop, pixel_loop)
    in_bounds = _substitute(realize.predicate, at_row_start)
    analyzer = tvm.sym.Analyzer()

    def stored_row(y):
        dtype = str(output_row.extent.ty.dtype)
        return int(analyzer.simplify(_substitute(src.indices[1], {
            output_row.loop_var: tirx.const(y, dtype), slot.loop_var: tirx.const(0, dtype)})))

    dtype = str(slot.extent.ty.dtype)
    steps = {stored_row(y + 1) - stored_row(y) for y in range(int(output_row.extent) - 1)}
    if len(steps) > 1 or not isinstance(slot.extent, tirx.IntImm):
        # windows advance unevenly (an upsampling reader: 0, 1, 0, 1, ...): read a row unless the
        # previous output row's window held it (the ring keeps a whole window)
        first = _substitute(src.indices[1], {slot.loop_var: tirx.const(0, dtype)})
        previous = {output_row.loop_var: output_row.loop_var - tirx.const(1, dtype)}
        previous_end = _substitute(first, previous) + _substitute(slot.extent, previous)
        return in_bounds, tirx.any(output_row.loop_var == tirx.const(0, dtype),
                                   first + slot.loop_var >= previous_end)
    rows = int(slot.extent)
    stride = steps.pop() if steps else rows
    if stride >= rows:
        return in_bounds, tirx.const(True, "bool")
    return in_bounds, tirx.any(output_row.loop_var == tirx.const(0, dtype),
                               slot.loop_var >= tirx.const(rows - stride, dtype))


def _extents(extent, outer):
    """The values a window loop's ``extent`` takes over the iterations of the ``outer`` loop."""
    analyzer = tvm.sym.Analyzer()
    dtype = str(outer.extent.ty.dtype)
    return [int(analyzer.simplify(_substitute(extent, {outer.loop_var: tirx.const(y, dtype)})))
            for y in range(int(outer.extent))]


def _count_true(predicate, loops) -> int:
    """How many iterations of ``loops`` satisfy ``predicate`` (the rows actually read); an inner
    loop's extent may depend on the outer loops' values."""
    analyzer = tvm.sym.Analyzer()

    def count(values, remaining):
        if not remaining:
            return int(bool(analyzer.simplify(_substitute(predicate, values))))
        loop, dtype = remaining[0], str(remaining[0].extent.ty.dtype)
        extent = int(analyzer.simplify(_substitute(loop.extent, values)))
        return sum(count({**values, loop.loop_var: tirx.const(v, dtype)}, remaining[1:]) for v in range(extent))

    return count({}, list(loops))


@tirx.transform.prim_func_pass(opt_level=0, name="RollStreamWindows")
def RollStreamWindows(func: tirx.PrimFunc, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tirx.PrimFunc:
    """Read only the rows the ring does not hold yet. Run after MCUSchedule: a ring filled across
    iterations is not a region the schedule primitives can reason about."""

    def roll(realize):
        block = realize.block
        if block.name_hint != STREAM_ROW_BLOCK or ROLLING_ATTR not in block.annotations:
            return realize
        rolling = block.annotations[ROLLING_ATTR]
        plain = s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, block.body)
        return s_tir.SBlockRealize(realize.iter_values, tirx.all(realize.predicate, rolling), plain)

    return func.with_body(tvm_ffi.structural_map(func.body, (s_tir.SBlockRealize, roll)))
