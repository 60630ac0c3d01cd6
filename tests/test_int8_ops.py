"""Single int8 ops (or a few), written with TFLiteBuilder, compiled to C, run on the host and
compared with TFLite Micro bit for bit on seeded random inputs.

The model zoo only exercises the configurations its networks happen to use; these cases cover
the rest: odd and even sizes (SAME padding of a 3x3 stride-2 window is symmetric on odd sizes and
one-sided on even ones; partial pooling windows), non-zero zero points, per-channel weight scales,
biases, fused activations, broadcasting and the data-movement ops.
Every model has one input and one output (the compiler's limit): binary ops combine the input
with a second branch computed from it, or with a constant.
"""
import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from int8_net import EVEN, IN_Q, ODD, C, H, Net, W
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.boards import host

pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

# ---- case builders: each takes a Net and returns the output tensor -----------------------------
def _conv(**kw):
    return lambda n: n.conv(n.x, 4, **kw)


def _pool(op, size, stride, padding, activation="NONE"):
    return lambda n: n.pool(n.x, op, size, stride, padding, activation)


def _resize(size, **flags):
    return lambda n: n.resize_nearest(n.x, size, **flags)


def _smaller(n):
    """A [1, 6, 8, C] activation: input for upsampling ops, and even sizes for resizes."""
    return n.pool(n.x, "MAX_POOL_2D", (2, 2), 1, "VALID")


def _two_convs(op, activation="NONE"):
    """op(CONV_2D 1x1(x), CONV_2D 3x3(x)): two activations of different quantizations."""
    def build(n):
        a = n.conv(n.x, 4, kernel=1, padding="VALID", out_zp=-20)
        b = n.conv(n.x, 4, kernel=3, out_zp=11)
        return n.binary(op, a, b, (0.11 if op == "ADD" else 0.6, 3), activation)
    return build


def _with_requantized(op, activation="NONE"):
    """op(x, QUANTIZE(x) to another scale and zero point): same shape, different scales."""
    def build(n):
        return n.binary(op, n.x, n.requantize(n.x, 0.081, 17), (0.09 if op == "ADD" else 0.2, -6), activation)
    return build


def _with_channel_constant(op, activation="NONE"):
    """op(x, constant [1,1,1,C]): broadcasting along H and W."""
    return lambda n: n.binary(op, n.x, n.channel_constant(0.021, -31), (0.05 if op == "ADD" else 0.012, 4), activation)


def _with_global_average(op):
    """op(x, AVERAGE_POOL_2D over all of x): a [1,1,1,C] activation broadcast over x."""
    return lambda n: n.binary(op, n.x, n.pool(n.x, "AVERAGE_POOL_2D", (H, W), 1, "VALID"),
                              (0.06 if op == "ADD" else 0.003, 2))


def _concat_with_conv(axis):
    """CONCATENATION(x, CONV_2D(x)); the conv output has x's quantization (TFLite Micro requires
    the same scale and zero point on all inputs and the output)."""
    return lambda n: n.concat([n.x, n.conv(n.x, C, kernel=3, out_q=IN_Q)], axis)


def _case(id, build, shape=ODD):
    return pytest.param(build, shape, id=id)


EXACT_CASES = [
    # CONV_2D
    _case("conv-3x3-same-s1-bias", _conv()),
    _case("conv-3x3-same-s2-bias-odd", _conv(stride=2)),
    _case("conv-3x3-same-s2-bias-even", _conv(stride=2), EVEN),
    _case("conv-3x3-same-s2-nobias-even", _conv(stride=2, bias=False), EVEN),
    _case("conv-2x2-same-s1-nobias", _conv(kernel=2, bias=False)),
    _case("conv-1x1-valid-bias", _conv(kernel=1, padding="VALID")),
    _case("conv-3x3-valid-s2-nobias", _conv(stride=2, padding="VALID", bias=False)),
    _case("conv-3x3-same-dilation2", _conv(dilation=2)),
    _case("conv-3x3-valid-dilation2", _conv(dilation=2, padding="VALID")),
    _case("conv-3x3-same-relu", _conv(activation="RELU")),
    _case("conv-3x3-same-s2-relu6-even", _conv(stride=2, activation="RELU6", bias=False), EVEN),
    _case("conv-1x1-relu6-zp-neg", _conv(kernel=1, activation="RELU6", out_zp=-100)),
    # DEPTHWISE_CONV_2D
    _case("dwconv-3x3-same-s1", lambda n: n.depthwise(n.x)),
    _case("dwconv-3x3-same-s2-relu6-odd", lambda n: n.depthwise(n.x, stride=2, activation="RELU6")),
    _case("dwconv-3x3-same-s2-even", lambda n: n.depthwise(n.x, stride=2), EVEN),
    _case("dwconv-3x3-valid-s2-relu", lambda n: n.depthwise(n.x, stride=2, padding="VALID", activation="RELU")),
    _case("dwconv-3x3-same-multiplier2", lambda n: n.depthwise(n.x, multiplier=2)),
    _case("dwconv-3x3-same-1ch-multiplier3", lambda n: n.depthwise(n.conv(n.x, 1, kernel=1), multiplier=3)),
    # TRANSPOSE_CONV
    _case("tconv-2x2-s2-valid-nobias", lambda n: n.transpose_conv(_smaller(n), 4, 2, 2, "VALID", False)),
    _case("tconv-3x3-s2-same-bias", lambda n: n.transpose_conv(_smaller(n), 4, 3, 2, "SAME", True)),
    _case("tconv-3x3-s2-same-bias-odd", lambda n: n.transpose_conv(n.x, 2, 3, 2, "SAME", True)),
    _case("tconv-3x3-s2-valid-bias", lambda n: n.transpose_conv(n.x, 2, 3, 2, "VALID", True)),
    # pooling
    _case("maxpool-3x3-s2-same-odd", _pool("MAX_POOL_2D", (3, 3), 2, "SAME")),
    _case("maxpool-3x3-s2-same-even", _pool("MAX_POOL_2D", (3, 3), 2, "SAME"), EVEN),
    _case("maxpool-2x2-s2-same-odd", _pool("MAX_POOL_2D", (2, 2), 2, "SAME")),
    _case("maxpool-2x2-s2-valid-relu", _pool("MAX_POOL_2D", (2, 2), 2, "VALID", "RELU")),
    _case("avgpool-2x2-s2-valid", _pool("AVERAGE_POOL_2D", (2, 2), 2, "VALID")),
    _case("avgpool-2x2-s1-valid", _pool("AVERAGE_POOL_2D", (2, 2), 1, "VALID")),
    _case("avgpool-3x3-s2-same-odd", _pool("AVERAGE_POOL_2D", (3, 3), 2, "SAME")),
    _case("avgpool-3x3-s2-same-even", _pool("AVERAGE_POOL_2D", (3, 3), 2, "SAME"), EVEN),
    _case("avgpool-2x2-s2-same-odd", _pool("AVERAGE_POOL_2D", (2, 2), 2, "SAME")),
    _case("avgpool-3x3-s1-same-relu6", _pool("AVERAGE_POOL_2D", (3, 3), 1, "SAME", "RELU6")),
    _case("avgpool-global", lambda n: n.pool(n.conv(n.x, 16, kernel=1), "AVERAGE_POOL_2D", (H, W), 1, "VALID")),
    # ADD / MUL
    _case("add-same-shape-diff-scales", _with_requantized("ADD")),
    _case("add-two-convs", _two_convs("ADD")),
    _case("add-two-convs-relu", _two_convs("ADD", "RELU")),
    _case("add-broadcast-const", _with_channel_constant("ADD")),
    _case("add-broadcast-const-relu6", _with_channel_constant("ADD", "RELU6")),
    _case("add-broadcast-global-avg", _with_global_average("ADD")),
    _case("add-same-input-twice", lambda n: n.binary("ADD", n.x, n.x, (0.07, -1))),
    _case("mul-same-shape-diff-scales", _with_requantized("MUL")),
    _case("mul-two-convs-relu", _two_convs("MUL", "RELU")),
    _case("mul-broadcast-const", _with_channel_constant("MUL")),
    _case("mul-broadcast-const-relu", _with_channel_constant("MUL", "RELU")),
    _case("mul-broadcast-global-avg", _with_global_average("MUL")),
    # elementwise
    _case("logistic", lambda n: n.logistic(n.x)),
    _case("logistic-after-conv", lambda n: n.logistic(n.conv(n.x, 2))),
    _case("quantize-int8-rescale", lambda n: n.requantize(n.x, 0.031, 25)),
    _case("quantize-int8-coarser", lambda n: n.requantize(n.x, 0.2, -100)),
    # CONCATENATION
    _case("concat-channels", _concat_with_conv(3)),
    _case("concat-channels-negative-axis", _concat_with_conv(-1)),
    _case("concat-height", _concat_with_conv(1)),
    # RESIZE_NEAREST_NEIGHBOR
    _case("resize-nn-2x", _resize([2 * H, 2 * W])),
    _case("resize-nn-2x-half-pixel", _resize([2 * H, 2 * W], half_pixel_centers=True)),
    _case("resize-nn-3x", _resize([3 * H, 3 * W])),
    _case("resize-nn-5to8", lambda n: n.resize_nearest(n.pool(n.x, "MAX_POOL_2D", (3, 5), 1, "VALID"), [8, 8])),
    _case("resize-nn-5to8-half-pixel", lambda n: n.resize_nearest(
        n.pool(n.x, "MAX_POOL_2D", (3, 5), 1, "VALID"), [8, 8], half_pixel_centers=True)),
    _case("resize-nn-downscale", _resize([3, 4])),
    _case("resize-nn-downscale-half-pixel", _resize([3, 4], half_pixel_centers=True)),
    _case("resize-nn-6x8to14x6-half-pixel", lambda n: n.resize_nearest(_smaller(n), [14, 6], half_pixel_centers=True)),
    _case("resize-nn-9to21", _resize([2 * H, 21])),
    _case("resize-nn-align-corners", _resize([13, 12], align_corners=True)),
    _case("resize-nn-align-corners-half-pixel", _resize([13, 12], align_corners=True, half_pixel_centers=True)),
    # sizes where TFLite's float32 products round onto an integer (float64 products would not)
    _case("resize-nn-9to57", _resize([H, 57])),
    _case("resize-nn-7to39-align-corners-half-pixel", _resize([39, W], align_corners=True, half_pixel_centers=True)),
    # PAD / PADV2 / RESHAPE
    _case("pad-asymmetric", lambda n: n.pad(n.x, [[0, 0], [1, 2], [0, 3], [0, 0]])),
    _case("pad-channels", lambda n: n.pad(n.x, [[0, 0], [0, 0], [0, 0], [2, 1]])),
    _case("padv2-value", lambda n: n.pad(n.x, [[0, 0], [2, 1], [1, 1], [0, 0]], value=100)),
    _case("conv-pad-conv", lambda n: n.conv(n.pad(n.conv(n.x, 4, kernel=1), [[0, 0], [1, 0], [0, 2], [0, 0]]), 2,
                                            padding="VALID")),
    _case("reshape", lambda n: n.reshape(n.x, [1, W, H, C])),
    _case("reshape-between-convs", lambda n: n.conv(n.reshape(n.conv(n.x, 4, kernel=1), [1, W, H, 4]), 2)),
]

def _assert_matches_tflm(build, shape, tmp_path):
    net = Net(shape)
    path = net.save(tmp_path / "model.tflite", build(net))
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir)
    exe = host.build(out_dir)  # strict flags: -Wall -Wextra -Werror
    for seed in SEEDS:
        x = seeded_input(shape, np.int8, seed)
        got, expected = host.run(out_dir, x, exe), tflm_reference(path, x)
        assert got.dtype == expected.dtype == np.int8 and got.shape == expected.shape
        wrong = np.argwhere(got != expected)
        assert wrong.size == 0, (
            f"seed {seed}: {len(wrong)} of {got.size} outputs differ from TFLite Micro, first at "
            f"{tuple(wrong[0])}: {got[tuple(wrong[0])]} vs {expected[tuple(wrong[0])]}")
        assert len(np.unique(expected)) > min(8, expected.size // 2), \
            "degenerate reference output: the check would prove little"


@pytest.mark.parametrize("build,shape", EXACT_CASES)
def test_int8_op_matches_tflite_micro(build, shape, tmp_path):
    _assert_matches_tflm(build, shape, tmp_path)


@pytest.mark.parametrize("build", [
    pytest.param(_conv(bias=None), id="conv"),
    pytest.param(lambda n: n.transpose_conv(_smaller(n), 4, 2, 2, "VALID", None), id="transpose-conv"),
])
def test_empty_optional_bias_slot(build, tmp_path):
    """A bias input given as -1 (the schema's "optional input omitted") is valid TFLite."""
    _assert_matches_tflm(build, ODD, tmp_path)


@pytest.mark.parametrize("build,match", [
    pytest.param(lambda n: n.concat([n.x, n.conv(n.x, C, kernel=1, out_q=(IN_Q[0], IN_Q[1] + 1))], 3),
                 "CONCATENATION", id="concat-mismatched-qparams"),
    pytest.param(lambda n: n.logistic(n.x, out_q=(1.0 / 256.0, 0)), "LOGISTIC", id="logistic-output-zero-point"),
])
def test_configurations_tflm_rejects_are_rejected(build, match, tmp_path):
    net = Net()
    path = net.save(tmp_path / "model.tflite", build(net))
    with pytest.raises(UnsupportedModelError, match=match):
        compile_model(path)
    with pytest.raises(RuntimeError):
        tflm_reference(path, seeded_input(ODD, np.int8, 0))
