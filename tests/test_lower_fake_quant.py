"""LowerFakeQuantToInteger on small Relax modules (TVM's Before/Expected style)."""
import numpy as np
import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.passes.lower_fake_quant import LowerFakeQuantToInteger


def test_concat_with_shared_qparams_becomes_an_int8_concat():
    @I.ir_module
    class Before:
        @R.function
        def main(a: R.Tensor((1, 4, 4, 2), "int8"),
                 b: R.Tensor((1, 4, 4, 3), "int8")) -> R.Tensor((1, 4, 4, 5), "int8"):
            with R.dataflow():
                da = R.dequantize(a, R.const(0.5, "float32"), R.const(3, "int32"), axis=0)
                db = R.dequantize(b, R.const(0.5, "float32"), R.const(3, "int32"), axis=0)
                c = R.concat((da, db), axis=3)
                q = R.quantize(c, R.const(0.5, "float32"), R.const(3, "int32"), out_dtype="int8", axis=0)
                R.output(q)
            return q

    @I.ir_module
    class Expected:
        @R.function
        def main(a: R.Tensor((1, 4, 4, 2), "int8"),
                 b: R.Tensor((1, 4, 4, 3), "int8")) -> R.Tensor((1, 4, 4, 5), "int8"):
            with R.dataflow():
                q = R.concat((a, b), axis=3)
                R.output(q)
            return q

    tvm.ir.assert_structural_equal(LowerFakeQuantToInteger()(Before), Expected)


def test_requantize_to_the_same_qparams_is_the_identity():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8), "int8")) -> R.Tensor((1, 8), "int8"):
            with R.dataflow():
                d = R.dequantize(x, R.const(0.25, "float32"), R.const(-1, "int32"), axis=0)
                q = R.quantize(d, R.const(0.25, "float32"), R.const(-1, "int32"), out_dtype="int8", axis=0)
                R.output(q)
            return q

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 8), "int8")) -> R.Tensor((1, 8), "int8"):
            return x

    tvm.ir.assert_structural_equal(LowerFakeQuantToInteger()(Before), Expected)


def _conv_module():
    w = np.random.default_rng(0).integers(-127, 128, (3, 3, 4, 8), dtype=np.int8)  # HWIO
    w_scale = np.linspace(0.01, 0.02, 8).astype(np.float32)
    bias = np.arange(8, dtype=np.int32) * 10

    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 6, 6, 4), "int8")) -> R.Tensor((1, 6, 6, 8), "int8"):
            with R.dataflow():
                dx = R.dequantize(x, R.const(0.05, "float32"), R.const(-3, "int32"), axis=0)
                dw = R.dequantize(R.const(w, "int8"), R.const(w_scale, "float32"), R.const(0, "int32"), axis=3)
                y = R.nn.conv2d(dx, dw, padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")
                db = R.dequantize(R.const(bias, "int32"), R.const(w_scale * np.float32(0.05), "float32"),
                                  R.const(0, "int32"), axis=0)
                yb = R.add(y, db)
                q = R.quantize(yb, R.const(0.1, "float32"), R.const(-128, "int32"), out_dtype="int8", axis=0)
                r = R.clip(q, R.prim_value(-128), R.prim_value(127))
                R.output(r)
            return r

    return Before, w


def test_conv_bias_and_relu_become_one_integer_kernel():
    before, w = _conv_module()
    after = LowerFakeQuantToInteger()(before)
    bindings = after["main"].body.blocks[0].bindings
    assert len(bindings) == 1
    call = bindings[0].value
    assert call.op == tvm.ir.Op.get("relax.call_tir")
    kernel, args = after[call.args[0]], call.args[1].fields
    assert [str(a.ty.dtype) for a in args] == ["int8", "int8", "int32", "int32", "int32"]
    np.testing.assert_array_equal(args[1].value.numpy(), np.transpose(w, (3, 0, 1, 2)))  # weights stay int8, OHWI
    assert "float" not in after["main"].script() and "float" not in kernel.script()
    assert "tinyseg_mbqm" in kernel.script()


def test_unsupported_quantized_op_is_named():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 8), "int8")) -> R.Tensor((1, 8), "int8"):
            with R.dataflow():
                d = R.dequantize(x, R.const(0.25, "float32"), R.const(-1, "int32"), axis=0)
                t = R.exp(d)
                q = R.quantize(t, R.const(1 / 128, "float32"), R.const(0, "int32"), out_dtype="int8", axis=0)
                R.output(q)
            return q

    with pytest.raises(UnsupportedModelError, match="quantized exp"):
        LowerFakeQuantToInteger()(Before)


def test_float_models_are_left_alone():
    @I.ir_module
    class Float:
        @R.function
        def main(x: R.Tensor((1, 8), "float32")) -> R.Tensor((1, 8), "float32"):
            with R.dataflow():
                y = R.nn.relu(x)
                R.output(y)
            return y

    tvm.ir.assert_structural_equal(LowerFakeQuantToInteger()(Float), Float)
