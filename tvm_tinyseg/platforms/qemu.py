"""Build a generated model into bare-metal Cortex-M7 firmware and run it under QEMU (mps2-an500).

``build`` runs ``make`` in the model's qemu_cortex_m project (``tvm_tinyseg.projects``, template
``microtvm_projects/qemu_cortex_m``), the one build recipe. Its linker script declares only
``ram_budget`` bytes of SRAM for .data, .bss (the arena) and the stack, so a model that does not
fit fails at link time; weights stay in flash, and a memory-mapped storage pool goes to the
board's PSRAM (not counted). Files (input, output, a file storage pool) go through semihosting
to QEMU's working directory.
"""
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.platforms.model_io import checked_input, parse_stats, run_failure

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

RAM_ORIGIN, RAM_WINDOW = 0x20000000, 4 << 20
PSRAM_ORIGIN, PSRAM_WINDOW = 0x60000000, 16 << 20
FLASH_ORIGIN, FLASH_WINDOW = 0x0, 4 << 20


def available() -> bool:
    """Whether make, the cross compiler, a host C compiler (for the plugin) and QEMU are installed."""
    return all(shutil.which(tool) for tool in (MAKE, CC, SIZE, QEMU, "cc"))


def _storage_kind(model_dir: str) -> str:
    with open(os.path.join(model_dir, "memory.json")) as f:
        return json.load(f)["storage"]


def _project_is_current(model_dir: str) -> bool:
    """Whether the directory holds a qemu_cortex_m project written after the model was compiled."""
    makefile, report = os.path.join(model_dir, "project.mk"), os.path.join(model_dir, "memory.json")
    return os.path.exists(makefile) and os.path.getmtime(makefile) >= os.path.getmtime(report)


def build(model_dir: str, ram_budget: int = None, extra_cflags=(), stack_size: int = STACK_SIZE) -> str:
    """Build the model's qemu_cortex_m project (``make``; the project is written into ``model_dir``
    first unless ``tinyseg compile --project qemu_cortex_m`` did) and its instruction-count plugin;
    return the ELF's path. ``ram_budget`` (bytes) is the SRAM the linker may use for .data, .bss
    and the stack (default: the project's); a firmware that needs more raises TinySegError with the
    linker's "region `RAM' overflowed by N bytes"."""
    from tvm_tinyseg import projects

    if stack_size < STACK_GUARD + 64:
        raise TinySegError(f"stack size {stack_size} B: at least {STACK_GUARD + 64} B "
                           f"(the MPU guard takes {STACK_GUARD})")
    if not _project_is_current(model_dir):
        projects.export_qemu_cortex_m(model_dir)
    cmd = [MAKE, "-s", "-C", model_dir, f"STACK_SIZE={int(stack_size)}", f"EXTRA_CFLAGS={' '.join(extra_cflags)}"]
    budget = ram_budget is not None and int(ram_budget) > 0
    if budget:
        cmd.append(f"RAM_BUDGET={int(ram_budget)}")
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


def run_firmware(elf: str, workdir: str, timeout: float = RUN_TIMEOUT, args=("input.bin", "output.bin"),
                 serial: str = "none", plugin: str = None) -> subprocess.CompletedProcess:
    """Run ``elf`` under QEMU with ``workdir`` as the semihosting working directory; the exit
    status is the firmware's (SYS_EXIT_EXTENDED). ``serial`` is UART0's QEMU chardev. With
    ``plugin`` (the project's instruction counter) the count goes to ``INSTRUCTIONS_FILE`` in
    ``workdir``."""
    semihosting = ",".join(["enable=on,target=native,chardev=semihost", "arg=tinyseg",
                            *(f"arg={a}" for a in args)])
    cmd = [QEMU, "-M", MACHINE, "-display", "none", "-monitor", "none", "-serial", serial,
           "-chardev", "stdio,id=semihost", "-semihosting-config", semihosting, "-kernel", os.path.abspath(elf)]
    if plugin:
        cmd += ["-plugin", f"{os.path.abspath(plugin)},out={INSTRUCTIONS_FILE}"]
    try:
        return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TinySegError(f"{elf}: QEMU run timed out after {timeout} s") from e


def _instructions(workdir: str) -> int:
    """The plugin's count, or a TinySegError when QEMU ran without writing it."""
    path = os.path.join(workdir, INSTRUCTIONS_FILE)
    try:
        with open(path) as f:
            return int(f.read().strip().partition("=")[2])
    except (OSError, ValueError):
        raise TinySegError(f"the instruction-count plugin wrote no count ({INSTRUCTIONS_FILE})") from None


def run(model_dir: str, x: np.ndarray, elf: str = None, stats: dict = None, timeout: float = RUN_TIMEOUT,
        storage_server=None) -> np.ndarray:
    """Run the firmware on ``x`` under QEMU in a fresh working directory (which also holds a file
    storage pool); return the output. ``stats``, if given, receives the bytes written to and read
    from storage (``storage_written``, ``storage_read``), tinyseg_run's ``status``, the stack's
    high-water mark (``stack_used``), QEMU's ``exit_status``, the ELF's ``static_ram_bytes``,
    ``static_flash_bytes`` and ``static_psram_bytes``, the executed guest ``instructions`` (the
    project's QEMU plugin, built beside the ELF) and the wall time (``seconds``). A uart model's
    UART0 talks to ``storage_server`` (by default a fresh storage_server.StorageServer)."""
    spec = checked_input(model_dir, x)
    elf = os.path.abspath(elf or os.path.join(model_dir, ELF))
    if not os.path.exists(elf):
        elf = build(model_dir)
    plugin = os.path.join(os.path.dirname(elf), PLUGIN)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        np.ascontiguousarray(x).tofile(os.path.join(tmp, "input.bin"))
        serial = "none"
        if _storage_kind(model_dir) == "uart":
            from tvm_tinyseg.storage_server import serving

            port = stack.enter_context(serving(storage_server)).port
            serial = f"tcp:127.0.0.1:{port},nodelay=on"
        start = time.monotonic()
        proc = run_firmware(elf, tmp, timeout, serial=serial, plugin=plugin if os.path.exists(plugin) else None)
        seconds = time.monotonic() - start
        run_stats = parse_stats(proc.stdout)
        if stats is not None:
            stats.update(run_stats)
            stats["exit_status"] = proc.returncode
            stats["seconds"] = seconds
            if os.path.exists(plugin) and proc.returncode == 0:
                stats["instructions"] = _instructions(tmp)
            stats.update({f"static_{k}_bytes": v for k, v in static_memory(elf).items()})
        if run_failure(run_stats):
            raise TinySegError(f"{model_dir}: {run_failure(run_stats)}")
        if proc.returncode != 0:
            message = (proc.stdout.strip() + " " + proc.stderr.strip()).strip()
            raise TinySegError(f"{model_dir}: firmware exited with status {proc.returncode}: {message}")
        out = spec["output"]
        return np.fromfile(os.path.join(tmp, "output.bin"), dtype=out["dtype"]).reshape(out["shape"])
