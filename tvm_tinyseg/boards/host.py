"""The host board kind: a compiled model built with the host C compiler and run on numpy inputs."""
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile

import numpy as np

from tvm_tinyseg.boards.model_io import checked_inputs, module_name, parse_stats, run_failure
from tvm_tinyseg.codegen.c_api import rename
from tvm_tinyseg.codegen.model_files import copy_runtime
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.model_dir import RUNTIME_DIR, STORAGE_BACKENDS, memory_report
from tvm_tinyseg.progress import timed

NAME = "host"
_log = logging.getLogger(__name__)
FIRMWARE_RAM_BYTES = 0
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


def build(model_dir: str, cc: str = "cc", extra_cflags=(), sanitize: bool = False) -> str:
    """Compile the model's C sources, its storage backend and the host harness (and, for uart
    storage, the TCP link), all under the model's module name; return the executable's path.
    ``sanitize`` builds a separate executable under ASan and UBSan."""
    name, kind = module_name(model_dir), memory_report(model_dir)["storage"]
    model_sources = [os.path.join(model_dir, rename(source, name))
                     for source in ("tinyseg_model.c", *STORAGE_BACKENDS["model"][kind].sources)]
    exe = os.path.join(model_dir, SANITIZED_EXECUTABLE if sanitize else EXECUTABLE)
    sanitizer_flags = SANITIZER_CFLAGS if sanitize else []
    with tempfile.TemporaryDirectory() as tmp:
        harness = copy_runtime([os.path.basename(HARNESS), *([os.path.basename(REMOTE_LINK)] if kind == "uart" else [])],
                               tmp, name)
        sources = model_sources + [os.path.join(tmp, h) for h in harness]
        cmd = [cc, *STRICT_CFLAGS, *sanitizer_flags, *extra_cflags, "-I", model_dir, *sources, "-o", exe, "-lm"]
        with timed(_log, f"host build of {os.path.basename(exe)}"):
            proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else f"exit status {proc.returncode}"
        raise TinySegError(f"{model_dir}: host build failed: {first}")
    return exe


def available() -> bool:
    """Whether a host C compiler is installed."""
    return shutil.which("cc") is not None


def stats_lines(stats: dict) -> list:  # noqa: ARG001 (the board interface)
    """Nothing beyond what every board reports (the output, the storage traffic)."""
    return []


def run(model_dir: str, x, exe: str = None, stats: dict = None, storage_server=None, valgrind: bool = False,
        timing_runs: int = 0):
    """Run the built model on ``x``, an array or, for a model with several inputs, a list of
    them (model order), each of its input's shape and dtype; return the output, or the list of
    outputs when the model has several (or ``x`` is a list). A file
    storage backend gets a fresh temporary file, a uart (remote) one ``storage_server`` (a
    tvm_tinyseg.storage_server.StorageServer; by default a fresh one for this run). ``stats``, if
    given, receives the bytes written to and read from storage, and with ``timing_runs`` the wall
    time of that many more runs (``run_ns``). ``valgrind`` runs it under memcheck: any memory
    error fails the run."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    spec = checked_inputs(model_dir, xs)
    name = module_name(model_dir)
    exe = exe or os.path.join(model_dir, EXECUTABLE)
    if not os.path.exists(exe):
        exe = build(model_dir)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        in_paths = [os.path.join(tmp, f"in{i}.bin") for i in range(len(xs))]
        out_paths = [os.path.join(tmp, f"out{i}.bin") for i in range(len(spec["outputs"]))]
        for path, array in zip(in_paths, xs):
            np.ascontiguousarray(array).tofile(path)
        env = dict(os.environ, **{rename("TINYSEG_STORAGE_FILE", name): os.path.join(tmp, "storage.bin")})
        if memory_report(model_dir)["storage"] == "uart":
            from tvm_tinyseg.storage_server import serving

            env[rename("TINYSEG_STORAGE_PORT", name)] = str(stack.enter_context(serving(storage_server)).port)
        if timing_runs:
            env[rename("TINYSEG_TIMING_RUNS", name)] = str(int(timing_runs))
        checker = VALGRIND if valgrind else []
        proc = subprocess.run([*checker, exe, *in_paths, *out_paths], capture_output=True, text=True, env=env)
        run_stats = parse_stats(proc.stderr)
        if stats is not None:
            stats.update(run_stats)
            times = [ln.split()[1:] for ln in proc.stderr.splitlines() if ln.startswith("tinyseg-times-ns:")]
            if times:
                stats["run_ns"] = [int(t) for t in times[0]]
        if run_failure(run_stats):
            raise TinySegError(f"{model_dir}: {run_failure(run_stats)}")
        if proc.returncode != 0:
            raise TinySegError(f"{model_dir}: model run failed ({proc.returncode}): {proc.stderr.strip()}")
        ys = [np.fromfile(path, dtype=out["dtype"]).reshape(out["shape"]) for path, out in zip(out_paths, spec["outputs"])]
        return ys if isinstance(x, (list, tuple)) or len(ys) > 1 else ys[0]

