"""The generated C under AddressSanitizer + UndefinedBehaviorSanitizer, with the debug canaries on
(-DTINYSEG_DEBUG_CANARIES, test_canaries.py: guard bytes around the arena and checksums of the
buffers live across each step), for every zoo model, without spilling and at the smallest arena
with spilled tensors in memory-mapped storage, and in file storage for the small and the paper's
model (the file backend's code does not change with the model), and with the input and output
outside the arena (in the runner's own buffers) for the small and the authentic TinyUNet; under
valgrind's memcheck for the small and the paper's model (valgrind finds what ASan misses in the
runner and the storage code; its 20-50x slowdown on the large models cost minutes of suite time).
Each checked run must succeed and give exactly the output of the plain -O2 build (which
test_zoo_exact/test_spill compare with TFLite Micro / onnxruntime). One build checks both:
sanitizers and canaries once cost two builds per case."""
import os
import shutil

import numpy as np
import pytest

from conftest import MODELS as MODELS_DIR
from conftest import seeded_input, zoo
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
from tvm_tinyseg.boards import host

CONFIGS = {
    "no_spill": {},
    "spill_mmap": {"ram_budget": SMALLEST_FEASIBLE, "storage": "mmap"},
    "spill_file": {"ram_budget": SMALLEST_FEASIBLE, "storage": "file"},
    "io_outside_arena": {"ram_budget": SMALLEST_FEASIBLE, "storage": "mmap", "io_in_arena": False},
}
QUICK = ("tinyunet_32x32_c1.tflite",)  # the rest take minutes: marked slow (and every io_outside_arena case)
UNDER_VALGRIND = QUICK + ("tinyunet_80x120.tflite",)
IO_OUTSIDE_ARENA = QUICK + ("tinyunet_authentic_80x120.tflite",)  # the caller's buffers, read and written in place
MODELS = zoo(lambda f: f.endswith((".tflite", ".onnx")))
CANARY_FLAGS = ["-DTINYSEG_DEBUG_CANARIES"]


def _cases():
    return [pytest.param(model, config, id=f"{os.path.basename(model)}-{config}",
                         marks=[] if os.path.basename(model) in QUICK and config != "io_outside_arena"
                         else [pytest.mark.slow])
            for model in MODELS for config in CONFIGS
            if (config != "spill_file" or os.path.basename(model) in UNDER_VALGRIND)
            and (config != "io_outside_arena" or os.path.basename(model) in IO_OUTSIDE_ARENA)]


@pytest.fixture(autouse=True)
def _no_leak_check_under_ptrace(monkeypatch):
    # LeakSanitizer cannot run where ptrace is denied (some CI containers); leaks are valgrind's job.
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=0")
    monkeypatch.setenv("UBSAN_OPTIONS", "print_stacktrace=1")


@pytest.mark.parametrize("model, config", _cases())
def test_generated_c_is_clean_under_sanitizers_canaries_and_valgrind(model, config, compiled_zoo):
    result, out_dir, exe = compiled_zoo.get(model, **CONFIGS[config])
    if config != "no_spill" and not result.memory_report["spilled"]:
        assert os.path.basename(model) not in QUICK, "the quick cases must exercise storage"
        pytest.skip("at its smallest arena this model spills nothing: the no_spill case covers it")
    spec = result.io_spec["input"]
    x = seeded_input(spec["shape"], spec["dtype"], 0)
    expected = host.run(out_dir, x, exe)
    sanitized = host.run(out_dir, x, host.build(out_dir, sanitize=True, extra_cflags=CANARY_FLAGS))
    np.testing.assert_array_equal(sanitized, expected)
    if os.path.basename(model) in UNDER_VALGRIND:
        np.testing.assert_array_equal(host.run(out_dir, x, exe, valgrind=True), expected)


def _patched_copy(out_dir, work_dir, statement, header=""):
    """A copy of the compiled model whose runner also executes ``statement`` after its first step."""
    shutil.copytree(out_dir, work_dir, ignore=shutil.ignore_patterns("tinyseg_host*"))
    source = os.path.join(work_dir, "tinyseg_model.c")
    text = open(source).read()
    marker = "  TINYSEG_DEBUG_AFTER(0, "
    assert text.count(marker) == 1
    with open(source, "w") as f:
        f.write(header + text.replace(marker, f"  {statement}\n{marker}"))
    return str(work_dir)


def test_the_checkers_do_catch_memory_errors(compiled_zoo, tmp_path):
    """The checked runs above could fail: an overflow of the arena stops the sanitized build, a
    use after free fails the run under valgrind (volatile: -Werror would reject them at compile time)."""
    result, out_dir, _ = compiled_zoo.get(os.path.join(MODELS_DIR, QUICK[0]))
    x = seeded_input(result.io_spec["input"]["shape"], result.io_spec["input"]["dtype"], 0)
    overflow = _patched_copy(out_dir, tmp_path / "overflow",
                             "{ volatile uint32_t past = TINYSEG_ARENA_BYTES + 8; tinyseg_arena[past] ^= 1; }")
    with pytest.raises(TinySegError, match="global-buffer-overflow|runtime error: load of address"):  # ASan or UBSan
        host.run(overflow, x, host.build(overflow, sanitize=True))
    use_after_free = "{ volatile uint8_t *volatile p = malloc(4); free((void *)p); p[1] = 1; }"
    freed = _patched_copy(out_dir, tmp_path / "freed", use_after_free, header="#include <stdlib.h>\n")
    with pytest.raises(TinySegError, match=rf"\({host.VALGRIND_ERROR_STATUS}\).*Invalid write"):
        host.run(freed, x, host.build(freed), valgrind=True)
