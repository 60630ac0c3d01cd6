"""SPACE_TO_BATCH_ND → CONV_2D/DEPTHWISE_CONV_2D → BATCH_TO_SPACE_ND (TensorFlow's export of a
dilated convolution) compiled as one dilated convolution.

TFLite Micro is no reference for the three-op form: its SPACE_TO_BATCH_ND kernel never sets its
pad value (uninitialized params; LiteRT pads with the zero point, i.e. real 0) and its outputs
on such models are partly zero. So each int8 case is checked bit for bit against LiteRT's
reference kernels on the three-op form AND against TFLite Micro on its twin written as one
CONV_2D/DEPTHWISE_CONV_2D with the dilation attribute (same weights and quantization)."""
import os

import numpy as np
import pytest

from conftest import MODELS, SEEDS, seeded_input, tflm_reference
from float_net import FloatNet, litert_reference
from int8_net import ODD, Net
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.boards import host


def _paddings(size, kernel, dilation):
    """TensorFlow's SAME padding of a dilated conv, extended so the size divides by the block."""
    total = (kernel - 1) * dilation
    before, after = total // 2, total - total // 2
    extra = -(size + total) % dilation
    return [before, after + extra], [0, extra]


def _dilated(net, x, make, conv, dilation, kernel=3):
    """S2B → conv (VALID) → B2S around ``conv(net, s2b_output)``; ``make(name, shape, like)`` adds a tensor."""
    n, h, w, c = net.shape(x)
    (ph, crop_h), (pw, crop_w) = _paddings(h, kernel, dilation), _paddings(w, kernel, dilation)
    sh, sw = (h + sum(ph)) // dilation, (w + sum(pw)) // dilation
    s2b = make("s2b", [n * dilation * dilation, sh, sw, c], x)
    net.b.op("SPACE_TO_BATCH_ND", [x, net.const("block", [dilation, dilation]), net.const("paddings", [ph, pw])],
             [s2b])
    y = conv(s2b)
    _, oh, ow, oc = net.shape(y)
    out = make("b2s", [n, oh * dilation - sum(crop_h), ow * dilation - sum(crop_w), oc], y)
    net.b.op("BATCH_TO_SPACE_ND", [y, net.const("block2", [dilation, dilation]), net.const("crops", [crop_h, crop_w])],
             [out])
    return out


def _int8_make(net):
    return lambda name, shape, like: net.activation(name, shape, *net.qparams(like))


INT8_CASES = {  # (three-op form, single dilated op form)
    "conv-d2": (lambda n: _dilated(n, n.x, _int8_make(n), lambda t: n.conv(t, 4, padding="VALID"), 2),
                lambda n: n.conv(n.x, 4, dilation=2)),
    "conv-d3-relu6": (lambda n: _dilated(n, n.x, _int8_make(n),
                                         lambda t: n.conv(t, 4, padding="VALID", activation="RELU6"), 3),
                      lambda n: n.conv(n.x, 4, dilation=3, activation="RELU6")),
}


def _compiled_outputs(path, dtype, shape=ODD):
    out_dir = f"{path}.c"
    result = compile_model(path, out_dir)
    exe = host.build(out_dir)
    kernels = [s.kernel for s in result.table.steps if s.kind == "kernel"]
    assert len(kernels) == 1, kernels  # one convolution, no space/batch moves
    return [(seeded_input(shape, dtype, seed), host.run(out_dir, seeded_input(shape, dtype, seed), exe))
            for seed in SEEDS]


@pytest.mark.parametrize("case", INT8_CASES)
def test_int8_dilated_conv_matches_tflite_micro_and_litert(case, tmp_path):
    three_ops, one_op = INT8_CASES[case]
    net = Net(ODD)
    path = net.save(tmp_path / "three_ops.tflite", three_ops(net))
    net = Net(ODD)
    twin = net.save(tmp_path / "one_op.tflite", one_op(net))
    for x, got in _compiled_outputs(path, np.int8):
        expected = tflm_reference(twin, x)
        assert np.array_equal(litert_reference(path, x), expected), "the two forms differ in the references"
        assert np.array_equal(got, expected)
        assert len(np.unique(expected)) > 8


@pytest.mark.parametrize("op,dilation", [("conv", 2), ("depthwise", 3)])
def test_float_dilated_conv_matches_litert(op, dilation, tmp_path):
    net = FloatNet(ODD)
    make = lambda name, shape, like: net.tensor(name, shape)  # noqa: E731
    conv = (lambda t: net.conv(t, 4, padding="VALID")) if op == "conv" else \
        (lambda t: net.depthwise(t, padding="VALID", multiplier=2))
    y = _dilated(net, net.x, make, conv, dilation)
    path = net.save(tmp_path / "m.tflite", y)
    for x, got in _compiled_outputs(path, np.float32):
        expected = litert_reference(path, x)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_space_to_batch_alone_is_refused(tmp_path):
    from tvm_tinyseg.errors import UnsupportedModelError

    net = FloatNet(ODD)
    y = net.tensor("s2b", [4, 4, 5, 3])
    net.b.op("SPACE_TO_BATCH_ND", [net.x, net.const("block", [2, 2]), net.const("paddings", [[0, 1], [0, 1]])], [y])
    path = net.save(tmp_path / "m.tflite", y)
    with pytest.raises(UnsupportedModelError, match="SPACE_TO_BATCH_ND is only supported around a convolution"):
        compile_model(path)


FRONTEND_MODELS = os.path.join(MODELS, "frontend")


def test_keras_unet_int8_matches_litert_on_its_resize_form(tmp_path):
    """Keras 3 export, full int8: dilated convs (ASPP) and UpSampling2D as TILE. The reference is
    LiteRT's reference kernels on its twin with a Resizing layer (same weights and quantization;
    LiteRT's reference resolver has no int8 TILE, TFLite Micro no usable SPACE_TO_BATCH_ND)."""
    tile_path = os.path.join(FRONTEND_MODELS, "unet_upsampling_int8.tflite")
    resize_path = os.path.join(FRONTEND_MODELS, "unet_resize_int8.tflite")
    shape = (1, 24, 32, 3)
    tiled = _compiled_outputs_any(tile_path, shape, tmp_path / "tile")
    resized = _compiled_outputs_any(resize_path, shape, tmp_path / "resize")
    for (x, got_tile), (_, got_resize) in zip(tiled, resized):
        expected = litert_reference(resize_path, x)
        assert np.array_equal(got_resize, expected) and np.array_equal(got_tile, expected)
        assert len(np.unique(expected)) > 8


def test_keras_unet_float_matches_litert(tmp_path):
    path = os.path.join(FRONTEND_MODELS, "unet_upsampling_float.tflite")
    for x, got in _compiled_outputs_any(path, (1, 24, 32, 3), tmp_path / "c", np.float32):
        expected = litert_reference(path, x)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def _compiled_outputs_any(path, shape, out_dir, dtype=np.int8):
    compile_model(path, str(out_dir))
    exe = host.build(str(out_dir))
    return [(seeded_input(shape, dtype, seed), host.run(str(out_dir), seeded_input(shape, dtype, seed), exe))
            for seed in SEEDS]
