"""The qemu_cortex_m board kind: bare-metal Cortex-M7 firmware for a compiled model, run under QEMU
(mps2-an500).

``export_project`` writes the model's qemu_cortex_m project (template
``microtvm_projects/qemu_cortex_m``), ``build`` runs ``make`` in it, the one build recipe. Its
linker script declares only ``ram_budget`` bytes of SRAM for .data, .bss (the arena) and the
stack, so a model that does not fit fails at link time; weights stay in flash, and a
memory-mapped storage pool goes to the board's PSRAM (not counted). Files (input, output, a file
storage pool) go through semihosting to QEMU's working directory.
"""
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from tvm_tinyseg.boards.model_io import checked_input, module_name, parse_stats, run_failure
from tvm_tinyseg.codegen.c_api import rename
from tvm_tinyseg.codegen.model_files import copy_runtime
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.microtvm_projects import template_dir
from tvm_tinyseg.model_dir import copy_files, copy_template, memory_report, runtime_headers, storage_backend, write_text
from tvm_tinyseg.profile import MARK_FUNCTION
from tvm_tinyseg.progress import timed

NAME = "qemu_cortex_m"
_log = logging.getLogger(__name__)
MCPU = "cortex-m7"  # the CPU of QEMU's mps2-an500
MAKE = "make"
CC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"
MACHINE = "mps2-an500"
STACK_SIZE = 4096  # bytes, counted in the RAM budget; its lowest STACK_GUARD bytes are an MPU guard
STACK_GUARD = 256
FAULT_STATUS = 99  # the firmware's exit status after a fault (e.g. a stack overflow into the guard)
ELF = "tinyseg_qemu.elf"
PLUGIN = "libtinyseg_insncount.so"  # the project's QEMU plugin counting executed instructions
INSTRUCTIONS_FILE = "instructions.txt"
RUN_TIMEOUT = 600
PROFILE_CFLAG = "-DTINYSEG_PROFILE"
NM = "arm-none-eabi-nm"

RAM_ORIGIN, RAM_WINDOW = 0x20000000, 4 << 20
PSRAM_ORIGIN, PSRAM_WINDOW = 0x60000000, 16 << 20
FLASH_ORIGIN, FLASH_WINDOW = 0x0, 4 << 20

BUILD_FILES = ("Makefile", "tinyseg_insncount.c")  # the build recipe and the host-side plugin, copied as they are
FIRMWARE_FILES = ("mps2_an500.ld", "startup.c", "semihost.c", "semihost.h", "main.c")  # under the module's name
STORAGE_PORT = 7777  # `make run` of a uart project: the storage server's TCP port on loopback
# RAM the firmware needs beside the arena: the stack, and its own .data/.bss (storage counters,
# the command line buffer) plus the stack's alignment to its 256-byte MPU guard.
FIRMWARE_STATE_BYTES = 1024
FIRMWARE_RAM_BYTES = STACK_SIZE + FIRMWARE_STATE_BYTES
DEFAULT_RAM_BYTES = 256 * 1024


def available() -> bool:
    """Whether make, the cross compiler, a host C compiler (for the plugin) and QEMU are installed."""
    return all(shutil.which(tool) for tool in (MAKE, CC, SIZE, QEMU, "cc"))


def default_ram_budget(report: dict) -> int:
    """The RAM region when none is given: the linker script's 256 KiB, or more (in whole KiB) when
    the arena, the storage integrity CRCs, stack and firmware state need it."""
    need = report["arena_bytes"] + report.get("integrity_ram_bytes", 0) + FIRMWARE_RAM_BYTES
    return max(DEFAULT_RAM_BYTES, -(-need // 1024) * 1024)


def export_project(model_dir: str, ram_budget: int = None) -> None:
    """Bare-metal Cortex-M7 firmware for QEMU mps2-an500: ``make`` links it with ``ram_budget``
    bytes of RAM (default: ``default_ram_budget``), ``make run`` runs it."""
    report = memory_report(model_dir)
    storage = report["storage"]
    backend = storage_backend("qemu_cortex_m", report, model_dir)
    budget = ram_budget if ram_budget is not None and ram_budget > 0 else default_ram_budget(report)
    name = module_name(model_dir)
    copy_files(template_dir("qemu_cortex_m"), BUILD_FILES, model_dir)
    copy_template(template_dir("qemu_cortex_m"), FIRMWARE_FILES + backend.template, model_dir, name)
    copy_runtime([*backend.sources, *runtime_headers()], model_dir, name)
    serial = f"SERIAL ?= tcp:127.0.0.1:{STORAGE_PORT},nodelay=on\n" if storage == "uart" else ""
    sources = [rename("tinyseg_model.c", name), *backend.sources, *backend.template]
    write_text(os.path.join(model_dir, "project.mk"),
               f"# Written by tinyseg for {report['model']} ({storage} storage).\n"
               f"MODEL_SOURCES = {' '.join(sources)}\n"
               f"RAM_BUDGET ?= {budget}\n{serial}")
    write_text(os.path.join(model_dir, "README.md"), _readme(report, budget))


def _readme(report: dict, budget: int) -> str:
    storage = {"mmap": "memory-mapped PSRAM at 0x60000000 (not counted in RAM)",
               "file": "the host file tinyseg_storage.bin through semihosting (standing for an SD card)",
               "uart": "a storage server on the host, over UART0 (CRC-checked frames): start it first with "
                       f"`python -m tvm_tinyseg.storage_server --port {STORAGE_PORT}`"}
    return f"""# {report['model']} on a Cortex-M7 (QEMU mps2-an500)

Generated by `tinyseg compile --project qemu_cortex_m`. Needs `arm-none-eabi-gcc` (with newlib),
`make`, a host `cc` and `qemu-system-arm`.

```sh
make                      # tinyseg_qemu.elf, linked with RAM_BUDGET={budget} bytes of RAM
make run                  # input.bin -> output.bin under QEMU; storage traffic, instruction count
make RAM_BUDGET=160000    # another RAM region; too small fails with "region `RAM' overflowed by N bytes"
```

- arena (activations, input, output): {report['arena_bytes']} B; weights (flash): {report['weight_bytes']} B
- spilled tensors: {len(report['spilled'])}, storage pool {report['storage_bytes']} B, \
{report['moved_bytes']} B moved per inference, in {storage.get(report['storage'], report['storage'])}
- `input.bin`/`output.bin`: the raw input and output tensors (C order), in QEMU's working directory
- the RAM region holds .data, .bss (the arena) and a 4 KiB stack whose lowest 256 B are an MPU guard;
  a fault exits with status 99, a storage error with `tinyseg_run`'s status
"""


def _check_mcpu(model_dir: str) -> None:
    """A model compiled with --mcpu for another core is not built for the Cortex-M7 board."""
    mcpu = memory_report(model_dir).get("mcpu")
    if mcpu not in (None, MCPU):
        raise TinySegError(f"{model_dir} was compiled for --mcpu {mcpu}; the QEMU board ({MACHINE}) is a "
                           f"{MCPU}: compile with --mcpu {MCPU} (or without --mcpu)")


def _project_is_current(model_dir: str) -> bool:
    """Whether the directory holds a qemu_cortex_m project written after the model was compiled."""
    makefile, report = os.path.join(model_dir, "project.mk"), os.path.join(model_dir, "memory.json")
    return os.path.exists(makefile) and os.path.getmtime(makefile) >= os.path.getmtime(report)


def build(model_dir: str, ram_budget: int = None, extra_cflags=(), stack_size: int = STACK_SIZE,
          profile: bool = False) -> str:
    """Build the model's qemu_cortex_m project (``make``; the project is written into ``model_dir``
    first unless ``tinyseg compile --project qemu_cortex_m`` did) and its instruction-count plugin;
    return the ELF's path. ``ram_budget`` (bytes) is the SRAM the linker may use for .data, .bss
    and the stack (default: the project's); a firmware that needs more raises TinySegError with the
    linker's "region `RAM' overflowed by N bytes". ``profile`` builds the per-kernel marks in
    (tvm_tinyseg/profile.py)."""
    _check_mcpu(model_dir)
    if profile:
        extra_cflags = (*extra_cflags, PROFILE_CFLAG)
    if stack_size < STACK_GUARD + 64:
        raise TinySegError(f"stack size {stack_size} B: at least {STACK_GUARD + 64} B "
                           f"(the MPU guard takes {STACK_GUARD})")
    if not _project_is_current(model_dir):
        export_project(model_dir)
    cmd = [MAKE, "-s", "-C", model_dir, f"STACK_SIZE={int(stack_size)}", f"EXTRA_CFLAGS={' '.join(extra_cflags)}"]
    budget = ram_budget is not None and int(ram_budget) > 0
    if budget:
        cmd.append(f"RAM_BUDGET={int(ram_budget)}")
    with timed(_log, "qemu_cortex_m firmware build (make)"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        overflow = [ln for ln in lines if "overflowed by" in ln]
        budget_text = f"RAM budget {int(ram_budget)} B" if budget else "the project's RAM budget"
        if overflow:
            detail = re.sub(r"^.*?(region `)", r"\1", overflow[0])
            raise TinySegError(f"{model_dir}: firmware does not fit {budget_text}: {detail}")
        first = next((ln for ln in lines if "error" in ln.lower()), lines[0] if lines else f"status {proc.returncode}")
        raise TinySegError(f"{model_dir}: firmware build failed: {first}")
    return os.path.join(model_dir, ELF)


def static_memory(elf: str) -> dict:
    """Bytes of the ELF's allocated sections by memory: ``ram`` (.data, .bss, stack — the static
    RAM the budget covers), ``flash`` (code, weights, .data's initial values) and ``psram``."""
    proc = subprocess.run([SIZE, "-A", elf], capture_output=True, text=True, check=True)
    usage = {"ram": 0, "flash": 0, "psram": 0}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[0].startswith(".") or not parts[1].isdigit():
            continue
        size, addr = int(parts[1]), int(parts[2])
        if size == 0:
            continue
        for key, origin, window in (("ram", RAM_ORIGIN, RAM_WINDOW), ("psram", PSRAM_ORIGIN, PSRAM_WINDOW),
                                    ("flash", FLASH_ORIGIN, FLASH_WINDOW)):
            if origin <= addr < origin + window:
                usage[key] += size
                if parts[0] == ".data":
                    usage["flash"] += size  # initial values
                break
    return usage


def profile_mark_address(elf: str) -> int:
    """The entry of a profile build's mark function (Thumb bit cleared), or a TinySegError."""
    proc = subprocess.run([NM, elf], capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == MARK_FUNCTION and parts[1] in "tT":
            return int(parts[0], 16) & ~1
    raise TinySegError(f"{elf}: not a profile build (no {MARK_FUNCTION}; build with profile=True)")


def run_firmware(elf: str, workdir: str, timeout: float = RUN_TIMEOUT, args=("input.bin", "output.bin"),
                 serial: str = "none", plugin: str = None, mark: int = None) -> subprocess.CompletedProcess:
    """Run ``elf`` under QEMU with ``workdir`` as the semihosting working directory; the exit
    status is the firmware's (SYS_EXIT_EXTENDED). ``serial`` is UART0's QEMU chardev. With
    ``plugin`` (the project's instruction counter) the count goes to ``INSTRUCTIONS_FILE`` in
    ``workdir``, with the counts at each execution of address ``mark`` when given."""
    semihosting = ",".join(["enable=on,target=native,chardev=semihost", "arg=tinyseg",
                            *(f"arg={a}" for a in args)])
    cmd = [QEMU, "-M", MACHINE, "-display", "none", "-monitor", "none", "-serial", serial,
           "-chardev", "stdio,id=semihost", "-semihosting-config", semihosting, "-kernel", os.path.abspath(elf)]
    if plugin:
        marks = f",mark={mark:#x}" if mark is not None else ""
        cmd += ["-plugin", f"{os.path.abspath(plugin)},out={INSTRUCTIONS_FILE}{marks}"]
    try:
        return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TinySegError(f"{elf}: QEMU run timed out after {timeout} s") from e


def instruction_counts(workdir: str) -> dict:
    """The plugin's ``instructions`` (and a profile run's ``marks``), or a TinySegError when QEMU
    ran without writing them."""
    path = os.path.join(workdir, INSTRUCTIONS_FILE)
    try:
        with open(path) as f:
            items = dict(line.split("=", 1) for line in f.read().split())
        counts = {"instructions": int(items["instructions"])}
        if "marks" in items:
            counts["marks"] = [int(c) for c in items["marks"].split(",") if c]
        return counts
    except (OSError, ValueError, KeyError):
        raise TinySegError(f"the instruction-count plugin wrote no count ({INSTRUCTIONS_FILE})") from None


def run(model_dir: str, x: np.ndarray, elf: str = None, stats: dict = None, timeout: float = RUN_TIMEOUT,
        storage_server=None, profile: bool = False) -> np.ndarray:
    """Run the firmware on ``x`` under QEMU in a fresh working directory (which also holds a file
    storage pool); return the output. ``stats``, if given, receives the bytes written to and read
    from storage (``storage_written``, ``storage_read``), tinyseg_run's ``status``, the stack's
    high-water mark (``stack_used``), QEMU's ``exit_status``, the ELF's ``static_ram_bytes``,
    ``static_flash_bytes`` and ``static_psram_bytes``, the executed guest ``instructions`` (the
    project's QEMU plugin, built beside the ELF) and the wall time (``seconds``); with ``profile``
    (the ELF a ``build(..., profile=True)``) also the count at each profile mark (``marks``). A uart
    model's UART0 talks to ``storage_server`` (by default a fresh storage_server.StorageServer)."""
    spec = checked_input(model_dir, x)
    elf = os.path.abspath(elf or os.path.join(model_dir, ELF))
    if not os.path.exists(elf):
        elf = build(model_dir)
    plugin = os.path.join(os.path.dirname(elf), PLUGIN)
    mark = profile_mark_address(elf) if profile else None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        np.ascontiguousarray(x).tofile(os.path.join(tmp, "input.bin"))
        serial = "none"
        if memory_report(model_dir)["storage"] == "uart":
            from tvm_tinyseg.storage_server import serving

            port = stack.enter_context(serving(storage_server)).port
            serial = f"tcp:127.0.0.1:{port},nodelay=on"
        start = time.monotonic()
        proc = run_firmware(elf, tmp, timeout, serial=serial, plugin=plugin if os.path.exists(plugin) else None,
                            mark=mark)
        seconds = time.monotonic() - start
        run_stats = parse_stats(proc.stdout)
        if stats is not None:
            stats.update(run_stats)
            stats["exit_status"] = proc.returncode
            stats["seconds"] = seconds
            if os.path.exists(plugin) and proc.returncode == 0:
                stats.update(instruction_counts(tmp))
            stats.update({f"static_{k}_bytes": v for k, v in static_memory(elf).items()})
        if run_failure(run_stats):
            raise TinySegError(f"{model_dir}: {run_failure(run_stats)}")
        if proc.returncode != 0:
            message = (proc.stdout.strip() + " " + proc.stderr.strip()).strip()
            raise TinySegError(f"{model_dir}: firmware exited with status {proc.returncode}: {message}")
        out = spec["output"]
        return np.fromfile(os.path.join(tmp, "output.bin"), dtype=out["dtype"]).reshape(out["shape"])


def stats_lines(stats: dict) -> list:
    """What ``tinyseg run --platform qemu`` prints beside the output."""
    return [f"firmware: static RAM {stats['static_ram_bytes']} B, flash {stats['static_flash_bytes']} B, "
            f"PSRAM {stats['static_psram_bytes']} B, stack used {stats.get('stack_used', 0)} B",
            f"instructions: {stats['instructions']}"]
