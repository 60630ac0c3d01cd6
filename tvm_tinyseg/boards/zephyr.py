"""The Zephyr board kind: a Zephyr application for a compiled model (``tinyseg compile MODEL -o DIR
--project zephyr``; template ``microtvm_projects/zephyr``), built with ``west build -b BOARD DIR``.
Not built or run by the package (a Zephyr tree is not installed here; see the template's README).
"""
import glob
import logging
import os
import shutil
import subprocess
import tempfile

from tvm_tinyseg.boards.model_io import module_name
from tvm_tinyseg.codegen.c_api import rename
from tvm_tinyseg.codegen.model_files import copy_runtime
from tvm_tinyseg.microtvm_projects import template_dir
from tvm_tinyseg.model_dir import copy_files, copy_template, memory_report, runtime_headers, storage_backend, write_text
from tvm_tinyseg.progress import timed

NAME = "zephyr"
_log = logging.getLogger(__name__)
FIRMWARE_RAM_BYTES = 0  # the kernel's linker script places the stacks; the board's RAM is known to it

MODEL_FILES = ("tinyseg_model.c", "tinyseg_model.h")
FLASH_CONFIG = """
# Spilled tensors in a flash partition (src/storage_flash_map.c)
CONFIG_FLASH=y
CONFIG_FLASH_MAP=y
"""
UART_CONFIG = """
# Spilled tensors on the host's storage server, over a UART (src/link_uart.c)
CONFIG_SERIAL=y
"""
PRJ_CONF_LINES = {"storage_flash_map.c": FLASH_CONFIG, "storage_remote.c": UART_CONFIG}

# The main thread's stack: twice the deepest call chain of the model's code (frames measured with
# the compiler's -fstack-usage), plus what main(), printk and the flash or UART driver need;
# DEFAULT_MAIN_STACK where no compiler is installed or a frame is dynamic.
STACK_COMPILERS = (["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb"], ["cc"])
STACK_CFLAGS = ["-std=c99", "-Os", "-fstack-usage", "-c"]  # -Os: Zephyr's default optimization
ZEPHYR_MAIN_ALLOWANCE = 1024
DEFAULT_MAIN_STACK = 4096
STACK_ALIGN = 256

# A simulated flash (RAM-backed) holding a storage_partition, for boards without one.
SIM_FLASH_OVERLAY = """\
/* Written by tinyseg: a simulated flash (zephyr,sim-flash, RAM-backed) holding the partition
 * storage_partition of {size} B for the spilled tensors. Only for boards without a
 * storage_partition: west build -b BOARD . -- -D TINYSEG_SIM_FLASH=ON */
/ {{
\ttinyseg_sim_flash_controller: tinyseg_sim_flash_controller {{
\t\tcompatible = "zephyr,sim-flash";
\t\tlabel = "TINYSEG_SIM_FLASH";
\t\t#address-cells = <1>;
\t\t#size-cells = <1>;
\t\terase-value = <0xff>;

\t\ttinyseg_sim_flash: flash_sim@0 {{
\t\t\tcompatible = "soc-nv-flash";
\t\t\treg = <0x00000000 {size:#x}>;
\t\t\terase-block-size = <{erase_block}>;
\t\t\twrite-block-size = <4>;

\t\t\tpartitions {{
\t\t\t\tcompatible = "fixed-partitions";
\t\t\t\t#address-cells = <1>;
\t\t\t\t#size-cells = <1>;

\t\t\t\tstorage_partition: partition@0 {{
\t\t\t\t\tlabel = "tinyseg-storage";
\t\t\t\t\treg = <0x00000000 {size:#x}>;
\t\t\t\t}};
\t\t\t}};
\t\t}};
\t}};
}};
"""
SIM_FLASH_CONF = "# The simulated flash of sim_flash.overlay (CMake option TINYSEG_SIM_FLASH=ON)\n" \
                 "CONFIG_FLASH_SIMULATOR=y\n"
SIM_FLASH_ERASE_BLOCK = 1024


def export_project(model_dir: str, ram_budget: int = None) -> None:
    """A Zephyr application (``west build -b BOARD DIR``): CMakeLists.txt, prj.conf and src/ with
    the model, main.c and the storage backend — spilled tensors go to a flash partition
    (``file`` storage), to the host's storage server over a UART (``uart``) or stay in a
    memory-mapped pool (``mmap``). ``ram_budget`` is not used: Zephyr's linker knows the
    board's RAM."""
    del ram_budget
    report = memory_report(model_dir)
    backend = storage_backend("zephyr", report, model_dir)
    template = template_dir("zephyr")
    src = os.path.join(model_dir, "src")
    name = module_name(model_dir)
    copy_template(template, ["CMakeLists.txt"], model_dir, name)
    copy_template(os.path.join(template, "src"), ["main.c", *backend.template], src, name)
    copy_files(model_dir, [rename(f, name) for f in MODEL_FILES], src)
    copy_runtime([*backend.sources, *runtime_headers()], src, name)
    main_file = (backend.sources + backend.template)[0]
    stack = main_stack_bytes(src, name)
    stack_line = (f"\n# The model's call chain needs about {stack['need']} B (-fstack-usage, {stack['compiler']}); "
                  f"twice that plus {ZEPHYR_MAIN_ALLOWANCE} B for main, printk and drivers\n"
                  if stack["need"] is not None else "\n# No compiler to measure the model's stack frames: "
                  "Zephyr's usual size for such applications\n")
    with open(os.path.join(template, "prj.conf")) as f:
        write_text(os.path.join(model_dir, "prj.conf"), f.read() + stack_line
                   + f"CONFIG_MAIN_STACK_SIZE={stack['bytes']}\n" + PRJ_CONF_LINES.get(main_file, ""))
    if main_file == "storage_flash_map.c":
        size = -(-max(report["storage_bytes"], 1) // SIM_FLASH_ERASE_BLOCK) * SIM_FLASH_ERASE_BLOCK
        write_text(os.path.join(model_dir, "sim_flash.overlay"),
                   rename(SIM_FLASH_OVERLAY.format(size=size, erase_block=SIM_FLASH_ERASE_BLOCK), name))
        write_text(os.path.join(model_dir, "sim_flash.conf"), rename(SIM_FLASH_CONF, name))
    write_text(os.path.join(model_dir, "README.md"), rename(_readme(report, main_file, stack), name))


def main_stack_bytes(src_dir: str, module: str) -> dict:
    """The main thread's stack for the project's sources in ``src_dir``: ``bytes`` (a multiple of
    STACK_ALIGN), the model's measured ``need`` (None where it could not be measured) and the
    ``compiler`` used. The chain is NAME_run's own functions, then the largest other function of
    the model (a kernel, or the row reader), then every function of the runtime's storage backend
    (a read calls into the link); the Zephyr-specific sources are covered by the allowance."""
    compiler = next((c for c in STACK_COMPILERS if shutil.which(c[0])), None)
    model = os.path.join(src_dir, rename("tinyseg_model.c", module))
    runtime = [p for p in glob.glob(os.path.join(src_dir, "storage_*.c"))
               if os.path.basename(p) != "storage_flash_map.c"]  # the Zephyr-specific one needs Zephyr
    frames = {}
    if compiler is not None:
        with tempfile.TemporaryDirectory() as tmp, timed(_log, f"stack frames ({compiler[0]} -fstack-usage)"):
            for source in [model, *runtime]:
                frames[source] = _frames(compiler, source, src_dir, tmp)
    if compiler is None or any(f is None for f in frames.values()):
        return {"bytes": DEFAULT_MAIN_STACK, "need": None, "compiler": None}
    run_prefix = f"{module}_run"
    runner = sum(size for function, size in frames[model].items() if function.startswith(run_prefix))
    deepest = max((size for function, size in frames[model].items() if not function.startswith(run_prefix)), default=0)
    need = runner + deepest + sum(sum(frames[p].values()) for p in runtime)
    total = 2 * need + ZEPHYR_MAIN_ALLOWANCE
    return {"bytes": -(-total // STACK_ALIGN) * STACK_ALIGN, "need": need, "compiler": compiler[0]}


def _frames(compiler: list, source: str, include_dir: str, tmp: str):
    """Function -> stack frame bytes of ``source`` (gcc -fstack-usage), or None when a frame is
    dynamic or the source does not compile on its own."""
    obj = os.path.join(tmp, os.path.basename(source) + ".o")
    proc = subprocess.run([*compiler, *STACK_CFLAGS, "-I", include_dir, source, "-o", obj],
                          capture_output=True, text=True, cwd=tmp)
    usage = obj[:-2] + ".su"
    if proc.returncode != 0 or not os.path.exists(usage):
        _log.warning("cannot measure the stack frames of %s: %s", os.path.basename(source),
                                            (proc.stderr.strip().splitlines() or ["no .su file"])[0])
        return None
    frames = {}
    with open(usage) as f:
        for line in f:
            location, size, kind = line.rstrip("\n").split("\t")
            if kind.startswith("dynamic") and "bounded" not in kind:
                return None
            frames[location.rsplit(":", 1)[-1]] = int(size)
    return frames


def _readme(report: dict, backend: str, stack: dict) -> str:
    storage = {
        "storage_flash_map.c": "a fixed flash partition (devicetree node label `storage_partition`, or "
                               "`-D TINYSEG_FLASH_PARTITION=LABEL`) of at least "
                               f"{report['storage_bytes']} B, erased before each inference; on a board "
                               "without one, `-D TINYSEG_SIM_FLASH=ON` adds a simulated flash holding it "
                               "(sim_flash.overlay)",
        "storage_remote.c": "the host's storage server over the UART with devicetree node label `uart1` "
                            "(`-D TINYSEG_STORAGE_UART=LABEL`) in CRC-checked frames: `python -m "
                            "tvm_tinyseg.storage_server --port 7777` and a bridge such as `socat "
                            "/dev/ttyACM0,raw,b115200 TCP:127.0.0.1:7777`",
        "storage_buffer.c": "a memory-mapped pool in section `.bss.tinyseg_storage`: RAM, unless "
                            "`-D TINYSEG_STORAGE_SECTION=NAME` names a section in the board's external memory",
    }[backend]
    example = " -- -D TINYSEG_SIM_FLASH=ON" if backend == "storage_flash_map.c" else ""
    return f"""# {report['model']} as a Zephyr application

Generated by `tinyseg compile --project zephyr`.

```sh
west build -b BOARD .     # e.g. nrf52840dk/nrf52840, nucleo_h743zi
west flash
west build -b mps2/an385 .{example} && west build -t run    # under QEMU: it exits when done
```

`src/main.c` runs one inference on a fixed pseudo-random input (xorshift32, seed 1, the state's top
byte per input byte) and prints `tinyseg-stats: status=... output_fnv1a=...`: the FNV-1a hash of the
output bytes, to compare with a host run on the same input. Replace `fill_input()` with your sensor.

- arena (static RAM: input, activations, output): {report['arena_bytes']} B (`-D TINYSEG_ARENA_SECTION=NAME` \
places it); weights (flash): {report['weight_bytes']} B; the main thread's stack: {stack['bytes']} B \
(`CONFIG_MAIN_STACK_SIZE` in prj.conf)
- spilled tensors: {len(report['spilled'])}, {report['storage_bytes']} B pool, {report['moved_bytes']} B moved \
per inference; storage: {storage}
"""
