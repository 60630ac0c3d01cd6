"""The ``tinyseg`` command line.

Exit status: 0 success, 1 a user error (one line on stderr), 2 an internal error.
"""
import argparse
import json
import os
import re
import sys

from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.pass_config import STORAGE_KINDS

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2


def _progress(message: str) -> None:
    print(f"[tinyseg] {message}", file=sys.stderr, flush=True)


_SIZE_UNITS = {"": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20}


def parse_size(text: str) -> int:
    """Bytes from '131072', '128K', '128KiB', '1M'; 'min' → the smallest feasible budget (-1)."""
    from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE

    value = text.strip()
    if value.lower() == "min":
        return SMALLEST_FEASIBLE
    match = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", value)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 131072, 128K, 128KiB, 1M, min)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]


def cmd_compile(args) -> int:
    from tvm_tinyseg import projects
    from tvm_tinyseg.driver import compile_model

    export, arena_budget = None, args.ram_budget
    if args.project:  # the board's RAM budget also holds the firmware's stack and state
        export, arena_budget = projects.exporter(args.project), projects.arena_budget(args.project, args.ram_budget)
    _progress(f"compiling {args.model}")
    result = compile_model(args.model, args.output, tinyseg=not args.no_tinyseg, ram_budget=arena_budget,
                           storage=args.storage, fuse_fetch=False if args.no_fuse_fetch else None)
    if export:
        export(args.output, args.ram_budget)
    report = result.memory_report
    spilled = ""
    if report["spilled"]:
        spilled = (f", {len(report['spilled'])} tensors spilled to {report['storage']} storage "
                   f"({report['storage_bytes']} B, {report['moved_bytes']} B moved per inference)")
    print(f"wrote {args.output}: arena {report['arena_bytes']} B, weights {report['weight_bytes']} B, "
          f"{report['kernels']} kernels{spilled}" + (f"; {args.project} project" if args.project else ""))
    return EXIT_OK


def cmd_analyze(args) -> int:
    """Compile in memory (no C written), print the lifetime analysis, and draw the timeline if asked."""
    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.report import format_analysis, plot_timeline

    _progress(f"analyzing {args.model}")
    result = compile_model(args.model, tinyseg=not args.no_tinyseg, ram_budget=args.ram_budget,
                           storage=args.storage, fuse_fetch=False if args.no_fuse_fetch else None)
    print(format_analysis(result.table, result.plan))
    if args.plot:
        plot_timeline(result, result.plan, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_run(args) -> int:
    import numpy as np

    from tvm_tinyseg.platforms import host

    if not os.path.isfile(os.path.join(args.dir, "io.json")):
        raise TinySegError(f"{args.dir}: not a compiled model directory (no io.json; run 'tinyseg compile' first)")
    with open(os.path.join(args.dir, "io.json")) as f:
        spec = json.load(f)["input"]
    if args.input:
        try:
            x = np.load(args.input)
        except (OSError, ValueError) as err:
            raise TinySegError(f"{args.input}: cannot read input array ({err})") from None
    else:
        x = np.zeros(spec["shape"], dtype=spec["dtype"])
    _progress(f"building {args.dir} for {args.platform}")
    stats = {}
    if args.platform == "qemu":
        from tvm_tinyseg.platforms import qemu

        y = qemu.run(args.dir, x, qemu.build(args.dir, ram_budget=args.ram_budget), stats)
    elif args.platform == "avr":
        from tvm_tinyseg.platforms import avr

        avr.build(args.dir)
        y = avr.run(args.dir, x, stats)
    else:
        y = host.run(args.dir, x, host.build(args.dir), stats)
    if args.output:
        np.save(args.output, y)
    print(f"output {y.dtype} {list(y.shape)}" + (f" written to {args.output}" if args.output else ""))
    print(f"storage: {stats.get('storage_written', 0)} B written, {stats.get('storage_read', 0)} B read")
    if args.platform == "qemu":
        print(f"firmware: static RAM {stats['static_ram_bytes']} B, flash {stats['static_flash_bytes']} B, "
              f"PSRAM {stats['static_psram_bytes']} B, stack used {stats.get('stack_used', 0)} B")
        print(f"instructions: {stats['instructions']}")
    if args.platform == "avr":
        print(f"ATmega2560: static SRAM {stats['sram_bytes']} B of 8192 ({stats['stack_free']} B never touched by "
              f"the stack), flash {stats['flash_bytes']} B; tinyseg_run {stats['run_us'] / 1e6:.2f} s at 16 MHz")
    return EXIT_OK


DEMO_BUILDS = (  # label, compile_model options
    ("without TinySeg", dict(tinyseg=False)),
    ("TinySeg, no budget", dict()),
    ("TinySeg min, file", dict(ram_budget=-1, storage="file")),
    ("TinySeg min, mmap", dict(ram_budget=-1, storage="mmap")),
)


def cmd_demo(args) -> int:
    """The README's main job: the bundled TinyUNet compiled without TinySeg and with it (fusion
    alone, then spilling to block and to memory-mapped storage at the smallest feasible arena), each
    run on the host and checked against TFLite Micro, whose own arena is measured beside."""
    import numpy as np

    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.models import model_path
    from tvm_tinyseg.platforms import host

    model = model_path("tinyunet_80x120.tflite")
    x = np.random.default_rng(0).integers(-128, 128, size=(1, 80, 120, 3), dtype=np.int8)
    try:
        from tvm_tinyseg.reference import tflm_arena, tflm_output

        reference, tflm_bytes = tflm_output(model, x), tflm_arena(model)["tflm_arena_bytes"]
    except ImportError:
        reference = tflm_bytes = None
    print(f"{'build':<20} {'arena B':>9} {'vs TFLM':>8} {'moved B':>9}  output vs TFLite Micro")
    if tflm_bytes:
        print(f"{'TFLite Micro':<20} {tflm_bytes:>9} {'100%':>8} {0:>9}  (reference)")
    agree = True
    for label, options in DEMO_BUILDS:
        out_dir = os.path.join(args.output, label.lower().replace(",", "").replace(" ", "_"))
        _progress(f"compiling {os.path.basename(model)} ({label}) → {out_dir}")
        report = compile_model(model, out_dir, **options).memory_report
        y = host.run(out_dir, x, host.build(out_dir))
        if reference is None:
            verdict = "n/a (tflite-micro not installed)"
        else:
            wrong = int(np.count_nonzero(y != reference))
            verdict = "identical" if wrong == 0 else f"{wrong} values differ"
            agree = agree and wrong == 0
        share = f"{100 * report['arena_bytes'] / tflm_bytes:.0f}%" if tflm_bytes else "n/a"
        print(f"{label:<20} {report['arena_bytes']:>9} {share:>8} {report['moved_bytes']:>9}  {verdict}")
    return EXIT_OK if agree else EXIT_INTERNAL_ERROR


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a user error (status 1), not argparse's 2."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinyseg", description=(
        "Compile quantized segmentation models to plain C for microcontrollers (TVM + TinySeg)."))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a .tflite/.onnx model to C sources, header and memory.json")
    p.add_argument("model", help="the model file (.tflite or .onnx)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--no-tinyseg", action="store_true", help="plain static planning without TinySeg's passes")
    p.add_argument("--ram-budget", type=parse_size, metavar="SIZE",
                   help="RAM for the arena (131072, 128K, 128KiB, or 'min' for the smallest feasible); "
                        "tensors are spilled to storage to meet it")
    p.add_argument("--storage", choices=sorted(STORAGE_KINDS), help="where spilled tensors go (default: file)")
    p.add_argument("--no-fuse-fetch", action="store_true", help="fetch spilled tensors into RAM copies")
    p.add_argument("--project", choices=["qemu_cortex_m", "zephyr", "arduino"],
                   help="also write a ready board project into the output directory (its RAM budget: --ram-budget)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("analyze", help="print a model's tensor lifetimes, peak and long-living tensors; plot the arena")
    p.add_argument("model", help="the model file (.tflite or .onnx)")
    p.add_argument("--plot", metavar="PNG", help="write the arena timeline to this PNG (needs matplotlib)")
    p.add_argument("--no-tinyseg", action="store_true", help="plain static planning without TinySeg's passes")
    p.add_argument("--ram-budget", type=parse_size, metavar="SIZE",
                   help="RAM for the arena (as for 'compile'; drawn as a line on the plot)")
    p.add_argument("--storage", choices=sorted(STORAGE_KINDS), help="where spilled tensors go (default: file)")
    p.add_argument("--no-fuse-fetch", action="store_true", help="fetch spilled tensors into RAM copies")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("run", help="build a compiled model and run it on one input")
    p.add_argument("dir", help="a directory written by 'tinyseg compile'")
    p.add_argument("--platform", choices=["host", "qemu", "avr"], default="host",
                   help="host: the host C compiler; qemu: Cortex-M7 firmware under QEMU (mps2-an500); "
                        "avr: the Arduino sketch (arduino-builder) in simavr, ATmega2560")
    p.add_argument("--ram-budget", type=parse_size, metavar="SIZE",
                   help="qemu: the firmware's RAM region (arena, data and stack must fit at link time)")
    p.add_argument("--input", help="input array (.npy); zeros when omitted")
    p.add_argument("--output", help="where to save the output array (.npy)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="compile the bundled TinyUNet with and without TinySeg and compare")
    p.add_argument("-o", "--output", default="tinyseg_demo", help="where to write both builds")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TinySegError as err:
        print(f"tinyseg: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # a bug of ours: say so, keep it to one line unless asked
        if os.environ.get("TINYSEG_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"tinyseg: internal error: {type(err).__name__}: {first} (set TINYSEG_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
