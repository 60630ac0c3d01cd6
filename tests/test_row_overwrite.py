"""Row overwriting: which kernels may write their output over input rows they no longer need, how
far below the input the output must start (the lead), and what it buys end to end."""
import os

import numpy as np
import pytest
import tvm
from conftest import MODELS, seeded_input, tflm_reference
from tvm import te
from tvm.script import tirx as T

from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.pass_config import register_options
from tvm_tinyseg.boards import host
from tvm_tinyseg.passes.arena_planner import Buffer, peak_live_bytes, plan_arena
from tvm_tinyseg.passes.row_overwrite import Overwrite, row_overwrite_lead, with_overwrites

H, W, C = 6, 4, 2
ROW = W * C  # bytes of one int8 NHWC row


def _conv3x3_rows(x_rows=H, stride=1, channels_out=C):
    """A 3x3 'same' box filter over rows and columns (the access pattern of a 3x3 conv)."""
    x = te.placeholder((1, x_rows, W, C), "int8", "x")
    rows = (x_rows + stride - 1) // stride
    ry, rx = te.reduce_axis((0, 3), "ry"), te.reduce_axis((0, 3), "rx")

    def at(n, h, w, c):
        y, xx = h * stride + ry - 1, w + rx - 1
        inside = tvm.tirx.all(y >= 0, y < x_rows, xx >= 0, xx < W)
        return te.sum(tvm.tirx.if_then_else(inside, x[n, y, xx, c % C], tvm.tirx.const(0, "int8")), axis=[ry, rx])

    y = te.compute((1, rows, W, channels_out), at, name="y")
    return te.create_prim_func([x, y])


def test_a_3x3_conv_needs_its_output_two_rows_below_its_input():
    # writing row h kills nothing above row h-1: the output trails the input by two rows
    assert row_overwrite_lead(_conv3x3_rows(), 0, 1) == 2 * ROW


def test_a_strided_conv_trails_by_one_output_row():
    # row h reads input rows 2h-1..2h+1; output row h (half the input's rows) fits below row 2h-1
    lead = row_overwrite_lead(_conv3x3_rows(stride=2), 0, 1)
    assert lead == max((h + 1) * ROW - max(0, 2 * h - 1) * ROW for h in range(H // 2))


def test_more_output_channels_than_input_need_a_longer_lead():
    lead = row_overwrite_lead(_conv3x3_rows(channels_out=2 * C), 0, 1)
    out_row = 2 * ROW
    assert lead == max((h + 1) * out_row - max(0, h - 1) * ROW for h in range(H))


@T.prim_func(private=True, s_tir=True)
def _reads_every_row(x: T.Buffer((1, 6, 4, 2), "int8"), y: T.Buffer((1, 6, 4, 2), "int8")):
    # each output row is the column sum over the whole input: no input row ever dies early
    for h, w, c, r in T.grid(6, 4, 2, 6):
        with T.sblock("colsum"):
            vh, vw, vc, vr = T.axis.remap("SSSR", [h, w, c, r])
            with T.init():
                y[0, vh, vw, vc] = T.int8(0)
            y[0, vh, vw, vc] = y[0, vh, vw, vc] + x[0, vr, vw, vc]


@T.prim_func(private=True, s_tir=True)
def _channel_outer(x: T.Buffer((1, 6, 4, 2), "int8"), y: T.Buffer((1, 6, 4, 2), "int8")):
    # channel-major order: the outer loop does not walk output rows
    for c, h, w in T.grid(2, 6, 4):
        with T.sblock("copy"):
            vc, vh, vw = T.axis.remap("SSS", [c, h, w])
            y[0, vh, vw, vc] = x[0, vh, vw, vc]


@T.prim_func(private=True, s_tir=True)
def _two_nests(x: T.Buffer((1, 6, 4, 2), "int8"), y: T.Buffer((1, 6, 4, 2), "int8")):
    for h, w, c in T.grid(6, 4, 2):
        with T.sblock("copy"):
            vh, vw, vc = T.axis.remap("SSS", [h, w, c])
            y[0, vh, vw, vc] = x[0, vh, vw, vc]
    for h, w, c in T.grid(6, 4, 2):
        with T.sblock("again"):
            vh, vw, vc = T.axis.remap("SSS", [h, w, c])
            y[0, vh, vw, vc] = y[0, vh, vw, vc] + x[0, 5 - vh, vw, vc]


@pytest.mark.parametrize("func", [_reads_every_row, _channel_outer, _two_nests],
                         ids=["reads every row", "channel outer", "two loop nests"])
def test_kernels_that_need_their_whole_input_do_not_qualify(func):
    assert row_overwrite_lead(func, 0, 1) is None


def test_the_planner_lets_an_output_start_its_lead_below_its_input():
    x, y = Buffer("x", 96, 0, 1), Buffer("y", 96, 1, 2, overwrites="x", lead=32)
    plan = plan_arena([x, y], "exact")
    assert plan.size == 128 == peak_live_bytes([x, y])
    assert plan.offsets["y"] + 32 <= plan.offsets["x"]
    plan.offsets["y"] = plan.offsets["x"] - 16  # too close: it would clobber rows still to be read
    with pytest.raises(AssertionError, match="overlap"):
        plan.check()


def test_with_overwrites_skips_an_input_that_left_ram_earlier():
    # both inputs of a concat+conv qualify; the spilled one (ends at step 3) cannot be overwritten
    up, skip, out = Buffer("up", 64, 4, 5), Buffer("skip", 64, 0, 3), Buffer("out", 64, 5, 6)
    candidates = [Overwrite("skip", "out", 16), Overwrite("up", "out", 32)]
    chosen = {b.name: (b.overwrites, b.lead) for b in with_overwrites([up, skip, out], candidates)}
    assert chosen["out"] == ("up", 32) and chosen["skip"] == (None, 0)


def test_exact_beats_best_of_where_a_long_lived_buffer_is_overwritten():
    buffers = [Buffer("t0", 48, 2, 2), Buffer("t1", 96, 4, 4, overwrites="t2", lead=32), Buffer("t2", 96, 1, 4)]
    assert plan_arena(buffers, "best_of").size > plan_arena(buffers, "exact").size == peak_live_bytes(buffers) == 144


@pytest.mark.parametrize("storage", ["mmap", pytest.param("file", marks=pytest.mark.slow)])
def test_overwriting_rows_shrinks_the_arena_and_keeps_the_output(storage, tmp_path):
    model = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
    x = seeded_input((1, 32, 32, 1), np.int8, 0)
    expected = tflm_reference(model, x)
    results = {}
    register_options()
    for overwrite in (False, True):
        # without row streaming, which would make up for the overwrites at the smallest arena
        with tvm.transform.PassContext(config={"tinyseg.overwrite_rows": overwrite, "tinyseg.stream_rows": False}):
            result = compile_model(model, str(tmp_path / f"{storage}{overwrite}"), ram_budget=-1,
                                       storage=storage)
        results[overwrite] = result.memory_report
        np.testing.assert_array_equal(host.run(str(tmp_path / f"{storage}{overwrite}"), x), expected)
    assert results[False]["overwrites"] == []
    assert results[True]["overwrites"] and results[True]["arena_bytes"] < results[False]["arena_bytes"]
