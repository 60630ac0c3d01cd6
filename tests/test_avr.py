"""The Arduino project on an ATmega2560 (8 KiB SRAM): weights in flash, built with Debian's
arduino-builder, run in simavr spilling over its serial port to the storage server, against
TFLite Micro."""
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_tinyseg, tflm_reference
from faulty_storage_server import Faults, FaultyStorageServer
from tiny_unet import tiny_input, tiny_unet

from tvm_tinyseg.boards import arduino
from tvm_tinyseg.codegen import program_memory
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.storage_server import StorageServer

# 1 open + 9 writes of 256 B (the 2,304 B skip) + 24 reads of one 96 B row each
CLEAN_RUN_FRAMES = 1 + 9 + 24

needs_avr_gcc = pytest.mark.skipif(shutil.which("avr-gcc") is None, reason="avr-gcc not installed")
needs_arduino = pytest.mark.skipif(not arduino.available(), reason="arduino-builder, avr-gcc or libsimavr not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_unet(tmp_path_factory.mktemp("tiny_unet") / "tiny_unet_24x24.tflite")


@pytest.fixture(scope="module")
def spilling(model, tmp_path_factory):
    """The model at its smallest arena, spilling to remote storage: (compile result, directory)."""
    out_dir = str(tmp_path_factory.mktemp("avr_spilling"))
    return compile_model(model, out_dir, ram_budget=-1, storage="uart"), out_dir


# --- weights in program memory ------------------------------------------------------------------

def _table(steps, n_constants):
    return SimpleNamespace(steps=[SimpleNamespace(kind="kernel", kernel=k, args=a) for k, a in steps],
                           constants=[None] * n_constants)


def test_weight_params_are_those_given_only_constants():
    table = _table([("conv", ["x", 0, 1]), ("conv", ["y", 2, 3]), ("add", ["y", 4])], 5)
    params, in_flash = program_memory.weight_params(table)
    assert params == {"conv": {1, 2}, "add": {1}} and in_flash == {0, 1, 2, 3, 4}


def test_a_constant_shared_with_an_activation_parameter_stays_in_ram():
    # kernel "mix" gets constant 0 at one call and an activation at another: its parameter cannot be
    # a flash pointer, so constant 0 stays in RAM; so does conv's parameter 1 that it also reaches,
    # and constant 1 given there; conv's parameter 2 reads flash
    table = _table([("mix", [0, "x"]), ("mix", ["y", "x"]), ("conv", ["x", 0, 2]), ("conv", ["y", 1, 3])], 4)
    params, in_flash = program_memory.weight_params(table)
    assert in_flash == {2, 3} and params == {"conv": {2}}


def test_only_the_weight_params_get_the_qualifier():
    signature = "static void k(int8_t* x, int8_t* w, int32_t* b, int8_t* y)"
    source = f"{signature};\n{signature} {{"
    qualified = program_memory.qualify_weight_params(source, {"k": {1, 2}})
    assert qualified.splitlines()[0] == ("static void k(int8_t* x, const TINYSEG_WEIGHT int8_t* w, "
                                         "const TINYSEG_WEIGHT int32_t* b, int8_t* y);")
    assert qualified.splitlines()[1].endswith("int8_t* y) {")


@needs_avr_gcc
def test_generated_model_compiles_for_avr_with_weights_in_flash(spilling, tmp_path):
    """16-bit int, -Wall -Wextra -Werror; no byte of the weights in .data (which SRAM would hold)."""
    result, out_dir = spilling
    obj = str(tmp_path / "model.o")
    proc = subprocess.run(["avr-gcc", "-mmcu=atmega2560", "-std=gnu99", "-Os", "-Wall", "-Wextra", "-Werror", "-c",
                           os.path.join(out_dir, "tinyseg_model.c"), "-o", obj], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    sections = subprocess.run(["avr-size", "-A", obj], capture_output=True, text=True, check=True).stdout
    size = {line.split()[0]: int(line.split()[1]) for line in sections.splitlines() if line.startswith(".")}
    assert size.get(".data", 0) == 0
    assert size[".progmem.data"] >= result.memory_report["weight_bytes"]
    assert size[".bss"] < result.memory_report["arena_bytes"] + 64  # the arena and a few status words


# --- the Arduino project --------------------------------------------------------------------------

def test_project_refuses_storage_an_avr_board_does_not_have(model, tmp_path):
    compile_model(model, tmp_path, ram_budget=-1, storage="file")
    with pytest.raises(TinySegError, match="compile with --storage uart"):
        arduino.export_project(str(tmp_path))


@needs_arduino
def test_sketch_builds_with_arduino_builder_within_8k_sram(spilling):
    result, out_dir = spilling
    usage = arduino.memory_usage(arduino.build(out_dir))
    src = os.listdir(os.path.join(arduino.library_dir(out_dir), "src"))
    assert {"tinyseg_model.c", "storage_remote.c", "tinyseg_link_serial.cpp", "TinySegModel.h"} <= set(src)
    assert usage["sram_bytes"] <= arduino.SRAM_BYTES - 2048  # room left for the stack
    assert usage["sram_bytes"] >= result.memory_report["arena_bytes"]
    assert usage["data_bytes"] < 64  # weights are not copied to SRAM
    assert usage["flash_bytes"] > result.memory_report["weight_bytes"]


@needs_arduino
@pytest.mark.slow
def test_sketch_under_a_module_name_builds_and_runs_bit_exact(model, tmp_path):
    """--module-name seg: the sketch calls seg_run, the library holds seg_model.c, and it runs."""
    compile_model(model, tmp_path, ram_budget=-1, storage="uart", module_name="seg")
    arduino.export_project(str(tmp_path))
    assert "seg_run(" in open(arduino.sketch_path(str(tmp_path))).read()
    src = set(os.listdir(os.path.join(arduino.library_dir(str(tmp_path)), "src")))
    assert {"seg_model.c", "seg_model.h", "seg_link.h"} <= src and not any(n.startswith("tinyseg_model") for n in src)
    x = tiny_input(1)
    assert np.array_equal(arduino.run(str(tmp_path), x, arduino.build(str(tmp_path))), tflm_reference(model, x))


@needs_arduino
def test_without_tinyseg_the_sketch_does_not_fit_the_sram(model, tmp_path):
    report = compile_model(model, tmp_path, tinyseg=False).memory_report
    assert report["arena_bytes"] > arduino.SRAM_BYTES
    with pytest.raises(TinySegError, match="does not fit the ATmega2560's 8192 B of SRAM"):
        arduino.build(str(tmp_path))


@needs_arduino
@pytest.mark.slow
def test_tiny_unet_runs_in_simavr_spilling_over_serial_bit_exact(model, spilling, tmp_path):
    result, out_dir = spilling
    report = result.memory_report
    x = tiny_input(0)
    stats = {}
    got = arduino.run(out_dir, x, stats=stats)
    expected = tflm_reference(model, x)
    assert np.array_equal(got, expected) and len(np.unique(expected)) > 8
    moved = stats["storage_written"] + stats["storage_read"]
    assert stats["storage_written"] > 0 and moved == report["moved_bytes"]
    assert stats["link_frames"] == CLEAN_RUN_FRAMES
    assert (stats["server_written"], stats["server_read"]) == (stats["storage_written"], stats["storage_read"])
    assert stats["stack_free"] > 256  # at its peak the stack stayed this far above .bss: the run fit the SRAM

    # the command line, on another input
    x1 = tiny_input(1)
    np.save(tmp_path / "x.npy", x1)
    proc = run_tinyseg("run", out_dir, "--platform", "avr", "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "y.npy")
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), tflm_reference(model, x1))
    assert f"{report['storage_bytes']} B written" in proc.stdout


@needs_arduino
def test_a_refusing_server_fails_tinyseg_run_on_the_avr(spilling):
    _, out_dir = spilling
    with StorageServer(pool_limit=16) as server:  # the session's pool is refused
        with pytest.raises(TinySegError, match="tinyseg_run returned status 6"):
            arduino.run(out_dir, tiny_input(0), storage_server=server)


@needs_arduino
@pytest.mark.slow
def test_corrupted_frames_are_retried_by_the_avr(model, spilling):
    """The 8-bit client's CRC checks at work: two read responses corrupted after their CRC and one
    request answered "bad crc" are each sent again; the output stays exact."""
    _, out_dir = spilling
    x, stats = tiny_input(2), {}
    with FaultyStorageServer(Faults(corrupt_reads=2, claim_bad_crc=1)) as server:
        got = arduino.run(out_dir, x, stats=stats, storage_server=server)
    assert np.array_equal(got, tflm_reference(model, x))
    assert stats["link_frames"] == CLEAN_RUN_FRAMES + 3
