"""--mcpu for a core with the DSP extension: the int8 dot products call tinyseg_arith.h's SMLAD
helpers (passes/dsp_dot_products.py). The same C compiles warning-free for the host and every
Cortex-M (portable fallback without __ARM_FEATURE_DSP) and stays bit-identical to TFLite Micro."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import MODELS, seeded_input, tflm_reference
from tvm_tinyseg.boards import host
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.boards.host import STRICT_CFLAGS

ARM_CC = "arm-none-eabi-gcc"
SMALL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
# with its depthwise, 1x1 and strided convolutions and a global pooling branch
MBV2 = os.path.join(MODELS, "mbv2_lraspp.tflite")
CORES = ["cortex-m0plus", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"]


@pytest.fixture(scope="module")
def dsp_builds(compiled_zoo):
    return {model: compiled_zoo.get(model, mcpu="cortex-m7") for model in (SMALL, MBV2)}


@pytest.mark.parametrize("model", [SMALL, MBV2], ids=os.path.basename)
def test_dsp_build_records_and_calls_helpers(model, dsp_builds):
    result, out_dir, _ = dsp_builds[model]
    source = open(os.path.join(out_dir, "tinyseg_model.c")).read()
    assert result.memory_report["dsp_kernels"] and "tinyseg_dot_s8x" in source
    convs = [s.kernel for s in result.table.steps if s.kind == "kernel" and "conv2d" in s.kernel]
    assert set(result.memory_report["dsp_kernels"]) <= set(convs)


def test_other_cores_get_plain_loops(compiled_zoo):
    for mcpu in (None, "cortex-m3"):
        result, out_dir, _ = compiled_zoo.get(SMALL, **({"mcpu": mcpu} if mcpu else {}))
        assert result.memory_report["dsp_kernels"] == []
        assert "tinyseg_dot_s8x" not in open(os.path.join(out_dir, "tinyseg_model.c")).read()


@pytest.mark.parametrize("core", CORES)
def test_dsp_build_compiles_for_every_core(core, dsp_builds, tmp_path):
    if shutil.which(ARM_CC) is None:
        pytest.skip(f"{ARM_CC} not installed (scripts/setup.sh installs it)")
    _, out_dir, _ = dsp_builds[SMALL]
    proc = subprocess.run([ARM_CC, *STRICT_CFLAGS, f"-mcpu={core}", "-mthumb", "-ffreestanding", "-I", out_dir,
                           "-c", os.path.join(out_dir, "tinyseg_model.c"), "-o", str(tmp_path / "model.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"for {core}: {proc.stderr}"


@pytest.mark.parametrize("model", [SMALL, MBV2], ids=os.path.basename)
def test_dsp_build_on_the_host_is_exact(model, dsp_builds):
    """The host build (STRICT_CFLAGS, -Werror) runs the helpers' portable fallback."""
    result, out_dir, binary = dsp_builds[model]
    x = seeded_input(result.io_spec["input"]["shape"], "int8", 0)
    np.testing.assert_array_equal(host.run(out_dir, x, binary), tflm_reference(model, x))


@pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
@pytest.mark.parametrize("model", [SMALL, pytest.param(MBV2, marks=pytest.mark.slow)], ids=os.path.basename)
def test_dsp_build_on_cortex_m7_is_exact(model, dsp_builds, tmp_path):
    result, out_dir, _ = dsp_builds[model]
    x = seeded_input(result.io_spec["input"]["shape"], "int8", 1)
    build = tmp_path / "firmware"
    shutil.copytree(out_dir, build)
    np.testing.assert_array_equal(qemu.run(str(build), x, qemu.build(str(build))), tflm_reference(model, x))
