"""Before/Expected tests of HoistTapConditions (passes/hoist_tap_conditions.py) on lowered loops."""
import tvm
from tvm.script import tirx as T

from tvm_tinyseg.passes.hoist_tap_conditions import HoistTapConditions


def _run(func):
    return HoistTapConditions(tvm.IRModule({"main": func}))["main"]


@T.prim_func(private=True)
def guarded_taps(x: T.Buffer((4, 4, 8), "int8"), w: T.Buffer((3, 3, 8), "int8"), y: T.Buffer((4, 4), "int32")):
    for h, ww in T.grid(4, 4):
        y[h, ww] = 0
        for ry, rx, rc in T.grid(3, 3, 8):
            y[h, ww] = y[h, ww] + T.if_then_else(
                1 <= h + ry and h + ry < 5 and 1 <= ww + rx and ww + rx < 5,
                T.Cast("int32", x[h + ry - 1, ww + rx - 1, rc]) + 3, 0) * T.Cast("int32", w[ry, rx, rc])


@T.prim_func(private=True)
def taps_tested_per_row_and_column(x: T.Buffer((4, 4, 8), "int8"), w: T.Buffer((3, 3, 8), "int8"),
                                   y: T.Buffer((4, 4), "int32")):
    for h, ww in T.grid(4, 4):
        y[h, ww] = 0
        for ry in range(3):
            if 1 <= h + ry and h + ry < 5:
                for rx in range(3):
                    if 1 <= ww + rx and ww + rx < 5:
                        for rc in range(8):
                            y[h, ww] = y[h, ww] + (T.Cast("int32", x[h + ry - 1, ww + rx - 1, rc]) + 3) * T.Cast(
                                "int32", w[ry, rx, rc])


def test_bounds_tests_leave_the_channel_loop():
    tvm.ir.assert_structural_equal(_run(guarded_taps), taps_tested_per_row_and_column)


@T.prim_func(private=True)
def concatenated_channels(a: T.Buffer((4, 3), "int8"), b: T.Buffer((4, 5), "int8"), w: T.Buffer((8,), "int8"),
                          y: T.Buffer((4,), "int32")):
    for h in range(4):
        y[h] = 0
        for rc in range(8):
            y[h] = y[h] + T.Cast("int32", T.if_then_else(3 <= rc, b[h, rc - 3], a[h, rc])) * T.Cast("int32", w[rc])


@T.prim_func(private=True)
def one_loop_per_input(a: T.Buffer((4, 3), "int8"), b: T.Buffer((4, 5), "int8"), w: T.Buffer((8,), "int8"),
                       y: T.Buffer((4,), "int32")):
    for h in range(4):
        y[h] = 0
        for rc in range(3):
            y[h] = y[h] + T.Cast("int32", a[h, rc]) * T.Cast("int32", w[rc])
        for rc in range(3, 8):
            y[h] = y[h] + T.Cast("int32", b[h, rc - 3]) * T.Cast("int32", w[rc])


def test_a_channel_select_splits_the_loop():
    tvm.ir.assert_structural_equal(_run(concatenated_channels), one_loop_per_input, map_free_vars=True)


@T.prim_func(private=True)
def guard_on_the_channel(x: T.Buffer((8,), "int8"), w: T.Buffer((8,), "int8"), y: T.Buffer((1,), "int32")):
    # the guard depends on the reduced channel, and a plain store is no accumulation: both stay
    for rc in range(8):
        y[0] = y[0] + T.if_then_else(rc % 2 == 0, T.Cast("int32", x[rc]), 0) * T.Cast("int32", w[rc])
    for rc in range(8):
        y[0] = T.if_then_else(y[0] < 5, T.Cast("int32", x[rc]), 0) * T.Cast("int32", w[rc])


def test_guards_that_are_not_per_tap_stay():
    tvm.ir.assert_structural_equal(_run(guard_on_the_channel), guard_on_the_channel)
