"""The ``tinyseg`` command line.

Exit status: 0 success, 1 a user error (one line on stderr), 2 an internal error.
"""
import argparse
import json
import os
import re
import sys

from tvm_tinyseg import targets
from tvm_tinyseg.codegen.c_api import DEFAULT_MODULE_NAME, check_module_name
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.pass_config import OPTIONS, STORAGE_KINDS

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


def _checked(check):
    """An argparse type from a targets.check_* function (its TinySegError becomes a usage error)."""
    def parse(text):
        try:
            return check(text)
        except TinySegError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parse


_BOOLS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
_OPTIONS = {option.key: option for option in OPTIONS}


def parse_pass_config(text: str) -> tuple:
    """'tinyseg.ram_budget=128K' → (key, typed value), for the ``tinyseg.*`` PassContext options."""
    from tvm_tinyseg.passes.arena_planner import PLANNERS

    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. tinyseg.ram_budget=128K")
    if key not in _OPTIONS:
        raise argparse.ArgumentTypeError(f"unknown PassContext option {key!r} in {text!r} "
                                         f"(known: {', '.join(_OPTIONS)})")
    option = _OPTIONS[key]
    if option.type is bool:
        if value.lower() not in _BOOLS:
            raise argparse.ArgumentTypeError(f"{key} expects true or false (1/0, yes/no, on/off), got {value!r}")
        return key, _BOOLS[value.lower()]
    if option.type is int:
        try:
            return key, parse_size(value)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{key} expects a size in bytes (131072, 128K, 128KiB, 1M, min), "
                                             f"got {value!r}") from None
    allowed = {"tinyseg.storage": sorted(STORAGE_KINDS), "tinyseg.planner": sorted(PLANNERS)}.get(key)
    if allowed is not None and value not in allowed:
        raise argparse.ArgumentTypeError(f"{key} must be one of {', '.join(allowed)}, got {value!r}")
    return key, value


# --pass-config key → (its flag, the flag's value as that key's value, or None when the flag is unset)
_FLAG_OF_KEY = {
    "tinyseg.enable": ("--no-tinyseg", lambda a: False if a.no_tinyseg else None),
    "tinyseg.ram_budget": ("--ram-budget", lambda a: a.ram_budget),
    "tinyseg.storage": ("--storage", lambda a: a.storage),
    "tinyseg.fuse_fetch": ("--no-fuse-fetch", lambda a: False if a.no_fuse_fetch else None),
}


def pass_config(args) -> dict:
    """The PassContext config of ``--pass-config`` items. A key given twice with different values,
    or contradicting its dedicated flag, is an error (equal values are fine)."""
    config = {}
    for key, value in args.pass_config or ():
        if key in config and config[key] != value:
            raise TinySegError(f"--pass-config {key} given twice ({config[key]!r} and {value!r})")
        config[key] = value
        flag, flag_value = _FLAG_OF_KEY.get(key, (None, lambda a: None))
        given = flag_value(args)
        if given is not None and given != value:
            shown = flag if isinstance(given, bool) else f"{flag} {given}"
            raise TinySegError(f"{shown} conflicts with --pass-config {key}={value}; give only one of them")
    return config


def cmd_compile(args) -> int:
    import tvm

    from tvm_tinyseg import projects
    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.pass_config import register_options

    config = pass_config(args)
    if config:
        register_options()
    if args.project and args.module_name != DEFAULT_MODULE_NAME:
        raise TinySegError(f"--project {args.project} builds one model named {DEFAULT_MODULE_NAME}; "
                           f"--module-name {args.module_name} is for the plain C output (its NAME.mk/NAME.cmake)")
    if args.project == "qemu_cortex_m" and args.mcpu not in (None, QEMU_MCPU):
        raise TinySegError(f"--project qemu_cortex_m is a {QEMU_MCPU} board; --mcpu {args.mcpu} does not match it")
    board_budget = args.ram_budget if args.ram_budget is not None else config.get("tinyseg.ram_budget")
    export, arena_budget = None, args.ram_budget
    if args.project:  # the board's RAM budget also holds the firmware's stack and state
        export, arena_budget = projects.exporter(args.project), projects.arena_budget(args.project, board_budget)
    mcpu = f", mcpu {args.mcpu}" if args.mcpu else ""
    _progress(f"compiling {args.model} (target {args.target}{mcpu}, executor {args.executor})")
    with tvm.transform.PassContext(config=config):
        result = compile_model(args.model, args.output, tinyseg=not args.no_tinyseg, ram_budget=arena_budget,
                               storage=args.storage, fuse_fetch=False if args.no_fuse_fetch else None,
                               mcpu=args.mcpu, module_name=args.module_name,
                               input_shapes=dict(args.input_shape or []))
    if export:
        export(args.output, board_budget)
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
                           storage=args.storage, fuse_fetch=False if args.no_fuse_fetch else None,
                           input_shapes=dict(args.input_shape or []))
    print(format_analysis(result.table, result.plan, result.memory.chains))
    if args.plot:
        plot_timeline(result, result.plan, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_run(args) -> int:
    import numpy as np

    from tvm_tinyseg.platforms import host
    from tvm_tinyseg.platforms.model_io import io_spec

    if not os.path.isfile(os.path.join(args.dir, "io.json")):
        raise TinySegError(f"{args.dir}: not a compiled model directory (no io.json; run 'tinyseg compile' first)")
    spec = io_spec(args.dir)
    inputs, outputs = spec["inputs"], spec["outputs"]
    if args.input and len(args.input) != len(inputs):
        raise TinySegError(f"{len(args.input)} --input given; the model has {len(inputs)} inputs "
                           f"({', '.join(t.get('name', '?') for t in inputs)}): give one --input per input, in order")
    if args.output and len(args.output) != len(outputs):
        raise TinySegError(f"{len(args.output)} --output given; the model has {len(outputs)} outputs: "
                           "give one --output per output, in order")
    name = spec.get("module_name", DEFAULT_MODULE_NAME)
    if args.platform != "host" and (len(inputs) > 1 or len(outputs) > 1 or name != DEFAULT_MODULE_NAME):
        raise TinySegError(f"--platform {args.platform} runs single-input, single-output models compiled without "
                           "--module-name; use --platform host")
    xs = []
    for i, want in enumerate(inputs):
        if not args.input:
            xs.append(np.zeros(want["shape"], dtype=want["dtype"]))
            continue
        try:
            xs.append(np.load(args.input[i]))
        except (OSError, ValueError) as err:
            raise TinySegError(f"{args.input[i]}: cannot read input array ({err})") from None
    x = xs[0] if len(xs) == 1 else xs
    if args.platform == "qemu":
        _check_mcpu_for_qemu(args.dir)
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
    ys = y if isinstance(y, list) else [y]
    for i, array in enumerate(ys):
        if args.output:
            np.save(args.output[i], array)
        print(f"output {array.dtype} {list(array.shape)}" + (f" written to {args.output[i]}" if args.output else ""))
    print(f"storage: {stats.get('storage_written', 0)} B written, {stats.get('storage_read', 0)} B read")
    if args.platform == "qemu":
        print(f"firmware: static RAM {stats['static_ram_bytes']} B, flash {stats['static_flash_bytes']} B, "
              f"PSRAM {stats['static_psram_bytes']} B, stack used {stats.get('stack_used', 0)} B")
        print(f"instructions: {stats['instructions']}")
    if args.platform == "avr":
        print(f"ATmega2560: static SRAM {stats['sram_bytes']} B of 8192 ({stats['stack_free']} B never touched by "
              f"the stack), flash {stats['flash_bytes']} B; tinyseg_run {stats['run_us'] / 1e6:.2f} s at 16 MHz")
    return EXIT_OK


QEMU_MCPU = "cortex-m7"  # the CPU of QEMU's mps2-an500


def _check_mcpu_for_qemu(model_dir: str) -> None:
    """A model compiled with --mcpu for another core is not run on the Cortex-M7 board."""
    try:
        with open(os.path.join(model_dir, "memory.json")) as f:
            mcpu = json.load(f).get("mcpu")
    except (OSError, ValueError) as err:
        raise TinySegError(f"{model_dir}: cannot read memory.json ({err}); compile the model again") from None
    if mcpu not in (None, QEMU_MCPU):
        raise TinySegError(f"{model_dir} was compiled for --mcpu {mcpu}; the QEMU board (mps2-an500) is a "
                           f"{QEMU_MCPU}: compile with --mcpu {QEMU_MCPU} (or without --mcpu)")


def _parse_budgets(text: str):
    from tvm_tinyseg.bench import parse_budgets

    try:
        return parse_budgets(text, parse_size)
    except TinySegError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_bench(args) -> int:
    """Measure each model side by side; print the tables, write JSON/markdown/plot when asked."""
    from tvm_tinyseg import bench

    missing = [m for m in args.models if not os.path.isfile(m)]
    if missing:
        raise TinySegError(f"{missing[0]}: model file not found")
    qemu = False if args.no_qemu else None
    budgets = args.budgets or bench.DEFAULT_BUDGETS
    records = [bench.measure(m, budgets, qemu=qemu, progress=_progress) for m in args.models]
    print(bench.render_tables(records))
    for path, text in ((args.json, bench.render_json(records)), (args.markdown, bench.render_markdown(records))):
        if path:
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {path}")
    if args.plot:
        bench.plot_ram_vs_moved(records, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


DEMO_BUILDS = (  # label, compile_model options
    ("without TinySeg", dict(tinyseg=False)),
    ("TinySeg, no budget", dict()),
    ("TinySeg min, file", dict(ram_budget=-1, storage="file")),
    ("TinySeg min, mmap", dict(ram_budget=-1, storage="mmap")),
)


DEMO_BOARD_RAM = 128 * 1024  # the QEMU board's RAM: .data, .bss (the arena) and the stack


def cmd_demo(args) -> int:
    """The README's main job: the bundled TinyUNet compiled without TinySeg and with it (fusion
    alone, then spilling to block and to memory-mapped storage at the smallest feasible arena), each
    run on the host and checked against TFLite Micro, whose own arena is measured beside; then, when
    QEMU is installed, the same on a Cortex-M7 board with DEMO_BOARD_RAM bytes of RAM, where the
    build without TinySeg does not link and the TinySeg builds (each storage kind) run."""
    import numpy as np

    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.models import model_path
    from tvm_tinyseg.platforms import host, qemu

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
    for label, options in DEMO_BUILDS:
        out_dir = os.path.join(args.output, label.lower().replace(",", "").replace(" ", "_"))
        _progress(f"compiling {os.path.basename(model)} ({label}) → {out_dir}")
        report = compile_model(model, out_dir, **options).memory_report
        text, same = verdict(host.run(out_dir, x, host.build(out_dir)))
        agree = agree and same
        share = f"{100 * report['arena_bytes'] / tflm_bytes:.0f}%" if tflm_bytes else "n/a"
        print(f"{label:<20} {report['arena_bytes']:>9} {share:>8} {report['moved_bytes']:>9}  {text}")
    if not qemu.available():
        print("QEMU board: skipped (qemu-system-arm / arm-none-eabi-gcc not installed)")
        return EXIT_OK if agree else EXIT_INTERNAL_ERROR
    return EXIT_OK if _demo_board(args.output, model, x, verdict) and agree else EXIT_INTERNAL_ERROR


def _demo_board(output: str, model: str, x, verdict) -> bool:
    """The demo on QEMU: without TinySeg the firmware overflows the board's RAM at link time; with
    TinySeg it links, runs on each storage kind and matches TFLite Micro."""
    from tvm_tinyseg import projects
    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.platforms import qemu

    board = DEMO_BOARD_RAM
    arena_budget = projects.arena_budget("qemu_cortex_m", board)
    print(f"\nQEMU mps2-an500 (Cortex-M7) with {board // 1024} KiB of RAM for .data, .bss and the stack:")
    print(f"{'build':<20} {'static RAM B':>12} {'instructions':>14} {'moved B':>9}  output vs TFLite Micro")
    plain = os.path.join(output, "board_without_tinyseg")
    _progress(f"compiling without TinySeg → {plain}")
    compile_model(model, plain, tinyseg=False)
    try:
        qemu.build(plain, ram_budget=board)
        print(f"{'without TinySeg':<20} links — the board is not small enough to show anything")
        return False
    except TinySegError as err:
        print(f"{'without TinySeg':<20} does not link: {str(err).split(': ', 2)[-1]}")
    agree = True
    for storage in ("mmap", "file", "uart"):
        out_dir = os.path.join(output, f"board_tinyseg_{storage}")
        _progress(f"compiling with TinySeg, {storage} storage, arena budget {arena_budget} B → {out_dir}")
        report = compile_model(model, out_dir, ram_budget=arena_budget, storage=storage).memory_report
        stats = {}
        _progress(f"building and running the firmware under QEMU ({storage})")
        y = qemu.run(out_dir, x, qemu.build(out_dir, ram_budget=board), stats)
        text, same = verdict(y)
        agree = agree and same
        print(f"{'TinySeg, ' + storage:<20} {stats['static_ram_bytes']:>12} {stats['instructions']:>14} "
              f"{report['moved_bytes']:>9}  {text}")
    return agree


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a user error (status 1, not argparse's 2) reported in one line."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_input_shape(p) -> None:
    from tvm_tinyseg.frontend.input_shapes import parse_input_shape

    p.add_argument("--input-shape", action="append", type=_checked(parse_input_shape), metavar="NAME:DIMS",
                   help="shape of an input with dynamic dimensions, e.g. input_1:1x128x128x3 (repeatable; "
                        "a dynamic batch alone is fixed to 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinyseg", description=(
        "Compile quantized segmentation models to plain C for microcontrollers (TVM + TinySeg)."))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a .tflite/.onnx model to C sources, header and memory.json")
    p.add_argument("model", help="the model file (.tflite or .onnx)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--target", type=_checked(targets.check_target), default="c",
                   help="code to emit: only 'c' (plain C99, no TVM runtime)")
    p.add_argument("--mcpu", type=_checked(targets.check_mcpu), metavar="CPU",
                   help=f"the CPU the C is for, recorded in memory.json ({', '.join(targets.MCPUS)}); "
                        "'tinyseg run --platform qemu' needs cortex-m7 or none")
    p.add_argument("--executor", type=_checked(targets.check_executor), default="aot",
                   help="only 'aot': one C function runs every kernel over a static arena")
    p.add_argument("--pass-config", action="append", type=parse_pass_config, metavar="KEY=VALUE",
                   help="a TinySeg PassContext option (repeatable): " + ", ".join(o.key for o in OPTIONS)
                        + "; a flag below and a different value for its key is an error")
    p.add_argument("--no-tinyseg", action="store_true", help="plain static planning without TinySeg's passes")
    p.add_argument("--ram-budget", type=parse_size, metavar="SIZE",
                   help="RAM for the arena (131072, 128K, 128KiB, or 'min' for the smallest feasible); "
                        "tensors are spilled to storage to meet it")
    p.add_argument("--storage", choices=sorted(STORAGE_KINDS), help="where spilled tensors go (default: file)")
    p.add_argument("--no-fuse-fetch", action="store_true", help="fetch spilled tensors into RAM copies")
    p.add_argument("--module-name", type=_checked(check_module_name), default=DEFAULT_MODULE_NAME, metavar="NAME",
                   help="prefix of every C symbol, macro and file (NAME_run, NAME_model.h; default tinyseg), "
                        "so several models link into one firmware")
    _add_input_shape(p)
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
    _add_input_shape(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("run", help="build a compiled model and run it on one input")
    p.add_argument("dir", help="a directory written by 'tinyseg compile'")
    p.add_argument("--platform", choices=["host", "qemu", "avr"], default="host",
                   help="host: the host C compiler; qemu: Cortex-M7 firmware under QEMU (mps2-an500); "
                        "avr: the Arduino sketch (arduino-builder) in simavr, ATmega2560")
    p.add_argument("--ram-budget", type=parse_size, metavar="SIZE",
                   help="qemu: the firmware's RAM region (arena, data and stack must fit at link time)")
    p.add_argument("--input", action="append", metavar="NPY",
                   help="input array (.npy), once per model input in model order; zeros when omitted")
    p.add_argument("--output", action="append", metavar="NPY",
                   help="where to save an output array (.npy), once per model output in model order")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="TFLite Micro, TVM and TinySeg side by side on one or more models")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files (.tflite or .onnx)")
    p.add_argument("--budgets", type=_parse_budgets, default=None, metavar="LIST",
                   help="fixed RAM budgets, comma-separated sizes or percentages of the no-spill arena "
                        "(default: 90%%,75%%,60%%); TinySeg's minimum is always measured")
    p.add_argument("--json", metavar="FILE", help="write the records as JSON (benchmarks/results.json's format)")
    p.add_argument("--markdown", metavar="FILE", help="write the tables and their notes as markdown")
    p.add_argument("--plot", metavar="PNG", help="plot RAM against bytes moved over the budgets (needs matplotlib)")
    p.add_argument("--no-qemu", action="store_true",
                   help="skip the Cortex-M7 firmware runs under QEMU (default: run them when QEMU is installed)")
    p.set_defaults(func=cmd_bench)

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
