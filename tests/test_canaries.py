"""Debug builds (-DTINYSEG_DEBUG_CANARIES): guard bytes around the arena and checksums of the
buffers live across each step catch a step writing out of bounds (tinyseg_run returns
TINYSEG_ERR_ARENA_CANARY / TINYSEG_ERR_BUFFER_CLOBBERED); release builds are left untouched."""
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import MODELS, seeded_input
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
from tvm_tinyseg.boards import host

DEBUG_FLAGS = ["-DTINYSEG_DEBUG_CANARIES"]
ERR_ARENA_CANARY, ERR_BUFFER_CLOBBERED = 16, 17
CONFIGS = {
    "no_spill": {},
    "spill_mmap": {"ram_budget": SMALLEST_FEASIBLE, "storage": "mmap"},
    "spill_file": {"ram_budget": SMALLEST_FEASIBLE, "storage": "file"},
}
SMALL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")


def _debug_build(out_dir, work_dir, patch=None, flags=DEBUG_FLAGS):
    """A copy of the compiled model, ``patch``ed (source text → source text), built with ``flags``."""
    shutil.copytree(out_dir, work_dir, ignore=shutil.ignore_patterns("tinyseg_host*"))
    source = os.path.join(work_dir, "tinyseg_model.c")
    if patch is not None:
        with open(source) as f:
            text = f.read()
        with open(source, "w") as f:
            f.write(patch(text))
    return host.build(str(work_dir), extra_cflags=flags)


def _after_step(step, statement):
    """A patch making step ``step`` also execute ``statement`` (a corrupting kernel)."""
    def patch(text):
        marker = f"  TINYSEG_DEBUG_AFTER({step}, "
        assert text.count(marker) == 1
        return text.replace(marker, f"  {statement}\n{marker}")
    return patch


def _input(result, seed=0):
    spec = result.io_spec["input"]
    return seeded_input(spec["shape"], spec["dtype"], seed)


@pytest.mark.parametrize("config", CONFIGS)
def test_debug_build_gives_the_release_output(config, compiled_zoo, tmp_path):
    """Here for the small model; test_sanitizers.py runs every zoo model with the canaries on."""
    result, out_dir, exe = compiled_zoo.get(SMALL, **CONFIGS[config])
    debug_exe = _debug_build(out_dir, tmp_path / "debug")
    x = _input(result)
    np.testing.assert_array_equal(host.run(str(tmp_path / "debug"), x, debug_exe), host.run(out_dir, x, exe))


def test_release_build_has_no_guards(compiled_zoo):
    result, out_dir, exe = compiled_zoo.get(SMALL)
    symbols = subprocess.run(["nm", "-S", exe], capture_output=True, text=True, check=True).stdout
    assert "tinyseg_arena_guarded" not in symbols and "tinyseg_debug" not in symbols
    (size,) = [int(line.split()[1], 16) for line in symbols.splitlines() if line.endswith(" tinyseg_arena")]
    assert size == result.memory_report["arena_bytes"]


@pytest.mark.parametrize("statement", [
    "tinyseg_arena[TINYSEG_ARENA_BYTES] ^= 0x5a;",           # one byte past the arena's end
    "tinyseg_arena[TINYSEG_ARENA_BYTES + 15] ^= 0x5a;",      # the far end of the trailing guard
    "*(volatile uint8_t *)(tinyseg_arena - 1) ^= 0x5a;",     # just before the arena
], ids=["past_end", "end_of_guard", "before_start"])
def test_write_outside_the_arena_is_caught(statement, compiled_zoo, tmp_path):
    result, out_dir, _ = compiled_zoo.get(SMALL)
    exe = _debug_build(out_dir, tmp_path / "debug", _after_step(3, statement))
    with pytest.raises(TinySegError, match=rf"failed with status {ERR_ARENA_CANARY}\b"):
        host.run(str(tmp_path / "debug"), _input(result), exe)


def _overrun_into_live_buffer(result):
    """(step, byte offset): a step whose output is directly followed in the arena by a buffer
    live at that step — where a kernel writing one element too many lands."""
    offsets, table = result.plan.offsets, result.table
    for step in table.steps:
        out = table.tensors.get(step.output)
        if out is None or out.in_storage:
            continue
        end = offsets[out.name] + out.nbytes
        for other in table.ram_tensors():
            if other.name != out.name and other.live_at(step.index) and offsets[other.name] == end:
                return step.index, end
    raise AssertionError("no output is followed by a live buffer in this plan")


def test_kernel_writing_past_its_output_into_a_live_buffer_is_caught(compiled_zoo, tmp_path):
    result, out_dir, _ = compiled_zoo.get(SMALL)
    step, offset = _overrun_into_live_buffer(result)
    patch = _after_step(step, f"tinyseg_arena[{offset}] ^= 0x5a;")
    exe = _debug_build(out_dir, tmp_path / "debug", patch)
    with pytest.raises(TinySegError, match=rf"failed with status {ERR_BUFFER_CLOBBERED}\b"):
        host.run(str(tmp_path / "debug"), _input(result), exe)
    # Without the debug checks the same corruption passes silently: the reason they exist.
    release = _debug_build(out_dir, tmp_path / "release", patch, flags=[])
    host.run(str(tmp_path / "release"), _input(result), release)


def test_error_codes_are_declared_apart_from_the_storage_codes(compiled_zoo):
    _, out_dir, _ = compiled_zoo.get(SMALL)
    header = open(os.path.join(out_dir, "tinyseg_model.h")).read()
    codes = {name: int(value) for name, value in re.findall(r"#define (TINYSEG_ERR_\w+) (\d+)", header)}
    assert codes["TINYSEG_ERR_ARENA_CANARY"] == ERR_ARENA_CANARY
    assert codes["TINYSEG_ERR_BUFFER_CLOBBERED"] == ERR_BUFFER_CLOBBERED
    assert len(set(codes.values())) == len(codes)


def test_debug_build_compiles_for_cortex_m7(compiled_zoo, tmp_path):
    """The checks are for debugging on the board too: strict C99 for arm-none-eabi-gcc."""
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc not installed (scripts/setup.sh installs it)")
    _, out_dir, _ = compiled_zoo.get(SMALL, ram_budget=SMALLEST_FEASIBLE, storage="file")
    proc = subprocess.run(["arm-none-eabi-gcc", *host.STRICT_CFLAGS, *DEBUG_FLAGS, "-mcpu=cortex-m7", "-mthumb",
                           "-ffreestanding", "-I", out_dir, "-c", os.path.join(out_dir, "tinyseg_model.c"),
                           "-o", str(tmp_path / "model.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
