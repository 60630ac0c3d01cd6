"""What every platform needs from a compiled model directory: its input/output spec (io.json),
the input check, and the ``tinyseg-stats:`` line the runners print."""
import numpy as np

from tvm_tinyseg.codegen.c_api import DEFAULT_MODULE_NAME, STATUS_CODES
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.model_dir import read_report


def io_spec(model_dir: str) -> dict:
    """io.json, with the ``inputs``/``outputs`` lists also for a model compiled before they existed;
    TinySegError if it is missing or damaged."""
    spec = read_report(model_dir, "io.json", {"input": dict, "output": dict})
    spec.setdefault("inputs", [spec["input"]])
    spec.setdefault("outputs", [spec["output"]])
    for tensor in (*spec["inputs"], *spec["outputs"]):
        if not _valid_tensor(tensor):
            raise TinySegError(f"{model_dir}: io.json is damaged (a tensor without a valid shape and dtype); "
                               "compile the model again")
    return spec


def _valid_tensor(tensor) -> bool:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("shape"), list):
        return False
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in tensor["shape"]):
        return False
    try:
        return isinstance(tensor.get("dtype"), str) and np.dtype(tensor["dtype"]).kind in "iuf"
    except TypeError:
        return False


def module_name(model_dir: str) -> str:
    return io_spec(model_dir).get("module_name", DEFAULT_MODULE_NAME)


def checked_inputs(model_dir: str, xs: list) -> dict:
    """The model's io spec, after checking ``xs`` are as many arrays as it has inputs, each of
    its input's shape and dtype."""
    spec = io_spec(model_dir)
    if len(xs) != len(spec["inputs"]):
        raise TinySegError(f"{len(xs)} input arrays given; the model has {len(spec['inputs'])} inputs")
    for i, (x, want) in enumerate(zip(xs, spec["inputs"])):
        if tuple(x.shape) != tuple(want["shape"]) or str(x.dtype) != want["dtype"]:
            which = f"input {i} ('{want['name']}')" if len(xs) > 1 and "name" in want else "input"
            raise TinySegError(f"{which} has shape {tuple(x.shape)} {x.dtype}; the model expects "
                               f"{tuple(want['shape'])} {want['dtype']}")
    return spec


def checked_input(model_dir: str, x: np.ndarray) -> dict:
    """The model's io spec, after checking ``x`` has its (single) input's shape and dtype."""
    return checked_inputs(model_dir, [x])


# tinyseg_run's failure statuses (the TINYSEG_ERR_* codes of the generated model header).
RUN_FAILURES = {value: meaning for _, value, meaning in STATUS_CODES if value != 0}


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
