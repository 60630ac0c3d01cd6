"""MCUSchedule: a TIR schedule that leaves kernels no hidden workspace.

TOPI legalization materialises whole intermediate buffers inside a kernel (a padded copy of the
input, a dilated input, the conv accumulator before its bias/requantize epilogue). On a
microcontroller each of those is RAM nobody planned for. This pass rewrites every PrimFunc so that:

* injective producers (pad, dilate, casts, bias adds) are inlined into their consumer;
* the epilogue of a reduction is computed under the reduction's last spatial loop, so the
  accumulator shrinks to one scalar per output (per tile, below);
* the reduction's initialisation is hoisted out of the reduction loops (one store per output,
  and no "maybe uninitialized" accumulator for the C compiler to warn about);
* the innermost spatial loop (output channels, NHWC) is tiled by ``REGISTER_TILES``, the tile
  unrolled under the reduction: each input value loaded once feeds that many accumulators,
  which the C compiler keeps in registers.
"""
import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError

STREAM_BLOCK = "tinyseg_stream"  # passes/stream_stored_rows.py
# accumulators per tile, widest first: 8 and their operands fit Cortex-M's 13 registers
REGISTER_TILES = (8, 4)


def _is_reduction(sch, block) -> bool:
    return any(int(iv.iter_type) != 0 for iv in sch.get(block).iter_vars)


def inline_injective_producers(sch, root) -> None:
    """compute_inline every injective block but outputs and tinyseg_stream blocks, to a fixpoint."""
    changed = True
    while changed:
        changed = False
        outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(root)}
        for block in sch.get_child_blocks(root):
            name = sch.get(block).name_hint
            if name in outputs or name == STREAM_BLOCK or _is_reduction(sch, block):
                continue  # (a tinyseg_stream block is scheduled by StreamStoredRows)
            try:
                sch.compute_inline(block)
            except ScheduleError:
                continue
            changed = True
            break


def _tile_innermost_spatial_loop(sch, block, n_spatial) -> None:
    """Move a slice of the last spatial loop (the widest of REGISTER_TILES dividing it) under
    the reduction, unrolled."""
    loops = sch.get_loops(block)
    if len(loops) <= n_spatial or n_spatial == 0:
        return
    extent = sch.get(loops[n_spatial - 1]).extent
    width = next((w for w in REGISTER_TILES if isinstance(extent, tirx.IntImm) and int(extent) % w == 0), None)
    if width is None:
        return
    _, tile = sch.split(loops[n_spatial - 1], [None, width])
    try:
        sch.reorder(*sch.get_loops(block)[n_spatial + 1:], tile)
    except ScheduleError:  # other blocks between the loops (softmax's row max and sum): split only
        return
    sch.unroll(tile)


def _fuse_epilogues(sch, root) -> None:
    for block in sch.get_child_blocks(root):
        if not _is_reduction(sch, block):
            continue
        n_spatial = sum(1 for iv in sch.get(block).iter_vars if int(iv.iter_type) == 0)
        _tile_innermost_spatial_loop(sch, block, n_spatial)
        loops = sch.get_loops(block)
        for consumer in sch.get_consumers(block):
            try:
                sch.reverse_compute_at(consumer, loops[n_spatial - 1])
            except ScheduleError:
                pass  # the epilogue stays a separate loop nest over a full accumulator
        if len(loops) > n_spatial:
            sch.decompose_reduction(block, loops[n_spatial])


@tirx.transform.prim_func_pass(opt_level=0, name="MCUSchedule")
def MCUSchedule(func: tirx.PrimFunc, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tirx.PrimFunc:
    """Inline injective producers and fuse epilogues into reductions (see module docstring)."""
    sch = s_tir.Schedule(func)
    try:
        root = sch.get_sblock("root")
    except ScheduleError:
        return func  # already lowered / no block structure
    inline_injective_producers(sch, root)
    _fuse_epilogues(sch, root)
    return sch.mod["main"]
