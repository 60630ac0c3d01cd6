"""Spatial and data-movement ops alone — RESIZE_BILINEAR, MEAN, MIRROR_PAD, DEPTH_TO_SPACE,
SPACE_TO_DEPTH, TRANSPOSE, SPLIT/SPLIT_V, STRIDED_SLICE, ARG_MAX — written with TFLiteBuilder:
int8 bit-exact with TFLite Micro (ARG_MAX's int64 output, which TFLM lacks, with LiteRT's
reference kernels), float within 1e-5 of LiteRT; every model also compiled with TinySeg at the
smallest RAM budget. Models have one input and one output: SPLIT's parts are concatenated back
in another order. Last, a U-Net with UpSampling2D (nearest or bilinear): the upsampled and
concatenated tensors are computed inside the conv reading them, still bit-exact.
"""
import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from int8_net import IN_Q, ODD, C, Net
from tflite_builder import _TENSOR_TYPES as TENSOR_TYPES
from tflite_builder import TFLiteBuilder
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE
from tvm_tinyseg.boards import host

pytest.importorskip("tflite_micro.python.tflite_micro.runtime")


# ---- op writers: work on a Net (int8, every tensor quantized like its input) or a FloatNet ----
class FloatNet:
    """The float32 twin of int8_net.Net for these ops: same writers, no quantization."""

    def __init__(self, shape=ODD):
        self.b = TFLiteBuilder()
        self.shapes = {}
        self.x = self.activation("x", shape)

    def activation(self, name, shape, *_quant):
        t = self.b.tensor(f"{name}{len(self.shapes)}", shape, np.float32)
        self.shapes[t] = [int(s) for s in shape]
        return t

    def shape(self, t):
        return self.shapes[t]

    def qparams(self, _t):
        return ()

    def const(self, name, data, dtype=np.int32):
        data = np.asarray(data, dtype)
        return self.b.tensor(name, data.shape, dtype, data=data)

    def concat(self, inputs, axis):
        shape = list(self.shape(inputs[0]))
        shape[axis] = sum(self.shape(t)[axis] for t in inputs)
        y = self.activation("concat", shape)
        self.b.op("CONCATENATION", inputs, [y], options=("ConcatenationOptions", {"axis": axis}))
        return y

    def save(self, path, y):
        self.b.save(str(path), inputs=[self.x], outputs=[y])
        return str(path)


def _like(n, x, name, shape):
    """An activation of ``shape`` quantized like ``x`` (int8) or float."""
    return n.activation(name, shape, *n.qparams(x))


def bilinear(size, align_corners=False, half_pixel_centers=False):
    def build(n, x=None):
        x = n.x if x is None else x
        y = _like(n, x, "bilinear", [1, *size, n.shape(x)[3]])
        n.b.op("RESIZE_BILINEAR", [x, n.const("size", size)], [y], options=("ResizeBilinearOptions", {
            "align_corners": align_corners, "half_pixel_centers": half_pixel_centers}))
        return y
    return build


def mean(axes, keep_dims, out_q=(0.011, 4)):
    def build(n):
        reduced = {a % 4 for a in axes}
        shape = [1 if a in reduced else s for a, s in enumerate(n.shape(n.x)) if keep_dims or a not in reduced]
        y = n.activation("mean", shape, *(out_q if n.qparams(n.x) else ()))
        n.b.op("MEAN", [n.x, n.const("axes", axes)], [y], options=("ReducerOptions", {"keep_dims": keep_dims}))
        return y
    return build


def mirror_pad(paddings, mode):
    def build(n):
        shape = [s + a + b for s, (a, b) in zip(n.shape(n.x), paddings)]
        y = _like(n, n.x, "mirror", shape)
        n.b.op("MIRROR_PAD", [n.x, n.const("paddings", paddings)], [y],
               options=("MirrorPadOptions", {"mode": {"REFLECT": 0, "SYMMETRIC": 1}[mode]}))
        return y
    return build


def depth_to_space(block):
    def build(n):
        _, h, w, c = n.shape(n.x)
        y = _like(n, n.x, "d2s", [1, h * block, w * block, c // (block * block)])
        n.b.op("DEPTH_TO_SPACE", [n.x], [y], options=("DepthToSpaceOptions", {"block_size": block}))
        return y
    return build


def space_to_depth(block):
    def build(n):
        _, h, w, c = n.shape(n.x)
        y = _like(n, n.x, "s2d", [1, h // block, w // block, c * block * block])
        n.b.op("SPACE_TO_DEPTH", [n.x], [y], options=("SpaceToDepthOptions", {"block_size": block}))
        return y
    return build


def transpose(perm):
    def build(n):
        y = _like(n, n.x, "transposed", [n.shape(n.x)[p] for p in perm])
        n.b.op("TRANSPOSE", [n.x, n.const("perm", perm)], [y])
        return y
    return build


def split(sizes, axis, order, even=True):
    """SPLIT (equal ``sizes``) or SPLIT_V, then the parts concatenated in ``order``."""
    def build(n):
        parts = []
        for size in sizes:
            shape = list(n.shape(n.x))
            shape[axis] = size
            parts.append(_like(n, n.x, "part", shape))
        if even:
            n.b.op("SPLIT", [n.const("axis", axis), n.x], parts, options=("SplitOptions", {"num_splits": len(sizes)}))
        else:
            n.b.op("SPLIT_V", [n.x, n.const("sizes", sizes), n.const("axis", axis)], parts,
                   options=("SplitVOptions", {"num_splits": len(sizes)}))
        return n.concat([parts[i] for i in order], axis)
    return build


def strided_slice(begin, end, strides, out_shape, **masks):
    def build(n):
        y = _like(n, n.x, "sliced", out_shape)
        n.b.op("STRIDED_SLICE", [n.x, n.const("begin", begin), n.const("end", end), n.const("strides", strides)],
               [y], options=("StridedSliceOptions", masks))
        return y
    return build


def arg_max(dtype=np.int32, coarse=False):
    """ARG_MAX over channels; ``coarse`` first requantizes to a few codes, so ties are common
    (TFLite keeps the first maximal channel)."""
    def build(n):
        x = n.requantize(n.x, 0.6, 0) if coarse else n.x
        _, h, w, _ = n.shape(x)
        y = n.b.tensor("argmax", [1, h, w], dtype)
        n.b.op("ARG_MAX", [x, n.const("axis", [3])], [y],
               options=("ArgMaxOptions", {"output_type": TENSOR_TYPES[np.dtype(dtype)]}))
        return y
    return build


CASES = {
    "bilinear-2x": (bilinear([14, 18]), ODD),
    "bilinear-2x-half-pixel": (bilinear([14, 18], half_pixel_centers=True), ODD),
    "bilinear-2x-align-corners": (bilinear([14, 18], align_corners=True), ODD),
    "bilinear-7x9-to-16x11-half-pixel": (bilinear([16, 11], half_pixel_centers=True), ODD),
    "bilinear-7x9-to-13x17-align-corners": (bilinear([13, 17], align_corners=True), ODD),
    "bilinear-downscale-7x9-to-5x4": (bilinear([5, 4]), ODD),
    "bilinear-downscale-half-pixel": (bilinear([3, 4], half_pixel_centers=True), ODD),
    "mean-hw-keepdims": (mean([1, 2], True), (1, 7, 9, 16)),
    "mean-hw": (mean([1, 2], False), (1, 7, 9, 16)),
    "mean-hw-negative-axes-coarse": (mean([-3, -2], True, (0.2, -50)), (1, 7, 9, 16)),
    "mean-w": (mean([2], False), ODD),
    "mean-channels-keepdims": (mean([3], True, (0.03, -9)), (1, 7, 9, 16)),
    "mirror-pad-reflect": (mirror_pad([[0, 0], [2, 1], [1, 3], [0, 0]], "REFLECT"), ODD),
    "mirror-pad-symmetric": (mirror_pad([[0, 0], [3, 1], [0, 2], [1, 2]], "SYMMETRIC"), ODD),
    "depth-to-space-2": (depth_to_space(2), (1, 3, 4, 12)),
    "space-to-depth-2": (space_to_depth(2), (1, 6, 8, 3)),
    "transpose-hw": (transpose([0, 2, 1, 3]), ODD),
    "transpose-channels-first": (transpose([0, 3, 1, 2]), ODD),
    "split-width-3": (split([3, 3, 3], 2, [2, 0, 1]), ODD),
    "split-channels-3": (split([1, 1, 1], 3, [1, 2, 0]), ODD),
    "split-v-height": (split([2, 5], 1, [1, 0], even=False), ODD),
    "strided-slice-stride2": (strided_slice([0, 1, 0, 0], [1, 7, 9, 2], [1, 2, 1, 1], [1, 3, 9, 2]), ODD),
    "strided-slice-masks": (strided_slice([0, 2, 1, 1], [1, 0, 8, 0], [1, 1, 3, 1], [1, 5, 3, 2],
                                          begin_mask=1, end_mask=0b1010), ODD),
    "strided-slice-shrink": (strided_slice([0, 3, 0, 0], [1, 4, 9, 3], [1, 1, 2, 1], [1, 5, 3], shrink_axis_mask=2),
                             ODD),
    "strided-slice-reverse": (strided_slice([0, -1, 7, 0], [1, 0, 0, 3], [1, -1, -2, 1], [1, 7, 4, 3], end_mask=2),
                              ODD),
    "arg-max-channels": (arg_max(), (1, 7, 9, 16)),
    "arg-max-ties": (arg_max(coarse=True), (1, 7, 9, 16)),
}


# One case per op runs by default (well under 30 s); the other variants are marked slow.
FAST_INT8 = {"bilinear-2x-half-pixel", "bilinear-7x9-to-13x17-align-corners", "mean-hw-keepdims", "mean-hw",
             "mirror-pad-symmetric", "depth-to-space-2", "space-to-depth-2", "transpose-hw", "split-v-height",
             "strided-slice-masks", "arg-max-ties"}
FAST_FLOAT = {"bilinear-2x-half-pixel", "mean-hw", "mirror-pad-reflect", "arg-max-channels"}


def _params(cases, fast):
    return [pytest.param(c, id=c, marks=() if c in fast else pytest.mark.slow) for c in cases]


def _compile_and_run(path, shape, dtype, tmp_path):
    """Outputs on the seeded inputs, compiled without and with TinySeg at the smallest budget."""
    runs = {}
    for name, options in (("plain", {}), ("min", {"ram_budget": SMALLEST_FEASIBLE})):
        out_dir = str(tmp_path / name)
        compile_model(path, out_dir, **options)
        exe = host.build(out_dir)  # strict flags: -Wall -Wextra -Werror
        runs[name] = [host.run(out_dir, seeded_input(shape, dtype, seed), exe) for seed in SEEDS]
    for plain, smallest in zip(runs["plain"], runs["min"]):
        np.testing.assert_array_equal(smallest, plain)
    return runs["plain"]


def litert_reference(path, x):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("case", _params(CASES, FAST_INT8))
def test_int8_matches_tflite_micro(case, tmp_path):
    build, shape = CASES[case]
    net = Net(shape)
    path = net.save(tmp_path / "model.tflite", build(net))
    for seed, got in zip(SEEDS, _compile_and_run(path, shape, np.int8, tmp_path)):
        expected = tflm_reference(path, seeded_input(shape, np.int8, seed))
        assert got.dtype == expected.dtype and got.shape == expected.shape
        wrong = np.argwhere(got != expected)
        assert wrong.size == 0, f"seed {seed}: {len(wrong)} of {got.size} outputs differ from TFLite Micro"
        assert len(np.unique(expected)) > min(2, expected.size // 2), "degenerate reference output"


def test_int8_arg_max_int64_matches_litert(tmp_path):
    """TFLite Micro's ARG_MAX only writes int32; int64 is checked against LiteRT's reference kernel."""
    shape = (1, 7, 9, 16)
    net = Net(shape)
    path = net.save(tmp_path / "model.tflite", arg_max(np.int64, coarse=True)(net))
    for seed, got in zip(SEEDS, _compile_and_run(path, shape, np.int8, tmp_path)):
        expected = litert_reference(path, seeded_input(shape, np.int8, seed))
        assert got.dtype == expected.dtype == np.int64
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", _params([c for c in CASES if c != "arg-max-ties"], FAST_FLOAT))
def test_float_matches_litert(case, tmp_path):
    build, shape = CASES[case]
    net = FloatNet(shape)
    path = net.save(tmp_path / "model.tflite", build(net))
    for seed, got in zip(SEEDS, _compile_and_run(path, shape, np.float32, tmp_path)):
        expected = litert_reference(path, seeded_input(shape, np.float32, seed))
        assert got.dtype == expected.dtype and got.shape == expected.shape
        # relative to the output's range, as tests/test_zoo_exact.py measures float models
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), f"seed {seed}"


def test_data_movement_with_another_quantization_is_refused(tmp_path):
    """TFLite Micro would copy the codes unchanged, giving them another meaning."""
    net = Net()
    y = net.activation("transposed", [1, 9, 7, C], IN_Q[0] * 2, IN_Q[1])
    net.b.op("TRANSPOSE", [net.x, net.const("perm", [0, 2, 1, 3])], [y])
    with pytest.raises(UnsupportedModelError, match="TRANSPOSE .* quantized differently"):
        compile_model(net.save(tmp_path / "model.tflite", y))


def test_bilinear_with_both_flags_is_refused_like_tflite_micro(tmp_path):
    net = Net()
    path = net.save(tmp_path / "model.tflite", bilinear([14, 18], align_corners=True, half_pixel_centers=True)(net))
    with pytest.raises(UnsupportedModelError, match="RESIZE_BILINEAR .*align_corners"):
        compile_model(path)
    with pytest.raises(RuntimeError):
        tflm_reference(path, seeded_input(ODD, np.int8, 0))


# ---- resize → concat → conv computed inside the conv ------------------------------------------
def upsampling_unet(path, upsample, size=24, widths=(4, 8, 16)):
    """A Keras-style U-Net: two MaxPool levels, each decoder level a 1x1 conv, a 2x UpSampling2D
    (``nearest`` or half-pixel ``bilinear``), a skip concatenation and two 3x3 convs."""
    net = Net((1, size, size, 1))

    def double_conv(x, channels):
        return net.conv(net.conv(x, channels, activation="RELU"), channels, activation="RELU")

    skips, x = [], net.x
    for channels in widths[:-1]:
        x = double_conv(x, channels)
        skips.append(x)
        x = net.pool(x, "MAX_POOL_2D", (2, 2), 2, "VALID")
    x = double_conv(x, widths[-1])
    for skip, channels in zip(reversed(skips), reversed(widths[:-1])):
        x = net.conv(x, channels, kernel=1, out_q=net.qparams(skip))  # CONCATENATION needs equal qparams
        _, h, w, _ = net.shape(x)
        if upsample == "nearest":
            x = net.resize_nearest(x, [2 * h, 2 * w])
        else:
            x = bilinear([2 * h, 2 * w], half_pixel_centers=True)(net, x)
        x = double_conv(net.concat([skip, x], 3), channels)
    return net.save(path, net.conv(x, 1, kernel=1))


@pytest.mark.parametrize("upsample", [pytest.param("nearest", marks=pytest.mark.slow), "bilinear"])
def test_upsample_concat_is_computed_inside_the_conv(upsample, tmp_path):
    path = upsampling_unet(tmp_path / "model.tflite", upsample)
    out_dir = str(tmp_path / "min")
    result = compile_model(path, out_dir, ram_budget=SMALLEST_FEASIBLE)
    concat_shapes = {(1, 24, 24, 8), (1, 12, 12, 16)}
    assert not [t for t in result.table.tensors.values() if tuple(t.shape) in concat_shapes], \
        "a concatenated tensor is materialised"
    fused = [s.kernel for s in result.table.steps if "concatenate" in s.kernel]
    assert len(fused) == 2 and all(f"resize_{upsample}" in k and "_into_qconv2d" in k for k in fused), fused
    unfused = compile_model(path, tinyseg=False).memory_report["arena_bytes"]
    assert result.memory_report["arena_bytes"] < unfused
    exe = host.build(out_dir)
    for seed in SEEDS:
        x = seeded_input((1, 24, 24, 1), np.int8, seed)
        np.testing.assert_array_equal(host.run(out_dir, x, exe), tflm_reference(path, x))
