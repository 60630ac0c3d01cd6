"""Ready board projects for a compiled model (``tinyseg compile MODEL -o DIR --project KIND``).

The project is written into the model's directory, beside the generated sources: the template's
files, the storage backend the board needs and a build file. Everything is copied, so the
directory builds without this package. One function per project kind.
"""
import glob
import json
import os
import shutil

from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.microtvm_projects import template_dir
from tvm_tinyseg.platforms import qemu

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "codegen", "runtime")

QEMU_TEMPLATE_FILES = ("Makefile", "mps2_an500.ld", "startup.c", "semihost.c", "semihost.h", "main.c",
                       "tinyseg_insncount.c")
# storage kind -> the backend's sources: runtime files, then template files (the UART link)
QEMU_BACKENDS = {"mmap": (["storage_buffer.c"], []), "file": (["storage_semihost.c"], []),
                 "uart": (["storage_remote.c"], ["uart_link.c"])}
QEMU_STORAGE_PORT = 7777  # `make run` of a uart project: the storage server's TCP port on loopback
# RAM the firmware needs beside the arena: the stack, and its own .data/.bss (storage counters,
# the command line buffer) plus the stack's alignment to its 256-byte MPU guard.
QEMU_FIRMWARE_STATE_BYTES = 1024
QEMU_DEFAULT_RAM_BYTES = 256 * 1024


def runtime_headers() -> list:
    """The runtime's headers (storage interface, backend helpers, link, arithmetic): a project
    carries them all, whichever backend it builds."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(RUNTIME_DIR, "*.h")))


def memory_report(model_dir: str) -> dict:
    path = os.path.join(model_dir, "memory.json")
    if not os.path.isfile(path):
        raise TinySegError(f"{model_dir}: not a compiled model directory (no memory.json; run 'tinyseg compile')")
    with open(path) as f:
        return json.load(f)


def firmware_ram_reserve(kind: str) -> int:
    """RAM a project's firmware needs beside the model's arena (0 where the board's RTOS owns it)."""
    return qemu.STACK_SIZE + QEMU_FIRMWARE_STATE_BYTES if kind == "qemu_cortex_m" else 0


def arena_budget(kind: str, ram_budget):
    """The arena budget that leaves room for the firmware within a board's ``ram_budget`` (bytes;
    None or <= 0, e.g. 'min', pass through unchanged)."""
    if ram_budget is None or ram_budget <= 0:
        return ram_budget
    arena = ram_budget - firmware_ram_reserve(kind)
    if arena <= 0:
        raise TinySegError(f"RAM budget {ram_budget} B leaves nothing for the arena: the {kind} firmware "
                           f"needs {firmware_ram_reserve(kind)} B for its stack and state")
    return arena


def exporter(kind: str):
    """The function writing a project of ``kind`` into a compiled model directory:
    ``exporter(kind)(model_dir, ram_budget)``."""
    from tvm_tinyseg.projects_arduino import export_arduino

    exporters = {"qemu_cortex_m": export_qemu_cortex_m, "zephyr": export_zephyr, "arduino": export_arduino}
    if kind not in exporters:
        raise TinySegError(f"project {kind!r} is not available yet (available: {', '.join(exporters)})")
    return exporters[kind]


def copy_files(src_dir: str, names, dst_dir: str) -> None:
    os.makedirs(dst_dir, exist_ok=True)
    for name in names:
        shutil.copy(os.path.join(src_dir, name), os.path.join(dst_dir, name))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def qemu_default_ram_budget(report: dict) -> int:
    """The RAM region when none is given: the linker script's 256 KiB, or more (in whole KiB) when
    the arena, stack and firmware state need it. Room to spare: build options such as the storage
    integrity mode add RAM of their own."""
    need = report["arena_bytes"] + firmware_ram_reserve("qemu_cortex_m")
    return max(QEMU_DEFAULT_RAM_BYTES, -(-need // 1024) * 1024)


def export_qemu_cortex_m(model_dir: str, ram_budget: int = None) -> None:
    """Bare-metal Cortex-M7 firmware for QEMU mps2-an500: ``make`` links it with ``ram_budget``
    bytes of RAM (default: ``qemu_default_ram_budget``), ``make run`` runs it."""
    report = memory_report(model_dir)
    storage = report["storage"]
    if storage not in QEMU_BACKENDS:
        raise TinySegError(f"{model_dir}: storage {storage!r} is not supported on the QEMU board yet "
                           f"(supported: {', '.join(QEMU_BACKENDS)})")
    budget = ram_budget if ram_budget is not None and ram_budget > 0 else qemu_default_ram_budget(report)
    runtime_sources, template_sources = QEMU_BACKENDS[storage]
    copy_files(template_dir("qemu_cortex_m"), QEMU_TEMPLATE_FILES + tuple(template_sources), model_dir)
    copy_files(RUNTIME_DIR, runtime_sources + runtime_headers(), model_dir)
    serial = f"SERIAL ?= tcp:127.0.0.1:{QEMU_STORAGE_PORT},nodelay=on\n" if storage == "uart" else ""
    _write(os.path.join(model_dir, "project.mk"),
           f"# Written by tinyseg for {report['model']} ({storage} storage).\n"
           f"MODEL_SOURCES = tinyseg_model.c {' '.join(runtime_sources + template_sources)}\n"
           f"RAM_BUDGET ?= {budget}\n{serial}")
    _write(os.path.join(model_dir, "README.md"), _qemu_readme(report, budget))


def _qemu_readme(report: dict, budget: int) -> str:
    storage = {"mmap": "memory-mapped PSRAM at 0x60000000 (not counted in RAM)",
               "file": "the host file tinyseg_storage.bin through semihosting (standing for an SD card)",
               "uart": "a storage server on the host, over UART0 (CRC-checked frames): start it first with "
                       f"`python -m tvm_tinyseg.storage_server --port {QEMU_STORAGE_PORT}`"}
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


ZEPHYR_MODEL_FILES = ("tinyseg_model.c", "tinyseg_model.h")
ZEPHYR_FLASH_CONFIG = """
# Spilled tensors in a flash partition (src/storage_flash_map.c)
CONFIG_FLASH=y
CONFIG_FLASH_MAP=y
"""
ZEPHYR_UART_CONFIG = """
# Spilled tensors on the host's storage server, over a UART (src/link_uart.c)
CONFIG_SERIAL=y
"""


def _zephyr_backend(report: dict, model_dir: str) -> tuple:
    """(runtime sources, template sources, extra prj.conf lines) of the storage backend a Zephyr
    build needs."""
    storage = report["storage"]
    if report["storage_bytes"] == 0 or storage == "mmap":  # a (possibly empty) pool in memory
        return ["storage_buffer.c"], [], ""
    if storage == "file":  # block storage: the board's flash through the flash map
        return [], ["storage_flash_map.c"], ZEPHYR_FLASH_CONFIG
    if storage == "uart":
        return ["storage_remote.c"], ["link_uart.c"], ZEPHYR_UART_CONFIG
    raise TinySegError(f"{model_dir}: storage {storage!r} is not supported by the Zephyr project")


def export_zephyr(model_dir: str, ram_budget: int = None) -> None:
    """A Zephyr application (``west build -b BOARD DIR``): CMakeLists.txt, prj.conf and src/ with
    the model, main.c and the storage backend — spilled tensors go to a flash partition
    (``file`` storage), to the host's storage server over a UART (``uart``) or stay in a
    memory-mapped pool (``mmap``). ``ram_budget`` is not used: Zephyr's linker knows the
    board's RAM."""
    del ram_budget
    report = memory_report(model_dir)
    runtime_sources, template_sources, config = _zephyr_backend(report, model_dir)
    template = template_dir("zephyr")
    src = os.path.join(model_dir, "src")
    copy_files(template, ["CMakeLists.txt"], model_dir)
    copy_files(os.path.join(template, "src"), ["main.c", *template_sources], src)
    copy_files(model_dir, ZEPHYR_MODEL_FILES, src)
    copy_files(RUNTIME_DIR, runtime_sources + runtime_headers(), src)
    with open(os.path.join(template, "prj.conf")) as f:
        _write(os.path.join(model_dir, "prj.conf"), f.read() + config)
    _write(os.path.join(model_dir, "README.md"), _zephyr_readme(report, (runtime_sources + template_sources)[0]))


def _zephyr_readme(report: dict, backend: str) -> str:
    storage = {
        "storage_flash_map.c": "a fixed flash partition (devicetree node label `storage_partition`, or "
                               "`-DTINYSEG_FLASH_PARTITION=LABEL`) of at least "
                               f"{report['storage_bytes']} B, erased before each inference",
        "storage_remote.c": "the host's storage server over the UART with devicetree node label `uart1` "
                            "(`-DTINYSEG_STORAGE_UART=LABEL`) in CRC-checked frames: `python -m "
                            "tvm_tinyseg.storage_server --port 7777` and a bridge such as `socat "
                            "/dev/ttyACM0,raw,b115200 TCP:127.0.0.1:7777`",
        "storage_buffer.c": "a memory-mapped pool in section `.bss.tinyseg_storage`: RAM, unless "
                            "`TINYSEG_STORAGE_SECTION` names a section in the board's external memory",
    }[backend]
    return f"""# {report['model']} as a Zephyr application

Generated by `tinyseg compile --project zephyr`.

```sh
west build -b BOARD .     # e.g. nrf52840dk/nrf52840, nucleo_h743zi
west flash
```

`src/main.c` runs one inference on a fixed pseudo-random input (xorshift32, seed 1, the state's top
byte per input byte) and prints `tinyseg-stats: status=... output_fnv1a=...`: the FNV-1a hash of the
output bytes, to compare with a host run on the same input. Replace `fill_input()` with your sensor.

- arena (static RAM: input, activations, output): {report['arena_bytes']} B; weights (flash): \
{report['weight_bytes']} B; the main thread's stack: `CONFIG_MAIN_STACK_SIZE` in prj.conf
- spilled tensors: {len(report['spilled'])}, {report['storage_bytes']} B pool, {report['moved_bytes']} B moved \
per inference; storage: {storage}
"""
