"""Spilling under a RAM budget: victim choice, the IR rewrite, and whole models that still match
TFLite Micro bit for bit with their skip tensors in storage."""
import os
import re

import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from conftest import MODELS, SEEDS, int8_zoo, run_tinyseg, seeded_input, tflm_reference
from int8_net import Net
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.pass_config import register_options
from tvm_tinyseg.passes.arena_planner import peak_live_bytes
from tvm_tinyseg.passes.insert_spill_fetch import InsertSpillFetch
from tvm_tinyseg.passes.lifetime import LifetimeTable, Tensor, analyze_lifetimes
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE, BudgetError, Spill, choose_spills
from tvm_tinyseg.boards import host
from tvm_tinyseg.boards.model_io import io_spec

TINYUNET = os.path.join(MODELS, "tinyunet_80x120.tflite")


# ---- victim choice ---------------------------------------------------------------------------
def _table(*tensors):
    return LifetimeTable([], {t.name: t for t in tensors}, [], [], "")


def test_fewest_bytes_moved_beats_longest_cold_range():
    # Both fit the budget when spilled; the long-idle tensor is bigger and is read twice.
    long_idle = Tensor("long", (1,), "int8", 1000, 0, [1, 9, 10])
    short_idle = Tensor("short", (1,), "int8", 600, 2, [3, 6])
    busy = Tensor("busy", (1,), "int8", 500, 4, [5])
    plan = choose_spills(_table(long_idle, short_idle, busy), 1700, reads_in_place=True)
    assert [s.tensor for s in plan.spills] == ["short"]
    assert plan.arena_bytes <= 1700 and plan.moved_bytes == 1200


def test_no_spill_when_the_arena_fits():
    plan = choose_spills(_table(Tensor("a", (1,), "int8", 64, 0, [5])), 64, reads_in_place=True)
    assert plan.spills == [] and plan.arena_bytes == 64


def test_impossible_budget_names_the_smallest_feasible_one():
    a = Tensor("a", (1,), "int8", 1024, 0, [1, 5])
    b = Tensor("b", (1,), "int8", 512, 2, [3])  # lives while a is idle
    with pytest.raises(BudgetError, match="smallest feasible arena is 1024 B"):
        choose_spills(_table(a, b), 100, reads_in_place=True)
    assert choose_spills(_table(a, b), SMALLEST_FEASIBLE, reads_in_place=True).arena_bytes == 1024


def test_a_fetched_copy_costs_ram_from_its_consumer_on():
    a = Tensor("a", (1,), "int8", 1024, 0, [1, 5])
    b = Tensor("b", (1,), "int8", 2048, 4, [5])
    plan = choose_spills(_table(a, b), SMALLEST_FEASIBLE, reads_in_place=False)
    assert plan.arena_bytes == 3072  # at step 5 the fetched a and b are both needed


# ---- the IR rewrite ----------------------------------------------------------------------------
@I.ir_module
class Skip:
    # int64 extents, like every kernel LegalizeOps and call_te produce
    @T.prim_func(s_tir=True)
    def unary(x: T.Buffer((T.int64(4), T.int64(8)), "int8"), y: T.Buffer((T.int64(4), T.int64(8)), "int8")):
        for i, j in T.grid(T.int64(4), T.int64(8)):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj]

    @T.prim_func(s_tir=True)
    def binary(x: T.Buffer((T.int64(4), T.int64(8)), "int8"), z: T.Buffer((T.int64(4), T.int64(8)), "int8"),
               y: T.Buffer((T.int64(4), T.int64(8)), "int8")):
        for i, j in T.grid(T.int64(4), T.int64(8)):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] + z[vi, vj]

    @R.function
    def main(x: R.Tensor((4, 8), "int8")) -> R.Tensor((4, 8), "int8"):
        cls = Skip
        with R.dataflow():
            a = R.call_tir(cls.unary, (x,), out_ty=R.Tensor((4, 8), "int8"))
            b = R.call_tir(cls.unary, (a,), out_ty=R.Tensor((4, 8), "int8"))
            c = R.call_tir(cls.unary, (b,), out_ty=R.Tensor((4, 8), "int8"))
            d = R.call_tir(cls.binary, (c, a), out_ty=R.Tensor((4, 8), "int8"))
            R.output(d)
        return d


SPILL_A = [Spill("a", 32, 1, 3, 1)]


def _steps(mod):
    table = analyze_lifetimes(mod["main"], mod)
    return [(s.kind, s.args, s.output) for s in table.steps], table


@I.ir_module
class SpilledA:
    """Skip after InsertSpillFetch(spill a after step 1, fetch it for step 3, unfused)."""

    @T.prim_func(s_tir=True)
    def unary(x: T.Buffer((T.int64(4), T.int64(8)), "int8"), y: T.Buffer((T.int64(4), T.int64(8)), "int8")):
        for i, j in T.grid(T.int64(4), T.int64(8)):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj]

    @T.prim_func(s_tir=True)
    def binary(x: T.Buffer((T.int64(4), T.int64(8)), "int8"), z: T.Buffer((T.int64(4), T.int64(8)), "int8"),
               y: T.Buffer((T.int64(4), T.int64(8)), "int8")):
        for i, j in T.grid(T.int64(4), T.int64(8)):
            with T.sblock("y"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] + z[vi, vj]

    @T.prim_func(private=True, s_tir=True)
    def tinyseg_spill_4x8(src: T.Buffer((T.int64(4), T.int64(8)), "int8"),
                          tinyseg_spill: T.Buffer((T.int64(4), T.int64(8)), "int8")):
        T.func_attr({"op_pattern": 2, "tinyseg.storage_op": "spill", "tirx.noalias": True})
        for i0, i1 in T.grid(T.int64(4), T.int64(8)):
            with T.sblock("tinyseg_spill"):
                v_i0 = T.axis.spatial((0, T.int64(4)), i0)  # te.create_prim_func: int32 min, int64 extent
                v_i1 = T.axis.spatial((0, T.int64(8)), i1)
                tinyseg_spill[v_i0, v_i1] = src[v_i0, v_i1]

    @T.prim_func(private=True, s_tir=True)
    def tinyseg_fetch_4x8(src: T.Buffer((T.int64(4), T.int64(8)), "int8"),
                          tinyseg_fetch: T.Buffer((T.int64(4), T.int64(8)), "int8")):
        T.func_attr({"op_pattern": 2, "tinyseg.storage_op": "fetch", "tirx.noalias": True})
        for i0, i1 in T.grid(T.int64(4), T.int64(8)):
            with T.sblock("tinyseg_fetch"):
                v_i0 = T.axis.spatial((0, T.int64(4)), i0)  # te.create_prim_func: int32 min, int64 extent
                v_i1 = T.axis.spatial((0, T.int64(8)), i1)
                tinyseg_fetch[v_i0, v_i1] = src[v_i0, v_i1]

    @R.function
    def main(x: R.Tensor((4, 8), "int8")) -> R.Tensor((4, 8), "int8"):
        cls = SpilledA
        with R.dataflow():
            a = R.call_tir(cls.unary, (x,), out_ty=R.Tensor((4, 8), "int8"))
            b = R.call_tir(cls.unary, (a,), out_ty=R.Tensor((4, 8), "int8"))
            a_stored = R.call_tir(cls.tinyseg_spill_4x8, (a,), out_ty=R.Tensor((4, 8), "int8"))
            c = R.call_tir(cls.unary, (b,), out_ty=R.Tensor((4, 8), "int8"))
            a_fetched = R.call_tir(cls.tinyseg_fetch_4x8, (a_stored,), out_ty=R.Tensor((4, 8), "int8"))
            d = R.call_tir(cls.binary, (c, a_fetched), out_ty=R.Tensor((4, 8), "int8"))
            R.output(d)
        return d


def test_insert_spill_fetch_matches_expected_module():
    after = InsertSpillFetch(SPILL_A, storage="file", fuse_fetch=False)(Skip)
    tvm.ir.assert_structural_equal(after, SpilledA)


def test_unfused_fetch_spills_after_the_last_early_use_and_fetches_before_the_consumer():
    steps, table = _steps(InsertSpillFetch(SPILL_A, storage="file", fuse_fetch=False)(Skip))
    assert steps == [("kernel", ["x"], "a"), ("kernel", ["a"], "b"), ("spill", ["a"], "a_stored"),
                     ("kernel", ["b"], "c"), ("fetch", ["a_stored"], "a_fetched"),
                     ("kernel", ["c", "a_fetched"], "d")]
    assert table.tensors["a_stored"].in_storage and not table.tensors["a_fetched"].in_storage
    assert table.tensors["a"].last == 2  # no RAM for a while c is computed


def test_block_storage_is_streamed_into_the_fused_consumer():
    with tvm.target.Target("c"):
        after = InsertSpillFetch(SPILL_A, storage="file", fuse_fetch=True)(Skip)
    steps, table = _steps(after)
    assert [k for k, _, _ in steps] == ["kernel", "kernel", "spill", "kernel", "kernel"]
    assert table.steps[-1].kernel == "tinyseg_stream_into_binary"
    assert not table.tensors["a"].live_at(3)


def test_memory_mapped_storage_is_read_in_place_by_the_fused_consumer():
    with tvm.target.Target("c"):
        after = InsertSpillFetch(SPILL_A, storage="mmap", fuse_fetch=True)(Skip)
    steps, table = _steps(after)
    assert [k for k, _, _ in steps] == ["kernel", "kernel", "spill", "kernel", "kernel"]
    assert sorted(steps[-1][1]) == ["a_stored", "c"]  # the consumer's kernel reads the stored copy
    assert table.steps[-1].kernel == "tinyseg_fetch_into_binary"
    assert table.tensors["a"].last == 2 and table.tensors["a_stored"].in_storage  # RAM freed after the spill


# ---- whole models ---------------------------------------------------------------------------
def _assert_exact(model, out_dir, stats=None, exe=None):
    exe = exe or host.build(out_dir)
    spec = io_spec(out_dir)["input"]
    for seed in SEEDS:
        x = seeded_input(spec["shape"], spec["dtype"], seed)
        y = host.run(out_dir, x, exe, stats)
        np.testing.assert_array_equal(y, tflm_reference(model, x))


@pytest.mark.parametrize("model", [pytest.param(p, id=os.path.basename(p),
                                                marks=[] if "32x32" in p else [pytest.mark.slow])
                                   for p in int8_zoo()])
def test_zoo_at_smallest_and_intermediate_budgets_matches_tflite_micro(model, compiled_zoo, tmp_path):
    unconstrained = compiled_zoo.get(model)[0].memory_report["arena_bytes"]
    smallest, out_dir, exe = compiled_zoo.get(model, ram_budget=SMALLEST_FEASIBLE, storage="mmap")
    report = smallest.memory_report
    assert report["arena_bytes"] <= unconstrained
    stats = {}
    _assert_exact(model, out_dir, stats, exe)
    assert stats["storage_written"] + stats["storage_read"] == report["moved_bytes"]  # reads through the map count
    if report["arena_bytes"] < unconstrained:
        # smaller through spills, or through row-streamed chains (which move nothing)
        assert (report["spilled"] and report["storage_bytes"] > 0 and report["moved_bytes"] > 0) \
            or report["streamed_chains"]
        budget = (report["arena_bytes"] + unconstrained) // 2
        middle = compile_model(model, tmp_path / "mid", ram_budget=budget, storage="mmap").memory_report
        assert middle["arena_bytes"] <= budget
        _assert_exact(model, str(tmp_path / "mid"))


@pytest.mark.parametrize("model", [pytest.param(p, id=os.path.basename(p),
                                                marks=[] if "32x32" in p else [pytest.mark.slow])
                                   for p in int8_zoo()])
def test_zoo_on_block_storage_at_the_smallest_budget_matches_tflite_micro(model, compiled_zoo):
    result, out_dir, exe = compiled_zoo.get(model, ram_budget=SMALLEST_FEASIBLE, storage="file")
    report = result.memory_report
    stats = {}
    _assert_exact(model, out_dir, stats, exe)
    assert stats["storage_written"] + stats["storage_read"] == report["moved_bytes"]


@pytest.mark.slow
def test_tinyunet_is_more_than_half_below_tflite_micro(compiled_zoo):
    result, out_dir, exe = compiled_zoo.get(TINYUNET, ram_budget=SMALLEST_FEASIBLE, storage="mmap")
    tflm_arena = 508_744  # benchmarks/results.json, measured by bisection on the interpreter's arena size
    assert result.memory_report["arena_bytes"] <= 0.4 * tflm_arena
    _assert_exact(TINYUNET, out_dir, exe=exe)


def _skip_heavy_model(path):
    """x → a (skip) → wide conv → wide conv → narrow conv → ADD(·, a): spilling a helps even when
    it is fetched back into RAM, because the peak is in the middle."""
    net = Net((1, 12, 12, 4))
    a = net.conv(net.x, 8, kernel=1)
    wide = net.conv(net.conv(a, 24), 24)
    y = net.binary("ADD", net.conv(wide, 8, kernel=1), a, out_q=(0.1, 2))
    return net.save(path, y)


def test_file_storage_round_trips_through_a_real_file(tmp_path):
    model = _skip_heavy_model(tmp_path / "skip.tflite")
    plain = compile_model(model).memory_report["arena_bytes"]
    result = compile_model(model, tmp_path / "c", ram_budget=SMALLEST_FEASIBLE, storage="file")
    report = result.memory_report
    assert report["arena_bytes"] < plain and [s["tensor"] for s in report["spilled"]]
    stats = {}
    _assert_exact(model, str(tmp_path / "c"), stats)
    spilled = sum(s["bytes"] for s in report["spilled"])
    assert stats["storage_written"] == spilled and stats["storage_read"] == spilled
    assert report["moved_bytes"] == 2 * spilled


def test_pass_context_budget_changes_the_emitted_arena(tmp_path):
    register_options()
    plain = compile_model(TINYUNET).memory_report["arena_bytes"]
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 140_000, "tinyseg.storage": "mmap"}):
        result = compile_model(TINYUNET, tmp_path)
    assert plain > 140_000 >= result.memory_report["arena_bytes"]
    header = (tmp_path / "tinyseg_model.h").read_text()
    assert f"#define TINYSEG_ARENA_BYTES {result.memory_report['arena_bytes']}u" in header


@pytest.mark.slow
def test_cli_budget_below_the_smallest_feasible_is_one_clear_line(tmp_path):
    proc = run_tinyseg("compile", TINYUNET, "-o", tmp_path, "--ram-budget", "8K", "--storage", "mmap")
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert "RAM budget 8192 B cannot be met" in message
    assert re.search(r"smallest feasible arena is \d+ B; set the budget .* to \d+ or more", message)


def test_tinyunet_on_block_storage_streams_row_windows_through_a_file(tmp_path):
    report = compile_model(TINYUNET, tmp_path, ram_budget=SMALLEST_FEASIBLE, storage="file").memory_report
    assert report["arena_bytes"] < 160_000  # the 76,800 B skip is never whole in RAM again
    stats = {}
    _assert_exact(TINYUNET, str(tmp_path), stats)
    assert stats["storage_written"] == report["storage_bytes"] == 76_800
    assert stats["storage_read"] == 76_800  # the ring of rows rolls: each stored row is read once
    assert stats["storage_written"] + stats["storage_read"] == report["moved_bytes"]


@pytest.mark.slow
def test_row_windows_count_against_the_budget(tmp_path):
    # without the storage CRCs, whose RAM also counts in the budget (tests/test_integrity.py)
    result = compile_model(TINYUNET, ram_budget=SMALLEST_FEASIBLE, storage="file", integrity=False)
    smallest = result.memory_report["arena_bytes"]
    windows = [b for b in result.plan.buffers if b.name.startswith("ws")]  # the ring of streamed rows
    assert windows and all(w.nbytes > 0 for w in windows)
    assert smallest >= peak_live_bytes(result.plan.buffers)  # the ring is planned like any buffer
    with pytest.raises(BudgetError, match=f"smallest feasible arena is {smallest} B"):
        compile_model(TINYUNET, ram_budget=smallest - 1, storage="file", integrity=False)
    assert compile_model(TINYUNET, ram_budget=smallest, storage="file", integrity=False).memory_report["arena_bytes"] <= smallest


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mmap", "file"])
def test_partial_spilling_moves_fewer_bytes_between_no_spill_and_the_smallest_arena(storage, tmp_path):
    model = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
    whole = compile_model(model, ram_budget=SMALLEST_FEASIBLE, storage=storage).memory_report
    budget = (whole["arena_bytes"] + compile_model(model).memory_report["arena_bytes"]) // 2
    result = compile_model(model, tmp_path, ram_budget=budget, storage=storage)
    report = result.memory_report
    (spill,) = report["spilled"]
    stored_rows, all_rows = spill["rows"]  # only the first rows left RAM
    assert 0 < stored_rows < all_rows and report["arena_bytes"] <= budget
    assert report["moved_bytes"] < whole["moved_bytes"]
    x = seeded_input((1, 32, 32, 1), np.int8, 0)
    stats = {}
    np.testing.assert_array_equal(host.run(str(tmp_path), x, stats=stats), tflm_reference(model, x))
    assert stats["storage_written"] == spill["bytes"]
