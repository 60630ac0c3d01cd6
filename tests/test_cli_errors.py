"""User mistakes the command line once reported as internal errors (status 2) or with a traceback:
each is one line and status 1 now; Ctrl-C is one line and status 130; TVM's own log lines stay
off the terminal (docs/reliability.md, "The command line")."""
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import MODELS
from tflite_builder import TFLiteBuilder

from tvm_tinyseg import cli
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError

SMALL = f"{MODELS}/tinyunet_32x32_c1.tflite"
LARGE = f"{MODELS}/tinyunet_80x120.tflite"


def _tinyseg(*args, **popen):
    """The command as the ``tinyseg`` script runs it (tvm_tinyseg/__main__.py's main)."""
    return subprocess.Popen([sys.executable, "-m", "tvm_tinyseg", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _errors(stderr: str) -> list:
    """What the user is told went wrong: stderr without the progress lines."""
    return [line for line in stderr.splitlines() if not line.startswith("[tinyseg]")]


def _main(capfd, *args) -> tuple:
    """(status, error lines) of the command line run in this process."""
    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    return status, _errors(capfd.readouterr().err)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "small"
    compile_model(SMALL, out)
    return out


def _copy(compiled, tmp_path):
    return shutil.copytree(compiled, tmp_path / "model")


# --- -o that cannot be an output directory ---------------------------------------------------

@pytest.mark.parametrize("output, message", [
    ("a_file", "a_file: exists and is not a directory"),
    ("/dev/null", "/dev/null: exists and is not a directory"),
    ("/proc/x", "/proc/x: cannot create the output directory"),
    ("", "the output directory name is empty"),
])
def test_an_output_that_cannot_be_a_directory_is_a_user_error(tmp_path, monkeypatch, capfd, output, message):
    if output.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("mine")
    status, errors = _main(capfd, "compile", SMALL, "-o", output)
    assert status == 1 and len(errors) == 1 and message in errors[0], errors
    assert (tmp_path / "a_file").read_text() == "mine"


# --- tinyseg run on what is not a compiled model ---------------------------------------------

def _npz(model, tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros([1, 32, 32, 1], np.int8))
    return ["--input", path], "x.npz: an .npz archive; give each input as an .npy file"


def _broken_io(model, tmp_path):
    (model / "io.json").write_text("{\"inputs\": [")
    return [], "cannot read io.json"


def _io_without_shape(model, tmp_path):
    spec = json.loads((model / "io.json").read_text())
    del spec["inputs"][0]["shape"]
    (model / "io.json").write_text(json.dumps(spec))
    return [], "io.json is damaged"


def _no_memory_json(model, tmp_path):
    os.unlink(model / "memory.json")
    return [], "not a compiled model directory (no memory.json"


def _memory_json_not_an_object(model, tmp_path):
    (model / "memory.json").write_text("[1, 2]")
    return [], "memory.json is damaged ('storage' missing"


def _output_in_a_missing_folder(model, tmp_path):
    return ["--output", tmp_path / "no" / "y.npy"], "y.npy: cannot write the output array"


@pytest.mark.parametrize("damage", [_npz, _broken_io, _io_without_shape, _no_memory_json, _memory_json_not_an_object,
                                    _output_in_a_missing_folder], ids=lambda f: f.__name__.strip("_"))
def test_run_on_a_bad_input_or_damaged_directory_is_a_user_error(compiled, tmp_path, capfd, damage):
    model = _copy(compiled, tmp_path)
    arguments, message = damage(model, tmp_path)
    status, errors = _main(capfd, "run", model, *arguments)
    assert status == 1 and len(errors) == 1 and message in errors[0], errors


# --- sizes beyond any microcontroller ----------------------------------------------------------

@pytest.mark.parametrize("arguments", [
    ["compile", SMALL, "-o", "out", "--ram-budget", "99999999999999999999"],
    ["compile", SMALL, "-o", "out", "--pass-config", "tinyseg.ram_budget=99999999999999999999"],
    ["compile", SMALL, "-o", "out", "--ram-budget", "4194304K"],
    ["run", "out", "--ram-budget", "99999999999999999999"],
], ids=["flag", "pass-config", "4GiB", "run"])
def test_a_budget_beyond_a_32_bit_address_space_is_refused(tmp_path, monkeypatch, capfd, arguments):
    monkeypatch.chdir(tmp_path)
    status, errors = _main(capfd, *arguments)
    assert status == 1 and len(errors) == 1, errors
    assert "larger than a 32-bit microcontroller's address space (at most 4294967295 B)" in errors[0]
    assert not (tmp_path / "out").exists()


def test_the_api_refuses_such_a_budget_too():
    with pytest.raises(TinySegError, match="larger than a 32-bit microcontroller's address space"):
        compile_model(SMALL, ram_budget=1 << 64)


# --- a full disk -------------------------------------------------------------------------------

def _file_size_limit(nbytes):
    def limit():  # in the child: writes past nbytes fail with EFBIG instead of killing it (SIGXFSZ)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return limit


def test_a_full_disk_while_writing_is_a_user_error_and_leaves_the_directory_as_it_was(compiled, tmp_path):
    model = _copy(compiled, tmp_path)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    proc = _tinyseg("compile", SMALL, "-o", model, "--storage", "mmap", preexec_fn=_file_size_limit(64 << 10))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr
    errors = _errors(stderr)
    assert len(errors) == 1 and f"{model}: cannot write the output: File too large" in errors[0], errors
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no staging directory left


# --- Ctrl-C ------------------------------------------------------------------------------------

def _interrupt_after(proc, marker: str, delay: float) -> str:
    """Send SIGINT ``delay`` s after stderr shows ``marker``; return all of stderr."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            break
    seen.append(proc.stderr.read())
    proc.wait(timeout=120)
    return "".join(seen)


@pytest.mark.parametrize("delay", [0.0, pytest.param(1.0, marks=pytest.mark.slow)])
def test_ctrl_c_during_compile_is_one_line_and_status_130(tmp_path, delay):
    proc = _tinyseg("compile", LARGE, "-o", tmp_path / "out")
    stderr = _interrupt_after(proc, "[tinyseg] compiling", delay)
    assert proc.returncode == 130, stderr
    assert _errors(stderr) == ["tinyseg: interrupted"], stderr
    assert os.listdir(tmp_path) == []  # neither the output nor a staging directory


def test_ctrl_c_while_loading_is_one_line_and_status_130(tmp_path):
    proc = _tinyseg("compile", LARGE, "-o", tmp_path / "out")
    time.sleep(0.5)  # importing TVM
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and _errors(stderr) == ["tinyseg: interrupted"], stderr


@pytest.mark.slow
def test_ctrl_c_during_run_is_one_line_and_status_130(compiled, tmp_path):
    model = _copy(compiled, tmp_path)
    proc = _tinyseg("run", model)
    stderr = _interrupt_after(proc, "[tinyseg] building", 0.3)  # the host C compiler is at work
    assert proc.returncode == 130, stderr
    assert _errors(stderr) == ["tinyseg: interrupted"], stderr


# --- TVM's own warnings -----------------------------------------------------------------------

def _nonzero_weight_zero_points(path):
    """A conv whose per-channel weight zero points are 1: TVM's TFLite frontend gives up inside its
    function scope, leaving its BlockBuilder with an open block."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.int8, quant=(0.05, 0))
    w = b.tensor("w", [8, 3, 3, 3], np.int8, data=np.ones([8, 3, 3, 3]), quant=([0.01] * 8, [1] * 8, 0))
    bias = b.tensor("bias", [8], np.int32, data=np.zeros(8), quant=([0.0005] * 8, [0] * 8, 0))
    y = b.tensor("y", [1, 4, 4, 8], np.int8, quant=(0.05, 0))
    b.op("CONV_2D", [x, w, bias], [y], options=("Conv2DOptions", {"padding": "SAME", "stride_h": 1, "stride_w": 1}))
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


def test_a_frontend_that_gives_up_leaves_no_builder_warning(tmp_path, capfd):
    from tvm_tinyseg.frontend import load_model

    path = _nonzero_weight_zero_points(tmp_path / "zp.tflite")
    with pytest.raises(TinySegError):
        load_model(path)
    gc.collect()
    assert "BlockBuilder" not in capfd.readouterr().err


def test_tvm_log_lines_never_reach_the_terminal(tmp_path):
    path = _nonzero_weight_zero_points(tmp_path / "zp.tflite")
    code = ("import sys; from tvm_tinyseg import cli, frontend\n"
            "frontend.close_builders = lambda error: None  # as before the clean-up: TVM warns on stderr\n"
            f"sys.exit(cli.main(['compile', {path!r}, '-o', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith(f"tinyseg: error: {path}:"), proc.stderr
