"""`tinyseg run --platform qemu --profile`: per-kernel instructions and MACs of a small model.

The MACs are checked against a count taken straight from the .tflite file's operators and
shapes; the per-kernel instructions against the firmware's whole-run count."""
import json
import os

import numpy as np
import pytest
import tflite

from conftest import MODELS, run_tinyseg
from tvm_tinyseg.boards import qemu_cortex_m as qemu

pytestmark = pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")

SMALL = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")


def tflite_macs(path) -> int:
    """Multiply-accumulates of the model's convolutions, from its operators' tensor shapes: a
    transposed convolution counts each input pixel times each kernel tap (the taps that contribute)."""
    with open(path, "rb") as f:
        model = tflite.Model.GetRootAsModel(f.read(), 0)
    graph, ops = model.Subgraphs(0), tflite.BuiltinOperator
    total = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        shape = [list(graph.Tensors(op.Inputs(j)).ShapeAsNumpy()) if op.Inputs(j) >= 0 else None
                 for j in range(op.InputsLength())]
        out = list(graph.Tensors(op.Outputs(0)).ShapeAsNumpy())
        if kind == ops.CONV_2D:
            _, kh, kw, ic = shape[1]
            total += int(np.prod(out)) * kh * kw * ic
        elif kind == ops.DEPTHWISE_CONV_2D:
            _, kh, kw, _ = shape[1]
            total += int(np.prod(out)) * kh * kw
        elif kind == ops.TRANSPOSE_CONV:
            (oc, kh, kw, ic), (_, h, w, _) = shape[1], shape[2]
            total += h * w * kh * kw * ic * oc
    return total


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "model"
    assert run_tinyseg("compile", SMALL, "-o", out).returncode == 0
    return out


@pytest.mark.slow
def test_profile_table_and_json(compiled, tmp_path):
    out = compiled
    x = np.random.default_rng(0).integers(-128, 128, size=(1, 32, 32, 1), dtype=np.int8)
    np.save(tmp_path / "x.npy", x)
    proc = run_tinyseg("run", out, "--platform", "qemu", "--input", tmp_path / "x.npy", "--profile",
                       "--json", tmp_path / "profile.json")
    assert proc.returncode == 0, proc.stderr
    profile = json.loads((tmp_path / "profile.json").read_text())
    rows = profile["steps"]
    steps = json.loads((out / "memory.json").read_text())["steps"]
    assert [r["name"] for r in rows] == [s["name"] for s in steps]
    assert sum(r["macs"] for r in rows) == tflite_macs(SMALL) > 0
    # the steps are the whole run but for main's file I/O and the stack painting (a few thousand)
    total, steps_total = profile["instructions"], sum(r["instructions"] for r in rows)
    assert 0 < total - steps_total < 0.01 * total
    assert all(r["instructions"] > 0 for r in rows)
    convs = [r for r in rows if r["macs"]]
    assert all(1 < r["instructions_per_mac"] < 20 for r in convs)
    # the printed table has the same figures
    for r in rows:
        line = next(ln for ln in proc.stdout.splitlines() if ln.split()[1:2] == [r["name"]])
        assert f"{r['instructions']:,}" in line and f"{r['macs']:,}" in line


def test_profile_needs_qemu(compiled):
    proc = run_tinyseg("run", compiled, "--profile")
    assert proc.returncode == 1 and "--platform qemu" in proc.stderr
