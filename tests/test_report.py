"""Memory reports of TinyUNet: the lifetime analysis as text and the arena timeline as a PNG."""
import os
import struct
import sys

import pytest

from conftest import MODELS
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.report import chain_rings, format_analysis, plot_timeline

TINYUNET = os.path.join(MODELS, "tinyunet_80x120.tflite")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tinyunet():
    return compile_model(TINYUNET)


@pytest.fixture(scope="module")
def tinyunet_spilled():
    return compile_model(TINYUNET, ram_budget=-1, storage="mmap")


def _png_size(path):
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_analysis_names_the_peak_step_and_the_first_skip_as_the_longest_idle(tinyunet):
    table = tinyunet.table
    first_pool = next(s for s in table.steps if s.kernel.startswith("max_pool2d"))
    first_skip = first_pool.args[0]  # the first encoder stage's output, concatenated back by the last decoder stage
    peak = table.peak_step()
    assert first_skip in table.steps[peak].args  # the peak is where the first skip comes back
    assert table.live_bytes(peak) == table.peak_live_bytes()

    text = format_analysis(table, tinyunet.plan)
    assert f"peak step {peak} ({table.steps[peak].kernel}): {table.peak_live_bytes()} B live" in text
    longest = text.split("long-living tensors")[1].splitlines()[1].split()
    assert longest[:3] == [first_skip, str(table.tensors[first_skip].nbytes), "B"]
    assert f"arena: {tinyunet.plan.size} B" in text and f"lower bound {table.largest_tensor_bytes()} B" in text
    assert "spilled:" not in text


def test_analysis_of_a_spilled_build_names_the_stored_copy(tinyunet_spilled):
    text = format_analysis(tinyunet_spilled.table, tinyunet_spilled.plan)
    stored = tinyunet_spilled.table.storage_tensors()
    assert stored
    for copy in stored:
        assert (f"-> {copy.name} ({copy.nbytes} B), written at step {copy.producer}" in text
                or f"spilled: {copy.name} ({copy.nbytes} B), written to storage by step {copy.producer}" in text)
    assert any(copy.name in text.split("long-living tensors")[1].splitlines()[1] for copy in stored)


@pytest.mark.parametrize("build", ["tinyunet", "tinyunet_spilled"])
def test_timeline_is_a_png_of_the_requested_figure(build, request, tmp_path):
    result = request.getfixturevalue(build)
    path = tmp_path / "timeline.png"
    plot_timeline(result, result.plan, path, ram_budget=200_000)
    assert _png_size(path) == (1100, 650)
    assert path.stat().st_size > 20_000  # rectangles, labels and legend, not an empty canvas


def test_timeline_splits_each_streamed_chain_s_workspace_into_its_rings(tinyunet, tinyunet_spilled):
    """The smallest arena streams chains: each chain kernel's workspace holds its rings, as memory.json lists them."""
    rings = chain_rings(tinyunet_spilled)
    chains = tinyunet_spilled.memory_report["streamed_chains"]
    assert chains and len(rings) == len(chains)
    listed = sorted([(r["tensor"], r["rows"], r["bytes"]) for c in chains for r in c["rings"]])
    assert sorted(ring for bands in rings.values() for ring in bands) == listed
    workspaces = {b.name: b.nbytes for b in tinyunet_spilled.plan.buffers}
    for name, bands in rings.items():
        assert sum(nbytes for _, _, nbytes in bands) <= workspaces[name]
    assert chain_rings(tinyunet) == {}  # no budget: no chains


def test_timeline_of_a_bare_lifetime_table(tinyunet, tmp_path):
    plot_timeline(tinyunet.table, tinyunet.plan, tmp_path / "table.png", title="TinyUNet")
    assert _png_size(tmp_path / "table.png") == (1100, 650)


def test_timeline_without_matplotlib_is_a_user_error(tinyunet, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(TinySegError, match=r"tvm_tinyseg\[plot\]"):
        plot_timeline(tinyunet, tinyunet.plan, tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()
