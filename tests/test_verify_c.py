"""Generated C that does not compile is an internal error at compile time (codegen/check_c.py):
the driver parses the C with the host compiler before writing anything, and the command line
reports the first compiler error in one line with exit status 2."""
import numpy as np
import pytest

from tflite_builder import TFLiteBuilder
from tvm_tinyseg import cli
from tvm_tinyseg.codegen import emit_c
from tvm_tinyseg.codegen.check_c import GeneratedCodeError, check_generated_c, host_compiler
from tvm_tinyseg.driver import compile_model

# What a NaN constant used to turn into (TVM prints it as an identifier C does not have).
BROKEN_LINE = "static const float tinyseg_bad = nanf;"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 8, 8, 3], np.int8, quant=(0.05, 0))
    y = b.tensor("y", [1, 4, 4, 3], np.int8, quant=(0.05, 0))
    b.op("MAX_POOL_2D", [x], [y], options=("Pool2DOptions", {"padding": "VALID", "stride_h": 2, "stride_w": 2,
                                                               "filter_height": 2, "filter_width": 2}))
    path = str(tmp_path_factory.mktemp("model") / "pool.tflite")
    b.save(path, inputs=[x], outputs=[y])
    return path


@pytest.fixture
def broken_emitter(monkeypatch):
    emit = emit_c.emit_model_source
    monkeypatch.setattr(emit_c, "emit_model_source", lambda *a, **k: emit(*a, **k) + "\n" + BROKEN_LINE + "\n")


pytestmark = pytest.mark.skipif(host_compiler() is None, reason="no host C compiler")


def test_the_generated_c_passes_the_strict_check(model):
    result = compile_model(model, check_c=False)
    assert check_generated_c(result, strict=True)


def test_c_that_does_not_compile_is_an_internal_error_before_anything_is_written(model, tmp_path, broken_emitter):
    out_dir = tmp_path / "out"
    with pytest.raises(GeneratedCodeError, match=r"the generated tinyseg_model\.c does not compile \(\S+\): "
                                                 r"tinyseg_model\.c:\d+:\d+: error: "):
        compile_model(model, str(out_dir))
    assert not out_dir.exists()
    compile_model(model, str(out_dir), check_c=False)  # unchecked, it is written: the check is what stops it
    assert BROKEN_LINE in (out_dir / "tinyseg_model.c").read_text()


def test_the_command_line_reports_it_in_one_line_with_status_2(model, tmp_path, broken_emitter, capsys):
    status = cli.main(["compile", model, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 2 and err[0].startswith("[tinyseg] compiling")  # progress, then the error
    assert err[1].startswith("tinyseg: internal error: GeneratedCodeError: the generated tinyseg_model.c does not "
                             "compile") and ": error: " in err[1]
    assert cli.main(["compile", model, "-o", str(tmp_path / "unchecked"), "--no-check-c"]) == 0


def test_without_a_host_compiler_the_check_is_skipped(model, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-tinyseg")
    assert host_compiler() is None
    assert not check_generated_c(compile_model(model, check_c=False))
