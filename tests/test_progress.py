"""Progress logging (tvm_tinyseg/progress.py): one line per long step with its time under -v,
the short progress notes and summary by default, errors only under -q."""
import logging
import re

import pytest

from tvm_tinyseg.cli import main
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.models import model_path

SMALL = model_path("tinyunet_32x32_c1.tflite")
STEP = r"\[tinyseg\] {}: \d+\.\d\d s"
COMPILE_STEPS = ("import tinyunet_32x32_c1.tflite", "lowering to kernels", r"spill search", r"rewrite and arena "
                 r"placement \(\w+ planner\)", "C emission")


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() sets the tvm_tinyseg logger up for its process; later tests in this one get it back."""
    logger = logging.getLogger("tvm_tinyseg")
    saved = logger.level, list(logger.handlers)
    yield
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]


def _lines_matching(text: str, pattern: str) -> list:
    return [line for line in text.splitlines() if re.match(pattern, line)]


def test_verbose_logs_each_long_step_once_with_its_time(tmp_path, capsys):
    out = str(tmp_path / "m")
    assert main(["compile", SMALL, "-o", out, "--ram-budget", "min", "--storage", "file", "-v"]) == 0
    err = capsys.readouterr().err
    for step in COMPILE_STEPS:
        assert len(_lines_matching(err, STEP.format(step))) == 1, (step, err)
    assert main(["-v", "run", out]) == 0
    assert len(_lines_matching(capsys.readouterr().err, STEP.format("host build of tinyseg_host"))) == 1


def test_default_prints_progress_notes_and_the_summary_without_step_lines(tmp_path, capsys):
    assert main(["compile", SMALL, "-o", str(tmp_path / "m")]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("[tinyseg] compiling ") and not _lines_matching(captured.err, STEP.format(".*"))
    assert captured.out.startswith(f"wrote {tmp_path / 'm'}: arena ")


def test_quiet_prints_errors_only(tmp_path, capsys):
    assert main(["compile", SMALL, "-o", str(tmp_path / "m"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["-q", "compile", str(tmp_path / "missing.tflite"), "-o", str(tmp_path / "n")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("tinyseg: error: ") and captured.err.count("\n") == 1


def test_library_steps_go_to_the_tvm_tinyseg_loggers(caplog):
    """Without the CLI the steps are ordinary INFO records (a program using the package decides)."""
    caplog.set_level(logging.INFO, logger="tvm_tinyseg")
    compile_model(SMALL)
    steps = {(r.name, r.getMessage().split(":")[0]) for r in caplog.records if r.levelno == logging.INFO}
    assert ("tvm_tinyseg.driver", "C emission") in steps
    assert ("tvm_tinyseg.memory_planning", "spill search") not in steps  # no budget: no search
    assert ("tvm_tinyseg.driver", "lowering to kernels") in steps
