"""Models exported the way users export them (models/frontend/generate.py), compiled without and
with TinySeg's smallest arena, against LiteRT (reference kernels) or TFLite Micro."""
import os

import numpy as np
import pytest

from conftest import MODELS, SEEDS, seeded_input
from float_net import litert_reference
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
from tvm_tinyseg.boards import host

FRONTEND_MODELS = os.path.join(MODELS, "frontend")
BUDGETS = [pytest.param({"tinyseg": False}, id="plain"),
           pytest.param({"ram_budget": SMALLEST_FEASIBLE, "storage": "mmap"}, id="min-mmap"),
           # block storage streams a spilled tensor row by row into its upsampling reader
           pytest.param({"ram_budget": SMALLEST_FEASIBLE, "storage": "file"}, id="min-file")]


@pytest.mark.parametrize("options", BUDGETS)
def test_enet_like_float_matches_litert(options, tmp_path):
    """PReLU, residual Adds, MaxPool shortcuts, UpSampling2D + Conv2DTranspose; Keras 3's export
    (dynamic batch, shape arithmetic feeding the transposed convs)."""
    path = os.path.join(FRONTEND_MODELS, "enet_like_float.tflite")
    out_dir = str(tmp_path / "c")
    result = compile_model(path, out_dir, **options)
    if "ram_budget" in options:
        assert result.memory_report["spilled"], "the smallest arena spills nothing: the check proves little"
    exe = host.build(out_dir)
    for seed in SEEDS:
        x = seeded_input((1, 32, 48, 3), np.float32, seed)
        stats = {}
        expected, got = litert_reference(path, x), host.run(out_dir, x, exe, stats)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()
        if options.get("storage") == "file":  # the rows streamed are the rows counted
            assert stats["storage_written"] + stats["storage_read"] == result.memory_report["moved_bytes"]
