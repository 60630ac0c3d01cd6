"""The generated C is strict C99 for the host compiler and for Cortex-M (arm-none-eabi-gcc)."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import float_zoo, int8_zoo
from tvm_tinyseg.boards.host import STRICT_CFLAGS

ARM_CC = "arm-none-eabi-gcc"
CORTEX_M7 = ["-mcpu=cortex-m7", "-mthumb", "-ffreestanding"]


@pytest.mark.parametrize("model", [pytest.param(m, marks=[] if m.endswith("tinyunet_32x32_c1.tflite")
                                                 else [pytest.mark.slow]) for m in int8_zoo() + float_zoo()],
                         ids=os.path.basename)
def test_compiles_for_cortex_m7(model, compiled_zoo, tmp_path):
    if shutil.which(ARM_CC) is None:
        pytest.skip(f"{ARM_CC} not installed (scripts/setup.sh installs it)")
    _, out_dir, _ = compiled_zoo.get(model)
    obj = tmp_path / "model.o"
    proc = subprocess.run([ARM_CC, *STRICT_CFLAGS, *CORTEX_M7, "-I", out_dir, "-c",
                           os.path.join(out_dir, "tinyseg_model.c"), "-o", str(obj)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert obj.stat().st_size > 0


@pytest.mark.parametrize("model", int8_zoo()[:1], ids=os.path.basename)
def test_runner_is_plain_c_without_tvm(model, compiled_zoo):
    result, out_dir, _ = compiled_zoo.get(model)
    source = open(os.path.join(out_dir, "tinyseg_model.c")).read()
    includes = set(re.findall(r'#include [<"]([^>"]+)[>"]', source))
    assert includes <= {"math.h", "stdint.h", "string.h", "stdbool.h", "tinyseg_arith.h", "tinyseg_model.h",
                        "tinyseg_storage.h"}
    assert "malloc" not in source and "TVMBackend" not in source and "DLTensor" not in source
    header = open(os.path.join(out_dir, "tinyseg_model.h")).read()
    assert f"#define TINYSEG_ARENA_BYTES {result.plan.size}u" in header
    assert f"#define TINYSEG_WEIGHT_BYTES {result.table.weight_bytes()}u" in header
    assert f"static uint8_t tinyseg_arena[{result.plan.size}]" in source
