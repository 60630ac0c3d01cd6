"""The model's input and output outside the arena (``tinyseg.io_in_arena`` false, ``--io-outside-arena``):
a camera frame in PSRAM read in place, the mask written in place. The arena plan leaves them out,
the kernels take the caller's pointers, the static buffers go to their own section (PSRAM on the
QEMU board), and outputs stay bit-exact with TFLite Micro. (Several inputs and outputs:
test_multi_io.py.)"""
import json
import os
import re

import numpy as np
import pytest
import tvm

from tvm_tinyseg.boards import host
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.cli import main
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.pass_config import register_options
from tvm_tinyseg.reference import tflm_output

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
TINYUNET_32 = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")


def _input(result, seed=0):
    spec = result.io_spec["input"]
    return np.random.default_rng(seed).integers(-128, 128, size=spec["shape"], dtype=np.int8)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The 32x32 TinyUNet at its smallest arena (mmap storage), input/output in the arena and outside."""
    root = tmp_path_factory.mktemp("io")
    return {inside: (compile_model(TINYUNET_32, str(root / str(inside)), ram_budget=-1, storage="mmap",
                                   io_in_arena=inside), str(root / str(inside)))
            for inside in (True, False)}


def test_the_arena_plan_leaves_input_and_output_out(builds):
    inside, outside = builds[True][0], builds[False][0]
    io_names = set(outside.table.inputs + outside.table.outputs)
    assert not io_names & {b.name for b in outside.plan.buffers}
    assert io_names <= {b.name for b in inside.plan.buffers}
    assert outside.memory_report["io_in_arena"] is False and inside.memory_report["io_in_arena"] is True
    assert outside.plan.size < inside.plan.size


def test_bit_exact_with_tflite_micro_on_seeded_inputs(builds):
    result, out_dir = builds[False]
    exe = host.build(out_dir)
    for seed in (0, 1, 2):
        x = _input(result, seed)
        np.testing.assert_array_equal(host.run(out_dir, x, exe), tflm_output(TINYUNET_32, x))


def test_the_header_has_no_arena_offsets_for_them(builds):
    header = open(os.path.join(builds[False][1], "tinyseg_model.h")).read()
    assert "TINYSEG_INPUT0_OFFSET" not in header and "TINYSEG_OUTPUT0_OFFSET" not in header
    assert "#define TINYSEG_IO_IN_ARENA 0" in header
    source = open(os.path.join(builds[False][1], "tinyseg_model.c")).read()
    static = r"tinyseg_input0_static\[[^]]*\] __attribute__\(\(aligned\(16\), section\(TINYSEG_IO_SECTION\)\)\)"
    assert re.search(static, source)
    assert "memcpy" not in source.split("static int tinyseg_run_in", 1)[1]  # read and written in place
    assert "TINYSEG_INPUT0_OFFSET" in open(os.path.join(builds[True][1], "tinyseg_model.h")).read()


def test_the_pass_context_key_and_the_flag_agree(tmp_path):
    register_options()
    with tvm.transform.PassContext(config={"tinyseg.io_in_arena": False}):
        by_key = compile_model(TINYUNET_32, check_c=False)
    assert main(["-q", "compile", TINYUNET_32, "-o", str(tmp_path / "m"), "--io-outside-arena"]) == 0
    report = json.load(open(tmp_path / "m" / "memory.json"))
    assert report["io_in_arena"] is False and report["arena_bytes"] == by_key.plan.size
    assert by_key.memory_report["io_in_arena"] is False


@pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_on_the_board_the_buffers_are_in_psram(builds):
    result, out_dir = builds[False]
    stats = {}
    x = _input(result)
    np.testing.assert_array_equal(qemu.run(out_dir, x, qemu.build(out_dir), stats), tflm_output(TINYUNET_32, x))
    io_bytes = result.memory_report["input_bytes"] + result.memory_report["output_bytes"]
    assert stats["static_psram_bytes"] >= result.memory_report["storage_bytes"] + io_bytes
    assert stats["static_ram_bytes"] <= result.plan.size + qemu.STACK_SIZE + 1024  # the I/O is not in RAM
