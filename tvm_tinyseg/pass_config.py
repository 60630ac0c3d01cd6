"""TinySeg's PassContext options: the one place that declares them, registers them and reads them.

Users enable and tune TinySeg through TVM's own pass context::

    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 131072, "tinyseg.storage": "file"}):
        ...

TVM rejects unregistered config keys ("Invalid config option") and has no Python API to register
one, so :func:`register_options` (called on demand, never at import) has tvm_ffi build and cache
a few lines of C++ (``native/pass_config.cc``) that register every key in :data:`OPTIONS` with a
type check. Inside a context, :func:`current_options` returns the values (with defaults) as a
validated :class:`TinySegOptions`; :func:`check_options` validates options given otherwise (the
pipeline's keyword arguments).
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tvm_ffi

from .errors import TinySegError

REGISTRATION_SOURCE = Path(__file__).resolve().parent / "native" / "pass_config.cc"


class OptionTypeError(TinySegError, TypeError):
    """A ``tinyseg.*`` PassContext option was given a value of the wrong type.

    Raised from the option's legalizer (native/pass_config.cc) inside TVM (``PassContext(config=...)``);
    the error kind is registered here so it crosses the FFI boundary as this class.
    """


tvm_ffi.register_error("TinySegOptionTypeError", OptionTypeError)


@dataclass(frozen=True)
class Option:
    key: str
    type: type  # int, bool or str
    default: object
    doc: str


# Where spilled tensors go, and how the generated code reaches them.
STORAGE_KINDS = {
    "mmap": "memory-mapped external flash/PSRAM: read in place through a pointer",
    "file": "block storage through read/write calls: local flash, SD card, a file",
    "uart": "remote storage: a host over a serial link",
}

OPTIONS = (
    Option("tinyseg.enable", bool, True, "run the TinySeg passes at all"),
    Option("tinyseg.ram_budget", int, 0,
           "bytes of RAM for the activation arena; 0 = no budget (no spilling), -1 = the smallest feasible"),
    Option("tinyseg.storage", str, "file",
           "where spilled tensors go: " + ", ".join(f"{k!r} ({v})" for k, v in STORAGE_KINDS.items())),
    Option("tinyseg.fuse_fetch", bool, True, "fuse fetches of spilled tensors into their consumer"),
    Option("tinyseg.planner", str, "exact", "the arena planner (tvm_tinyseg.passes.arena_planner.PLANNERS)"),
    Option("tinyseg.overwrite_rows", bool, True,
           "let a kernel write its output over input rows it no longer needs (passes/row_overwrite.py)"),
    Option("tinyseg.integrity", bool, True,
           "a CRC-16 per 16-byte block of 'file' and 'uart' storage, kept in RAM: storage returning other "
           "bytes than were written is an error (status 5), not a wrong output"),
    Option("tinyseg.stream_rows", bool, True,
           "when spilling cannot meet the RAM budget, run chains of row-local kernels through row rings "
           "(passes/stream_row_chains.py)"),
    Option("tinyseg.io_in_arena", bool, True,
           "the model's inputs and outputs are arena tensors, as in TFLite Micro; false: they stay in the caller's "
           "buffers (e.g. a camera frame in PSRAM), read and written in place, and the arena holds the rest"),
)

_TYPE_NAMES = {int: "int", bool: "bool", str: "str"}

MAX_RAM_BUDGET = 2**32 - 1  # the largest size_t of the 32-bit microcontrollers the C is for


@dataclass(frozen=True)
class TinySegOptions:
    """The TinySeg options in effect, with defaults filled in and values validated."""
    ram_budget: int = 0
    storage: str = "file"
    fuse_fetch: bool = True
    planner: str = "exact"
    enable: bool = True
    overwrite_rows: bool = True
    integrity: bool = True
    stream_rows: bool = True
    io_in_arena: bool = True


def _field(key: str) -> str:
    return key.split(".", 1)[1]



# --------------------------------------------------------------------------------------------
# Reading the options


def _allowed(values) -> str:
    return ", ".join(repr(v) for v in values)


def _typed(option: Option, value):
    """Coerce a value read from the config map to the option's Python type (strictly)."""
    if option.type is bool and isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    if option.type is int and isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if option.type is str and isinstance(value, str):
        return str(value)  # tvm_ffi.core.String -> str
    raise OptionTypeError(f"PassContext option {option.key} expects {_TYPE_NAMES[option.type]}, "
                          f"got {type(value).__name__} {value!r}")


def current_options(ctx=None) -> TinySegOptions:
    """The TinySeg options of ``ctx`` (default: the current PassContext), validated.

    Keys not set take their defaults, so outside any ``with PassContext(...)`` this returns
    ``TinySegOptions()``. Raises :class:`TinySegError` naming the key and the allowed values.
    """
    if ctx is None:
        import tvm

        ctx = tvm.transform.PassContext.current()
    config = ctx.config if ctx.config is not None else {}
    values = {}
    for option in OPTIONS:
        values[_field(option.key)] = _typed(option, config[option.key]) if option.key in config else option.default
    return check_options(TinySegOptions(**values))


def check_options(options: TinySegOptions) -> TinySegOptions:
    """``options``, or TinySegError naming the first bad value and the allowed ones."""
    if options.ram_budget < -1:
        raise TinySegError(f"tinyseg.ram_budget must be >= 0 bytes (0 = no budget, -1 = the smallest feasible), "
                           f"got {options.ram_budget}")
    if options.ram_budget > MAX_RAM_BUDGET:
        raise TinySegError(f"tinyseg.ram_budget {options.ram_budget} B is larger than a 32-bit microcontroller's "
                           f"address space (at most {MAX_RAM_BUDGET} B)")
    if options.storage not in STORAGE_KINDS:
        raise TinySegError(f"tinyseg.storage must be one of {_allowed(STORAGE_KINDS)}, got {options.storage!r}")
    from .passes.arena_planner import PLANNERS

    if options.planner not in PLANNERS:
        raise TinySegError(f"tinyseg.planner must be one of {_allowed(sorted(PLANNERS))}, got {options.planner!r}")
    return options


# --------------------------------------------------------------------------------------------
# Registering the options with TVM

_lock = threading.Lock()
_registered = set()  # keys this process has registered (or found registered)


def _tvm_compiler_library() -> str:
    """libtvm_compiler.so of the TVM this process runs (RegisterConfigOption lives there)."""
    import tvm

    loaded = getattr(tvm.base, "_LOADED_LIBS", {}).get("tvm_compiler")
    path = getattr(loaded, "_name", None)
    if not path or not os.path.exists(path):
        path = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_compiler.so")
    if not os.path.exists(path):
        raise TinySegError("cannot register TinySeg's PassContext options: libtvm_compiler.so not found "
                           "(the apache-tvm package has no compiler library)")
    return path


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def checked_build(build) -> str:
    """``build()``'s library path, after checking a cached library has the bytes it had when it
    was built (its SHA-256, recorded beside it as ``LIBRARY.sha256``): one truncated or damaged
    since (a full disk, a killed build, a bad copy), or without a record, is rebuilt, not loaded —
    loading it could end the process with SIGBUS or SIGSEGV."""
    started = time.time()
    path = build()
    record = path + ".sha256"
    if os.path.getmtime(path) < started - 1:  # from the cache, not built by this call
        try:
            with open(record) as f:
                intact = f.read().strip() == _sha256(path)
        except OSError:
            intact = False
        if not intact:
            os.unlink(path)
            path = build()
    try:
        with open(record, "w") as f:
            f.write(_sha256(path) + "\n")
    except OSError:  # a read-only cache: checked again (and rebuilt) next time
        pass
    return path


def _registrar():
    """``register_config_option(key, type)`` from native/pass_config.cc, built by tvm_ffi (cached
    under $TVM_FFI_CACHE_DIR, default ~/.cache/tvm-ffi, per source text: the TVM version is part of
    it, as the code depends on TVM's C++ ABI). A damaged cached library is rebuilt (checked_build)."""
    import tvm
    import tvm_ffi.cpp

    library = _tvm_compiler_library()
    source = f"// for TVM {tvm.__version__}, tvm-ffi {tvm_ffi.__version__}\n" + REGISTRATION_SOURCE.read_text()

    def build() -> str:
        return tvm_ffi.cpp.build_inline(
            "tinyseg_pass_config", cpp_sources=source, functions="register_config_option",
            extra_ldflags=[library, f"-Wl,-rpath,{os.path.dirname(library)}"])

    try:
        path = checked_build(build)
    except Exception as e:  # noqa: BLE001 - a missing compiler or ninja, a failed build: one line
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "error" in ln.lower() and "ninja" not in ln.lower()), lines[0] if lines
                     else type(e).__name__)
        raise TinySegError(f"cannot build TinySeg's PassContext options with tvm_ffi.cpp.build_inline "
                           f"(needs a C++ compiler and ninja): {first.strip()}") from None
    module = tvm_ffi.load_module(path)
    return module.register_config_option


def register_options() -> None:
    """Register every ``tinyseg.*`` PassContext option with TVM (idempotent; cheap once done).

    Not done at import: call it before ``PassContext(config={"tinyseg....": ...})`` (the CLI does
    for ``--pass-config``). Options can also go to the pipeline as keyword arguments,
    ``relax.get_pipeline("tinyseg", ram_budget=...)``, which needs no registration. The first
    call in a process loads the registration code (building it once per machine and TVM version).
    TVM refuses to register a key twice (an ICHECK), so the registration looks the key up first."""
    if len(_registered) == len(OPTIONS):
        return
    with _lock:
        register = _registrar()
        for option in OPTIONS:
            if option.key not in _registered:
                register(option.key, _TYPE_NAMES[option.type])
                _registered.add(option.key)
