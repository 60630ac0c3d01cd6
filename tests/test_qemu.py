"""Generated models as bare-metal Cortex-M7 firmware under QEMU (mps2-an500): TFLite Micro's
output, a RAM budget enforced by the linker, spilled tensors in PSRAM, in a semihosted file or on
the storage server behind UART0."""
import json
import os
import re

import numpy as np
import pytest

from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.boards import host
from tvm_tinyseg.boards import qemu_cortex_m as qemu

pytestmark = pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
TINYUNET_32 = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
TINYUNET_80x120 = os.path.join(MODELS, "tinyunet_80x120.tflite")
RAM_BUDGET = 200 * 1024  # below the 80x120 arena without TinySeg (300 KiB), above it with


def _input(model_dir, seed=0):
    with open(os.path.join(model_dir, "io.json")) as f:
        spec = json.load(f)["input"]
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=spec["shape"]).astype(spec["dtype"])


def _tflm(path, x):
    from tvm_tinyseg.reference import tflm_output

    return tflm_output(path, x)


def test_tinyunet_32x32_matches_tflm_and_host(tmp_path):
    d = str(tmp_path / "m")
    compile_model(TINYUNET_32, d)
    elf = qemu.build(d)
    x = _input(d)
    stats = {}
    y = qemu.run(d, x, elf=elf, stats=stats)
    np.testing.assert_array_equal(y, _tflm(TINYUNET_32, x))
    np.testing.assert_array_equal(y, host.run(d, x))
    assert stats["exit_status"] == 0 and stats["status"] == 0
    assert stats["storage_written"] == stats["storage_read"] == 0
    with open(os.path.join(d, "memory.json")) as f:
        arena = json.load(f)["arena_bytes"]
    # the arena and a 4 KiB stack, plus a few hundred bytes of firmware state
    assert arena + qemu.STACK_SIZE <= stats["static_ram_bytes"] <= arena + qemu.STACK_SIZE + 1024
    assert stats["static_psram_bytes"] == 0
    assert 0 < stats["stack_used"] < qemu.STACK_SIZE - qemu.STACK_GUARD
    assert stats["instructions"] > 1_000_000  # a 32x32 U-Net: tens of millions of MACs


def test_stack_overflow_faults_instead_of_corrupting_the_arena(tmp_path):
    d = str(tmp_path / "m")
    compile_model(TINYUNET_32, d)
    elf = qemu.build(d, stack_size=qemu.STACK_GUARD + 64)  # 64 usable bytes: too few for the run
    with pytest.raises(TinySegError, match=f"status {qemu.FAULT_STATUS}.*fault"):
        qemu.run(d, _input(d), elf=elf)


def test_tinyunet_80x120_without_tinyseg_overflows_ram(tmp_path):
    d = str(tmp_path / "plain")
    compile_model(TINYUNET_80x120, d, tinyseg=False)
    with pytest.raises(TinySegError, match=r"region `RAM' overflowed by \d+ bytes"):
        qemu.build(d, ram_budget=RAM_BUDGET)


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["mmap", "file", "uart"])
def test_tinyunet_80x120_with_tinyseg_fits_and_matches_tflm(tmp_path, storage):
    d = str(tmp_path / storage)
    result = compile_model(TINYUNET_80x120, d, ram_budget=-1, storage=storage)
    elf = qemu.build(d, ram_budget=RAM_BUDGET)
    x = _input(d, seed=1)
    stats = {}
    y = qemu.run(d, x, elf=elf, stats=stats)
    np.testing.assert_array_equal(y, _tflm(TINYUNET_80x120, x))
    assert stats["static_ram_bytes"] <= RAM_BUDGET
    report = result.memory_report
    assert stats["storage_written"] > 0
    assert stats["storage_written"] + stats["storage_read"] == report["moved_bytes"]  # mmap: reads through the map
    if storage == "mmap":  # the pool lives in PSRAM, read in place; nothing of it in RAM
        assert stats["static_psram_bytes"] >= report["storage_bytes"]
    else:
        assert stats["static_psram_bytes"] == 0


def test_firmware_exit_status_reaches_the_host(tmp_path):
    """Without its input file the firmware exits with status 66 through SYS_EXIT_EXTENDED."""
    d = str(tmp_path / "m")
    compile_model(TINYUNET_32, d)
    elf = qemu.build(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = qemu.run_firmware(elf, str(empty))
    assert proc.returncode == 66
    assert "cannot read the input" in proc.stdout


@pytest.mark.slow
def test_cli_runs_the_firmware_and_reports_its_memory(tmp_path):
    from conftest import run_tinyseg

    build = tmp_path / "build"
    assert run_tinyseg("compile", TINYUNET_32, "-o", build, "--ram-budget", "min", "--storage", "file").returncode == 0
    x = _input(str(build))
    np.save(tmp_path / "x.npy", x)
    proc = run_tinyseg("run", build, "--platform", "qemu", "--ram-budget", "64K", "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), _tflm(TINYUNET_32, x))
    assert "static RAM" in proc.stdout and "B written" in proc.stdout
    assert int(re.search(r"instructions: (\d+)", proc.stdout).group(1)) > 0
    proc = run_tinyseg("run", build, "--platform", "qemu", "--ram-budget", "8K")
    assert proc.returncode == 1 and "region `RAM' overflowed" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_spilling_costs_instructions_tinyunet_80x120(tmp_path):
    """Instruction counts (the project's QEMU plugin) of TinyUNet 80x120: TinySeg at its smallest
    arena executes more instructions than the plain build (fused concatenation indexing, spill
    copies), and file storage more than memory-mapped (row windows through the storage calls)."""
    x = np.random.default_rng(1).integers(-128, 128, size=(1, 80, 120, 3), dtype=np.int8)
    reference = _tflm(TINYUNET_80x120, x)
    counts = {}
    for label, options in (("plain", dict(tinyseg=False)), ("mmap", dict(ram_budget=-1, storage="mmap")),
                           ("file", dict(ram_budget=-1, storage="file"))):
        d = str(tmp_path / label)
        compile_model(TINYUNET_80x120, d, **options)
        stats = {}
        np.testing.assert_array_equal(qemu.run(d, x, elf=qemu.build(d), stats=stats), reference)
        counts[label] = stats["instructions"]
    assert 0 < counts["plain"] < counts["mmap"] < counts["file"]
    assert counts["file"] < 1.2 * counts["plain"]  # spilling costs a few percent, not a multiple
