"""Row-streamed chains (passes/stream_row_chains.py): chains of row-local kernels run through row
rings, below the largest tensor, bit-identical to TFLite Micro."""
import json
import os

import numpy as np
import pytest
import tvm
from conftest import MODELS, seeded_input, tflm_reference
from int8_net import Net
from tiny_unet import tiny_input, tiny_unet

from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.pass_config import register_options
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE, BudgetError
from tvm_tinyseg.boards import host
from tvm_tinyseg.report import format_analysis


def _chain_net(path):
    """conv 3x3 -> conv 3x3 stride 2 -> depthwise 3x3 -> max pool 2x2 -> add -> conv 1x1 VALID:
    one chain of six row-local kernels whose first output (14x12x8) is the largest tensor."""
    n = Net(shape=(1, 14, 12, 3))
    a = n.conv(n.x, 8, activation="RELU")
    b = n.conv(a, 8, stride=2)
    c = n.depthwise(b)
    d = n.pool(c, "MAX_POOL_2D", (2, 2), 2, "VALID")
    k = n.activation("k", [1, 1, 1, 8], 0.05, 3, data=n.rng.integers(-128, 128, [1, 1, 1, 8], dtype=np.int8))
    e = n.binary("ADD", d, k, (0.09, -2))
    return n.save(path, n.conv(e, 4, kernel=1, padding="VALID"))


def _compile(path, out_dir, stream_rows=True, **options):
    register_options()
    with tvm.transform.PassContext(config={"tinyseg.stream_rows": stream_rows}):
        return compile_model(path, out_dir, storage="mmap", **options)


@pytest.fixture(scope="module")
def chain_net(tmp_path_factory):
    root = tmp_path_factory.mktemp("chains")
    path = _chain_net(root / "chain.tflite")
    streamed = _compile(path, str(root / "streamed"), ram_budget=SMALLEST_FEASIBLE)
    whole = _compile(path, str(root / "whole"), stream_rows=False, ram_budget=SMALLEST_FEASIBLE)
    return path, root, streamed, whole


def test_min_streams_the_chain_below_the_largest_tensor(chain_net):
    _, _, streamed, whole = chain_net
    largest = whole.table.largest_tensor_bytes()
    assert whole.plan.size >= largest  # whole tensors: never below the largest
    assert len(streamed.memory.chains) == 1
    chain = streamed.memory.chains[0]
    assert len(chain.steps) == 6
    assert streamed.plan.size < largest
    # the chain's step holds its input, its output and the rings (its workspace), nothing else
    (step,) = streamed.table.steps
    assert streamed.plan.size >= streamed.memory.workspace_bytes[step.kernel] >= sum(chain.ring_bytes)


def test_rings_hold_the_rows_a_consumer_window_needs(chain_net):
    chain = chain_net[2].memory.chains[0]
    rows = dict(zip(chain.tensors, chain.ring_rows))
    first, strided, depthwise, pooled, added = chain.tensors
    assert 3 <= rows[first] <= 3 + 2  # a 3x3 stride-2 consumer: at most kernel + stride rows
    assert rows[strided] == 3  # a 3x3 "same" consumer: three rows
    assert 2 <= rows[depthwise] <= 2 + 2  # a 2x2 stride-2 pool window
    assert rows[pooled] == rows[added] == 1  # elementwise and 1x1: the row itself
    assert all(r * (b // r) == b for r, b in zip(chain.ring_rows, chain.ring_bytes))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streamed_chain_is_bit_identical_to_tflite_micro(chain_net, seed):
    path, root, streamed, _ = chain_net
    x = seeded_input((1, 14, 12, 3), np.int8, seed)
    exe = getattr(test_streamed_chain_is_bit_identical_to_tflite_micro, "exe", None) or host.build(str(root / "streamed"))
    test_streamed_chain_is_bit_identical_to_tflite_micro.exe = exe
    got = host.run(str(root / "streamed"), x, exe=exe)
    want = tflm_reference(path, x)
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)


def test_memory_json_and_analysis_record_the_chain(chain_net):
    _, root, streamed, _ = chain_net
    with open(os.path.join(root, "streamed", "memory.json")) as f:
        report = json.load(f)
    (chain,) = report["streamed_chains"]
    assert chain["recomputed_macs"] == 0 and report["recomputed_macs"] == 0
    assert [r["rows"] for r in chain["rings"]] == list(streamed.memory.chains[0].ring_rows)
    text = format_analysis(streamed.table, streamed.plan, streamed.memory.chains)
    assert "row-streamed chain of steps 0, 1, 2, 3, 4, 5" in text and "in a ring of 3 rows" in text


def test_a_chain_kernel_counts_the_macs_of_its_stages(chain_net):
    """Profiles divide instructions by these: the chain kernel has no blocks left to count in."""
    _, _, streamed, whole = chain_net
    (step,) = streamed.memory_report["steps"]
    assert step["macs"] == sum(s["macs"] for s in whole.memory_report["steps"]) > 0


def test_a_budget_spilling_cannot_meet_is_met_by_streaming(chain_net):
    path, root, streamed, whole = chain_net
    budget = (streamed.plan.size + whole.plan.size) // 2
    met = _compile(path, None, ram_budget=budget)
    assert met.plan.size <= budget and met.memory.chains
    with pytest.raises(BudgetError, match=f"smallest feasible arena is {whole.plan.size} B"):
        _compile(path, None, stream_rows=False, ram_budget=budget)


def test_no_budget_streams_nothing(chain_net):
    path = chain_net[0]
    assert not _compile(path, None).memory.chains


@pytest.mark.slow
def test_mbv2_lraspp_min_is_below_its_largest_tensor_and_exact(tmp_path):
    path = os.path.join(MODELS, "mbv2_lraspp.tflite")
    result = _compile(path, str(tmp_path), ram_budget=SMALLEST_FEASIBLE)
    assert result.memory.chains
    assert result.plan.size < 110_592  # its largest tensor (96x96 rows of the first expansion)
    exe = host.build(str(tmp_path))
    x = seeded_input((1, 96, 96, 3), np.int8, 0)
    want = tflm_reference(path, x)
    np.testing.assert_array_equal(np.asarray(host.run(str(tmp_path), x, exe=exe)).reshape(want.shape), want)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    root = tmp_path_factory.mktemp("unet")
    path = tiny_unet(root / "tiny_unet.tflite")
    streamed = _compile(path, str(root / "streamed"), ram_budget=SMALLEST_FEASIBLE)
    whole = _compile(path, None, stream_rows=False, ram_budget=SMALLEST_FEASIBLE)
    return path, root, streamed, whole


def test_unet_skips_are_written_to_storage_by_their_producers(unet):
    _, _, streamed, whole = unet
    table = streamed.table
    stored = [t for t in table.storage_tensors() if table.steps[t.producer].kind == "kernel"]
    assert stored  # never whole in RAM: the producing kernel writes the skip to storage
    assert streamed.plan.size < whole.plan.size
    report = streamed.memory_report
    assert [s["bytes"] for s in report["spilled"] if s.get("written_by_producer")] == [t.nbytes for t in stored]
    # each skip written once, read once by the pool and once by the decoder
    assert report["moved_bytes"] == sum(3 * t.nbytes for t in stored)


@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_unet_is_bit_identical_to_tflite_micro(unet, seed):
    path, root, _, _ = unet
    x = tiny_input(seed)
    got = host.run(str(root / "streamed"), x)
    want = tflm_reference(path, x)
    np.testing.assert_array_equal(np.asarray(got).reshape(want.shape), want)


@pytest.mark.slow
def test_authentic_tinyunet_min_streams_skips_into_storage_within_47_kb_and_exact(tmp_path):
    """Issue 14's target: the TinySeg authors' TinyUNet 80x120 in <= 47 KB (TFLite Micro: 316,520 B)."""
    path = os.path.join(MODELS, "tinyunet_authentic_80x120.tflite")
    result = _compile(path, str(tmp_path), ram_budget=SMALLEST_FEASIBLE)
    assert result.plan.size <= 47 * 1000
    table = result.table
    writers = [table.steps[t.producer].kernel for t in table.storage_tensors()]
    assert any(w.startswith("row_chain_") for w in writers)  # a chain writes a skip row by row
    exe = host.build(str(tmp_path))
    x = seeded_input((1, 80, 120, 3), np.int8, 0)
    want = tflm_reference(path, x)
    np.testing.assert_array_equal(np.asarray(host.run(str(tmp_path), x, exe=exe)).reshape(want.shape), want)


@pytest.mark.slow
def test_a_budget_above_the_smallest_arena_keeps_the_spills_it_does_not_need(tmp_path):
    """The authentic TinyUNet on a 64 KiB board: the smallest arena's spill set streamed fits with
    room to spare, so spills are dropped while the streamed arena still fits (fewer bytes moved), and
    the output stays TFLite Micro's."""
    path = os.path.join(MODELS, "tinyunet_authentic_80x120.tflite")
    budget = 60 * 1024
    smallest = _compile(path, None, ram_budget=SMALLEST_FEASIBLE, check_c=False).memory
    result = _compile(path, str(tmp_path), ram_budget=budget)
    assert result.plan.size <= budget and result.memory.chains
    assert {s.tensor for s in result.memory.spills} < {s.tensor for s in smallest.spills}
    assert result.memory.moved_bytes < smallest.moved_bytes
    x = seeded_input((1, 80, 120, 3), np.int8, 1)
    want = tflm_reference(path, x)
    np.testing.assert_array_equal(np.asarray(host.run(str(tmp_path), x)).reshape(want.shape), want)
