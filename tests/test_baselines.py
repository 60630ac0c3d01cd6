"""The committed baseline table (benchmarks/results.json) still describes what the compiler emits."""
import json
import os
import sys

import pytest

from conftest import MODELS, int8_zoo
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE

BENCHMARKS = os.path.join(os.path.dirname(MODELS), "benchmarks")


def _records():
    with open(os.path.join(BENCHMARKS, "results.json")) as f:
        return {r["model"]: r for r in json.load(f)}


def test_table_covers_the_int8_zoo_and_the_user_models():
    sys.path.insert(0, BENCHMARKS)
    import baselines

    assert set(_records()) == {os.path.basename(p) for p in int8_zoo()} | set(baselines.USER_MODELS)


def _zoo_params():
    """The small TinyUNet in `make test-quick`; the others compile for tens of seconds each."""
    return [pytest.param(m, marks=[] if m.endswith("tinyunet_32x32_c1.tflite") else [pytest.mark.slow])
            for m in int8_zoo()]


@pytest.mark.parametrize("model", _zoo_params(), ids=os.path.basename)
def test_tinyseg_columns_match_a_fresh_compile(model, compiled_zoo):
    record = _records()[os.path.basename(model)]
    report = compiled_zoo.get(model)[0].memory_report
    assert record["tinyseg_nospill_bytes"] == report["arena_bytes"]
    assert record["lower_bound_bytes"] == report["lower_bound_bytes"]
    assert record["weight_bytes"] == report["weight_bytes"]


@pytest.mark.parametrize("model", _zoo_params(), ids=os.path.basename)
def test_tinyseg_min_columns_match_a_fresh_compile(model, compiled_zoo):
    record = _records()[os.path.basename(model)]
    report = compiled_zoo.get(model, ram_budget=SMALLEST_FEASIBLE, storage="mmap")[0].memory_report
    assert record["tinyseg_min_bytes"] == report["arena_bytes"]
    assert record["tinyseg_moved_bytes"] == report["moved_bytes"]
    assert record["tinyseg_storage_bytes"] == report["storage_bytes"]
    assert record["tinyseg_spilled_bytes"] == [s["bytes"] for s in report["spilled"]]


def test_budget_rows_agree_with_the_smallest_feasible_arena():
    """A budget is feasible exactly when it is at least TinySeg min, and then its arena fits it."""
    for record in _records().values():
        assert record["tinyseg_min_bytes"] <= record["tinyseg_nospill_bytes"]
        assert len(record["tinyseg_budgets"]) == 3
        for row in record["tinyseg_budgets"]:
            assert row["budget"] % 1024 == 0 and row["budget"] < record["tinyseg_nospill_bytes"]
            if row.get("feasible", True):
                assert record["tinyseg_min_bytes"] <= row["arena_bytes"] <= row["budget"]
            else:
                assert row["budget"] < record["tinyseg_min_bytes"]


def test_tflm_arena_is_the_smallest_that_allocates():
    from tvm_tinyseg.reference import tflm_arena

    model = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
    measured = tflm_arena(model)["tflm_arena_bytes"]
    assert measured == _records()["tinyunet_32x32_c1.tflite"]["tflm_arena_bytes"]


def test_committed_markdown_is_the_committed_json_rendered():
    """results.md is exactly what baselines.py renders from results.json (neither edited by hand)."""
    sys.path.insert(0, BENCHMARKS)
    import baselines

    with open(os.path.join(BENCHMARKS, "results.json")) as f:
        files = baselines.outputs(json.load(f))
    for name, text in files.items():
        with open(os.path.join(BENCHMARKS, name)) as f:
            assert f.read() == text, name
