"""Side-by-side benchmark of one or more models: TFLite Micro's arena, stock TVM, TVM's planner,
ours without spilling, TinySeg at its minimum and at fixed budgets, the lower bound, bytes moved and,
when QEMU is installed, the Cortex-M7 firmware's static RAM and instruction counts.

``tinyseg bench`` and ``benchmarks/baselines.py`` (which writes the committed
benchmarks/results.{json,md}) both call :func:`measure` and :func:`render_markdown`. Each
measurement is one function returning a dict of record fields; how each figure is measured is
written next to the table (bench_notes.md, :data:`NOTES_FILE`).
"""
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvm_tinyseg.errors import TinySegError

KIB = 1024


def _silent(message: str) -> None:
    """The default progress callback: say nothing."""


# ---- budgets -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """A fixed RAM budget of the table: a share of the no-spill TinySeg arena, rounded down to a
    multiple of 1 KiB (``percent``), or a number of bytes (``nbytes``)."""
    label: str
    percent: int = None
    nbytes: int = None

    def resolve(self, nospill_bytes: int) -> int:
        if self.percent is not None:
            return nospill_bytes * self.percent // 100 // KIB * KIB
        return self.nbytes


DEFAULT_BUDGETS = (Budget("90 %", percent=90), Budget("75 %", percent=75), Budget("60 %", percent=60))


def parse_budgets(text: str, parse_size) -> tuple:
    """Budgets from '96K,128K' or '90%,75%' (``parse_size`` reads one size); TinySegError if malformed."""
    budgets = []
    for item in text.split(","):
        item = item.strip()
        percent = re.fullmatch(r"(\d+)\s*%", item)
        if percent:
            if not 0 < int(percent.group(1)) <= 100:
                raise TinySegError(f"budget {item!r}: a percentage of the no-spill arena must be in 1-100 %")
            budgets.append(Budget(f"{int(percent.group(1))} %", percent=int(percent.group(1))))
            continue
        nbytes = parse_size(item)
        if nbytes <= 0:
            raise TinySegError(f"budget {item!r}: a fixed budget must be a positive size (TinySeg min is always "
                               "measured)")
        budgets.append(Budget(item, nbytes=nbytes))
    return tuple(budgets)


# ---- TFLite Micro ------------------------------------------------------------------------------

def tflm(path) -> dict:
    """TFLite Micro's arena (``reference.tflm_arena``), or why there is none: TFLM reads only
    .tflite files, and the tflite-micro package is optional (the ``test`` extra)."""
    from tvm_tinyseg.reference import tflm_arena

    if Path(path).suffix != ".tflite":
        return {"tflm_arena_bytes": None, "tflm_error": "TFLite Micro reads .tflite files only"}
    try:
        return tflm_arena(path)
    except ImportError:
        return {"tflm_arena_bytes": None,
                "tflm_error": "tflite-micro is not installed (pip install 'tvm_tinyseg[test]')"}


def tflm_reference_output(path, x):
    """TFLite Micro's output on ``x``, or None where ``tflm`` has no arena either."""
    from tvm_tinyseg.reference import tflm_output

    if Path(path).suffix != ".tflite":
        return None
    try:
        return tflm_output(path, x)
    except ImportError:
        return None


# ---- TVM's StaticPlanBlockMemory ---------------------------------------------------------------

def _plan_passes():
    from tvm import relax

    T = relax.transform
    return [T.ToNonDataflow(), T.RemovePurityChecking(), T.CallTIRRewrite(), T.StaticPlanBlockMemory()]


def run_passes(mod, passes):
    import tvm

    with tvm.target.Target("c"):
        return tvm.transform.Sequential(passes)(mod)


def planned_bytes(mod) -> int:
    """Footprint of StaticPlanBlockMemory's plan of ``main``: every ``R.memory.alloc_storage``, plus
    each ``R.builtin.alloc_tensor`` (unplanned) except the returned one (the caller's output buffer).
    Parameters (the input) are the caller's too and are not counted."""
    import tvm
    from tvm import relax

    func = mod["main"]
    returned = func.body.body
    total = 0
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            op = getattr(value, "op", None) if isinstance(value, relax.Call) else None
            if op == tvm.ir.Op.get("relax.memory.alloc_storage"):
                total += int(value.args[0].values[0])
            elif op == tvm.ir.Op.get("relax.builtin.alloc_tensor") and not binding.var.same_as(returned):
                n = tvm.runtime.DataType(str(value.args[1].value)).bits // 8
                for extent in value.args[0].values:
                    n *= int(extent)
                total += n
    return total


def constant_bytes(func) -> int:
    """Bytes of the distinct tensor constants (weights, quantization parameters) ``func`` uses."""
    import tvm
    import tvm_ffi

    seen = {}

    def visit(const):
        if hasattr(const.value, "numpy"):
            seen.setdefault(const.__hash__(), const.value.numpy().nbytes)

    tvm_ffi.structural_walk(func, (tvm.ir.GenericConst, visit))
    return int(sum(seen.values()))


def io_bytes(result) -> int:
    """The model's input and output: TVM plans neither (they are the caller's), TFLM and tinyseg hold
    both in their arena, so the TVM figures add them to compare like for like."""
    return result.memory_report["input_bytes"] + result.memory_report["output_bytes"]


def tvm_default(result) -> dict:
    """TVM's planner on the integer module tinyseg compiles (``CompileResult.mod`` is
    ``lower_to_kernels(load_model(path).mod)``), plus the largest kernel workspace (ours: 0)."""
    workspace = max(result.kernels.workspace_bytes.values(), default=0)
    return {"tvm_default_bytes": planned_bytes(run_passes(result.mod, _plan_passes())) + workspace + io_bytes(result)}


def stock_passes():
    """tvm.compile's default Relax pipeline up to StaticPlanBlockMemory, with the operator fusion of
    the "zero" pipeline, and the layout conversion TFLite's NHWC conv2d_transpose needs."""
    from tvm import relax

    T = relax.transform
    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan(),
            T.ConvertLayout({"relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}),
            T.LegalizeOps(), T.AnnotateTIROpPattern(), T.FoldConstant(), T.FuseOps(), T.FuseTIR(),
            T.RewriteDataflowReshape()] + _plan_passes()


def tvm_stock(path, io: int) -> dict:
    """Stock TVM on the fake-quant float module its TFLite frontend produces. Kernels are TOPI's
    unscheduled legalizations: their internal buffers (pad, fused intermediates) are workspace,
    sized per kernel by TVM's TIR lowering + StorageRewrite; the largest one adds to the plan."""
    from tvm_tinyseg.codegen.tir_to_c import build_c_kernels
    from tvm_tinyseg.frontend import load_model

    try:
        mod = run_passes(load_model(path).mod, stock_passes())
        workspace = max(build_c_kernels(mod).workspace_bytes.values(), default=0)
    except Exception as err:  # noqa: BLE001 - a failing stock flow is a result, not a crash
        return {"tvm_stock_bytes": None, "tvm_stock_error": f"{type(err).__name__}: {str(err).strip()[-300:]}"}
    plan = planned_bytes(mod)
    return {"tvm_stock_bytes": plan + workspace + io, "tvm_stock_plan_bytes": plan,
            "tvm_stock_workspace_bytes": workspace, "tvm_stock_weight_bytes": constant_bytes(mod["main"])}


# ---- tinyseg -----------------------------------------------------------------------------------

def tinyseg(result) -> dict:
    report = result.memory_report
    return {"tinyseg_nospill_bytes": report["arena_bytes"], "io_bytes": io_bytes(result),
            "peak_live_bytes": report["peak_live_bytes"], "lower_bound_bytes": report["lower_bound_bytes"],
            "weight_bytes": report["weight_bytes"]}


def memory_plan(path, **options):
    """The memory plan ``compile_model(path, **options)`` would emit, without generating C."""
    from tvm_tinyseg.driver import lower_to_kernels, resolve_options
    from tvm_tinyseg.frontend import load_model

    return lower_to_kernels(load_model(path).mod, resolve_options(**options))


def tinyseg_min(path, storage: str) -> dict:
    """The smallest arena any spill set reaches with ``storage`` (then the fewest bytes moved):
    ``plan_memory`` with ``ram_budget=SMALLEST_FEASIBLE``. Field names get a ``_file`` suffix for
    storage other than "mmap"."""
    from tvm_tinyseg.driver import spill_report
    from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE

    plan = memory_plan(path, ram_budget=SMALLEST_FEASIBLE, storage=storage)
    suffix = "" if storage == "mmap" else f"_{storage}"
    return {f"tinyseg_min_bytes{suffix}": plan.arena.size, f"tinyseg_moved_bytes{suffix}": plan.moved_bytes,
            f"tinyseg_storage_bytes{suffix}": plan.storage.size,
            f"tinyseg_spilled_bytes{suffix}": [s["bytes"] for s in spill_report(plan.table)],
            f"tinyseg_streamed_chains{suffix}": len(plan.chains)}


def tinyseg_budgets(path, nospill: int, budgets=DEFAULT_BUDGETS) -> dict:
    """``plan_memory`` with ``ram_budget=B, storage="mmap"`` for each budget; a budget below
    TinySeg min is a result ("feasible": false), not an error."""
    from tvm_tinyseg.passes.spill_planner import BudgetError

    rows = []
    for budget in budgets:
        nbytes = budget.resolve(nospill)
        try:
            plan = memory_plan(path, ram_budget=nbytes, storage="mmap")
        except BudgetError:
            rows.append({"label": budget.label, "budget": nbytes, "feasible": False})
            continue
        rows.append({"label": budget.label, "budget": nbytes, "arena_bytes": plan.arena.size,
                     "moved_bytes": plan.moved_bytes, "spilled": len(plan.spills)})
    return {"tinyseg_budgets": rows}


# ---- QEMU (Cortex-M7 firmware) -------------------------------------------------------------------

QEMU_SEED = 0
QEMU_MCPU = "cortex-m7"  # mps2-an500's core


def qemu_available() -> bool:
    from tvm_tinyseg.boards import qemu_cortex_m as qemu

    return qemu.available()


def _seeded_input(spec: dict) -> np.ndarray:
    rng = np.random.default_rng(QEMU_SEED)
    return (rng.integers(-128, 128, size=spec["shape"]) if spec["dtype"] == "int8"
            else rng.standard_normal(spec["shape"])).astype(spec["dtype"])


def qemu_stats(path) -> dict:
    """The firmware of the no-spill TinySeg build and of TinySeg min (mmap storage in the board's
    PSRAM) and, for the instruction counts only, of the build without TinySeg (``insns_plain``),
    each compiled for the board's core (``--mcpu cortex-m7``: DSP dot products), linked
    with all of QEMU's 4 MiB as its RAM region (the arena must fit, not a budget) and run under
    QEMU on one seeded input: static RAM of each ELF (``elf_ram_bytes`` is TinySeg min's) and,
    when the runner counts them, the instructions executed and per multiply-accumulate. Both outputs must
    equal TFLite Micro's (where it runs; else each other), or no figure is reported (RuntimeError)."""
    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
    from tvm_tinyseg.boards import qemu_cortex_m as qemu

    builds, x, macs = {}, None, None
    with tempfile.TemporaryDirectory(prefix="tinyseg_bench_") as tmp:
        for name, options in (("nospill", {}), ("tinyseg", dict(ram_budget=SMALLEST_FEASIBLE, storage="mmap")),
                              ("plain", dict(tinyseg=False))):
            out_dir = os.path.join(tmp, name)
            result = compile_model(path, out_dir, mcpu=QEMU_MCPU, **options)
            if x is None:
                x = _seeded_input(result.io_spec["input"])
            if macs is None:  # the model's (a row-streamed chain computes each MAC once, like the whole kernels)
                macs = sum(s["macs"] for s in result.memory_report["steps"])
            stats = {"macs": macs}
            y = qemu.run(out_dir, x, qemu.build(out_dir, ram_budget=qemu.RAM_WINDOW), stats)
            builds[name] = (y, stats)
    reference = tflm_reference_output(path, x)
    against = "TFLite Micro's" if reference is not None else "the no-spill build's"
    reference = builds["nospill"][0] if reference is None else reference
    for name, (y, _) in builds.items():
        if not np.array_equal(y, reference):
            raise RuntimeError(f"{os.path.basename(path)}: the {name} firmware's output under QEMU differs from "
                               f"{against} ({int(np.count_nonzero(y != reference))} values)")
    record = {"elf_ram_bytes": builds["tinyseg"][1]["static_ram_bytes"],
              "elf_ram_bytes_nospill": builds["nospill"][1]["static_ram_bytes"]}
    for name, (_, stats) in builds.items():
        if "instructions" in stats:
            record[f"insns_{name}"] = stats["instructions"]
            if stats["macs"]:
                record[f"insns_per_mac_{name}"] = round(stats["instructions"] / stats["macs"], 2)
    return record


# ---- host speed ---------------------------------------------------------------------------------

TIMING_RUNS = 5


def tflm_invoke_seconds(path, x, runs: int = TIMING_RUNS) -> list:
    """Wall time of each of ``runs`` invokes of the PyPI tflite-micro interpreter on ``x``."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(path), arena_size=16 << 20)
    interpreter.set_input(x, 0)
    interpreter.invoke()  # the first invoke also prepares; not timed
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return times


def host_speed(path) -> dict:
    """Host (cc -O2) milliseconds per inference of the build without TinySeg and of TinySeg min
    (mmap), and of TFLite Micro's interpreter, each the median of TIMING_RUNS runs on one seeded
    input, measured one after the other in this process; the outputs must equal TFLM's."""
    from tflite_micro.python.tflite_micro import runtime  # noqa: F401 (fail early without it)

    from tvm_tinyseg.driver import compile_model
    from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
    from tvm_tinyseg.boards import host
    from tvm_tinyseg.reference import tflm_output

    record = {}
    with tempfile.TemporaryDirectory(prefix="tinyseg_host_") as tmp:
        for name, options in (("plain", dict(tinyseg=False)),
                              ("tinyseg", dict(ram_budget=SMALLEST_FEASIBLE, storage="mmap"))):
            out_dir = os.path.join(tmp, name)
            result = compile_model(path, out_dir, **options)
            x = _seeded_input(result.io_spec["input"])
            stats = {}
            y = host.run(out_dir, x, host.build(out_dir), stats, timing_runs=TIMING_RUNS)
            if not np.array_equal(y, tflm_output(path, x)):
                raise RuntimeError(f"{os.path.basename(path)}: the {name} host build's output differs from TFLM's")
            record[f"host_ms_{name}"] = round(float(np.median(stats["run_ns"])) / 1e6, 2)
        record["tflm_invoke_ms"] = round(float(np.median(tflm_invoke_seconds(path, x))) * 1e3, 2)
    return record


# ---- one model -----------------------------------------------------------------------------------

def measure(path, budgets=DEFAULT_BUDGETS, qemu: bool = None, progress=_silent) -> dict:
    """Every figure of the table for one model. ``qemu``: run the firmware under QEMU (default:
    when arm-none-eabi-gcc and qemu-system-arm are installed). ``progress`` gets a line per step."""
    from tvm_tinyseg.driver import compile_model

    path = Path(path)
    name = path.name

    def step(what):
        progress(f"{name}: {what}")

    step("compiling with TinySeg")
    result = compile_model(path)
    record = {"model": name, "input_shape": list(result.model.inputs[0].shape)}
    step("TFLite Micro's arena (bisection)")
    record.update(tflm(path))
    step("stock TVM")
    record.update(tvm_stock(path, io_bytes(result)))
    step("TVM's planner on our kernels")
    record.update(tvm_default(result))
    record.update(tinyseg(result))
    step("without TinySeg")
    record["plain_arena_bytes"] = memory_plan(path, tinyseg=False).arena.size
    for storage in ("mmap", "file"):
        step(f"TinySeg min ({storage} storage)")
        record.update(tinyseg_min(path, storage))
    step(f"TinySeg at budgets {', '.join(b.label for b in budgets)}")
    record.update(tinyseg_budgets(path, record["tinyseg_nospill_bytes"], budgets))
    if path.suffix == ".tflite":
        step("host and TFLite Micro run times")
        record.update(host_speed(path))
    if qemu if qemu is not None else qemu_available():
        step("firmware under QEMU (no spill, TinySeg min)")
        record.update(qemu_stats(path))
    return record


def default_models(models_dir) -> list:
    """Every int8 model of a zoo directory (not the ``*_float.tflite`` ones)."""
    return sorted(p for p in Path(models_dir).glob("*.tflite") if not p.name.endswith("_float.tflite"))


# ---- output ------------------------------------------------------------------------------------

def _ratio(key, base="tflm_arena_bytes"):
    def cell(record):
        ours, reference = record.get(key), record.get(base)
        return f"{ours / reference:.2f}" if ours and reference else "n/a"
    return cell


def _crc_ram_file(record):
    from tvm_tinyseg.driver import integrity_ram_bytes

    pool = record.get("tinyseg_storage_bytes_file")
    return "n/a" if pool is None else f"{integrity_ram_bytes(pool):,}"


def _overhead(record):
    tinyseg_insns, nospill = record.get("insns_tinyseg"), record.get("insns_nospill")
    return f"{100 * (tinyseg_insns - nospill) / nospill:+.1f} %" if tinyseg_insns and nospill else "n/a"


COLUMNS = [  # (header, record key or function of the record)
    ("model", "model"), ("input", "input_shape"),
    ("TFLM arena", "tflm_arena_bytes"),
    ("TVM stock", "tvm_stock_bytes"), ("(plan", "tvm_stock_plan_bytes"), ("+ workspace)", "tvm_stock_workspace_bytes"),
    ("TVM planner, our int8 module", "tvm_default_bytes"),
    ("ours, TinySeg off", "plain_arena_bytes"),
    ("tinyseg arena", "tinyseg_nospill_bytes"), ("tinyseg / TFLM", _ratio("tinyseg_nospill_bytes")),
    ("TinySeg min (mmap)", "tinyseg_min_bytes"), ("min / TFLM", _ratio("tinyseg_min_bytes")),
    ("moved at min", "tinyseg_moved_bytes"), ("TinySeg min (file)", "tinyseg_min_bytes_file"),
    ("+ CRC RAM (file)", _crc_ram_file),
    ("peak live", "peak_live_bytes"), ("largest tensor", "lower_bound_bytes"),
    ("weights int8", "weight_bytes"), ("TVM stock weights", "tvm_stock_weight_bytes"),
]

# (header, key, the record field that must exist somewhere for the column to be shown): QEMU
# installed; instruction counts from the runner.
QEMU_COLUMNS = [
    ("firmware RAM, no spill", "elf_ram_bytes_nospill", "elf_ram_bytes_nospill"),
    ("firmware RAM, TinySeg min", "elf_ram_bytes", "elf_ram_bytes"),
    ("insns, no spill", "insns_nospill", "insns_nospill"), ("insns, TinySeg min", "insns_tinyseg", "insns_tinyseg"),
    ("insn overhead", _overhead, "insns_tinyseg"),
    ("insns/MAC, no TinySeg", "insns_per_mac_plain", "insns_per_mac_plain"),
    ("insns/MAC, TinySeg min", "insns_per_mac_tinyseg", "insns_per_mac_tinyseg"),
]


def _host_vs_tflm(build):
    def cell(record):
        ours, tflm = record.get(f"host_ms_{build}"), record.get("tflm_invoke_ms")
        return f"{ours:.1f} vs {tflm:.1f}" if ours and tflm else "n/a"
    return cell


HOST_COLUMNS = [  # (header, key, field that must exist): TFLite Micro installed
    ("host ms vs TFLM, no TinySeg", _host_vs_tflm("plain"), "host_ms_plain"),
    ("host ms vs TFLM, TinySeg min", _host_vs_tflm("tinyseg"), "host_ms_tinyseg"),
]

NOTES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_notes.md")


def _bytes(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _cell(record, key):
    if callable(key):
        return key(record)
    value = record.get(key)
    if value is None:
        return "n/a"
    if key == "input_shape":
        return "x".join(map(str, value))
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header, aligns, rows) -> list:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def columns(records) -> list:
    """The main table's columns: the QEMU and host ones only if some record has their figures."""
    return COLUMNS + [(h, k) for h, k, needs in QEMU_COLUMNS + HOST_COLUMNS if any(needs in r for r in records)]


def budget_table(records) -> list:
    """Per model: the arena with no spilling, the smallest feasible one, then per fixed budget
    the budget, the arena compiled under it and the bytes moved (tensors spilled)."""
    labels = [row["label"] for row in (records[0].get("tinyseg_budgets", []) if records else [])]
    header = ["model", "tinyseg arena (no spill)", "TinySeg min (mmap)"]
    for label in labels:
        header += [f"{label} budget", "arena", "moved (spilled)"]
    rows = []
    for r in records:
        row = [r["model"], _bytes(r.get("tinyseg_nospill_bytes")), _bytes(r.get("tinyseg_min_bytes"))]
        for entry in r.get("tinyseg_budgets", []):
            if entry.get("feasible", True):
                row += [_bytes(entry["budget"]), _bytes(entry["arena_bytes"]),
                        f"{entry['moved_bytes']:,} ({entry['spilled']})"]
            else:
                row += [_bytes(entry["budget"]), "infeasible", "–"]
        rows.append(row)
    return _table(header, ["---"] + ["---:"] * (len(header) - 1), rows)


def render_markdown(records, title="Baselines: peak RAM") -> str:
    """The tables and the notes saying how each figure is measured (benchmarks/results.md)."""
    with open(NOTES_FILE) as f:
        return render_tables(records, title) + "\n\n" + f.read()


def render_tables(records, title="Baselines: peak RAM") -> str:
    cols = columns(records)
    lines = [f"# {title}", ""]
    lines += _table([h for h, _ in cols], ["---" if k in ("model", "input_shape") else "---:" for _, k in cols],
                    [[_cell(r, k) for _, k in cols] for r in records])
    lines += ["", "## TinySeg spilling at fixed RAM budgets (storage mmap)", ""]
    lines += budget_table(records)
    failures = [f"- `{r['model']}`: {key}: {r[key]}" for r in records for key in ("tflm_error", "tvm_stock_error")
                if r.get(key)]
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines)


def render_json(records) -> str:
    return json.dumps(records, indent=2) + "\n"


# ---- plot --------------------------------------------------------------------------------------

def ram_moved_points(record) -> list:
    """(bytes moved, arena bytes, label) of each build of one model: no spill, each feasible fixed
    budget, TinySeg min (mmap), in that order."""
    points = [(0, record["tinyseg_nospill_bytes"], "no spill")]
    for row in record.get("tinyseg_budgets", []):
        if row.get("feasible", True):
            points.append((row["moved_bytes"], row["arena_bytes"], row["label"]))
    points.append((record["tinyseg_moved_bytes"], record["tinyseg_min_bytes"], "min"))
    return points


def plot_ram_vs_moved(records, path) -> None:
    """A PNG with one panel per model: arena (KiB) against bytes moved per inference (KiB) over
    the budgets, with TFLite Micro's arena and the lower bound (largest tensor) as lines."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TinySegError("plotting needs matplotlib: pip install 'tvm_tinyseg[plot]'") from None
    if not records:
        raise TinySegError("nothing to plot: no models were measured")
    ncols = min(3, len(records))
    nrows = (len(records) + ncols - 1) // ncols
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for i, record in enumerate(records):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        points = ram_moved_points(record)
        xs, ys = [p[0] / KIB for p in points], [p[1] / KIB for p in points]
        ax.plot(xs, ys, marker="o", color="tab:blue", label="TinySeg (mmap)")
        labels = {}  # builds that land on the same point share one label
        for x, y, label in zip(xs, ys, (p[2] for p in points)):
            labels.setdefault((x, y), []).append(label)
        for (x, y), names in labels.items():
            ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        ha="right" if x and x == max(xs) else "left")
        if record.get("tinyseg_min_bytes_file") is not None:
            ax.plot([record["tinyseg_moved_bytes_file"] / KIB], [record["tinyseg_min_bytes_file"] / KIB],
                    marker="x", linestyle="none", color="tab:green", label="TinySeg min (file)")
        span = max(xs) or 1
        ax.set_xlim(-0.08 * span, 1.12 * span)
        if record.get("tflm_arena_bytes"):
            ax.axhline(record["tflm_arena_bytes"] / KIB, color="tab:red", linestyle="--", label="TFLite Micro")
        ax.axhline(record["lower_bound_bytes"] / KIB, color="gray", linestyle=":", label="largest tensor")
        ax.set_ylim(0, max(ys + [(record.get("tflm_arena_bytes") or 0) / KIB]) * 1.15)
        ax.set_title(record["model"], fontsize=9)
        ax.set_xlabel("bytes moved per inference (KiB)", fontsize=8)
        ax.set_ylabel("arena (KiB)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
