"""Build a compiled model's Arduino project for the ATmega2560 (Arduino Mega 2560: 8 KiB SRAM,
256 KiB flash) with Debian's arduino-builder, and run it in simavr.

The simavr side is a small host program (simavr_runner.c, built here against libsimavr): it
loads the ELF, sends the input over UART1 and reads the reply, and bridges UART0 — the sketch's
storage link — to a storage server on the loopback (tvm_tinyseg.storage_server), frame by frame.
"""
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

from tvm_tinyseg import projects_arduino
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.platforms.model_io import checked_input, parse_stats

ARDUINO_HARDWARE = "/usr/share/arduino/hardware"
# Debian keeps the builder's own platform.txt (the ctags recipe) outside the AVR core: it is
# passed as a second hardware folder.
BUILDER_DIR = "/usr/share/arduino-builder"
FQBN = "arduino:avr:mega:cpu=atmega2560"
# Debian's avr-libc lacks DECIMAL_DIG, which the Arduino core's WString.cpp uses.
BUILDER_PREFS = ["-prefs=compiler.cpp.extra_flags=-DDECIMAL_DIG=__DECIMAL_DIG__"]
SRAM_BYTES = 8192
SRAM_END = 0x800200 + SRAM_BYTES  # avr-gcc's data addresses: 0x800000 + the SRAM's (from 0x200)
BUILD_DIR = "build_avr"

RUNNER_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "simavr_runner.c")
RUNNER_LIBS = ["-lsimavr"]
RUN_TIMEOUT = 1200
MODEL_FAILED = 3  # the runner's exit status when tinyseg_run returned an error


def available() -> bool:
    """Whether arduino-builder, the AVR toolchain, the AVR core and libsimavr are installed."""
    tools = ("arduino-builder", "avr-gcc", "avr-size", "cc")
    return (all(shutil.which(t) for t in tools) and os.path.isdir(ARDUINO_HARDWARE)
            and os.path.isfile(os.path.join(BUILDER_DIR, "platform.txt"))
            and os.path.isfile("/usr/include/simavr/sim_avr.h"))


def elf_path(model_dir: str) -> str:
    return os.path.join(model_dir, BUILD_DIR, projects_arduino.SKETCH + ".ino.elf")


def build(model_dir: str) -> str:
    """(Re-)export the Arduino project from the model's current sources, build it with
    arduino-builder; return the ELF. A sketch whose static data does not fit the board's SRAM fails
    to link (the linker's data region is the SRAM): one line says by how much."""
    projects_arduino.export_arduino(model_dir)
    build_dir = os.path.abspath(os.path.join(model_dir, BUILD_DIR))  # arduino-builder needs it absolute
    os.makedirs(build_dir, exist_ok=True)
    cmd = ["arduino-builder", "-compile", "-hardware", ARDUINO_HARDWARE, "-hardware", BUILDER_DIR,
           "-tools", BUILDER_DIR, "-libraries", os.path.join(model_dir, "libraries"), "-fqbn", FQBN,
           *BUILDER_PREFS, "-build-path", build_dir, projects_arduino.sketch_path(model_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TinySegError(f"{model_dir}: {_build_error(proc.stdout + proc.stderr, proc.returncode)}")
    return elf_path(model_dir)


def _build_error(log: str, status: int) -> str:
    """One line for a failed build: SRAM overflow (the linker's data region is the 8 KiB) with
    its size, else the first error line."""
    overflow = re.search(r"address (0x[0-9a-f]+) of \S+ section `(\S+)' is not within region `data'", log)
    if overflow:
        over = int(overflow.group(1), 16) - SRAM_END
        return (f"the sketch does not fit the ATmega2560's {SRAM_BYTES} B of SRAM: its static data "
                f"({overflow.group(2)}) ends {over} B past the end")
    errors = [line.strip() for line in log.splitlines() if "error" in line.lower()]
    return "arduino-builder failed: " + (errors[0] if errors else f"exit status {status}")


def memory_usage(elf: str) -> dict:
    """Static SRAM (.data + .bss) and flash (.text + .data) of an AVR ELF, from avr-size."""
    proc = subprocess.run(["avr-size", "-A", elf], capture_output=True, text=True, check=True)
    sections = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\w+)\s+(\d+)", proc.stdout, re.M)}
    data, bss, text = (sections.get(s, 0) for s in (".data", ".bss", ".text"))
    return {"sram_bytes": data + bss, "flash_bytes": text + data, "data_bytes": data, "bss_bytes": bss}


def runner_path() -> str:
    """The simavr runner, built once per user (rebuilt when its source changes)."""
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tvm_tinyseg")
    exe = os.path.join(cache, "tinyseg_simavr")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(RUNNER_SOURCE):
        return exe
    os.makedirs(cache, exist_ok=True)
    partial = exe + f".{os.getpid()}"
    cmd = ["cc", "-std=gnu99", "-O2", "-Wall", "-Wextra", "-Werror", RUNNER_SOURCE, "-o", partial, *RUNNER_LIBS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit status {proc.returncode}"
        raise TinySegError(f"cannot build the simavr runner: {first}")
    os.replace(partial, exe)
    return exe


def run(model_dir: str, x: np.ndarray, stats: dict = None, server=None) -> np.ndarray:
    """Run the model's sketch in simavr on ``x``, spilling to ``server`` (default: a fresh storage
    server on the loopback); return the output. ``stats``, if given, receives the device's counters (storage bytes,
    run time in µs, untouched stack bytes), the cycles simulated, the server's byte counts
    (``server_written``/``server_read``) and the static SRAM/flash of the ELF."""
    from tvm_tinyseg.storage_server import serving

    spec = checked_input(model_dir, x)
    elf = elf_path(model_dir)
    if not os.path.exists(elf):  # built once; call build() again after recompiling the model
        elf = build(model_dir)
    runner = runner_path()
    out = spec["output"]
    output_bytes = int(np.prod(out["shape"])) * np.dtype(out["dtype"]).itemsize
    with tempfile.TemporaryDirectory() as tmp, serving(server) as server:
        in_path, out_path = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
        np.ascontiguousarray(x).tofile(in_path)
        start = time.monotonic()
        proc = subprocess.run([runner, elf, in_path, out_path, str(output_bytes), "--link", str(server.port)],
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
        seconds = time.monotonic() - start
        if proc.returncode not in (0, MODEL_FAILED):
            raise TinySegError(f"{model_dir}: simavr run failed: {proc.stderr.strip().splitlines()[-1]}")
        run_stats = parse_stats(proc.stderr)
        if proc.returncode == MODEL_FAILED:
            raise TinySegError(f"{model_dir}: tinyseg_run returned status {run_stats.get('status')} on the AVR")
        if stats is not None:
            stats.update(run_stats, server_written=server.stats["bytes_written"],
                         server_read=server.stats["bytes_read"], wall_seconds=round(seconds, 2),
                         **memory_usage(elf))
        return np.fromfile(out_path, dtype=out["dtype"]).reshape(out["shape"])
