"""Shared fixtures: the model zoo, compiled once per test session, and reference runtimes."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tvm_tinyseg.models import MODELS_DIR as MODELS
from tvm_tinyseg.reference import tflm_output as tflm_reference  # noqa: F401 (a fixture-like helper)

SEEDS = (0, 1, 2)


def run_tinyseg(*args):
    """Run the installed ``tinyseg`` console script (the one beside this interpreter first)."""
    script = os.path.join(os.path.dirname(sys.executable), "tinyseg")
    if not os.path.exists(script):
        script = shutil.which("tinyseg")
    return subprocess.run([script, *map(str, args)], capture_output=True, text=True)


def zoo(pattern_filter):
    names = sorted(f for f in os.listdir(MODELS) if pattern_filter(f))
    return [os.path.join(MODELS, f) for f in names]


def int8_zoo():
    return zoo(lambda f: f.endswith(".tflite") and not f.endswith("_float.tflite"))


def float_zoo():
    return zoo(lambda f: f.endswith(".onnx") or f.endswith("_float.tflite"))


def seeded_input(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.int8:
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return rng.standard_normal(shape).astype(dtype)


def float_reference(path, x):
    """onnxruntime for .onnx, LiteRT for float .tflite."""
    if path.endswith(".onnx"):
        import onnxruntime

        session = onnxruntime.InferenceSession(path)
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


class CompiledZoo:
    """Compiles each model at most once per session (compiling is the slow part of most tests)."""

    def __init__(self, root):
        self.root = root
        self._cache = {}

    def get(self, path, **options):
        key = (path, tuple(sorted(options.items())))
        if key not in self._cache:
            from tvm_tinyseg.driver import compile_model
            from tvm_tinyseg.boards import host

            name = os.path.basename(path).replace(".", "_")
            suffix = "_".join(f"{k}-{v}" for k, v in sorted(options.items()))
            out_dir = os.path.join(self.root, f"{name}_{suffix}" if suffix else name)
            result = compile_model(path, out_dir, **options)
            self._cache[key] = (result, out_dir, host.build(out_dir))
        return self._cache[key]


@pytest.fixture(scope="session")
def compiled_zoo(tmp_path_factory):
    return CompiledZoo(str(tmp_path_factory.mktemp("zoo")))


def pytest_configure(config):
    """Build the PassContext-key registration once, before pytest-xdist's workers start (each
    would otherwise build it into the same cache at the same time)."""
    if not hasattr(config, "workerinput"):
        from tvm_tinyseg.pass_config import register_options

        register_options()
