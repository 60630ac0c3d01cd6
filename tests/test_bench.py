"""`tinyseg bench` (tvm_tinyseg.bench): the console script reproduces the committed baseline table."""
import json
import os

import pytest

from conftest import MODELS, run_tinyseg
from tvm_tinyseg import bench
from tvm_tinyseg.cli import parse_size
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE

SMALL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
BENCHMARKS = os.path.join(os.path.dirname(MODELS), "benchmarks")
QEMU_FIELDS = ("elf_ram_bytes", "elf_ram_bytes_nospill", "insns_nospill", "insns_tinyseg", "insns_plain",
               "insns_per_mac_nospill", "insns_per_mac_tinyseg", "insns_per_mac_plain")
TIMING_FIELDS = ("host_ms_plain", "host_ms_tinyseg", "tflm_invoke_ms")  # wall times: never the same twice


def _committed():
    with open(os.path.join(BENCHMARKS, "results.json")) as f:
        return {r["model"]: r for r in json.load(f)}


@pytest.mark.slow
def test_bench_of_a_cheap_model_reproduces_its_committed_row(tmp_path):
    out_json, out_md, out_png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    proc = run_tinyseg("bench", SMALL, "--json", out_json, "--markdown", out_md, "--plot", out_png)
    assert proc.returncode == 0, proc.stderr
    assert "[tinyseg] tinyunet_32x32_c1.tflite: TFLite Micro's arena" in proc.stderr  # progress lines
    [record] = json.loads(out_json.read_text())
    committed = _committed()["tinyunet_32x32_c1.tflite"]
    if not bench.qemu_available():  # the firmware figures need arm-none-eabi-gcc and QEMU
        committed = {k: v for k, v in committed.items() if k not in QEMU_FIELDS}
    assert all(record[k] > 0 for k in TIMING_FIELDS)
    assert record["host_ms_plain"] < record["tflm_invoke_ms"]
    assert ({k: v for k, v in record.items() if k not in TIMING_FIELDS}
            == {k: v for k, v in committed.items() if k not in TIMING_FIELDS})

    def row_without_times(text):  # the host columns are the last two
        row = next(ln for ln in text.splitlines() if ln.startswith("| tinyunet_32x32_c1.tflite |"))
        return row.split(" | ")[:-2]

    with open(os.path.join(BENCHMARKS, "results.md")) as f:
        assert row_without_times(out_md.read_text()) == row_without_times(f.read())
    assert row_without_times(out_md.read_text()) == row_without_times(proc.stdout)  # the table is printed too
    assert out_png.read_bytes().startswith(b"\x89PNG")


def test_host_build_times_its_runs(compiled_zoo):
    from tvm_tinyseg.boards import host
    from tvm_tinyseg.reference import tflm_output

    result, out_dir, exe = compiled_zoo.get(SMALL)
    x = bench._seeded_input(result.io_spec["input"])
    stats = {}
    y = host.run(out_dir, x, exe, stats, timing_runs=3)
    assert len(stats["run_ns"]) == 3 and all(t > 0 for t in stats["run_ns"])
    assert (y == tflm_output(SMALL, x)).all()  # repeated runs leave the output as the first one wrote it


def test_parse_budgets_reads_sizes_and_percentages():
    budgets = bench.parse_budgets("96K, 90%,131072", parse_size)
    assert [b.label for b in budgets] == ["96K", "90 %", "131072"]
    assert [b.resolve(230_400) for b in budgets] == [98_304, 206_848, 131_072]
    assert bench.parse_budgets("90%,75%,60%", parse_size) == bench.DEFAULT_BUDGETS


@pytest.mark.slow
def test_fixed_budgets_are_feasible_exactly_from_tinyseg_min():
    smallest = compile_model(SMALL, ram_budget=SMALLEST_FEASIBLE, storage="mmap").memory_report["arena_bytes"]
    nospill = compile_model(SMALL).memory_report["arena_bytes"]
    budgets = bench.parse_budgets(f"{smallest},{smallest - 1},{nospill}", parse_size)
    at_min, below_min, at_nospill = bench.tinyseg_budgets(SMALL, nospill, budgets)["tinyseg_budgets"]
    assert at_min["arena_bytes"] == smallest and at_min["moved_bytes"] > 0
    assert below_min == {"label": str(smallest - 1), "budget": smallest - 1, "feasible": False}
    assert at_nospill["arena_bytes"] == nospill and at_nospill["moved_bytes"] == 0 == at_nospill["spilled"]


def test_ram_moved_points_run_from_no_spill_to_the_minimum():
    for record in _committed().values():
        points = bench.ram_moved_points(record)
        assert points[0] == (0, record["tinyseg_nospill_bytes"], "no spill")
        assert points[-1] == (record["tinyseg_moved_bytes"], record["tinyseg_min_bytes"], "min")
        arenas = [arena for _, arena, _ in points]
        assert arenas == sorted(arenas, reverse=True)  # a tighter budget never needs more RAM


def test_instruction_columns_appear_only_with_counts():
    record = {k: v for k, v in _committed()["tinyunet_32x32_c1.tflite"].items()
              if not k.startswith(("insns_", "host_ms_", "tflm_invoke"))}
    assert "insn overhead" not in bench.render_tables([record])
    record.update(insns_nospill=1_000_000, insns_tinyseg=1_050_000)
    header, _, row = bench.render_tables([record]).splitlines()[2:5]
    assert header.endswith("| insns, no spill | insns, TinySeg min | insn overhead |")
    assert row.endswith("| 1,000,000 | 1,050,000 | +5.0 % |")
    record.update(insns_per_mac_plain=2.3, insns_per_mac_tinyseg=2.38, host_ms_plain=1.5, host_ms_tinyseg=1.75,
                  tflm_invoke_ms=42.0)
    header, _, row = bench.render_tables([record]).splitlines()[2:5]
    assert header.endswith("| insns/MAC, no TinySeg | insns/MAC, TinySeg min | host ms vs TFLM, no TinySeg "
                           "| host ms vs TFLM, TinySeg min |")
    assert row.endswith("| 2.3 | 2.38 | 1.5 vs 42.0 | 1.8 vs 42.0 |")


@pytest.mark.skipif(not bench.qemu_available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_committed_firmware_ram_is_the_arena_plus_the_stack():
    """elf_ram_bytes (static RAM of the firmware ELF) holds the arena and the 4 KiB stack, little else."""
    from tvm_tinyseg.boards import qemu_cortex_m as qemu

    for record in _committed().values():
        for field, arena in (("elf_ram_bytes", "tinyseg_min_bytes"),
                             ("elf_ram_bytes_nospill", "tinyseg_nospill_bytes")):
            overhead = record[field] - record[arena] - qemu.STACK_SIZE
            assert 0 <= overhead <= 1024, (record["model"], field, overhead)


def test_a_model_tflite_micro_cannot_read_gets_no_tflm_figures_and_still_renders(tmp_path):
    onnx = os.path.join(MODELS, "tinyunet_80x120.onnx")
    assert bench.tflm(onnx) == {"tflm_arena_bytes": None, "tflm_error": "TFLite Micro reads .tflite files only"}
    assert bench.tflm_reference_output(onnx, None) is None
    record = dict(_committed()["tinyunet_32x32_c1.tflite"], model="x.onnx", **bench.tflm(onnx))
    text = bench.render_markdown([record])
    assert "- `x.onnx`: tflm_error: TFLite Micro reads .tflite files only" in text
    bench.plot_ram_vs_moved([record], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
