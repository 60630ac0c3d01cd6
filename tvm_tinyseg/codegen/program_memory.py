"""Weights read in place from program memory, also on Harvard machines.

On AVR a plain ``const`` array is copied to SRAM at start-up; only data in a named address space
(avr-gcc's ``__flash``/``__memx``) stays in flash, and every pointer that reads it must carry the
same qualifier. The generated code therefore declares the weights and the kernel parameters that
receive them ``const TINYSEG_WEIGHT T``; the macro is empty on every other target, where const
data already stays in flash. A pointer without the qualifier would not compile on AVR, so a
missed case cannot silently read SRAM at a flash address.
"""
import re

from tvm_tinyseg.errors import TinySegError

MACRO = "TINYSEG_WEIGHT"

# __flash reaches the first 64 KiB of flash only (data behind the vectors, beside the program's
# other progmem data); larger weights use 24-bit __memx pointers (slower: a call per read).
FLASH_SEGMENT_LIMIT = 32768

DEFINITION = [
    "/* Weights stay in program memory: TINYSEG_WEIGHT qualifies them and the kernel parameters",
    " * reading them (AVR: a named address space; elsewhere const data already lives in flash). */",
    f"#ifndef {MACRO}",
    "#if defined(__AVR__) && defined(__STRICT_ANSI__)",
    '#warning "ISO C has no named address spaces: weights are copied to SRAM (compile as GNU C to keep them in flash)"',
    "#endif",
    "#if defined(__AVR__) && defined(__FLASH) && !defined(__STRICT_ANSI__)",
    f"#if TINYSEG_WEIGHT_BYTES <= {FLASH_SEGMENT_LIMIT}u",
    f"#define {MACRO} __flash",
    "#else",
    f"#define {MACRO} __memx",
    "#endif",
    "#else",
    f"#define {MACRO}",
    "#endif",
    "#endif",
    "",
]

_SIGNATURE = re.compile(r"^(static (?:TINYSEG_NOINLINE )?\w+ (\w+)\()(.*)(\)( \{|;))$")
_POINTER_PARAM = re.compile(r"^(\w+)\* (\w+)$")


def weight_params(table) -> tuple:
    """(kernel → parameter positions that read program memory, constants placed there).

    A parameter reads program memory when every call passes it a constant kept there; a constant
    stays there when every use is such a parameter. Iterated to a fixed point (in practice, one
    round: weights and activations never share a kernel parameter)."""
    sites = {}  # (kernel, parameter position) -> the arguments of every call
    for step in table.steps:
        if step.kind == "kernel":
            for position, arg in enumerate(step.args):
                sites.setdefault((step.kernel, position), []).append(arg)
    in_flash = set(range(len(table.constants)))
    while True:
        params = {key for key, args in sites.items()
                  if all(isinstance(a, int) and a in in_flash for a in args)}
        used_elsewhere = {a for key, args in sites.items() if key not in params for a in args if isinstance(a, int)}
        if not used_elsewhere & in_flash:
            by_kernel = {}
            for kernel, position in params:
                by_kernel.setdefault(kernel, set()).add(position)
            return by_kernel, in_flash
        in_flash -= used_elsewhere


def qualify_weight_params(source: str, params: dict) -> str:
    """Rewrite the prototypes and definitions of ``params``'s kernels: each listed pointer
    parameter becomes ``const TINYSEG_WEIGHT T*``."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        match = _SIGNATURE.match(line)
        if not match or match.group(2) not in params:
            continue
        head, kernel, args, tail = match.group(1), match.group(2), match.group(3).split(", "), match.group(4)
        for position in params[kernel]:
            pointer = _POINTER_PARAM.match(args[position])
            if pointer is None:
                raise TinySegError(f"kernel {kernel}: cannot qualify parameter {args[position]!r} as a weight pointer")
            args[position] = f"const {MACRO} {pointer.group(1)}* {pointer.group(2)}"
        lines[i] = head + ", ".join(args) + tail
    return "\n".join(lines)
