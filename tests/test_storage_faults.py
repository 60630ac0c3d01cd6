"""Storage faults at run time (issue 6): every backend, made to fail the way its medium can, makes
tinyseg_run return a distinct status and never a wrong output.

Local backends fail through their compile-time injector (tinyseg_backend.h: -DTINYSEG_FAULT=kind,
-DTINYSEG_FAULT_CALL=n); corrupted data is caught by the integrity check (a CRC per block, on by
default for 'file' and 'uart' storage; each corruption is also run with --no-integrity to show
that the check is what catches it). The remote backend faces a misbehaving or vanishing server
(tests/faulty_storage_server.py). The model is TinyUNet 32x32 at its smallest arena: one 8 KiB skip tensor
spilled once and fetched back in streamed row windows."""
import os
import shutil
import subprocess

import numpy as np
import pytest
from conftest import MODELS, seeded_input, tflm_reference
from faulty_storage_server import Faults, FaultyStorageServer

from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.boards import host
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.boards.model_io import RUN_FAILURES
from tvm_tinyseg.storage_server import StorageServer

MODEL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
RUNTIME = host.RUNTIME_DIR

OK, WRITE_FAILED, READ_FAILED, LINK_FAILED, CHECKSUM, REFUSED = 0, 1, 2, 4, 5, 6
INTEGRITY = "-DTINYSEG_STORAGE_INTEGRITY"
REMOTE_FRAMES_BEFORE_READS = 1 + 8192 // 256  # the session, then the spill in 256-byte frames

needs_qemu = pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")


def fault_flags(kind: str, call: int = 1) -> list:
    return [f"-DTINYSEG_FAULT=TINYSEG_FAULT_{kind}", f"-DTINYSEG_FAULT_CALL={call}"] if kind else []


@pytest.fixture(scope="module")
def model(compiled_zoo):
    """(source directory, input, TFLM's output) per storage kind, with the integrity check (the
    default) or without; fault builds go to copies."""
    def get(storage, integrity=True):
        result, out_dir, _ = compiled_zoo.get(MODEL, ram_budget=-1, storage=storage,
                                              **({} if integrity else {"integrity": False}))
        # the skip written once and read once; memory-mapped storage may also take tensors written by
        # their producers (passes/spill_at_production.py)
        moved = result.memory_report["moved_bytes"]
        assert moved == 2 * 8192 if storage != "mmap" else moved >= 2 * 8192
        assert result.memory_report["integrity"] == (integrity and storage != "mmap")
        spec = result.io_spec["input"]
        x = seeded_input(spec["shape"], spec["dtype"], 0)
        return out_dir, x, tflm_reference(MODEL, x)
    return get


def copy_of(out_dir, tmp_path) -> str:
    d = str(tmp_path / "model")
    shutil.copytree(out_dir, d)
    for built in (host.EXECUTABLE, qemu.ELF):
        if os.path.exists(os.path.join(d, built)):
            os.remove(os.path.join(d, built))
    return d


def host_build(model_dir, backend: str, flags) -> str:
    """The model linked against runtime/``backend`` (any local backend serves a block-storage
    model: its reads go through tinyseg_storage_read) with ``flags``."""
    exe = os.path.join(model_dir, host.EXECUTABLE)
    cmd = ["cc", *host.STRICT_CFLAGS, *flags, "-I", model_dir, os.path.join(model_dir, "tinyseg_model.c"),
           os.path.join(RUNTIME, backend), host.HARNESS, "-o", exe, "-lm"]
    subprocess.run(cmd, check=True, capture_output=True)
    return exe


def fault_id(value):
    """A test id naming a server's non-default faults."""
    if not isinstance(value, Faults):
        return None
    return ",".join(f"{k}={v}" for k, v in vars(value).items() if v != getattr(Faults(), k)) or "none"


def run_status(run, *args, **kwargs):
    """(status, output or None) of a platform run; a failure must name its status."""
    stats = {}
    try:
        y = run(*args, stats=stats, **kwargs)
    except TinySegError as err:
        assert f"status {stats['status']}: {RUN_FAILURES[stats['status']]}" in str(err)
        return stats["status"], None
    return stats["status"], y


# --- local backends on the host ----------------------------------------------------------------

HOST_FAULTS = [
    # backend, injected fault, at which medium call, integrity mode, tinyseg_run's status
    ("storage_file.c", "FAILED_WRITE", 1, False, WRITE_FAILED),
    ("storage_file.c", "FAILED_READ", 1, False, READ_FAILED),
    ("storage_file.c", "FAILED_READ", 20, False, READ_FAILED),  # mid-kernel, among the row windows
    ("storage_file.c", "SHORT_READ", 3, False, READ_FAILED),
    ("storage_file.c", "CORRUPT_READ", 5, True, CHECKSUM),
    ("storage_file.c", None, 1, True, OK),
    ("storage_buffer.c", "FAILED_WRITE", 1, False, WRITE_FAILED),
    ("storage_buffer.c", "FAILED_READ", 7, False, READ_FAILED),
    ("storage_buffer.c", "CORRUPT_READ", 5, True, CHECKSUM),
    ("storage_buffer.c", None, 1, True, OK),
]


@pytest.mark.parametrize("backend,fault,call,integrity,expected", HOST_FAULTS,
                         ids=[f"{b[8:-2]}-{f or 'none'}@{c}{'-integrity' if i else ''}"
                              for b, f, c, i, _ in HOST_FAULTS])
def test_local_backend_fault_gives_its_status(model, tmp_path, backend, fault, call, integrity, expected):
    out_dir, x, reference = model("file", integrity)
    d = copy_of(out_dir, tmp_path)
    exe = host_build(d, backend, fault_flags(fault, call))
    status, y = run_status(host.run, d, x, exe)
    assert status == expected
    if expected == OK:
        np.testing.assert_array_equal(y, reference)


def test_injected_corruption_is_real_without_integrity(model, tmp_path):
    """Without the integrity check a flipped bit goes unnoticed: the reason the check exists, and
    proof that the injector corrupts data the model uses."""
    out_dir, x, reference = model("file", integrity=False)
    d = copy_of(out_dir, tmp_path)
    status, y = run_status(host.run, d, x, host_build(d, "storage_file.c", fault_flags("CORRUPT_READ", 5)))
    assert status == OK and not np.array_equal(y, reference)


@pytest.mark.slow
def test_integrity_mode_cannot_check_in_place_reads(model, tmp_path):
    out_dir, x, _ = model("mmap")
    d = copy_of(out_dir, tmp_path)
    status, _ = run_status(host.run, d, x, host_build(d, "storage_buffer.c", [INTEGRITY]))
    assert status == 3  # TINYSEG_ERR_STORAGE_MAP, not an unchecked read


@pytest.mark.parametrize("integrity", [True, False], ids=["default", "no-integrity"])
def test_dev_zero_as_the_storage_file(model, tmp_path, integrity):
    """A "disk" that accepts every write and reads back zeros: caught by the check (status 5),
    a wrong output with status 0 without it."""
    out_dir, x, reference = model("file", integrity)
    d = copy_of(out_dir, tmp_path)
    exe = host.build(d)
    x.tofile(tmp_path / "x.bin")
    proc = subprocess.run([exe, str(tmp_path / "x.bin"), str(tmp_path / "y.bin")], capture_output=True, text=True,
                          env=dict(os.environ, TINYSEG_STORAGE_FILE="/dev/zero"))
    if integrity:
        assert f"status={CHECKSUM} " in proc.stderr and proc.returncode != 0
        assert not (tmp_path / "y.bin").exists()
    else:
        assert "status=0 " in proc.stderr and proc.returncode == 0
        assert not np.array_equal(np.fromfile(tmp_path / "y.bin", np.int8).reshape(reference.shape), reference)


@pytest.mark.parametrize("pool_file", [
    pytest.param("/dev/full", marks=pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")),
    "missing-dir/pool.bin",
], ids=["disk-full", "cannot-open"])
def test_real_file_failures_fail_the_spill(model, tmp_path, pool_file):
    """Failed writes without injection: a device that is always full (ENOSPC), a path that
    cannot be created."""
    out_dir, x, _ = model("file")
    d = copy_of(out_dir, tmp_path)
    exe = host.build(d)
    x.tofile(tmp_path / "x.bin")
    proc = subprocess.run([exe, str(tmp_path / "x.bin"), str(tmp_path / "y.bin")], capture_output=True, text=True,
                          env=dict(os.environ, TINYSEG_STORAGE_FILE=str(tmp_path / pool_file)))
    assert "status=1 " in proc.stderr and proc.returncode != 0
    assert not (tmp_path / "y.bin").exists()


# --- the remote backend on the host --------------------------------------------------------------

REMOTE_FAULTS = [
    # server misbehaviour, tinyseg_run's status, frames sent again
    (Faults(corrupt_reads=2), OK, 2),  # transient: the client's retries fetch clean copies
    (Faults(claim_bad_crc=2), OK, 2),
    (Faults(noisy_responses=3), OK, 0),  # the client skips noise up to the sync byte
    (Faults(misframed_responses=1), LINK_FAILED, None),  # out of step: no retry could be paired safely
    (Faults(corrupt_reads=10 ** 6), CHECKSUM, None),
    (Faults(claim_bad_crc=10 ** 6), CHECKSUM, None),
    (Faults(hang_up_after=10), LINK_FAILED, None),  # gone while the spill is written
    (Faults(hang_up_after=REMOTE_FRAMES_BEFORE_READS + 5), LINK_FAILED, None),  # gone among the fetches
    (Faults(go_silent_after=REMOTE_FRAMES_BEFORE_READS + 5), LINK_FAILED, None),  # hangs: the client times out
]


@pytest.mark.parametrize("faults,expected,resent", REMOTE_FAULTS, ids=fault_id)
def test_remote_fault_gives_its_status(model, monkeypatch, faults, expected, resent):
    out_dir, x, reference = model("uart")
    monkeypatch.setenv("TINYSEG_STORAGE_TIMEOUT_MS", "500")
    with FaultyStorageServer(faults) as server:
        status, y = run_status(host.run, out_dir, x, os.path.join(out_dir, host.EXECUTABLE), storage_server=server)
    assert status == expected
    if expected == OK:
        np.testing.assert_array_equal(y, reference)
        assert server.stats["frames"] == REMOTE_FRAMES_BEFORE_READS + 8192 // 256 + resent


@pytest.mark.parametrize("integrity", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["default", "no-integrity"])
def test_server_keeping_flipped_bits(model, integrity):
    """A server that keeps a written bit flipped, in well-formed frames (the frame CRCs cannot see
    it): status 5 with the integrity check, a wrong output with status 0 without it."""
    out_dir, x, reference = model("uart", integrity)
    with FaultyStorageServer(Faults(flip_stored=1)) as server:
        status, y = run_status(host.run, out_dir, x, os.path.join(out_dir, host.EXECUTABLE), storage_server=server)
    assert server.faults.flip_stored == 0, "the fault was not injected"
    if integrity:
        assert status == CHECKSUM
    else:
        assert status == OK and not np.array_equal(y, reference)


def test_tinyseg_run_reports_a_failed_integrity_check(model, tmp_path, monkeypatch, capsys):
    """`tinyseg run` on a model whose storage corrupts a read: one line naming the checksum, exit 1."""
    from tvm_tinyseg import cli

    out_dir, _, _ = model("file")
    d = copy_of(out_dir, tmp_path)
    build = host.build
    monkeypatch.setattr(host, "build", lambda model_dir: build(model_dir, extra_cflags=fault_flags("CORRUPT_READ", 5)))
    assert cli.main(["run", d]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[tinyseg] ")]
    assert len(errors) == 1 and errors[0].startswith("tinyseg: error: ")
    assert f"status {CHECKSUM}: {RUN_FAILURES[CHECKSUM]}" in errors[0]


def test_remote_pool_above_the_server_limit_is_refused(model):
    out_dir, x, _ = model("uart")
    with StorageServer(pool_limit=8191) as server:
        status, _ = run_status(host.run, out_dir, x, os.path.join(out_dir, host.EXECUTABLE), storage_server=server)
    assert status == REFUSED and server.stats["refused_pools"] == 1


def test_remote_without_a_server_is_a_link_failure(model, tmp_path):
    out_dir, _, _ = model("uart")
    with StorageServer() as server:
        port = server.port  # free again once stopped
    np.zeros(32 * 32, np.int8).tofile(tmp_path / "x.bin")
    proc = subprocess.run([os.path.join(out_dir, host.EXECUTABLE), str(tmp_path / "x.bin"), str(tmp_path / "y.bin")],
                          capture_output=True, text=True, env=dict(os.environ, TINYSEG_STORAGE_PORT=str(port)))
    assert "status=4 " in proc.stderr and not (tmp_path / "y.bin").exists()


def test_a_failed_run_does_not_poison_the_next(model, tmp_path):
    """The stream-read status is per run: after a run whose fetch failed, the next one succeeds."""
    out_dir, x, reference = model("file")
    d = copy_of(out_dir, tmp_path)
    harness = tmp_path / "twice.c"
    harness.write_text(
        '#include <stdio.h>\n#include "tinyseg_model.h"\n#include "tinyseg_storage.h"\n'
        "int main(void) {\n"
        "  static tinyseg_input_t in[TINYSEG_INPUT_BYTES];\n"
        "  static tinyseg_output_t out[TINYSEG_OUTPUT_BYTES];\n"
        "  int first = tinyseg_run(in, out);\n"
        "  int second = tinyseg_run(in, out);\n"
        '  printf("%d %d\\n", first, second);\n'
        "  return 0;\n}\n")
    exe = str(tmp_path / "twice")
    subprocess.run(["cc", *host.STRICT_CFLAGS, *fault_flags("FAILED_READ", 4), "-I", d,
                    os.path.join(d, "tinyseg_model.c"), os.path.join(RUNTIME, "storage_file.c"), str(harness),
                    "-o", exe, "-lm"], check=True)
    proc = subprocess.run([exe], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert proc.stdout.split() == [str(READ_FAILED), str(OK)]


# --- under QEMU: semihosted file and UART ------------------------------------------------------

QEMU_LOCAL_FAULTS = [
    ("FAILED_WRITE", 1, False, WRITE_FAILED),
    ("SHORT_READ", 3, False, READ_FAILED),
    ("CORRUPT_READ", 5, True, CHECKSUM),
    (None, 1, True, OK),
]


@needs_qemu
@pytest.mark.parametrize("fault,call,integrity,expected", QEMU_LOCAL_FAULTS,
                         ids=[f"{f or 'none'}@{c}{'-integrity' if i else ''}" for f, c, i, _ in QEMU_LOCAL_FAULTS])
def test_semihost_fault_gives_its_status(model, tmp_path, fault, call, integrity, expected):
    out_dir, x, reference = model("file", integrity)
    d = copy_of(out_dir, tmp_path)
    elf = qemu.build(d, extra_cflags=fault_flags(fault, call))
    status, y = run_status(qemu.run, d, x, elf)
    assert status == expected
    if expected == OK:
        np.testing.assert_array_equal(y, reference)


QEMU_REMOTE_FAULTS = [
    pytest.param(Faults(corrupt_reads=2), OK, marks=pytest.mark.slow),
    (Faults(corrupt_reads=10 ** 6), CHECKSUM),
    pytest.param(Faults(hang_up_after=REMOTE_FRAMES_BEFORE_READS + 5), LINK_FAILED, marks=pytest.mark.slow),
]


@needs_qemu
@pytest.mark.parametrize("faults,expected", QEMU_REMOTE_FAULTS,
                         ids=fault_id)
def test_uart_fault_under_qemu_gives_its_status(model, tmp_path, faults, expected):
    out_dir, x, reference = model("uart")
    d = copy_of(out_dir, tmp_path)
    elf = qemu.build(d, extra_cflags=["-DTINYSEG_UART_TIMEOUT_MS=2000u"])
    with FaultyStorageServer(faults) as server:
        status, y = run_status(qemu.run, d, x, elf, storage_server=server)
    assert status == expected
    if expected == OK:
        np.testing.assert_array_equal(y, reference)
