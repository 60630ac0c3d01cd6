"""The ``tinyseg`` console script: compile, run, demo."""
import json
import os
import re

import numpy as np
import pytest

from conftest import MODELS, run_tinyseg, tflm_reference

SMALL = f"{MODELS}/tinyunet_32x32_c1.tflite"


def test_compile_then_run_on_host_matches_tflite_micro(tmp_path):
    out = tmp_path / "build"
    proc = run_tinyseg("compile", SMALL, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    memory = json.loads((out / "memory.json").read_text())
    assert memory["arena_bytes"] > 0 and memory["weight_bytes"] > 100_000
    assert (out / "tinyseg_model.c").exists() and (out / "tinyseg_model.h").exists()

    x = np.random.default_rng(5).integers(-128, 128, (1, 32, 32, 1), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = run_tinyseg("run", str(out), "--platform", "host", "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy"))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), tflm_reference(SMALL, x))


@pytest.mark.slow
def test_run_rejects_a_wrong_input_shape(tmp_path):
    out = tmp_path / "build"
    assert run_tinyseg("compile", SMALL, "-o", str(out)).returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.int8))
    proc = run_tinyseg("run", str(out), "--input", str(tmp_path / "x.npy"))
    assert proc.returncode == 1
    assert "expects (1, 32, 32, 1) int8" in proc.stderr


def test_run_on_a_directory_that_was_not_compiled(tmp_path):
    proc = run_tinyseg("run", str(tmp_path))
    assert proc.returncode == 1 and "not a compiled model directory" in proc.stderr


@pytest.mark.slow
def test_demo_compiles_with_and_without_tinyseg_and_checks_against_tflite_micro(tmp_path):
    from tvm_tinyseg.boards import qemu_cortex_m as qemu
    from tvm_tinyseg.demo import BOARD_ROWS

    proc = run_tinyseg("demo", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    host_part, _, board_part = proc.stdout.partition("\nQEMU mps2-an500")
    rows = {line[:20].strip(): line[20:].split() for line in host_part.strip().splitlines()[1:]}
    assert int(rows["TFLite Micro"][0]) == 508_744
    assert int(rows["without TinySeg"][0]) > int(rows["TinySeg, no budget"][0]) > int(rows["TinySeg min, mmap"][0])
    assert int(rows["TinySeg min, file"][2]) > 0  # bytes really went through the storage file
    assert all(cells[-1] == "identical" for label, cells in rows.items() if label != "TFLite Micro")
    assert json.loads((tmp_path / "tinyseg_min_mmap" / "memory.json").read_text())["spilled"]
    if not qemu.available():
        assert "QEMU board: skipped" in proc.stdout
        return
    lines = board_part.strip().splitlines()[2:]
    assert re.search(r"does not link: region `RAM' overflowed by \d+ bytes", lines[0])
    rows = {(line[:20].strip(), int(line[20:].split()[0])): line[20:].split()[1:] for line in lines[1:]}
    assert len(rows) == len(BOARD_ROWS) == 4 and (("TinySeg, mmap", 64) in rows)
    for (label, kib), (ram, instructions, moved, verdict) in rows.items():  # fits, moves bytes, matches TFLM
        assert int(ram) <= kib * 1024 and int(instructions) > 0 and int(moved) > 0 and verdict == "identical"


@pytest.mark.slow
def test_analyze_prints_the_peak_step_and_plots_the_arena(tmp_path):
    from tvm_tinyseg.driver import compile_model

    png = tmp_path / "timeline.png"
    proc = run_tinyseg("analyze", SMALL, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    assert png.exists() and png.read_bytes().startswith(b"\x89PNG")
    assert f"peak step {compile_model(SMALL).table.peak_step()} (" in proc.stdout


def _error_lines(proc):
    """stderr without the progress lines: what the user is told went wrong."""
    return [line for line in proc.stderr.splitlines() if not line.startswith("[tinyseg]")]


@pytest.mark.slow
def test_compile_takes_tvmc_style_target_options_and_pass_config(tmp_path):
    from tvm_tinyseg.driver import compile_model

    out = tmp_path / "build"
    proc = run_tinyseg("compile", SMALL, "-o", out, "--target", "c", "--mcpu", "cortex-m7", "--executor", "aot",
                       "--pass-config", "tinyseg.ram_budget=min", "--pass-config", "tinyseg.storage=mmap",
                       "--pass-config", "tinyseg.planner=best_fit")
    assert proc.returncode == 0, proc.stderr
    assert "[tinyseg] compiling" in proc.stderr  # the progress line
    memory = json.loads((out / "memory.json").read_text())
    smallest = compile_model(SMALL, ram_budget=-1, storage="mmap", planner="best_fit").memory_report
    assert (memory["target"], memory["mcpu"], memory["ram_budget"], memory["storage"], memory["planner"]) == \
        ("c", "cortex-m7", -1, "mmap", "best_fit")
    assert memory["arena_bytes"] == smallest["arena_bytes"] < compile_model(SMALL).memory_report["arena_bytes"]
    assert memory["spilled"]


@pytest.mark.slow
def test_a_project_budget_from_pass_config_is_the_board_budget_as_with_the_flag(tmp_path):
    """--project qemu_cortex_m leaves room for the firmware within the budget however it is given."""
    for name, budget in (("flag", ["--ram-budget", "24K"]), ("config", ["--pass-config", "tinyseg.ram_budget=24K"])):
        proc = run_tinyseg("compile", SMALL, "-o", tmp_path / name, "--project", "qemu_cortex_m", "--storage", "mmap",
                           *budget)
        assert proc.returncode == 0, proc.stderr
    flag, config = (json.loads((tmp_path / d / "memory.json").read_text()) for d in ("flag", "config"))
    assert flag == config and 0 < flag["ram_budget"] < 24 * 1024 and flag["arena_bytes"] <= flag["ram_budget"]
    assert "RAM_BUDGET ?= 24576" in (tmp_path / "config" / "project.mk").read_text()


@pytest.mark.slow
def test_pass_config_enable_false_equals_no_tinyseg(tmp_path):
    assert run_tinyseg("compile", SMALL, "-o", tmp_path / "a", "--pass-config", "tinyseg.enable=false").returncode == 0
    assert run_tinyseg("compile", SMALL, "-o", tmp_path / "b", "--no-tinyseg").returncode == 0
    a, b = (json.loads((tmp_path / d / "memory.json").read_text()) for d in "ab")
    assert a["tinyseg"] is False and a == b


@pytest.mark.parametrize("sizes", [("131072", "128K", "128KiB", "128kib")])
def test_sizes_in_every_spelling_give_the_same_budget(sizes):
    from tvm_tinyseg.cli import parse_size

    assert {parse_size(s) for s in sizes} == {131072}


def _slow(*case):
    return pytest.param(*case, marks=pytest.mark.slow)


BAD_COMPILE_OPTIONS = [  # (arguments after 'compile SMALL -o DIR', what the one-line message must say)
    # each case starts the command line (TVM's import, seconds): four in `make test-quick`, all in `make test`
    (["--target", "llvm"], "unknown target 'llvm' (supported: c)"),
    _slow(["--mcpu", "cortex-a53"], "unknown mcpu 'cortex-a53'"),
    _slow(["--executor", "graph"], "unknown executor 'graph' (supported: aot)"),
    (["--pass-config", "tinyseg.ram_limit=128K"], "unknown PassContext option 'tinyseg.ram_limit'"),
    _slow(["--pass-config", "tir.disable_vectorize=1"], "unknown PassContext option 'tir.disable_vectorize'"),
    _slow(["--pass-config", "tinyseg.ram_budget"], "expected KEY=VALUE"),
    _slow(["--pass-config", "tinyseg.ram_budget=lots"], "tinyseg.ram_budget expects a size in bytes"),
    _slow(["--pass-config", "tinyseg.fuse_fetch=maybe"], "tinyseg.fuse_fetch expects true or false"),
    _slow(["--pass-config", "tinyseg.storage=sdcard"], "tinyseg.storage must be one of file, mmap, uart, got 'sdcard'"),
    _slow(["--pass-config", "tinyseg.planner=optimal"], "tinyseg.planner must be one of"),
    (["--ram-budget", "12X"], "invalid size '12X'"),
    _slow(["--ram-budget=-5K"], "invalid size '-5K'"),
    _slow(["--ram-budget", "1.5K"], "invalid size '1.5K'"),
    _slow(["--storage", "tape"], "invalid choice: 'tape'"),
    # these two search the smallest arena first (tens of seconds each): in `make test` only
    _slow(["--ram-budget", "4K"], "RAM budget 4096 B cannot be met: the smallest feasible arena is 10240 B"),
    _slow(["--pass-config", "tinyseg.ram_budget=4K"], "the smallest feasible arena is 10240 B"),
    (["--ram-budget", "100K", "--pass-config", "tinyseg.ram_budget=200K"],
     "--ram-budget 102400 conflicts with --pass-config tinyseg.ram_budget=204800"),
    _slow(["--no-tinyseg", "--pass-config", "tinyseg.enable=true"], "--no-tinyseg conflicts with --pass-config"),
    _slow(["--storage", "file", "--pass-config", "tinyseg.storage=mmap"], "--storage file conflicts"),
    _slow(["--pass-config", "tinyseg.storage=mmap", "--pass-config", "tinyseg.storage=file"], "given twice"),
    _slow(["--project", "qemu_cortex_m", "--mcpu", "cortex-m4"], "--project qemu_cortex_m is a cortex-m7 board"),
]


@pytest.mark.parametrize("arguments, message", BAD_COMPILE_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list)
                         else None)
def test_a_bad_compile_option_is_a_one_line_user_error(tmp_path, arguments, message):
    out = tmp_path / "build"
    proc = run_tinyseg("compile", SMALL, "-o", out, *arguments)
    assert proc.returncode == 1, proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not (out / "memory.json").exists()


@pytest.mark.parametrize("arguments, message", [
    (["bench", SMALL, "--budgets", "96K,lots"], "invalid size 'lots'"),
    (["bench", SMALL, "--budgets", "150%"], "must be in 1-100 %"),
    (["bench", SMALL, "--budgets", "0"], "a fixed budget must be a positive size"),
    (["bench", "no_such_model.tflite"], "no_such_model.tflite: model file not found"),
    (["analyze", SMALL, "--ram-budget", "64Q"], "invalid size '64Q'"),
    (["run", SMALL, "--platform", "arduino"], "invalid choice: 'arduino'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_other_bad_options_are_one_line_user_errors(arguments, message):
    proc = run_tinyseg(*arguments)
    assert proc.returncode == 1, proc.stderr
    errors = _error_lines(proc)
    assert len(errors) == 1 and message in errors[0], proc.stderr


@pytest.mark.slow
def test_qemu_refuses_a_build_for_another_core(tmp_path):
    out = tmp_path / "build"
    assert run_tinyseg("compile", SMALL, "-o", out, "--mcpu", "cortex-m4").returncode == 0
    assert json.loads((out / "memory.json").read_text())["mcpu"] == "cortex-m4"
    proc = run_tinyseg("run", out, "--platform", "qemu")
    assert proc.returncode == 1
    assert _error_lines(proc) == [f"tinyseg: error: {out} was compiled for --mcpu cortex-m4; the QEMU board "
                                  "(mps2-an500) is a cortex-m7: compile with --mcpu cortex-m7 (or without --mcpu)"]


@pytest.mark.slow
def test_a_damaged_build_directory_is_a_user_error(tmp_path):
    out = tmp_path / "build"
    assert run_tinyseg("compile", SMALL, "-o", out).returncode == 0
    (out / "memory.json").write_text("{")
    proc = run_tinyseg("run", out, "--platform", "qemu")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(_error_lines(proc)) == 1 and "cannot read memory.json" in proc.stderr


README = os.path.join(os.path.dirname(MODELS), "README.md")


def test_the_readme_cli_reference_names_every_option():
    """Every option of every command (from the real parser) appears in the README's CLI reference."""
    from tvm_tinyseg.cli import build_parser

    with open(README) as f:
        text = f.read()
    reference = text[text.index("## Command line"):]
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        assert f"tinyseg {name}" in reference, name
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in reference, f"tinyseg {name} {option} is not in the README"
