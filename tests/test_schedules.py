"""Before/Expected tests of the TIR passes: MCUSchedule (no hidden workspace), StreamStoredRows
(a stored tensor read row window by row window through a ring) and RollStreamWindows (each row
read once)."""
import tvm
from tvm.script import tirx as T

from tvm_tinyseg.passes.mcu_schedule import MCUSchedule
from tvm_tinyseg.passes.stream_stored_rows import RollStreamWindows, StreamStoredRows


@T.prim_func(private=True, s_tir=True)
def conv_with_pad_and_epilogue(x: T.Buffer((1, 4, 4, 2), "int8"), w: T.Buffer((2, 3, 3, 2), "int8"),
                               y: T.Buffer((1, 4, 4, 2), "int8")):
    pad = T.sblock_alloc_buffer((1, 6, 6, 2), "int8")
    acc = T.sblock_alloc_buffer((1, 4, 4, 2), "int32")
    for n, h, ww, c in T.grid(1, 6, 6, 2):
        with T.sblock("pad"):
            vn, vh, vw, vc = T.axis.remap("SSSS", [n, h, ww, c])
            pad[vn, vh, vw, vc] = T.if_then_else(1 <= vh and vh < 5 and 1 <= vw and vw < 5,
                                                 x[vn, vh - 1, vw - 1, vc], T.int8(0))
    for n, h, ww, o, rh, rw, rc in T.grid(1, 4, 4, 2, 3, 3, 2):
        with T.sblock("conv"):
            vn, vh, vw, vo, vrh, vrw, vrc = T.axis.remap("SSSSRRR", [n, h, ww, o, rh, rw, rc])
            with T.init():
                acc[vn, vh, vw, vo] = 0
            acc[vn, vh, vw, vo] = acc[vn, vh, vw, vo] + T.Cast("int32", pad[vn, vh + vrh, vw + vrw, vrc]) * T.Cast(
                "int32", w[vo, vrh, vrw, vrc])
    for n, h, ww, o in T.grid(1, 4, 4, 2):
        with T.sblock("requantize"):
            vn, vh, vw, vo = T.axis.remap("SSSS", [n, h, ww, o])
            y[vn, vh, vw, vo] = T.Cast("int8", T.max(T.min(acc[vn, vh, vw, vo] >> 4, 127), -128))


@T.prim_func(private=True, s_tir=True)
def conv_scheduled(x: T.Buffer((1, 4, 4, 2), "int8"), w: T.Buffer((2, 3, 3, 2), "int8"),
                   y: T.Buffer((1, 4, 4, 2), "int8")):
    # the pad is read straight from x, the accumulator is one value per output (compacted to a
    # scalar by the lowering), and the requantization runs as soon as that value is complete
    acc = T.sblock_alloc_buffer((1, 4, 4, 2), "int32")
    for n, h, ww, o in T.grid(1, 4, 4, 2):
        with T.sblock("conv_init"):
            vn, vh, vw, vo = T.axis.remap("SSSS", [n, h, ww, o])
            T.reads()
            T.writes(acc[vn, vh, vw, vo])
            acc[vn, vh, vw, vo] = 0
        for rh, rw, rc in T.grid(3, 3, 2):
            with T.sblock("conv_update"):
                vn, vh, vw, vo, vrh, vrw, vrc = T.axis.remap("SSSSRRR", [n, h, ww, o, rh, rw, rc])
                T.reads(acc[vn, vh, vw, vo], x[vn, vh + vrh - 1, vw + vrw - 1, vrc], w[vo, vrh, vrw, vrc])
                T.writes(acc[vn, vh, vw, vo])
                acc[vn, vh, vw, vo] = acc[vn, vh, vw, vo] + T.Cast("int32", T.if_then_else(
                    1 <= vh + vrh and vh + vrh < 5 and 1 <= vw + vrw and vw + vrw < 5,
                    x[vn, vh + vrh - 1, vw + vrw - 1, vrc], T.int8(0))) * T.Cast("int32", w[vo, vrh, vrw, vrc])
        with T.sblock("requantize"):
            vn = T.axis.spatial(1, 0)
            vh, vw, vo = T.axis.remap("SSS", [h, ww, o])
            T.reads(acc[vn, vh, vw, vo])
            T.writes(y[vn, vh, vw, vo])
            y[vn, vh, vw, vo] = T.Cast("int8", T.max(T.min(acc[vn, vh, vw, vo] >> 4, 127), -128))


def test_mcu_schedule_inlines_the_pad_and_fuses_the_epilogue():
    after = MCUSchedule(tvm.IRModule({"main": conv_with_pad_and_epilogue}))["main"]
    tvm.ir.assert_structural_equal(after, conv_scheduled)


I64 = T.int64


@T.prim_func(private=True, s_tir=True)
def conv_of_a_stored_tensor(stored: T.Buffer((I64(1), I64(4), I64(3), I64(2)), "int8"),
                            w: T.Buffer((I64(3), I64(2)), "int8"), y: T.Buffer((I64(1), I64(4), I64(3)), "int32")):
    # a 3x1 convolution reading the whole stored tensor through a tinyseg_stream copy
    window = T.sblock_alloc_buffer((I64(1), I64(4), I64(3), I64(2)), "int8")
    for n, h, ww, c in T.grid(I64(1), I64(4), I64(3), I64(2)):
        with T.sblock("tinyseg_stream"):
            vn, vh, vw, vc = T.axis.remap("SSSS", [n, h, ww, c])
            window[vn, vh, vw, vc] = stored[vn, vh, vw, vc]
    for n, h, ww, rh, rc in T.grid(I64(1), I64(4), I64(3), I64(3), I64(2)):
        with T.sblock("conv"):
            vn, vh, vw, vrh, vrc = T.axis.remap("SSSRR", [n, h, ww, rh, rc])
            with T.init():
                y[vn, vh, vw] = 0
            y[vn, vh, vw] = y[vn, vh, vw] + T.Cast("int32", T.if_then_else(
                I64(1) <= vh + vrh and vh + vrh < I64(5), window[vn, vh + vrh - I64(1), vw, vrc], T.int8(0))) * T.Cast(
                "int32", w[vrh, vrc])


def _conv_streamed(rolled: bool):
    # a ring of 3 rows (the kernel height) replaces the whole copy; output row h first reads the
    # rows it needs (h-1..h+1, in bounds) into slot row % 3 — RollStreamWindows then keeps only
    # the row the window slid onto (all three for the first output row)
    in_bounds = "I64(1) <= h + ax0 and h + ax0 < I64(5)"
    rolling = "(h == I64(0) or ax0 >= I64(2))"
    where = f"{in_bounds} and {rolling}" if rolled else in_bounds
    attr = "" if rolled else f"\n                T.sblock_attr({{'tinyseg.rolling': {rolling[1:-1]}}})"
    source = f'''
@T.prim_func(private=True, s_tir=True)
def streamed(stored: T.Buffer((I64(1), I64(4), I64(3), I64(2)), "int8"), w: T.Buffer((I64(3), I64(2)), "int8"),
             y: T.Buffer((I64(1), I64(4), I64(3)), "int32")):
    T.func_attr({{"tinyseg.stream_read_bytes": 24}})
    window = T.sblock_alloc_buffer((I64(1), I64(3), I64(3), I64(2)), "int8")
    for n, h in T.grid(I64(1), I64(4)):
        for ax0 in range(I64(3)):
            with T.sblock("tinyseg_stream_row"):
                T.where({where})
                T.reads(stored[I64(0), h - I64(1) + ax0, I64(0):I64(3), I64(0):I64(2)])
                T.writes(window[I64(0), (h - I64(1) + ax0) % I64(3), I64(0):I64(3), I64(0):I64(2)]){attr}
                T.call_extern("int32", "tinyseg_stream_read",
                              T.address_of(stored[I64(0), h - I64(1) + ax0, I64(0), I64(0)]),
                              T.address_of(window[I64(0), (h - I64(1) + ax0) % I64(3), I64(0), I64(0)]), 6)
        for ww, rh, rc in T.grid(I64(3), I64(3), I64(2)):
            with T.sblock("conv"):
                vn, vh, vw, vrh, vrc = T.axis.remap("SSSRR", [n, h, ww, rh, rc])
                T.reads(window[vn, (vh + vrh + I64(-1)) % I64(3), vw, vrc], w[vrh, vrc])
                T.writes(y[vn, vh, vw])
                with T.init():
                    y[vn, vh, vw] = 0
                y[vn, vh, vw] = y[vn, vh, vw] + T.Cast("int32", T.if_then_else(
                    I64(1) <= vh + vrh and vh + vrh < I64(5), window[vn, (vh + vrh + I64(-1)) % I64(3), vw, vrc],
                    T.int8(0))) * T.Cast("int32", w[vrh, vrc])
'''
    return tvm.script.from_source(source, extra_vars={"T": T, "I64": I64})


def _reparsed(func):
    # the pass types T.address_of's pointer as int8*, the parser as void*: compare what the script shows
    return tvm.script.from_source(func.script())


def test_stream_stored_rows_reads_a_ring_of_row_windows():
    after = StreamStoredRows(tvm.IRModule({"main": conv_of_a_stored_tensor}))
    tvm.ir.assert_structural_equal(_reparsed(after["main"]), _conv_streamed(rolled=False))


def test_roll_stream_windows_reads_each_stored_row_once():
    after = RollStreamWindows(StreamStoredRows(tvm.IRModule({"main": conv_of_a_stored_tensor})))
    tvm.ir.assert_structural_equal(_reparsed(after["main"]), _conv_streamed(rolled=True))


@T.prim_func(private=True, s_tir=True)
def conv_eight_channels(x: T.Buffer((1, 4, 4, 2), "int8"), w: T.Buffer((8, 3, 3, 2), "int8"),
                        y: T.Buffer((1, 4, 4, 8), "int8")):
    acc = T.sblock_alloc_buffer((1, 4, 4, 8), "int32")
    for n, h, ww, o, rh, rw, rc in T.grid(1, 4, 4, 8, 3, 3, 2):
        with T.sblock("conv"):
            vn, vh, vw, vo, vrh, vrw, vrc = T.axis.remap("SSSSRRR", [n, h, ww, o, rh, rw, rc])
            with T.init():
                acc[vn, vh, vw, vo] = 0
            acc[vn, vh, vw, vo] = acc[vn, vh, vw, vo] + T.Cast("int32", x[vn, vh, vw, vrc]) * T.Cast(
                "int32", w[vo, vrh, vrw, vrc])
    for n, h, ww, o in T.grid(1, 4, 4, 8):
        with T.sblock("requantize"):
            vn, vh, vw, vo = T.axis.remap("SSSS", [n, h, ww, o])
            y[vn, vh, vw, vo] = T.Cast("int8", T.max(T.min(acc[vn, vh, vw, vo] >> 4, 127), -128))


def test_mcu_schedule_tiles_output_channels_under_the_reduction():
    """Each input value feeds 8 accumulators: the 8 output channels are an unrolled loop inside
    the reduction loops (rh, rw, rc), not around them."""
    after = MCUSchedule(tvm.IRModule({"main": conv_eight_channels}))["main"]
    sch = tvm.s_tir.Schedule(after)
    loops = [sch.get(loop) for loop in sch.get_loops(sch.get_sblock("conv_update"))]
    assert [int(loop.extent) for loop in loops[-4:]] == [3, 3, 2, 8]
    assert loops[-1].kind == tvm.tirx.ForKind.UNROLLED
