"""What ``tinyseg compile --target/--mcpu/--executor`` accept (tvmc's names), checked in one place.

The emitted code is portable C99 for every CPU. For a core with the Arm DSP extension
(``DSP_MCPUS``) the int8 dot products call tinyseg_arith.h's SMLAD helpers, which fall back to
portable C where ``__ARM_FEATURE_DSP`` is not defined. ``mcpu`` is recorded in memory.json so
that platforms can refuse a build meant for another core (the QEMU board is a Cortex-M7).
"""
from tvm_tinyseg.errors import TinySegError

TARGETS = {"c": "plain C99 (any C compiler; no TVM runtime)"}
EXECUTORS = {"aot": "ahead of time: one C function runs every kernel over a static arena"}
MCPUS = {
    "host": "the build machine (host runs and tests)",
    "cortex-m0": "Armv6-M", "cortex-m0plus": "Armv6-M", "cortex-m3": "Armv7-M",
    "cortex-m4": "Armv7E-M", "cortex-m7": "Armv7E-M", "cortex-m33": "Armv8-M Mainline",
    "cortex-m55": "Armv8.1-M with Helium",
}


DSP_MCPUS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55")


def has_dsp(mcpu: str) -> bool:
    return mcpu in DSP_MCPUS


def _check(kind: str, value: str, known: dict) -> str:
    if value not in known:
        raise TinySegError(f"unknown {kind} {value!r} (supported: {', '.join(known)})")
    return value


def check_target(name: str) -> str:
    return _check("target", name, TARGETS)


def check_executor(name: str) -> str:
    return _check("executor", name, EXECUTORS)


def check_mcpu(name: str) -> str:
    return _check("mcpu", name, MCPUS)
