"""The ``tinyseg`` command line.

Exit status: 0 success, 1 a user error (one line on stderr), 2 an internal error, 130 interrupted (Ctrl-C).
"""
import argparse
import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading

from tvm_tinyseg import boards, targets
from tvm_tinyseg.codegen.c_api import DEFAULT_MODULE_NAME, check_module_name
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.native_stderr import tvm_logs_hidden
from tvm_tinyseg.pass_config import MAX_RAM_BUDGET, OPTIONS, STORAGE_KINDS
from tvm_tinyseg.progress import PROGRESS, StderrHandler

EXIT_OK, EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # as a shell reports a command stopped by Ctrl-C


_log = logging.getLogger("tvm_tinyseg")
VERBOSITY_LEVELS = {-1: logging.ERROR, 0: PROGRESS, 1: logging.INFO}  # -q, default, -v


def _progress(message: str) -> None:
    _log.log(PROGRESS, message)


def configure_logging(verbosity: int) -> None:
    """``[tinyseg] ...`` lines on stderr: -q errors only; default the progress notes and warnings;
    -v also one line per long step with its time."""
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("[tinyseg] %(message)s"))
    _log.handlers[:] = [handler]  # main() may run again in one process: replace, never add
    _log.setLevel(VERBOSITY_LEVELS[verbosity])


_SIZE_UNITS = {"": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1 << 20, "MB": 1 << 20, "MIB": 1 << 20}


class _SizeTooLarge(argparse.ArgumentTypeError):
    """A size no 32-bit microcontroller can address (MAX_RAM_BUDGET)."""


def parse_size(text: str) -> int:
    """Bytes from '131072', '128K', '128KiB', '1M'; 'min' → the smallest feasible budget (-1)."""
    from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE

    value = text.strip()
    if value.lower() == "min":
        return SMALLEST_FEASIBLE
    match = re.fullmatch(r"(\d+)\s*([A-Za-z]*)", value)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 131072, 128K, 128KiB, 1M, min)")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
    if size > MAX_RAM_BUDGET:
        raise _SizeTooLarge(f"size {text!r} is larger than a 32-bit microcontroller's address space "
                            f"(at most {MAX_RAM_BUDGET} B)")
    return size


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
        except _SizeTooLarge as err:
            raise argparse.ArgumentTypeError(f"{key}: {err}") from None
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
    "tinyseg.integrity": ("--no-integrity", lambda a: False if a.no_integrity else None),
    "tinyseg.io_in_arena": ("--io-outside-arena", lambda a: False if a.io_outside_arena else None),
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

    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.output_dir import replacing
    from tvm_tinyseg.pass_config import register_options

    config = pass_config(args)
    if config:
        register_options()
    if args.project:
        boards.check_project_mcpu(args.project, args.mcpu)
    board_budget = args.ram_budget if args.ram_budget is not None else config.get("tinyseg.ram_budget")
    export, arena_budget = None, args.ram_budget
    if args.project:  # the board's RAM budget also holds the firmware's stack and state
        export, arena_budget = boards.exporter(args.project), boards.arena_budget(args.project, board_budget)
    mcpu = f", mcpu {args.mcpu}" if args.mcpu else ""
    with replacing(args.output, force=args.force) as staging:  # refused before compiling, swapped in after
        _progress(f"compiling {args.model} (target {args.target}{mcpu}, executor {args.executor})")
        with tvm.transform.PassContext(config=config):
            result = compile_model(args.model, tinyseg=not args.no_tinyseg, ram_budget=arena_budget,
                                   storage=args.storage, fuse_fetch=False if args.no_fuse_fetch else None,
                                   mcpu=args.mcpu, module_name=args.module_name,
                                   input_shapes=dict(args.input_shape or []), check_c=not args.no_check_c,
                                   integrity=False if args.no_integrity else None,
                                   io_in_arena=False if args.io_outside_arena else None)
        result.write(staging)
        if export:
            export(staging, board_budget)
    report = result.memory_report
    spilled = ""
    if report["spilled"]:
        spilled = (f", {len(report['spilled'])} tensors spilled to {report['storage']} storage "
                   f"({report['storage_bytes']} B, {report['moved_bytes']} B moved per inference)")
    if args.verbosity >= 0:
        print(f"wrote {args.output}: arena {report['arena_bytes']} B, weights {report['weight_bytes']} B, "
              f"{report['kernels']} kernels{spilled}" + (f"; {args.project} project" if args.project else ""))
    return EXIT_OK


def cmd_analyze(args) -> int:
    """Compile in memory (no C written), print the lifetime analysis, and draw the timeline if asked."""
    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.report import format_analysis, format_integrity, plot_timeline

    _progress(f"analyzing {args.model}")
    result = compile_model(args.model, tinyseg=not args.no_tinyseg, ram_budget=args.ram_budget,
                           storage=args.storage, fuse_fetch=False if args.no_fuse_fetch else None,
                           input_shapes=dict(args.input_shape or []), integrity=False if args.no_integrity else None,
                           io_in_arena=False if args.io_outside_arena else None)
    print(format_analysis(result.table, result.plan, result.memory.chains))
    print(format_integrity(result.memory_report))
    if args.plot:
        plot_timeline(result, result.plan, args.plot)
        print(f"wrote {args.plot}")
    return EXIT_OK


def cmd_run(args) -> int:
    import numpy as np

    from tvm_tinyseg.boards.model_io import io_spec
    from tvm_tinyseg.model_dir import memory_report

    spec = io_spec(args.dir)
    memory_report(args.dir)  # damaged or missing: said now, not by the build
    inputs, outputs = spec["inputs"], spec["outputs"]
    if args.input and len(args.input) != len(inputs):
        raise TinySegError(f"{len(args.input)} --input given; the model has {len(inputs)} inputs "
                           f"({', '.join(t.get('name', '?') for t in inputs)}): give one --input per input, in order")
    if args.output and len(args.output) != len(outputs):
        raise TinySegError(f"{len(args.output)} --output given; the model has {len(outputs)} outputs: "
                           "give one --output per output, in order")
    if args.platform != "host" and (len(inputs) > 1 or len(outputs) > 1):
        raise TinySegError(f"--platform {args.platform} runs single-input, single-output models; use --platform host")
    xs = []
    for i, want in enumerate(inputs):
        if not args.input:
            xs.append(np.zeros(want["shape"], dtype=want["dtype"]))
            continue
        try:
            array = np.load(args.input[i])
        except (OSError, ValueError, EOFError) as err:
            raise TinySegError(f"{args.input[i]}: cannot read input array ({err})") from None
        if not isinstance(array, np.ndarray):  # an .npz archive
            array.close()
            raise TinySegError(f"{args.input[i]}: an .npz archive; give each input as an .npy file (numpy.save)")
        xs.append(array)
    x = xs[0] if len(xs) == 1 else xs
    kind = boards.kind_for_platform(args.platform)
    board = boards.board(kind.name)
    profile = {"profile": True} if args.profile or args.json else {}
    if profile and args.platform != "qemu":
        raise TinySegError("--profile counts instructions under QEMU: use it with --platform qemu")
    _progress(f"building {args.dir} for {args.platform}")
    stats = {}
    artifact = board.build(args.dir, **({"ram_budget": args.ram_budget} if kind.ram_budget else {}), **profile)
    y = board.run(args.dir, x, artifact, stats=stats, **profile)
    ys = y if isinstance(y, list) else [y]
    for i, array in enumerate(ys):
        if args.output:
            try:
                np.save(args.output[i], array)
            except OSError as err:
                raise TinySegError(f"{args.output[i]}: cannot write the output array ({err.strerror or err})") \
                    from None
        print(f"output {array.dtype} {list(array.shape)}" + (f" written to {args.output[i]}" if args.output else ""))
    print(f"storage: {stats.get('storage_written', 0)} B written, {stats.get('storage_read', 0)} B read")
    for line in board.stats_lines(stats):
        print(line)
    if profile:
        _report_profile(args, stats)
    return EXIT_OK


def _report_profile(args, stats: dict) -> None:
    """The per-kernel table of a profile run (--profile) and its JSON (--json FILE)."""
    from tvm_tinyseg import profile
    from tvm_tinyseg.model_dir import memory_report

    steps = memory_report(args.dir).get("steps")
    if steps is None:
        raise TinySegError(f"{args.dir}: memory.json lists no steps (compiled by an older tinyseg); compile again")
    try:
        rows = profile.profile_rows(steps, stats.get("marks", []))
    except ValueError as err:
        raise TinySegError(f"{args.dir}: {err}") from None
    if args.profile:
        print(profile.format_profile(rows, stats["instructions"]))
    if args.json:
        with open(args.json, "w") as f:
            f.write(profile.profile_json(rows, stats["instructions"]))
        print(f"wrote {args.json}")


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


def cmd_demo(args) -> int:
    from tvm_tinyseg.demo import demo

    return EXIT_OK if demo(args.output, progress=_progress) else EXIT_INTERNAL_ERROR


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a user error (status 1, not argparse's 2) reported in one line."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_io_outside_arena(p) -> None:
    p.add_argument("--io-outside-arena", action="store_true",
                   help="keep the model's inputs and outputs in the caller's buffers (e.g. a camera frame in "
                        "PSRAM), read and written in place: the arena holds the rest")


def _add_input_shape(p) -> None:
    from tvm_tinyseg.frontend.input_shapes import parse_input_shape

    p.add_argument("--input-shape", action="append", type=_checked(parse_input_shape), metavar="NAME:DIMS",
                   help="shape of an input with dynamic dimensions, e.g. input_1:1x128x128x3 (repeatable; "
                        "a dynamic batch alone is fixed to 1)")


def _add_verbosity(parser, default) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=default,
                       help="also log each long step (import, lowering, spill search, placement, C emission, "
                            "board build) with its time")
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1, default=default,
                       help="print errors only (no progress notes, warnings or compile summary)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinyseg", description=(
        "Compile quantized segmentation models to plain C for microcontrollers (TVM + TinySeg)."))
    _add_verbosity(parser, 0)
    sub = parser.add_subparsers(dest="command", required=True)
    verbosity = _Parser(add_help=False)  # -q/-v also after the command; unset there, the global one holds
    _add_verbosity(verbosity, argparse.SUPPRESS)
    sub.add_parser = functools.partial(sub.add_parser, parents=[verbosity])

    p = sub.add_parser("compile", help="compile a .tflite/.onnx model to C sources, header and memory.json")
    p.add_argument("model", help="the model file (.tflite or .onnx)")
    p.add_argument("-o", "--output", required=True,
                   help="output directory, replaced whole when the compile succeeds (files of an earlier compile "
                        "that this one does not write are removed)")
    p.add_argument("--force", action="store_true",
                   help="write into an output directory that holds files tinyseg did not write (they are kept)")
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
    p.add_argument("--no-check-c", action="store_true",
                   help="do not parse the generated C with the host compiler (cc -fsyntax-only) before writing it")
    p.add_argument("--no-integrity", action="store_true",
                   help="no CRC per block of 'file'/'uart' storage (saves its RAM; corrupted storage goes unnoticed)")
    _add_io_outside_arena(p)
    p.add_argument("--module-name", type=_checked(check_module_name), default=DEFAULT_MODULE_NAME, metavar="NAME",
                   help="prefix of every C symbol, macro and file (NAME_run, NAME_model.h; default tinyseg), "
                        "so several models link into one firmware")
    _add_input_shape(p)
    p.add_argument("--project", choices=boards.project_kinds(),
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
    p.add_argument("--no-integrity", action="store_true",
                   help="no CRC per block of 'file'/'uart' storage (saves its RAM; corrupted storage goes unnoticed)")
    _add_io_outside_arena(p)
    _add_input_shape(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("run", help="build a compiled model and run it on one input")
    p.add_argument("dir", help="a directory written by 'tinyseg compile'")
    p.add_argument("--platform", choices=boards.platforms(), default="host",
                   help="host: the host C compiler; qemu: Cortex-M7 firmware under QEMU (mps2-an500); "
                        "avr: the Arduino sketch (arduino-builder) in simavr, ATmega2560")
    p.add_argument("--ram-budget", type=parse_size, metavar="SIZE",
                   help="qemu: the firmware's RAM region (arena, data and stack must fit at link time)")
    p.add_argument("--input", action="append", metavar="NPY",
                   help="input array (.npy), once per model input in model order; zeros when omitted")
    p.add_argument("--output", action="append", metavar="NPY",
                   help="where to save an output array (.npy), once per model output in model order")
    p.add_argument("--profile", action="store_true",
                   help="qemu: print each kernel's executed instructions, MACs and instructions per MAC")
    p.add_argument("--json", metavar="FILE", help="qemu: write the per-kernel profile as JSON")
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


def _report_interrupt() -> int:
    print("tinyseg: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def main(argv=None) -> int:
    interrupted = []

    def on_interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        args = build_parser().parse_args(argv)  # imports TVM: seconds
        configure_logging(args.verbosity)
        with contextlib.nullcontext() if os.environ.get("TINYSEG_DEBUG") else tvm_logs_hidden():
            return _run(args, interrupted)
    except KeyboardInterrupt:
        return _report_interrupt()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _run(args, interrupted: list) -> int:
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return _report_interrupt()
    except TinySegError as err:
        if interrupted:  # a tool run by the command failed because Ctrl-C reached it too
            return _report_interrupt()
        print(f"tinyseg: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # a bug of ours: say so, keep it to one line unless asked
        if interrupted:  # e.g. TVM turning the interrupt into an error of its own
            return _report_interrupt()
        if os.environ.get("TINYSEG_DEBUG"):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"tinyseg: internal error: {type(err).__name__}: {first} (set TINYSEG_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
