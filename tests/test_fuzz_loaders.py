"""Fuzzing the model loaders: mutated .tflite/.onnx files (byte flips, random overwrites,
truncations, splices of zoo files) must load or fail with a one-line TinySegError — never another
exception, a multi-line message, a hang or a crash of the process."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MODELS
from model_fuzz import KINDS, classify, mutate, random_conv_pool_model, zoo_files
from tflite_builder import TFLiteBuilder
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.frontend import load_model

WORKER = os.path.join(os.path.dirname(__file__), "model_fuzz.py")
ZOO = zoo_files(MODELS)
WORKER_SEEDS = (0, 1)
CASES_PER_WORKER = 200  # longer runs: python tests/model_fuzz.py SEED COUNT DIR
WORKER_TIMEOUT_S = 600
# Deterministic (the same cases in every run and in CI), 60 cases per in-process test.
# Seeds of Python's generator: hypothesis' own random draws lean to small values (positions near 0).
SEEDS = st.integers(0, 2**32 - 1)
FUZZ_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))


def _tiny_int8_model() -> bytes:
    """A conv + max-pool model small enough to compile each mutation that still loads."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 8, 8, 3], np.int8, quant=(0.05, 0))
    w = b.tensor("w", [4, 3, 3, 3], np.int8, data=np.arange(108) % 7 - 3, quant=([0.01] * 4, [0] * 4, 0))
    bias = b.tensor("bias", [4], np.int32, data=np.arange(4), quant=([0.0005] * 4, [0] * 4, 0))
    y = b.tensor("y", [1, 8, 8, 4], np.int8, quant=(0.1, 0))
    pooled = b.tensor("pooled", [1, 4, 4, 4], np.int8, quant=(0.1, 0))
    b.op("CONV_2D", [x, w, bias], [y], options=("Conv2DOptions", {
        "padding": "SAME", "stride_h": 1, "stride_w": 1, "fused_activation_function": "RELU"}))
    b.op("MAX_POOL_2D", [y], [pooled], options=("Pool2DOptions", {
        "padding": "VALID", "stride_h": 2, "stride_w": 2, "filter_height": 2, "filter_width": 2}))
    return b.serialize(inputs=[x], outputs=[pooled])


TINY = _tiny_int8_model()


def _check_failure(err, path):
    problem = classify(err)
    assert problem is None, f"{path}: {problem}"
    assert path in str(err), f"the message does not name the file: {err}"


@FUZZ_SETTINGS
@given(kind=st.sampled_from(KINDS), seed=SEEDS)
def test_mutated_tiny_model_loads_and_compiles_or_fails_in_one_line(kind, seed, tmp_path_factory):
    rng = random.Random(seed)
    path = str(tmp_path_factory.mktemp("fuzz") / "tiny.tflite")
    with open(path, "wb") as f:
        f.write(mutate(TINY, kind, rng, TINY))
    try:
        compile_model(path)  # as far as C: the tiny model compiles in well under a second
    except Exception as err:  # noqa: BLE001
        _check_failure(err, path)


@FUZZ_SETTINGS
@given(seed=SEEDS)
def test_random_conv_pool_model_compiles_or_fails_in_one_line(seed, tmp_path_factory):
    """Well-formed files with odd contents: the checks behind the parser (empty tensors, shapes the
    frontend infers, zero strides, odd scales) must stop what the compiler cannot handle."""
    rng = random.Random(seed)
    path = str(tmp_path_factory.mktemp("fuzz") / "random.tflite")
    with open(path, "wb") as f:
        f.write(random_conv_pool_model(rng))
    try:
        compile_model(path)
    except Exception as err:  # noqa: BLE001
        _check_failure(err, path)


@FUZZ_SETTINGS
@given(base=st.sampled_from(ZOO), donor=st.sampled_from(ZOO), kind=st.sampled_from(KINDS),
       seed=SEEDS)
def test_mutated_zoo_model_loads_or_fails_in_one_line(base, donor, kind, seed, tmp_path_factory):
    rng = random.Random(seed)
    path = str(tmp_path_factory.mktemp("fuzz") / ("case" + os.path.splitext(base)[1]))
    with open(path, "wb") as f:
        f.write(mutate(open(base, "rb").read(), kind, rng, open(donor, "rb").read()))
    try:
        load_model(path)
    except Exception as err:  # noqa: BLE001
        _check_failure(err, path)


def _start_worker(seed, count, work_dir):
    """The worker's stdout is its case log; its stderr (TVM's warnings, a traceback) goes to a file."""
    os.makedirs(work_dir)
    with open(os.path.join(work_dir, "stderr.txt"), "w") as stderr:
        return subprocess.Popen([sys.executable, WORKER, str(seed), str(count), work_dir],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)


@pytest.mark.slow
def test_hundreds_of_mutations_in_separate_processes(tmp_path):
    """A parser segfault or hang must fail the test too: the workers run in their own processes
    (two, so a machine with two free cores takes half the time)."""
    workers = {seed: _start_worker(seed, CASES_PER_WORKER, str(tmp_path / f"w{seed}")) for seed in WORKER_SEEDS}
    lines = []
    for seed, proc in workers.items():
        try:
            out, _ = proc.communicate(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"worker {seed} hung in {[x for x in out.splitlines() if x.startswith('case ')][-1:]}")
        cases = [line for line in out.splitlines() if line.startswith("case ")]
        assert proc.returncode == 0, (f"worker {seed} died with status {proc.returncode} in {cases[-1:]} "
                                      f"(rerun: python {WORKER} {seed} {CASES_PER_WORKER} DIR)")
        lines += out.splitlines()
    bad = [line for line in lines if line.startswith("bad ")]
    assert not bad, f"{len(bad)} cases failed badly, e.g. {bad[:3]} (files kept under {tmp_path})"
    outcomes = {kind: sum(line.startswith(kind + " ") for line in lines) for kind in ("case", "ok", "error")}
    assert outcomes["case"] == len(WORKER_SEEDS) * CASES_PER_WORKER == outcomes["ok"] + outcomes["error"] >= 400
    # The mutations must reach past the header checks into the parsers and TVM's frontends.
    assert outcomes["ok"] >= outcomes["case"] // 20 and outcomes["error"] >= outcomes["case"] // 2
