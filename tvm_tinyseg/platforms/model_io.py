"""What every platform needs from a compiled model directory: its input/output spec (io.json),
the input check, and the ``tinyseg-stats:`` line the runners print."""
import json
import os

import numpy as np

from tvm_tinyseg.errors import TinySegError


def io_spec(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "io.json")) as f:
        return json.load(f)


def checked_input(model_dir: str, x: np.ndarray) -> dict:
    """The model's io spec, after checking ``x`` has its input's shape and dtype."""
    spec = io_spec(model_dir)
    want = spec["input"]
    if tuple(x.shape) != tuple(want["shape"]) or str(x.dtype) != want["dtype"]:
        raise TinySegError(f"input has shape {tuple(x.shape)} {x.dtype}; the model expects "
                           f"{tuple(want['shape'])} {want['dtype']}")
    return spec


# tinyseg_run's failure statuses (codegen/runtime/tinyseg_storage.h).
RUN_FAILURES = {
    1: "a spilled tensor could not be written to storage",
    2: "a fetch from storage failed or came back short",
    3: "the model reads storage in place but the storage backend is not memory-mapped",
    4: "the remote storage link failed or the server stopped answering",
    5: "data fetched from storage failed its checksum",
    6: "the storage server refused a request",
    16: "debug build: a step wrote outside the arena (its guard bytes changed)",
    17: "debug build: a step overwrote a buffer that was live across it",
}


def run_failure(stats: dict) -> str:
    """'tinyseg_run failed with status N: what it means', or '' if the run did not report a failure."""
    status = stats.get("status", 0)
    if status == 0:
        return ""
    return f"tinyseg_run failed with status {status}: {RUN_FAILURES.get(status, 'unknown status')}"


def parse_stats(text: str) -> dict:
    """The runner's ``tinyseg-stats: key=value ...`` line."""
    for line in text.splitlines():
        if line.startswith("tinyseg-stats:"):
            return {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}
    return {}
