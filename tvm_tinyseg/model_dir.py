"""A compiled model directory (``tinyseg compile MODEL -o DIR``) and the C runtime that goes with it.

The one place saying where the runtime's files are (:data:`RUNTIME_DIR`) and which of them implement
the storage interface (``tinyseg_storage.h``) for each storage kind on each platform
(:data:`STORAGE_BACKENDS`); the driver, the host build and the board projects read them from here.
"""
import glob
import json
import os
import shutil
from dataclasses import dataclass

from tvm_tinyseg.codegen.c_api import rename
from tvm_tinyseg.errors import TinySegError

RUNTIME_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "codegen", "runtime")


@dataclass(frozen=True)
class Backend:
    """One storage backend: C sources and headers from RUNTIME_DIR, and sources from the platform's
    project template (the board's link to its storage: a UART driver, a flash map)."""

    sources: tuple = ()
    headers: tuple = ()
    template: tuple = ()


IN_MEMORY = Backend(("storage_buffer.c",), ("tinyseg_backend.h",))
BLOCK = Backend(("storage_file.c",), ("tinyseg_backend.h",))
REMOTE = Backend(("storage_remote.c",), ("tinyseg_link.h", "tinyseg_backend.h"))

# platform -> storage kind -> backend. "model": the files written beside the generated model (the
# host build compiles them; the link to a remote storage comes with each platform).
STORAGE_BACKENDS = {
    "model": {"mmap": IN_MEMORY, "file": BLOCK, "uart": REMOTE},
    "qemu_cortex_m": {"mmap": IN_MEMORY, "file": Backend(("storage_semihost.c",)),
                      "uart": Backend(REMOTE.sources, REMOTE.headers, ("uart_link.c",))},
    "zephyr": {"mmap": IN_MEMORY, "file": Backend(template=("storage_flash_map.c",)),
               "uart": Backend(REMOTE.sources, REMOTE.headers, ("link_uart.c",))},
    "arduino": {"uart": REMOTE},
}
EMPTY_POOL_IN_MEMORY = ("zephyr", "arduino")  # a model spilling nothing gets the (empty) in-memory pool


def storage_backend(platform: str, report: dict, model_dir: str = "") -> Backend:
    """The backend ``platform`` builds for a model compiled with ``report`` (its memory.json)."""
    storage = report["storage"]
    if report["storage_bytes"] == 0 and platform in EMPTY_POOL_IN_MEMORY:
        return IN_MEMORY
    backends = STORAGE_BACKENDS[platform]
    if storage not in backends:
        raise TinySegError(f"{model_dir}: the {platform} project has no {storage!r} storage (this model spills "
                           f"{report['storage_bytes']} B to it): compile with "
                           + " or ".join(f"--storage {kind}" for kind in backends))
    return backends[storage]


def runtime_headers() -> list:
    """The runtime's headers (storage interface, backend helpers, link, arithmetic): a project
    carries them all, whichever backend it builds."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(RUNTIME_DIR, "*.h")))


def read_report(model_dir: str, name: str, fields: dict) -> dict:
    """JSON object ``name`` (memory.json, io.json) of a compiled model directory, after checking it
    has ``fields`` ({key: type}); TinySegError if it is missing or damaged."""
    path = os.path.join(model_dir, name)
    if not os.path.isfile(path):
        raise TinySegError(f"{model_dir}: not a compiled model directory (no {name}; run 'tinyseg compile')")
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise TinySegError(f"{model_dir}: cannot read {name} ({err}); compile the model again") from None
    values = report if isinstance(report, dict) else {}
    missing = [key for key, kind in fields.items() if not isinstance(values.get(key), kind)]
    if missing:
        raise TinySegError(f"{model_dir}: {name} is damaged ({missing[0]!r} missing or of the wrong type); "
                           "compile the model again")
    return report


def memory_report(model_dir: str) -> dict:
    report = read_report(model_dir, "memory.json", {"storage": str, "storage_bytes": int, "arena_bytes": int})
    if report["storage"] not in STORAGE_BACKENDS["model"]:
        raise TinySegError(f"{model_dir}: memory.json is damaged (unknown storage {report['storage']!r}); "
                           "compile the model again")
    return report


def copy_files(src_dir: str, names, dst_dir: str) -> None:
    os.makedirs(dst_dir, exist_ok=True)
    for name in names:
        shutil.copy(os.path.join(src_dir, name), os.path.join(dst_dir, name))


def copy_template(src_dir: str, names, dst_dir: str, module_name: str) -> None:
    """Copy a board template's files with the module's prefix in their text (their names are the
    project's own and stay): the board's code calls NAME_run and includes NAME_model.h."""
    os.makedirs(dst_dir, exist_ok=True)
    for name in names:
        with open(os.path.join(src_dir, name)) as f:
            write_text(os.path.join(dst_dir, name), rename(f.read(), module_name))


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
