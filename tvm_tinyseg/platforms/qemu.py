"""Build a generated model into bare-metal Cortex-M7 firmware and run it under QEMU (mps2-an500).

The firmware template is ``microtvm_projects/qemu_cortex_m``. Its linker script declares only
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

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_DIR = os.path.join(PACKAGE_DIR, "codegen", "runtime")
TEMPLATE_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "microtvm_projects", "qemu_cortex_m")
TEMPLATE_SOURCES = ("startup.c", "semihost.c", "main.c")
LINKER_SCRIPT = "mps2_an500.ld"

CC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"
MACHINE = "mps2-an500"
CPU_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"]
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]
STACK_SIZE = 4096  # bytes, counted in the RAM budget; its lowest STACK_GUARD bytes are an MPU guard
STACK_GUARD = 256
FAULT_STATUS = 99  # the firmware's exit status after a fault (e.g. a stack overflow into the guard)
ELF = "tinyseg_qemu.elf"
RUN_TIMEOUT = 600

RAM_ORIGIN, RAM_WINDOW = 0x20000000, 4 << 20
PSRAM_ORIGIN, PSRAM_WINDOW = 0x60000000, 16 << 20
FLASH_ORIGIN, FLASH_WINDOW = 0x0, 4 << 20

# storage kind of memory.json -> backend source. storage_buffer.c's pool keeps its default section
# (.bss.tinyseg_storage), which the linker script places in PSRAM.
BACKENDS = {
    "mmap": os.path.join(RUNTIME_DIR, "storage_buffer.c"),
    "file": os.path.join(RUNTIME_DIR, "storage_semihost.c"),
    "uart": os.path.join(RUNTIME_DIR, "storage_remote.c"),
}
# The remote backend's link: UART0, which run() connects to a storage server.
UART_LINK = os.path.join(TEMPLATE_DIR, "uart_link.c")


def available() -> bool:
    """Whether the cross compiler and QEMU are installed."""
    return all(shutil.which(tool) for tool in (CC, SIZE, QEMU))


def _storage_kind(model_dir: str) -> str:
    with open(os.path.join(model_dir, "memory.json")) as f:
        return json.load(f)["storage"]


def _backend(model_dir: str) -> list:
    """The storage backend's sources."""
    kind = _storage_kind(model_dir)
    if kind not in BACKENDS:
        raise TinySegError(f"{model_dir}: storage {kind!r} is not supported on the QEMU board yet "
                           f"(supported: {', '.join(BACKENDS)})")
    return [BACKENDS[kind], *([UART_LINK] if kind == "uart" else [])]


def _budget_arg(ram_budget) -> str:
    if ram_budget is None or int(ram_budget) <= 0:
        return None
    return f"-Wl,--defsym=RAM_BUDGET={int(ram_budget)}"


def build(model_dir: str, ram_budget: int = None, extra_cflags=(), stack_size: int = STACK_SIZE) -> str:
    """Compile the model, its storage backend and the firmware template into an ELF in
    ``model_dir``; return its path. ``ram_budget`` (bytes) is the SRAM the linker may use for
    .data, .bss and the stack (default: the linker script's 256 KiB); a firmware that needs more
    raises TinySegError with the linker's "region `RAM' overflowed by N bytes"."""
    if stack_size < STACK_GUARD + 64:
        raise TinySegError(f"stack size {stack_size} B: at least {STACK_GUARD + 64} B "
                           f"(the MPU guard takes {STACK_GUARD})")
    sources = [os.path.join(model_dir, "tinyseg_model.c"), *_backend(model_dir),
               *(os.path.join(TEMPLATE_DIR, s) for s in TEMPLATE_SOURCES)]
    elf = os.path.join(model_dir, ELF)
    ldflags = ["-nostartfiles", "--specs=nano.specs", "-T", os.path.join(TEMPLATE_DIR, LINKER_SCRIPT),
               "-Wl,--gc-sections", f"-Wl,--defsym=STACK_SIZE={int(stack_size)}", f"-Wl,-Map={elf}.map"]
    budget = _budget_arg(ram_budget)
    if budget:
        ldflags.append(budget)
    cmd = [CC, *CPU_FLAGS, *CFLAGS, *extra_cflags, "-I", model_dir, "-I", TEMPLATE_DIR, *sources,
           *ldflags, "-o", elf, "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        overflow = [ln for ln in lines if "overflowed by" in ln]
        budget_text = f"RAM budget {int(ram_budget)} B" if budget else "the default RAM budget"
        if overflow:
            detail = re.sub(r"^.*?(region `)", r"\1", overflow[0])
            raise TinySegError(f"{model_dir}: firmware does not fit {budget_text}: {detail}")
        first = next((ln for ln in lines if "error" in ln), lines[0] if lines else f"status {proc.returncode}")
        raise TinySegError(f"{model_dir}: firmware build failed: {first}")
    return elf


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


def run_firmware(elf: str, workdir: str, timeout: float = RUN_TIMEOUT,
                 args=("input.bin", "output.bin"), serial: str = "none") -> subprocess.CompletedProcess:
    """Run ``elf`` under QEMU with ``workdir`` as the semihosting working directory; the exit
    status is the firmware's (SYS_EXIT_EXTENDED). ``serial`` is UART0's QEMU chardev."""
    semihosting = ",".join(["enable=on,target=native,chardev=semihost", "arg=tinyseg",
                            *(f"arg={a}" for a in args)])
    cmd = [QEMU, "-M", MACHINE, "-display", "none", "-monitor", "none", "-serial", serial,
           "-chardev", "stdio,id=semihost", "-semihosting-config", semihosting, "-kernel", os.path.abspath(elf)]
    try:
        return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise TinySegError(f"{elf}: QEMU run timed out after {timeout} s") from e


def run(model_dir: str, x: np.ndarray, elf: str = None, stats: dict = None, timeout: float = RUN_TIMEOUT,
        storage_server=None) -> np.ndarray:
    """Run the firmware on ``x`` under QEMU in a fresh working directory (which also holds a file
    storage pool); return the output. ``stats``, if given, receives the bytes written to and read
    from storage (``storage_written``, ``storage_read``), tinyseg_run's ``status``, the stack's
    high-water mark (``stack_used``), QEMU's ``exit_status``, the ELF's ``static_ram_bytes``,
    ``static_flash_bytes`` and ``static_psram_bytes``, and the wall time (``seconds``). A uart
    model's UART0 talks to ``storage_server`` (by default a fresh storage_server.StorageServer)."""
    spec = checked_input(model_dir, x)
    elf = os.path.abspath(elf or os.path.join(model_dir, ELF))
    if not os.path.exists(elf):
        elf = build(model_dir)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        np.ascontiguousarray(x).tofile(os.path.join(tmp, "input.bin"))
        serial = "none"
        if _storage_kind(model_dir) == "uart":
            from tvm_tinyseg.storage_server import serving

            port = stack.enter_context(serving(storage_server)).port
            serial = f"tcp:127.0.0.1:{port},nodelay=on"
        start = time.monotonic()
        proc = run_firmware(elf, tmp, timeout, serial=serial)
        seconds = time.monotonic() - start
        run_stats = parse_stats(proc.stdout)
        if stats is not None:
            stats.update(run_stats)
            stats["exit_status"] = proc.returncode
            stats["seconds"] = seconds
            stats.update({f"static_{k}_bytes": v for k, v in static_memory(elf).items()})
        if run_failure(run_stats):
            raise TinySegError(f"{model_dir}: {run_failure(run_stats)}")
        if proc.returncode != 0:
            message = (proc.stdout.strip() + " " + proc.stderr.strip()).strip()
            raise TinySegError(f"{model_dir}: firmware exited with status {proc.returncode}: {message}")
        out = spec["output"]
        return np.fromfile(os.path.join(tmp, "output.bin"), dtype=out["dtype"]).reshape(out["shape"])
