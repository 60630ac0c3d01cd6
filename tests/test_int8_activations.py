"""Activations and elementwise ops (RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU, HARD_SWISH, TANH, PRELU,
SOFTMAX, SUB, MINIMUM, MAXIMUM, SQUARED_DIFFERENCE), int8 bit-exact with TFLite Micro (LiteRT's
reference kernels for RELU_N1_TO_1, which TFLM lacks) and float within 1e-5 of LiteRT.

Unary int8 ops become 256-entry tables; ``test_table_matches_reference`` checks every table entry
against the reference run on all 256 codes, for quantizations that reach the rounding edge cases
(tiny and huge scale ratios, extreme zero points). The end-to-end tests compile one-op models to C
and compare on seeded inputs.
"""
import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from int8_net import ODD, Net
from tflite_builder import TFLiteBuilder
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.passes.int8 import activation_luts as luts
from tvm_tinyseg.boards import host

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
litert = pytest.importorskip("ai_edge_litert.interpreter")

ALL_CODES = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 1, 256)
TANH_OUT = (1.0 / 128.0, 0)
SOFTMAX_OUT = (1.0 / 256.0, -128)
# (input, output) quantizations: ordinary, tiny/huge scale ratios, extreme zero points
QUANTIZATIONS = [
    ((0.05, 0), (0.07, -1)),
    ((0.1, -128), (0.0051, 127)),
    ((0.0023, 37), (0.3, -100)),
    ((1.5, 127), (0.9, -128)),
    ((1.0 / 128.0, -5), (4.972098, -80)),
    ((0.0317, 90), (0.0317, 90)),
    ((0.00042, -60), (0.17, 3)),
]


def _reference(model, x, op_resolver=None):
    """TFLM's output; LiteRT's reference kernels for ops TFLM does not have."""
    if op_resolver is None:
        return tflm_reference(model, x)
    interpreter = litert.Interpreter(model_path=model, experimental_op_resolver_type=op_resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _unary_model(path, op, in_q, out_q, options=None, dtype=np.int8, shape=ALL_CODES.shape):
    b = TFLiteBuilder()
    quant = (lambda q: q) if dtype == np.int8 else (lambda q: None)
    x = b.tensor("x", shape, dtype, quant=quant(in_q))
    y = b.tensor("y", shape, dtype, quant=quant(out_q))
    b.op(op, [x], [y], options=options)
    b.save(str(path), inputs=[x], outputs=[y])
    return str(path)


LEAKY = ("LeakyReluOptions", {"alpha": 0.2})
NEGATIVE_LEAKY = ("LeakyReluOptions", {"alpha": -0.7})
UNARY = {
    "RELU": (None, lambda i, o: luts.relu_lut(*i, *o)),
    "RELU6": (None, lambda i, o: luts.relu6_lut(*i)),
    "LEAKY_RELU": (LEAKY, lambda i, o: luts.leaky_relu_lut(*i, *o, np.float32(0.2))),
    "LEAKY_RELU-negative-alpha": (NEGATIVE_LEAKY, lambda i, o: luts.leaky_relu_lut(*i, *o, np.float32(-0.7))),
    "HARD_SWISH": (None, lambda i, o: luts.hard_swish_lut(*i, *o)),
    "TANH": (None, lambda i, o: luts.tanh_lut(*i, *TANH_OUT)),
    "RELU_N1_TO_1": (None, lambda i, o: luts.relu_lut(*i, *o, act_min=-1.0, act_max=1.0)),
}
BUILTIN_REF = litert.OpResolverType.BUILTIN_REF


@pytest.mark.parametrize("in_q,out_q", QUANTIZATIONS, ids=[f"q{i}" for i in range(len(QUANTIZATIONS))])
@pytest.mark.parametrize("case", sorted(UNARY))
def test_table_matches_reference(case, in_q, out_q, tmp_path):
    op = case.split("-")[0]
    options, table = UNARY[case]
    out_q = TANH_OUT if op == "TANH" else out_q
    if op == "HARD_SWISH" and in_q[0] > 128 * out_q[0]:
        pytest.skip("TFLM refuses HARD_SWISH with this scale ratio (tested below)")
    model = _unary_model(tmp_path / "m.tflite", op, in_q, out_q, options)
    expected = _reference(model, ALL_CODES, BUILTIN_REF if op == "RELU_N1_TO_1" else None).reshape(256)
    got = table(in_q, out_q)
    wrong = np.nonzero(got != expected)[0]
    assert wrong.size == 0, (f"codes {(wrong - 128).tolist()[:6]}: table {got[wrong].tolist()[:6]}, "
                             f"reference {expected[wrong].tolist()[:6]}")


def test_hard_swish_refuses_what_tflm_refuses(tmp_path):
    in_q, out_q = (0.1, -128), (0.0005, 0)
    with pytest.raises(UnsupportedModelError, match="HARD_SWISH"):
        luts.hard_swish_lut(*in_q, *out_q)
    with pytest.raises(RuntimeError):
        tflm_reference(_unary_model(tmp_path / "m.tflite", "HARD_SWISH", in_q, out_q), ALL_CODES)


# ---- end to end: one-op models compiled to C -------------------------------------------------
def _unary(op, out_q=(0.043, -9), options=None):
    def build(n):
        y = n.activation(op.lower(), n.shape(n.x), *out_q)
        n.b.op(op, [n.x], [y], options=options)
        return y
    return build


def _prelu(alpha_shape, alpha_q=(0.0039, -20)):
    """PRELU as Keras exports it: alpha (1, 1, C) with shared H, W axes, or (H, W, C)."""
    def build(n):
        alpha = n.activation("alpha", alpha_shape, *alpha_q,
                             data=n.rng.integers(-128, 128, alpha_shape, dtype=np.int8))
        y = n.activation("prelu", n.shape(n.x), 0.031, -40)
        n.b.op("PRELU", [n.x, alpha], [y])
        return y
    return build


def _binary(op, other, out_q, options=None):
    def build(n):
        b = other(n)
        y = n.activation(op.lower(), list(np.broadcast_shapes(tuple(n.shape(n.x)), tuple(n.shape(b)))), *out_q)
        n.b.op(op, [n.x, b], [y], options=options)
        return y
    return build


def _constant(shape, q):
    return lambda n: n.activation("k", shape, *q, data=n.rng.integers(-128, 128, shape, dtype=np.int8))


def _softmax(channels, logits_q=(0.09, 4)):
    def build(n):
        logits = n.conv(n.x, channels, kernel=1, out_q=logits_q)
        y = n.activation("softmax", n.shape(logits), *SOFTMAX_OUT)
        n.b.op("SOFTMAX", [logits], [y], options=("SoftmaxOptions", {"beta": 1.0}))
        return y
    return build


H, W, C = ODD[1:]
SUB = ("SubOptions", {"fused_activation_function": "NONE"})
EXACT_CASES = {
    "relu": _unary("RELU"),
    "relu6": _unary("RELU6"),
    "leaky-relu": _unary("LEAKY_RELU", options=LEAKY),
    "hard-swish": _unary("HARD_SWISH"),
    "tanh": _unary("TANH", TANH_OUT),
    "prelu-channel-alpha": _prelu([1, 1, C]),
    "prelu-full-alpha": _prelu([H, W, C]),
    "prelu-alpha-extreme-zero-point": _prelu([1, 1, C], (0.05, 127)),
    "softmax-6": _softmax(6),
    "softmax-21": _softmax(21),
    # a coarse scale: most differences fall below TFLM's diff_min and are skipped
    "softmax-coarse-scale": _softmax(5, (1.7, -128)),
    "softmax-fine-scale": _softmax(8, (0.004, 127)),
    "sub-broadcast-channel": _binary("SUB", _constant([1, 1, 1, C], (0.021, -31)), (0.05, 4), SUB),
    "sub-broadcast-spatial": _binary("SUB", _constant([1, H, W, 1], (0.08, 12)), (0.06, -3),
                                     ("SubOptions", {"fused_activation_function": "RELU"})),
    "sub-extreme-scales": _binary("SUB", _constant([1, 1, 1, C], (4.7, 127)), (0.9, -128), SUB),
    "squared-difference": _binary("SQUARED_DIFFERENCE", _constant([1, 1, 1, C], (0.03, 7)), (0.04, -128)),
    "minimum": _binary("MINIMUM", _constant([1, 1, 1, C], (0.047, -7)), (0.047, -7)),
    "maximum-spatial": _binary("MAXIMUM", _constant([1, H, W, 1], (0.047, -7)), (0.047, -7)),
    "add-broadcast-spatial": _binary("ADD", _constant([1, H, W, 1], (0.03, 5)), (0.06, 2),
                                     ("AddOptions", {"fused_activation_function": "NONE"})),
    "mul-broadcast-spatial": _binary("MUL", _constant([1, H, W, 1], (0.03, 5)), (0.02, 2),
                                     ("MulOptions", {"fused_activation_function": "NONE"})),
}


def _compile_and_run(path, tmp_path):
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir)
    exe = host.build(out_dir)  # strict flags: -Wall -Wextra -Werror
    return lambda x: host.run(out_dir, x, exe)


# variations of what a faster case already covers (`make test` still runs them)
SLOW_CASES = {"softmax-21", "prelu-full-alpha", "mul-broadcast-spatial",
              "maximum-spatial", "sub-broadcast-channel", "relu"}


def _cases(names, slow=frozenset()):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in sorted(names)]


@pytest.mark.parametrize("case", _cases(EXACT_CASES, SLOW_CASES))
def test_int8_op_matches_tflite_micro(case, tmp_path):
    net = Net(ODD)
    path = net.save(tmp_path / "model.tflite", EXACT_CASES[case](net))
    run = _compile_and_run(path, tmp_path)
    for seed in SEEDS:
        x = seeded_input(ODD, np.int8, seed)
        got, expected = run(x), tflm_reference(path, x)
        assert got.dtype == expected.dtype == np.int8 and got.shape == expected.shape
        wrong = np.argwhere(got != expected)
        assert wrong.size == 0, (
            f"seed {seed}: {len(wrong)} of {got.size} outputs differ from TFLite Micro, first at "
            f"{tuple(wrong[0])}: {got[tuple(wrong[0])]} vs {expected[tuple(wrong[0])]}")
        assert len(np.unique(expected)) > 8, "degenerate reference output: the check would prove little"


def test_int8_relu_n1_to_1_matches_litert_reference_kernels(tmp_path):
    """TFLM has no RELU_N1_TO_1: LiteRT's reference kernels are the reference."""
    net = Net(ODD)
    path = net.save(tmp_path / "model.tflite", _unary("RELU_N1_TO_1", (0.009, 4))(net))
    run = _compile_and_run(path, tmp_path)
    for seed in SEEDS:
        x = seeded_input(ODD, np.int8, seed)
        got, expected = run(x), _reference(path, x, BUILTIN_REF)
        assert got.dtype == expected.dtype == np.int8
        assert np.array_equal(got, expected), f"seed {seed}: {int((got != expected).sum())} outputs differ"
        assert len(np.unique(expected)) > 8


# ---- float: the same ops in float32, against LiteRT ------------------------------------------
def _float_model(path, op, other_shape=None, options=None):
    rng = np.random.default_rng(7)
    b = TFLiteBuilder()
    x = b.tensor("x", ODD, np.float32)
    inputs = [x]
    if other_shape is not None:
        inputs.append(b.tensor("k", other_shape, np.float32, data=rng.standard_normal(other_shape).astype(np.float32)))
    y = b.tensor("y", ODD, np.float32)
    b.op(op, inputs, [y], options=options)
    b.save(str(path), inputs=[x], outputs=[y])
    return str(path)


FLOAT_CASES = {
    "relu": ("RELU", None, None), "relu6": ("RELU6", None, None), "relu-n1-to-1": ("RELU_N1_TO_1", None, None),
    "leaky-relu": ("LEAKY_RELU", None, LEAKY), "hard-swish": ("HARD_SWISH", None, None),
    "tanh": ("TANH", None, None), "softmax": ("SOFTMAX", None, ("SoftmaxOptions", {"beta": 1.0})),
    "prelu-channel-alpha": ("PRELU", [1, 1, C], None), "prelu-full-alpha": ("PRELU", [H, W, C], None),
    "sub-broadcast-spatial": ("SUB", [1, H, W, 1], SUB), "minimum": ("MINIMUM", [1, 1, 1, C], None),
    "maximum": ("MAXIMUM", [1, H, W, 1], None), "squared-difference": ("SQUARED_DIFFERENCE", [1, 1, 1, C], None),
}


@pytest.mark.parametrize("case", _cases(FLOAT_CASES, {"relu", "relu6", "prelu-full-alpha", "maximum"}))
def test_float_op_matches_litert(case, tmp_path):
    op, other_shape, options = FLOAT_CASES[case]
    path = _float_model(tmp_path / "model.tflite", op, other_shape, options)
    run = _compile_and_run(path, tmp_path)
    for seed in SEEDS:
        x = 4.0 * seeded_input(ODD, np.float32, seed)
        got, expected = run(x), _reference(path, x, BUILTIN_REF)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


# ---- float model inputs and outputs around an int8 network: QUANTIZE and DEQUANTIZE ----------
@pytest.mark.parametrize("in_q", [(0.0625, -128), (0.0371, 17)], ids=["pow2-scale-ties", "scale-0.0371"])
def test_float_io_quantize_dequantize_match_tflite_micro(in_q, tmp_path):
    """float → QUANTIZE → HARD_SWISH → DEQUANTIZE → float. With a power-of-two scale, half of the
    inputs are exact ties (k + 0.5) * scale, which TFLM rounds away from zero, and some are far out
    of the int8 range."""
    b = TFLiteBuilder()
    x = b.tensor("x", ODD, np.float32)
    q = b.tensor("q", ODD, np.int8, quant=in_q)
    h = b.tensor("h", ODD, np.int8, quant=(0.029, -100))
    y = b.tensor("y", ODD, np.float32)
    b.op("QUANTIZE", [x], [q])
    b.op("HARD_SWISH", [q], [h])
    b.op("DEQUANTIZE", [h], [y])
    path = str(tmp_path / "model.tflite")
    b.save(path, inputs=[x], outputs=[y])
    run = _compile_and_run(path, tmp_path)
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        ties = (rng.integers(-400, 400, ODD) + 0.5).astype(np.float32) * np.float32(in_q[0])
        x_in = np.where(rng.random(ODD) < 0.5, ties, 5.0 * seeded_input(ODD, np.float32, seed)).astype(np.float32)
        got, expected = run(x_in), tflm_reference(path, x_in)
        assert got.dtype == expected.dtype == np.float32
        assert np.array_equal(got, expected), f"seed {seed}: {int((got != expected).sum())} outputs differ"
        assert len(np.unique(expected)) > 8


def test_uint8_io_requantize_matches_tflite_micro(tmp_path):
    """uint8 → QUANTIZE → HARD_SWISH → QUANTIZE → uint8 (uint8 models' input/output conversion),
    with a scale change on each side so the requantization rounds."""
    b = TFLiteBuilder()
    x = b.tensor("x", ODD, np.uint8, quant=(0.05, 131))
    q = b.tensor("q", ODD, np.int8, quant=(0.043, 2))
    h = b.tensor("h", ODD, np.int8, quant=(0.029, -100))
    y = b.tensor("y", ODD, np.uint8, quant=(0.021, 9))
    b.op("QUANTIZE", [x], [q])
    b.op("HARD_SWISH", [q], [h])
    b.op("QUANTIZE", [h], [y])
    path = str(tmp_path / "model.tflite")
    b.save(path, inputs=[x], outputs=[y])
    run = _compile_and_run(path, tmp_path)
    for seed in SEEDS:
        x_in = np.random.default_rng(seed).integers(0, 256, ODD, dtype=np.uint8)
        got, expected = run(x_in), tflm_reference(path, x_in)
        assert got.dtype == expected.dtype == np.uint8
        assert np.array_equal(got, expected), f"seed {seed}: {int((got != expected).sum())} outputs differ"
        assert len(np.unique(expected)) > 8


# ---- the lowering rules on small Relax modules -------------------------------------------------
def _hard_swish_module(fused_clip):
    from tvm.script import ir as I
    from tvm.script import relax as R

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 4, 4, 3), "int8")) -> R.Tensor((1, 4, 4, 3), "int8"):
            with R.dataflow():
                d = R.dequantize(x, R.const(0.05, "float32"), R.const(3, "int32"), axis=0)
                shifted = R.add(d, R.const(3.0, "float32"))
                relu6 = R.clip(shifted, 0.0, 6.0)
                product = R.multiply(d, relu6)
                swish = R.divide(product, R.const(6.0, "float32"))
                q = R.quantize(swish, R.const(0.07, "float32"), R.const(-1, "int32"), out_dtype="int8", axis=0)
                r = R.clip(q, R.prim_value(fused_clip[0]), R.prim_value(fused_clip[1]))
                R.output(r)
            return r

    return Before


def test_hard_swish_region_becomes_one_table_lookup():
    """The frontend's float HARD_SWISH expression between dequantize and quantize, and a following
    int8 clip, become one lookup in TFLM's table clamped to the clip."""
    from tvm_tinyseg.passes.lower_fake_quant import LowerFakeQuantToInteger

    after = LowerFakeQuantToInteger()(_hard_swish_module((0, 50)))
    bindings = after["main"].body.blocks[0].bindings
    assert len(bindings) == 1
    x, table = bindings[0].value.args[1].fields
    unclipped = luts.hard_swish_lut(np.float32(0.05), 3, np.float32(0.07), -1)
    assert unclipped.min() < 0 and unclipped.max() > 50  # so the clip must show in the table
    np.testing.assert_array_equal(table.value.numpy(), np.clip(unclipped, 0, 50))
    assert "float" not in after.script()


def test_softmax_beta_other_than_one_is_refused(tmp_path):
    """TVM's converter would silently drop beta; the model is refused instead."""
    model = _unary_model(tmp_path / "m.tflite", "SOFTMAX", (0.1, 0), SOFTMAX_OUT, ("SoftmaxOptions", {"beta": 2.0}))
    with pytest.raises(UnsupportedModelError, match="beta 2"):
        compile_model(model)
