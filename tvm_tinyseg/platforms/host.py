"""Build a generated model with the host C compiler and run it on numpy inputs."""
import contextlib
import os
import subprocess
import tempfile

import numpy as np

from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.model_dir import RUNTIME_DIR, STORAGE_BACKENDS, memory_report
from tvm_tinyseg.platforms.model_io import checked_input, parse_stats, run_failure

HARNESS = os.path.join(RUNTIME_DIR, "host_main.c")
REMOTE_LINK = os.path.join(RUNTIME_DIR, "link_socket.c")  # the uart backend's link on the host: TCP
STRICT_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
EXECUTABLE = "tinyseg_host"
# Reliability builds: AddressSanitizer + UndefinedBehaviorSanitizer (any finding ends the run with
# an error), and memcheck under valgrind (any error → exit status VALGRIND_ERROR_STATUS).
SANITIZED_EXECUTABLE = "tinyseg_host_sanitized"
SANITIZER_CFLAGS = ["-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
VALGRIND_ERROR_STATUS = 99
VALGRIND = ["valgrind", "--quiet", "--leak-check=full", f"--error-exitcode={VALGRIND_ERROR_STATUS}"]


def _storage_sources(model_dir: str) -> list:
    kind = memory_report(model_dir)["storage"]
    return [*(os.path.join(model_dir, name) for name in STORAGE_BACKENDS["model"][kind].sources),
            *([REMOTE_LINK] if kind == "uart" else [])]


def build(model_dir: str, cc: str = "cc", extra_cflags=(), sanitize: bool = False) -> str:
    """Compile the model's C sources, its storage backend and the host harness; return the
    executable's path. ``sanitize`` builds a separate executable under ASan and UBSan."""
    sources = [os.path.join(model_dir, "tinyseg_model.c"), *_storage_sources(model_dir), HARNESS]
    exe = os.path.join(model_dir, SANITIZED_EXECUTABLE if sanitize else EXECUTABLE)
    sanitizer_flags = SANITIZER_CFLAGS if sanitize else []
    cmd = [cc, *STRICT_CFLAGS, *sanitizer_flags, *extra_cflags, "-I", model_dir, *sources, "-o", exe, "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit status {proc.returncode}"
        raise TinySegError(f"{model_dir}: host build failed: {first}")
    return exe


def run(model_dir: str, x: np.ndarray, exe: str = None, stats: dict = None, storage_server=None,
        valgrind: bool = False) -> np.ndarray:
    """Run the built model on ``x``; the input must match the model's shape and dtype. A file
    storage backend gets a fresh temporary file, a uart (remote) one ``storage_server`` (a
    tvm_tinyseg.storage_server.StorageServer; by default a fresh one for this run). ``stats``, if
    given, receives the bytes written to and read from storage. ``valgrind`` runs it under
    memcheck: any memory error fails the run."""
    spec = checked_input(model_dir, x)
    exe = exe or os.path.join(model_dir, EXECUTABLE)
    if not os.path.exists(exe):
        exe = build(model_dir)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        in_path, out_path = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
        np.ascontiguousarray(x).tofile(in_path)
        env = dict(os.environ, TINYSEG_STORAGE_FILE=os.path.join(tmp, "storage.bin"))
        if memory_report(model_dir)["storage"] == "uart":
            from tvm_tinyseg.storage_server import serving

            env["TINYSEG_STORAGE_PORT"] = str(stack.enter_context(serving(storage_server)).port)
        checker = VALGRIND if valgrind else []
        proc = subprocess.run([*checker, exe, in_path, out_path], capture_output=True, text=True, env=env)
        run_stats = parse_stats(proc.stderr)
        if stats is not None:
            stats.update(run_stats)
        if run_failure(run_stats):
            raise TinySegError(f"{model_dir}: {run_failure(run_stats)}")
        if proc.returncode != 0:
            raise TinySegError(f"{model_dir}: model run failed ({proc.returncode}): {proc.stderr.strip()}")
        out = spec["output"]
        return np.fromfile(out_path, dtype=out["dtype"]).reshape(out["shape"])

