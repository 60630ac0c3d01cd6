"""Frontend guard: every op with a fused activation, alone in a model, compiled and run against
the reference runtime (float: LiteRT's reference kernels within 1e-5; int8: TFLite Micro bit for
bit). Each case first checks on the reference itself that the activation changes the output, so
a frontend that drops it (TVM 0.27 drops TRANSPOSE_CONV's) fails here."""
import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from float_net import ACTIVATIONS, FloatNet, litert_reference
from int8_net import ODD, Net
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.boards import host

SHAPE = (1, 7, 9, 3)
INPUT_SPREAD = 4.0  # unit-normal inputs times this: outputs reach past RELU6's 6 and RELU_N1_TO_1's ±1
FLOAT_TOLERANCE = 1e-5


def _smaller(n):
    return n.pool(n.x, "MAX_POOL_2D", (2, 2), 1, "VALID")


FLOAT_OPS = {
    "conv": lambda n, a: n.conv(n.x, 4, activation=a),
    "conv-dilated": lambda n, a: n.conv(n.x, 4, dilation=2, activation=a),
    "depthwise": lambda n, a: n.depthwise(n.x, multiplier=2, activation=a),
    "transpose-conv": lambda n, a: n.transpose_conv(n.x, 4, activation=a),
    "transpose-conv-valid": lambda n, a: n.transpose_conv(n.x, 2, kernel=2, padding="VALID", activation=a),
    "fully-connected": lambda n, a: n.fully_connected(n.x, 5, activation=a),
    "max-pool": lambda n, a: n.pool(n.x, "MAX_POOL_2D", (2, 2), 2, "SAME", activation=a),
    "average-pool": lambda n, a: n.pool(n.x, "AVERAGE_POOL_2D", (3, 3), 1, "SAME", activation=a),
    "add": lambda n, a: n.binary("ADD", n.x, n.channel_constant(), activation=a),
    "sub": lambda n, a: n.binary("SUB", n.x, n.channel_constant(), activation=a),
    "mul": lambda n, a: n.binary("MUL", n.x, n.channel_constant(), activation=a),
    "div": lambda n, a: n.binary("DIV", n.x, n.channel_constant(0.3, 2.0), activation=a),
}


def _matrix(ops):
    """Every op with every activation; one activation per op (in rotation) runs in the fast suite."""
    return [pytest.param(op, activation, marks=[] if (i + j) % 3 == 0 else [pytest.mark.slow])
            for i, op in enumerate(ops) for j, activation in enumerate(ACTIVATIONS[1:])]


def _float_model(tmp_path, build, activation):
    net = FloatNet(SHAPE)
    return net.save(tmp_path / f"{activation}.tflite", build(net, activation))


@pytest.mark.parametrize("op,activation", _matrix(FLOAT_OPS))
def test_float_fused_activation_matches_litert(op, activation, tmp_path):
    path = _float_model(tmp_path, FLOAT_OPS[op], activation)
    plain = _float_model(tmp_path, FLOAT_OPS[op], "NONE")  # same seeded weights, no activation
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir)
    exe = host.build(out_dir)
    for seed in SEEDS:
        x = seeded_input(SHAPE, np.float32, seed) * np.float32(INPUT_SPREAD)
        expected = litert_reference(path, x)
        assert not np.allclose(expected, litert_reference(plain, x)), "the activation changes nothing here"
        got = host.run(out_dir, x, exe)
        assert got.shape == expected.shape
        error = np.abs(got - expected).max() / np.abs(expected).max()
        assert error <= FLOAT_TOLERANCE, f"seed {seed}: relative error {error:.2e} against LiteRT"


INT8_OPS = {
    "conv": lambda n, a: n.conv(n.x, 4, activation=a),
    "depthwise": lambda n, a: n.depthwise(n.x, activation=a),
    "transpose-conv": lambda n, a: n.transpose_conv(_smaller(n), 4, 3, 2, "SAME", True, activation=a),
    "max-pool": lambda n, a: n.pool(n.x, "MAX_POOL_2D", (2, 2), 2, "SAME", activation=a),
    "average-pool": lambda n, a: n.pool(n.x, "AVERAGE_POOL_2D", (3, 3), 1, "SAME", activation=a),
    "add": lambda n, a: n.binary("ADD", n.x, n.channel_constant(0.021, -31), (0.05, 4), activation=a),
    "mul": lambda n, a: n.binary("MUL", n.x, n.channel_constant(0.021, -31), (0.012, 4), activation=a),
}


def _int8_model(tmp_path, build, activation):
    net = Net(ODD)
    return net.save(tmp_path / f"{activation}.tflite", build(net, activation))


def _assert_int8_matches(path, out_dir):
    compile_model(path, out_dir)
    exe = host.build(out_dir)
    outputs = []
    for seed in SEEDS:
        x = seeded_input(ODD, np.int8, seed)
        expected, got = tflm_reference(path, x), host.run(out_dir, x, exe)
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), \
            f"seed {seed}: {np.count_nonzero(got != expected)} of {got.size} outputs differ from TFLite Micro"
        outputs.append(expected)
    return outputs


@pytest.mark.parametrize("op,activation", _matrix(INT8_OPS))
def test_int8_fused_activation_matches_tflite_micro(op, activation, tmp_path):
    path = _int8_model(tmp_path, INT8_OPS[op], activation)
    plain = _int8_model(tmp_path, INT8_OPS[op], "NONE")
    outputs = _assert_int8_matches(path, str(tmp_path / "c"))
    assert any(not np.array_equal(expected, tflm_reference(plain, seeded_input(ODD, np.int8, seed)))
               for seed, expected in zip(SEEDS, outputs)), "the activation changes nothing here"


def test_int8_activation_bound_on_a_rounding_tie(tmp_path):
    """RELU_N1_TO_1 with output scale 2: the bounds are ±0.5 codes, which TFLite rounds away from
    zero (to ±1), not to even (to 0)."""
    net = Net(ODD)
    path = net.save(tmp_path / "model.tflite", net.conv(net.x, 4, activation="RELU_N1_TO_1", out_q=(2.0, 0)))
    outputs = _assert_int8_matches(path, str(tmp_path / "c"))
    assert {-1, 1} <= set(np.unique(outputs).tolist())
