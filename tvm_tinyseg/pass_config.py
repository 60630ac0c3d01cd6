"""TinySeg's PassContext options: the one place that declares them, registers them and reads them.

Users enable and tune TinySeg through TVM's own pass context::

    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 131072, "tinyseg.storage": "file"}):
        ...

TVM rejects unregistered config keys ("Invalid config option") and has no Python API to register
one, so :func:`register_options` builds a small C++ shim (``native/pass_config.cc``) on first use,
caches it per user, loads it and registers every key in :data:`OPTIONS` with a type check. Inside
a context, :func:`current_options` returns the values (with defaults) as a validated
:class:`TinySegOptions`.

The cache directory is ``$TINYSEG_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/tvm_tinyseg`` or
``~/.cache/tvm_tinyseg``; the library's name carries a hash of the shim's source and of the TVM and
tvm-ffi versions, because the shim depends on TVM's C++ ABI.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import tvm_ffi

from .errors import TinySegError

SHIM_SOURCE = Path(__file__).resolve().parent / "native" / "pass_config.cc"


class OptionTypeError(TinySegError, TypeError):
    """A ``tinyseg.*`` PassContext option was given a value of the wrong type.

    Raised from the shim's legalizer inside TVM (``PassContext(config=...)``); the error kind is
    registered here so it crosses the FFI boundary as this class.
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
)

_TYPE_NAMES = {int: "int", bool: "bool", str: "str"}


@dataclass(frozen=True)
class TinySegOptions:
    """The TinySeg options in effect, with defaults filled in and values validated."""
    ram_budget: int = 0
    storage: str = "file"
    fuse_fetch: bool = True
    planner: str = "exact"
    enable: bool = True
    overwrite_rows: bool = True


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
    options = TinySegOptions(**values)

    if options.ram_budget < -1:
        raise TinySegError(f"tinyseg.ram_budget must be >= 0 bytes (0 = no budget, -1 = the smallest feasible), "
                           f"got {options.ram_budget}")
    if options.storage not in STORAGE_KINDS:
        raise TinySegError(f"tinyseg.storage must be one of {_allowed(STORAGE_KINDS)}, got {options.storage!r}")
    from .passes.arena_planner import PLANNERS

    if options.planner not in PLANNERS:
        raise TinySegError(f"tinyseg.planner must be one of {_allowed(sorted(PLANNERS))}, got {options.planner!r}")
    return options


# --------------------------------------------------------------------------------------------
# Building, caching and loading the shim

_lock = threading.Lock()
_lib = None  # the loaded shim (ctypes.CDLL); never unloaded: TVM holds its legalizers
_registered = set()  # keys this process has registered (or found registered)
compile_count = 0  # shims compiled by this process (tests check the cache is reused)
_CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-fvisibility=hidden", "-Wl,--no-undefined")


def cache_dir() -> Path:
    """Where the compiled shim is cached: $TINYSEG_CACHE_DIR, else the per-user cache directory."""
    if os.environ.get("TINYSEG_CACHE_DIR"):
        return Path(os.environ["TINYSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvm_tinyseg"


def _tvm_libraries() -> tuple[str, str, str]:
    """(tvm-ffi include dir, libtvm_compiler.so, libtvm_ffi.so) of the TVM this process runs."""
    import tvm
    import tvm_ffi.libinfo

    compiler = None
    loaded = getattr(tvm.base, "_LOADED_LIBS", {}).get("tvm_compiler")
    if loaded is not None and getattr(loaded, "_name", None):
        compiler = loaded._name
    if compiler is None or not os.path.exists(compiler):
        compiler = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_compiler.so")
    if not os.path.exists(compiler):
        raise TinySegError("cannot register TinySeg's PassContext options: libtvm_compiler.so not found "
                           "(the apache-tvm package has no compiler library)")
    return tvm_ffi.libinfo.find_include_path(), compiler, tvm_ffi.libinfo.find_libtvm_ffi()


def shim_path() -> Path:
    """The cached library for this shim source and this TVM (it may not exist yet)."""
    import tvm

    digest = hashlib.sha256()
    digest.update(SHIM_SOURCE.read_bytes())
    digest.update(f"\0tvm {tvm.__version__}\0tvm_ffi {tvm_ffi.__version__}\0{_CXXFLAGS}".encode())
    return cache_dir() / f"libtinyseg_pass_config-{digest.hexdigest()[:16]}.so"


def _cxx() -> list[str]:
    if os.environ.get("CXX"):
        cmd = shlex.split(os.environ["CXX"])
        if cmd and shutil.which(cmd[0]):
            return cmd
        raise TinySegError(f"cannot register TinySeg's PassContext options: the C++ compiler "
                           f"CXX={os.environ['CXX']!r} was not found")
    for name in ("g++", "c++", "clang++"):
        if shutil.which(name):
            return [name]
    raise TinySegError("cannot register TinySeg's PassContext options: no C++ compiler found "
                       "(install g++, or set CXX)")


def build_shim() -> Path:
    """Return the cached shim library, compiling it first if it is not there.

    Compiles to a temporary file in the cache directory and renames it into place, so processes
    racing to build it each install a complete library and never load a partial one.
    """
    global compile_count
    path = shim_path()
    if path.exists():
        return path
    cxx = _cxx()
    include, compiler_lib, ffi_lib = _tvm_libraries()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".so.tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise TinySegError(f"cannot write the TinySeg cache directory {path.parent} ({e.strerror}); "
                           f"set TINYSEG_CACHE_DIR to a writable directory") from None
    lib_dirs = sorted({os.path.dirname(compiler_lib), os.path.dirname(ffi_lib)})
    cmd = [*cxx, *_CXXFLAGS, "-I", include, str(SHIM_SOURCE), "-o", tmp, compiler_lib, ffi_lib,
           *(f"-Wl,-rpath,{d}" for d in lib_dirs)]
    try:
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TinySegError(f"cannot build TinySeg's PassContext shim with {cxx[0]}: {e}") from None
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).splitlines()
            first = next((ln for ln in lines if ("error:" in ln and not ln.startswith("collect2"))
                          or "undefined reference" in ln), lines[-1] if lines else "no output")
            raise TinySegError(f"cannot build TinySeg's PassContext shim with {cxx[0]} "
                               f"(exit {result.returncode}): {first.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
        compile_count += 1
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _load():
    global _lib
    if _lib is not None:
        return _lib
    import tvm  # noqa: F401  (loads libtvm_compiler.so, which the shim links against)

    path = build_shim()
    try:
        lib = ctypes.CDLL(str(path), ctypes.RTLD_GLOBAL)
    except OSError:
        # A damaged cache entry: build afresh once.
        path.unlink(missing_ok=True)
        try:
            lib = ctypes.CDLL(str(build_shim()), ctypes.RTLD_GLOBAL)
        except OSError as e:
            raise TinySegError(f"cannot load TinySeg's PassContext shim {path.name}: {e}") from None
    lib.tinyseg_register_config_option.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.tinyseg_register_config_option.restype = ctypes.c_int
    lib.tinyseg_pass_config_last_error.argtypes = []
    lib.tinyseg_pass_config_last_error.restype = ctypes.c_char_p
    _lib = lib
    return lib


def register_options() -> None:
    """Register every ``tinyseg.*`` PassContext option with TVM (idempotent; cheap once done).

    The first call in a process builds the shim (or reuses it from the cache) and loads it. TVM
    refuses to register a key twice (an ICHECK), so the shim looks the key up first and does
    nothing if it is already registered with the same type; this module also remembers which
    keys it registered, so later calls return at once.
    """
    if len(_registered) == len(OPTIONS):
        return
    with _lock:
        lib = _load()
        for option in OPTIONS:
            if option.key in _registered:
                continue
            rc = lib.tinyseg_register_config_option(option.key.encode(), _TYPE_NAMES[option.type].encode())
            if rc < 0:
                message = lib.tinyseg_pass_config_last_error().decode(errors="replace")
                raise TinySegError(f"cannot register PassContext option {option.key}: {message}")
            _registered.add(option.key)
