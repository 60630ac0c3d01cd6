"""The registered Relax pipeline "tinyseg": tvm.compile runs TinySeg's passes, honours the
PassContext options, and the Relax VM result is still bit-exact with TFLite Micro."""
import os

import numpy as np
import pytest
import tvm
from tvm import relax

from conftest import MODELS, seeded_input, tflm_reference
from tvm_tinyseg.frontend import load_model
from tvm_tinyseg.pass_config import register_options
from tvm_tinyseg.pipeline import last_memory_report

SMALL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_options()  # the tinyseg.* PassContext keys these tests set


def _run_vm(executable, x):
    return relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()


def test_tvm_compile_with_a_budget_spills_and_stays_exact():
    model = load_model(SMALL)
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 14_000, "tinyseg.storage": "mmap"}):
        executable = tvm.compile(model.mod, "llvm", relax_pipeline="tinyseg")
    report = last_memory_report()
    assert report["arena_bytes"] <= 14_000 < 17_664  # 17,664 B without spilling
    assert report["storage_bytes"] > 0 and report["moved_bytes"] > 0
    x = seeded_input(model.inputs[0].shape, "int8", 0)
    np.testing.assert_array_equal(_run_vm(executable, x), tflm_reference(SMALL, x))


def test_pipeline_keyword_arguments_override_the_context():
    model = load_model(SMALL)
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 20_000, "tinyseg.storage": "mmap"}):
        tvm.compile(model.mod, "llvm", relax_pipeline=relax.get_pipeline("tinyseg", ram_budget=0))
    assert last_memory_report()["storage_bytes"] == 0


@pytest.mark.slow
def test_impossible_budget_fails_the_build_with_the_smallest_feasible_one():
    from tvm_tinyseg.passes.spill_planner import BudgetError

    model = load_model(SMALL)
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 1_000, "tinyseg.storage": "mmap"}):
        # TinySeg min of tinyunet_32x32_c1 (mmap; skips written at production, chains streamed)
        with pytest.raises(BudgetError, match="smallest feasible arena is 9472 B"):
            tvm.compile(model.mod, "llvm", relax_pipeline="tinyseg")
