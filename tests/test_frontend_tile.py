"""TILE, and Keras 3's nearest upsampling (RESHAPE → TILE → RESHAPE per axis) compiled as a nearest
resize. TFLite Micro has no TILE: these are checked against LiteRT's reference kernels and, for the
upsampling pattern, against the same network written with RESIZE_NEAREST_NEIGHBOR (which TFLite
Micro runs), bit for bit."""
import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from float_net import FloatNet, litert_reference
from int8_net import ODD, Net
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
from tvm_tinyseg.boards import host


def _tile(net, x, multiples, make):
    shape = [s * m for s, m in zip(net.shape(x), multiples)]
    y = make("tiled", shape)
    net.b.op("TILE", [x, net.const("multiples", multiples)], [y])
    return y


def _int8_tile(n, x, multiples):
    return _tile(n, x, multiples, lambda name, shape: n.activation(name, shape, *n.qparams(x)))


def _keras_upsampling(n, x, f, g):
    """Keras 3's UpSampling2D((f, g)) with a static batch: rows, then columns."""
    _, h, w, c = n.shape(x)
    y = _int8_tile(n, n.reshape(x, [1, h, 1, w, c]), [1, 1, f, 1, 1])
    y = _int8_tile(n, n.reshape(y, [1, h * f, w, 1, c]), [1, 1, 1, g, 1])
    return n.reshape(y, [1, h * f, w * g, c])


def _run(path, shape, dtype, **options):
    out_dir = f"{path}.c"
    options.setdefault("integrity", False)  # the storage CRCs move whole 16-B blocks: bytes counted exactly
    result = compile_model(path, out_dir, **options)
    exe = host.build(out_dir)
    outputs = []
    for seed in SEEDS:
        stats = {}
        outputs.append(host.run(out_dir, seeded_input(shape, dtype, seed), exe, stats))
        # block storage (the default): the rows streamed are the rows counted
        assert stats.get("storage_written", 0) + stats.get("storage_read", 0) == result.memory_report["moved_bytes"]
    return result, outputs


def _kernels(result):
    return [s.kernel for s in result.table.steps if s.kind == "kernel"]


@pytest.mark.parametrize("multiples", [[1, 2, 1, 1], [1, 1, 3, 2], [1, 2, 2, 1]])
def test_int8_tile_matches_litert(multiples, tmp_path):
    net = Net(ODD)
    path = net.save(tmp_path / "m.tflite", _int8_tile(net, net.conv(net.x, 4, kernel=1), multiples))
    _, outputs = _run(path, ODD, np.int8)
    for seed, got in zip(SEEDS, outputs):
        assert np.array_equal(got, litert_reference(path, seeded_input(ODD, np.int8, seed)))


def test_float_tile_matches_litert(tmp_path):
    net = FloatNet(ODD)
    path = net.save(tmp_path / "m.tflite", _tile(net, net.conv(net.x, 4), [1, 2, 3, 1], net.tensor))
    _, outputs = _run(path, ODD, np.float32)
    for seed, got in zip(SEEDS, outputs):
        expected = litert_reference(path, seeded_input(ODD, np.float32, seed))
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("factors,options", [
    pytest.param((2, 2), {}, id="2x2"),
    pytest.param((3, 2), {}, id="3x2"),
    pytest.param((2, 2), {"ram_budget": SMALLEST_FEASIBLE}, id="2x2-min"),
    pytest.param((3, 2), {"ram_budget": SMALLEST_FEASIBLE}, id="3x2-min"),
])
def test_int8_keras_upsampling_is_a_nearest_resize(factors, options, tmp_path):
    """conv s2 → upsample, concatenated with a skip branch, → conv: the TILE form compiles to the
    resize kernel and gives what the RESIZE_NEAREST_NEIGHBOR form gives in TFLite Micro."""
    def build(upsample):
        net = Net(ODD)
        low = net.conv(net.x, 4, stride=2, out_q=(0.08, -2))
        up = upsample(net, low)
        _, h, w, _ = net.shape(up)
        skip = net.conv(net.resize_nearest(net.x, [h, w]), 4, kernel=1, out_q=(0.08, -2))
        return net, net.conv(net.concat([up, skip], 3), 3)

    f, g = factors
    tiled, y = build(lambda n, t: _keras_upsampling(n, t, f, g))
    tile_path = tiled.save(tmp_path / "tile.tflite", y)
    resized, y = build(lambda n, t: n.resize_nearest(t, [n.shape(t)[1] * f, n.shape(t)[2] * g]))
    resize_path = resized.save(tmp_path / "resize.tflite", y)

    result, outputs = _run(tile_path, ODD, np.int8, **options)
    assert not any("tile" in k for k in _kernels(result)), _kernels(result)
    if options:  # the upsampled tensor's input is streamed from storage into the resize+concat+conv
        assert result.memory_report["moved_bytes"] > 0
    for seed, got in zip(SEEDS, outputs):
        x = seeded_input(ODD, np.int8, seed)
        expected = tflm_reference(resize_path, x)
        assert np.array_equal(litert_reference(tile_path, x), expected), "the two forms differ in the references"
        assert np.array_equal(got, expected)
        assert len(np.unique(expected)) > 8
