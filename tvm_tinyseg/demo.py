"""``tinyseg demo``: the bundled TinyUNet compiled without and with TinySeg, run on the host and,
when QEMU is installed, on a Cortex-M7 board too small for the build without TinySeg."""
import os

import numpy as np

from tvm_tinyseg import boards
from tvm_tinyseg.boards import host
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.models import model_path


def _silent(message: str) -> None:
    """The default progress callback: say nothing."""


BUILDS = (  # label, compile_model options
    ("without TinySeg", dict(tinyseg=False)),
    ("TinySeg, no budget", dict()),
    ("TinySeg min, file", dict(ram_budget=-1, storage="file")),
    ("TinySeg min, mmap", dict(ram_budget=-1, storage="mmap")),
)


BOARD_RAM = 128 * 1024  # the QEMU board's RAM: .data, .bss (the arena) and the stack
BOARD_ROWS = (  # storage, the board's RAM: each storage kind on BOARD_RAM, then the smallest board
    ("mmap", BOARD_RAM),
    ("file", BOARD_RAM),
    ("uart", BOARD_RAM),
    ("mmap", 64 * 1024),
)


def demo(output: str, progress=_silent) -> bool:
    """The README's main job: the bundled TinyUNet compiled without TinySeg and with it (fusion
    alone, then spilling to block and to memory-mapped storage at the smallest feasible arena), each
    run on the host and checked against TFLite Micro, whose own arena is measured beside; then, when
    QEMU is installed, the same on a Cortex-M7 board with BOARD_RAM bytes of RAM, where the
    build without TinySeg does not link and the TinySeg builds (each storage kind) run, and on one
    with half of that. Writes
    every build under ``output``; returns whether every output matched TFLite Micro's."""
    model = model_path("tinyunet_80x120.tflite")
    x = np.random.default_rng(0).integers(-128, 128, size=(1, 80, 120, 3), dtype=np.int8)
    try:
        from tvm_tinyseg.reference import tflm_arena, tflm_output

        reference, tflm_bytes = tflm_output(model, x), tflm_arena(model)["tflm_arena_bytes"]
    except ImportError:
        reference = tflm_bytes = None

    def verdict(y):
        if reference is None:
            return "n/a (tflite-micro not installed)", True
        wrong = int(np.count_nonzero(y != reference))
        return ("identical" if wrong == 0 else f"{wrong} values differ"), wrong == 0

    print(f"{'build':<20} {'arena B':>9} {'vs TFLM':>8} {'moved B':>9}  output vs TFLite Micro")
    if tflm_bytes:
        print(f"{'TFLite Micro':<20} {tflm_bytes:>9} {'100%':>8} {0:>9}  (reference)")
    agree = True
    for label, options in BUILDS:
        out_dir = os.path.join(output, label.lower().replace(",", "").replace(" ", "_"))
        progress(f"compiling {os.path.basename(model)} ({label}) → {out_dir}")
        report = compile_model(model, out_dir, **options).memory_report
        text, same = verdict(host.run(out_dir, x, host.build(out_dir)))
        agree = agree and same
        share = f"{100 * report['arena_bytes'] / tflm_bytes:.0f}%" if tflm_bytes else "n/a"
        print(f"{label:<20} {report['arena_bytes']:>9} {share:>8} {report['moved_bytes']:>9}  {text}")
    if not qemu.available():
        print("QEMU board: skipped (qemu-system-arm / arm-none-eabi-gcc not installed)")
        return agree
    return _demo_board(output, model, x, verdict, progress) and agree


def _demo_board(output: str, model: str, x, verdict, progress) -> bool:
    """The demo on QEMU: without TinySeg the firmware overflows the board's RAM at link time; with
    TinySeg it links, runs on each storage kind and matches TFLite Micro (BOARD_ROWS)."""
    print("\nQEMU mps2-an500 (Cortex-M7), RAM for .data, .bss and the stack:")
    print(f"{'build':<20} {'RAM KiB':>7} {'static RAM B':>12} {'instructions':>14} {'moved B':>9}  "
          "output vs TFLite Micro")
    plain = os.path.join(output, "board_without_tinyseg")
    progress(f"compiling without TinySeg → {plain}")
    compile_model(model, plain, tinyseg=False)
    try:
        qemu.build(plain, ram_budget=BOARD_RAM)
        print(f"{'without TinySeg':<20} {BOARD_RAM // 1024:>7} links — the board is not small enough to show anything")
        return False
    except TinySegError as err:
        print(f"{'without TinySeg':<20} {BOARD_RAM // 1024:>7} does not link: {str(err).split(': ', 2)[-1]}")
    agree = True
    for storage, board in BOARD_ROWS:
        arena_budget = boards.arena_budget(qemu.NAME, board)
        out_dir = os.path.join(output, f"board_{board // 1024}k_tinyseg_{storage}")
        progress(f"compiling with TinySeg, {storage} storage, arena budget {arena_budget} B → {out_dir}")
        report = compile_model(model, out_dir, ram_budget=arena_budget, storage=storage).memory_report
        stats = {}
        progress(f"building and running the firmware under QEMU ({storage}, {board // 1024} KiB)")
        y = qemu.run(out_dir, x, qemu.build(out_dir, ram_budget=board), stats)
        text, same = verdict(y)
        agree = agree and same
        print(f"{'TinySeg, ' + storage:<20} {board // 1024:>7} {stats['static_ram_bytes']:>12} "
              f"{stats['instructions']:>14} {report['moved_bytes']:>9}  {text}")
    return agree
