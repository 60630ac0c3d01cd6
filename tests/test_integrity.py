"""Storage integrity (a CRC-16 per 16-byte block of 'file' and 'uart' storage, on by default): what it
costs in memory.json and `tinyseg analyze`, how it counts in the RAM budget, and how it is turned off.
That it catches corrupted storage, and that nothing else does: tests/test_storage_faults.py."""
import json
import os

import pytest

from conftest import MODELS, run_tinyseg
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError

MODEL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")  # at its smallest arena: 8 KiB spilled


@pytest.mark.parametrize("storage,integrity,checked", [
    ("file", True, True), ("uart", True, True), ("mmap", True, False), ("file", False, False)])
def test_memory_report_and_header_show_the_check_and_its_cost(compiled_zoo, storage, integrity, checked):
    options = {} if integrity else {"integrity": False}
    result, out_dir, _ = compiled_zoo.get(MODEL, ram_budget=-1, storage=storage, **options)
    report = json.load(open(os.path.join(out_dir, "memory.json")))
    assert report["integrity"] is checked
    pool = report["storage_bytes"]
    assert pool == 8192
    assert report["integrity_ram_bytes"] == (pool // 16 * 2 if checked else 0)
    assert report["integrity_storage_bytes"] == 0  # the pool is whole blocks already
    header = open(os.path.join(out_dir, "tinyseg_model.h")).read()
    assert ("#define TINYSEG_STORAGE_INTEGRITY 1" in header) is checked


def test_nothing_spilled_nothing_checked(compiled_zoo):
    report = compiled_zoo.get(MODEL)[0].memory_report
    assert report["storage_bytes"] == 0 and not report["integrity"] and report["integrity_ram_bytes"] == 0


@pytest.mark.slow  # four compiles at fixed budgets
def test_the_crcs_count_in_the_ram_budget():
    """Arena plus CRCs stay within the budget; a budget only the arena fits names the way out."""
    budget = 11391  # without the CRCs: a 10496 B arena spilling 7168 B, whose 896 B of CRCs exceed it
    report = compile_model(MODEL, ram_budget=budget).memory_report
    assert report["integrity"] and report["arena_bytes"] + report["integrity_ram_bytes"] <= budget
    without = compile_model(MODEL, ram_budget=budget, integrity=False).memory_report
    assert without["arena_bytes"] + report["integrity_ram_bytes"] > budget, "the budget must bind to prove much"
    with pytest.raises(TinySegError, match="CRCs .* --no-integrity"):
        compile_model(MODEL, ram_budget=10400)
    assert compile_model(MODEL, ram_budget=10400, integrity=False).memory_report["arena_bytes"] <= 10400


@pytest.mark.slow
def test_analyze_shows_the_cost_and_no_integrity_turns_it_off():
    on = run_tinyseg("analyze", MODEL, "--ram-budget", "min")
    assert on.returncode == 0 and "integrity check: a CRC-16 per 16-byte block, 1024 B of RAM" in on.stdout
    off = run_tinyseg("analyze", MODEL, "--ram-budget", "min", "--no-integrity")
    assert off.returncode == 0 and "integrity check off (--no-integrity)" in off.stdout


@pytest.mark.slow  # two compiles through the command line
def test_pass_config_key_and_its_flag(tmp_path):
    off = run_tinyseg("compile", MODEL, "-o", tmp_path / "a", "--ram-budget", "min",
                      "--pass-config", "tinyseg.integrity=false")
    assert off.returncode == 0, off.stderr
    assert not json.load(open(tmp_path / "a" / "memory.json"))["integrity"]
    clash = run_tinyseg("compile", MODEL, "-o", tmp_path / "b", "--no-integrity",
                        "--pass-config", "tinyseg.integrity=true")
    assert clash.returncode == 1 and "--no-integrity conflicts with --pass-config tinyseg.integrity=True" in clash.stderr
