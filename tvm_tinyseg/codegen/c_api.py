"""The names the generated C exposes: the module prefix, the status codes, the file names.

Every generated or copied C file is written with the ``tinyseg_``/``TINYSEG_`` prefix;
``rename`` turns it into the module name chosen with ``--module-name`` (tvmc's option of the
same name), so two compiled models link into one firmware without a clash.
"""
import re

from tvm_tinyseg.errors import TinySegError

DEFAULT_MODULE_NAME = "tinyseg"
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PREFIX = re.compile(r"\b(tinyseg|TINYSEG)_")

# The codes tinyseg_run() and the storage calls return: (macro suffix, value, meaning).
STATUS_CODES = (
    ("OK", 0, "success"),
    ("ERR_STORAGE_WRITE", 1, "a spilled tensor could not be written to storage"),
    ("ERR_STORAGE_READ", 2, "a fetch from storage failed or came back short"),
    ("ERR_STORAGE_MAP", 3, "the model reads storage in place but the storage backend is not memory-mapped"),
    ("ERR_STORAGE_LINK", 4, "the remote storage link failed or the server stopped answering"),
    ("ERR_STORAGE_CHECKSUM", 5, "data fetched from storage failed its checksum"),
    ("ERR_STORAGE_REFUSED", 6, "the storage server refused a request"),
    ("ERR_ARENA_SIZE", 7, "the arena passed to run_with_arena is smaller than ARENA_BYTES (or NULL)"),
    ("ERR_ARENA_ALIGNMENT", 8, "the arena passed to run_with_arena is not ARENA_ALIGN-byte aligned"),
    ("ERR_ARENA_CANARY", 16, "debug build: a step wrote outside the arena (its guard bytes changed)"),
    ("ERR_BUFFER_CLOBBERED", 17, "debug build: a step overwrote a buffer that was live across it"),
)


def check_module_name(name: str) -> str:
    """``name`` if it can prefix C identifiers and file names, else a one-line TinySegError."""
    if not _IDENTIFIER.fullmatch(name or "") or len(name) > 32:
        raise TinySegError(f"module name {name!r}: use a C identifier of at most 32 characters "
                           "(a letter, then letters, digits or '_')")
    return name


def rename(text: str, module_name: str) -> str:
    """``text`` (C, or a file name) with each ``tinyseg_``/``TINYSEG_`` prefix replaced by the
    module's (``foo_``/``FOO_``); identity for the default name."""
    if module_name == DEFAULT_MODULE_NAME:
        return text
    return _PREFIX.sub(lambda m: (module_name if m.group(1) == "tinyseg" else module_name.upper()) + "_", text)
