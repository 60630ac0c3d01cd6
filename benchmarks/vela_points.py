#!/usr/bin/env python3
"""The authentic TinyUNet 80x120 at Arm Vela's points: RAM budget against bytes moved (issue 14).

    python benchmarks/vela_points.py          # runs every build under QEMU, writes vela_points.md/.json

Vela reaches 128, 64 and 32 KiB on this TinyUNet by cascading, moving 3.42, 4.05 and 4.47 MB of
feature maps (the figures issue 14 quotes). Here each budget is a QEMU mps2-an500 (Cortex-M7) board
with that much RAM for .data, .bss and the stack: TinySeg compiles for the arena that leaves room for
the firmware (``boards.arena_budget``), spills to memory-mapped storage (the board's PSRAM), and the
firmware must link in that RAM, run, and give TFLite Micro's output. Two ways: the model's input and
output in the arena, as in TFLite Micro, and outside it (``--io-outside-arena``: the camera frame and
the mask in PSRAM, read and written in place). The instruction count is compared with the build
without TinySeg (linked with QEMU's whole 4 MiB of RAM).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
MODEL = os.path.join(REPO, "models", "tinyunet_authentic_80x120.tflite")
VELA_MOVED = {128: 3_420_000, 64: 4_050_000, 32: 4_470_000}  # board KiB -> bytes Vela moves (issue 14)
SEED = 0


def _run(out_dir, x, ram, reference) -> dict:
    from tvm_tinyseg.boards import qemu_cortex_m as qemu

    stats = {}
    y = qemu.run(out_dir, x, qemu.build(out_dir, ram_budget=ram), stats)
    if not np.array_equal(y, reference):
        raise RuntimeError(f"{out_dir}: the firmware's output differs from TFLite Micro's "
                           f"({int(np.count_nonzero(y != reference))} values)")
    return {"static_ram_bytes": stats["static_ram_bytes"], "instructions": stats.get("instructions")}


def measure(work_dir: str) -> dict:
    from tvm_tinyseg import boards
    from tvm_tinyseg.boards import qemu_cortex_m as qemu
    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.passes.spill_planner import BudgetError
    from tvm_tinyseg.reference import tflm_output

    plain_dir = os.path.join(work_dir, "plain")
    plain = compile_model(MODEL, plain_dir, tinyseg=False, mcpu="cortex-m7")
    x = np.random.default_rng(SEED).integers(-128, 128, size=plain.io_spec["input"]["shape"], dtype=np.int8)
    reference = tflm_output(MODEL, x)
    record = {"model": os.path.basename(MODEL), "plain": _run(plain_dir, x, qemu.RAM_WINDOW, reference), "points": []}
    for kib in sorted(VELA_MOVED, reverse=True):
        for io_in_arena in (True, False):
            point = {"board_kib": kib, "io_in_arena": io_in_arena, "vela_moved_bytes": VELA_MOVED[kib]}
            out_dir = os.path.join(work_dir, f"{kib}k_{'io_in' if io_in_arena else 'io_out'}")
            try:
                report = compile_model(MODEL, out_dir, ram_budget=boards.arena_budget(qemu.NAME, kib * 1024),
                                       storage="mmap", mcpu="cortex-m7", io_in_arena=io_in_arena).memory_report
            except BudgetError as err:
                record["points"].append({**point, "feasible": False, "reason": str(err)})
                continue
            point.update(feasible=True, arena_bytes=report["arena_bytes"], moved_bytes=report["moved_bytes"],
                         **_run(out_dir, x, kib * 1024, reference))
            record["points"].append(point)
    return record


def markdown(record: dict, commit: str) -> str:
    plain = record["plain"]["instructions"]
    lines = [
        "# TinyUNet 80x120 (authentic) at Vela's RAM points",
        "",
        f"`python benchmarks/vela_points.py` at commit {commit}: {record['model']}, QEMU mps2-an500 (Cortex-M7),",
        "memory-mapped storage in the board's PSRAM; every output equals TFLite Micro's (else no figure).",
        f"Without TinySeg: {plain:,} instructions.",
        "",
        "| board RAM | input/output | arena B | static RAM B | moved B | Vela moved B | instructions | vs no TinySeg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in record["points"]:
        io = "in the arena" if p["io_in_arena"] else "outside (PSRAM)"
        if not p["feasible"]:
            lines.append(f"| {p['board_kib']} KiB | {io} | does not fit: {p['reason'].split(': ')[-1]} | | | "
                         f"{p['vela_moved_bytes']:,} | | |")
            continue
        ratio = f"{p['instructions'] / plain:.2f}x" if p["instructions"] and plain else "n/a"
        insns = f"{p['instructions']:,}" if p["instructions"] else "n/a"
        lines.append(f"| {p['board_kib']} KiB | {io} | {p['arena_bytes']:,} | {p['static_ram_bytes']:,} | "
                     f"{p['moved_bytes']:,} | {p['vela_moved_bytes']:,} | {insns} | {ratio} |")
    lines += [
        "",
        "*static RAM*: .data + .bss + stack of the linked firmware, which must fit the board's RAM. *moved*: bytes",
        "written to and read from storage per inference (memory.json's `moved_bytes`); Vela's figure is its",
        "feature-map traffic. A budget that does not fit says the smallest arena (and the firmware needs room",
        "for its stack and state beside it).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    import subprocess

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default=BENCH_DIR, help="where vela_points.md and vela_points.json go")
    args = p.parse_args(argv)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    with tempfile.TemporaryDirectory(prefix="vela_points_") as tmp:
        record = measure(tmp)
    with open(os.path.join(args.out_dir, "vela_points.json"), "w") as f:
        json.dump({**record, "commit": commit}, f, indent=1)
    with open(os.path.join(args.out_dir, "vela_points.md"), "w") as f:
        f.write(markdown(record, commit))
    print(markdown(record, commit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
