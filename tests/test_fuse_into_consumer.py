"""FuseDataMovementIntoConsumer: concat computed inside the conv that reads it."""
import numpy as np
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from tvm_tinyseg.codegen.tir_to_c import build_c_kernels
from tvm_tinyseg.passes.fuse_into_consumer import FuseDataMovementIntoConsumer
from tvm_tinyseg.passes.lifetime import analyze_lifetimes
from tvm_tinyseg.passes.mcu_schedule import MCUSchedule

W = np.random.default_rng(0).standard_normal((3, 3, 8, 4)).astype("float32")


@I.ir_module
class Before:
    @R.function
    def main(skip: R.Tensor((1, 6, 6, 4), "float32"), up: R.Tensor((1, 6, 6, 4), "float32")):
        with R.dataflow():
            c = R.concat((skip, up), axis=3)
            y = R.nn.conv2d(c, R.const(W), padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")
            z = R.nn.relu(y)
            R.output(z)
        return z


def _lowered():
    with tvm.target.Target("c"):
        return tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()])(Before)


def test_concat_disappears_into_the_conv():
    before = _lowered()
    assert [s.kernel for s in analyze_lifetimes(before["main"]).steps] == ["concatenate", "fused_conv2d_relu"]
    after = FuseDataMovementIntoConsumer()(before)
    table = analyze_lifetimes(after["main"])
    assert len(table.steps) == 1 and table.steps[0].args[:2] == ["skip", "up"]
    assert "c" not in table.tensors  # the concatenated tensor never exists


def test_fused_kernel_needs_no_workspace_and_computes_the_same():
    before = _lowered()
    with tvm.target.Target("c"):
        after = MCUSchedule(FuseDataMovementIntoConsumer()(before))
    assert set(build_c_kernels(after).workspace_bytes.values()) == {0}
    rng = np.random.default_rng(1)
    skip, up = (rng.standard_normal((1, 6, 6, 4)).astype("float32") for _ in range(2))
    outputs = []
    for mod in (before, after):
        vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
        outputs.append(vm["main"](tvm.runtime.tensor(skip), tvm.runtime.tensor(up)).numpy())
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-6, atol=1e-6)


def test_elementwise_producers_are_not_recomputed_per_tap():
    @I.ir_module
    class Elementwise:
        @R.function
        def main(x: R.Tensor((1, 6, 6, 8), "float32")):
            with R.dataflow():
                e = R.exp(x)
                y = R.nn.conv2d(e, R.const(W), padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")
                R.output(y)
            return y

    with tvm.target.Target("c"):
        mod = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern()])(
            Elementwise)
    after = FuseDataMovementIntoConsumer()(mod)
    assert len(analyze_lifetimes(after["main"]).steps) == 2


@I.ir_module
class ConcatThenReduce:
    @T.prim_func(private=True, s_tir=True)
    def concat(a: T.Buffer((T.int64(2), T.int64(4)), "int8"), b: T.Buffer((T.int64(2), T.int64(4)), "int8"),
               c: T.Buffer((T.int64(2), T.int64(8)), "int8")):
        T.func_attr({"op_pattern": 2})
        for i, j in T.grid(T.int64(2), T.int64(8)):
            with T.sblock("concat"):
                vi, vj = T.axis.remap("SS", [i, j])
                c[vi, vj] = T.if_then_else(vj < T.int64(4), a[vi, vj], b[vi, vj - T.int64(4)])

    @T.prim_func(private=True, s_tir=True)
    def row_sum(c: T.Buffer((T.int64(2), T.int64(8)), "int8"), s: T.Buffer((T.int64(2),), "int8")):
        T.func_attr({"op_pattern": 4})
        for i, k in T.grid(T.int64(2), T.int64(8)):
            with T.sblock("sum"):
                vi, vk = T.axis.remap("SR", [i, k])
                with T.init():
                    s[vi] = T.int8(0)
                s[vi] = s[vi] + c[vi, vk]

    @R.function
    def main(a: R.Tensor((2, 4), "int8"), b: R.Tensor((2, 4), "int8")) -> R.Tensor((2,), "int8"):
        cls = ConcatThenReduce
        with R.dataflow():
            c = R.call_tir(cls.concat, (a, b), out_ty=R.Tensor((2, 8), "int8"))
            s = R.call_tir(cls.row_sum, (c,), out_ty=R.Tensor((2,), "int8"))
            R.output(s)
        return s


@I.ir_module
class ConcatInsideReduce:
    @T.prim_func(private=True, s_tir=True)
    def concat_into_row_sum(p0: T.Buffer((T.int64(2), T.int64(4)), "int8"),
                            p1: T.Buffer((T.int64(2), T.int64(4)), "int8"),
                            s_intermediate: T.Buffer((T.int64(2),), "int8")):
        T.func_attr({"op_pattern": 3, "tirx.noalias": True})
        c_intermediate = T.sblock_alloc_buffer((T.int64(2), T.int64(8)), "int8")
        for i, j in T.grid(T.int64(2), T.int64(8)):
            with T.sblock("concat"):
                vi, vj = T.axis.remap("SS", [i, j])
                T.reads(p0[vi, vj], p1[vi, vj - T.int64(4)])
                T.writes(c_intermediate[vi, vj])
                c_intermediate[vi, vj] = T.if_then_else(vj < T.int64(4), p0[vi, vj], p1[vi, vj - T.int64(4)])
        for i, k in T.grid(T.int64(2), T.int64(8)):
            with T.sblock("sum"):
                vi, vk = T.axis.remap("SR", [i, k])
                T.reads(c_intermediate[vi, vk])
                T.writes(s_intermediate[vi])
                with T.init():
                    s_intermediate[vi] = T.int8(0)
                s_intermediate[vi] = s_intermediate[vi] + c_intermediate[vi, vk]

    @R.function
    def main(a: R.Tensor((2, 4), "int8"), b: R.Tensor((2, 4), "int8")) -> R.Tensor((2,), "int8"):
        cls = ConcatInsideReduce
        with R.dataflow():
            s = R.call_tir(cls.concat_into_row_sum, (a, b), out_ty=R.Tensor((2,), "int8"))
            R.output(s)
        return s


def test_fuse_matches_expected_module():
    """Before/Expected: the concat becomes the first block of its consumer's kernel (MCUSchedule
    inlines it later)."""
    tvm.ir.assert_structural_equal(FuseDataMovementIntoConsumer()(ConcatThenReduce), ConcatInsideReduce)


def test_upsample_grouped_with_its_concat_by_fuse_ops_still_fuses_into_the_conv():
    """FuseOps groups resize2d with the concat reading it; FuseTIR's kernel has no op pattern until
    the pass annotates it, and must still be computed inside the conv (UpSampling2D U-Nets)."""
    @I.ir_module
    class Upsample:
        @R.function
        def main(skip: R.Tensor((1, 6, 6, 4), "float32"), low: R.Tensor((1, 3, 3, 4), "float32")):
            with R.dataflow():
                up = R.image.resize2d(low, R.shape([6, 6]), layout="NHWC", method="nearest_neighbor",
                                      coordinate_transformation_mode="asymmetric", rounding_method="floor")
                c = R.concat((skip, up), axis=3)
                y = R.nn.conv2d(c, R.const(W), padding=[1, 1, 1, 1], data_layout="NHWC", kernel_layout="HWIO")
                R.output(y)
            return y

    with tvm.target.Target("c"):
        before = tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()])(Upsample)
    assert len(analyze_lifetimes(before["main"]).steps) == 2
    table = analyze_lifetimes(FuseDataMovementIntoConsumer()(before)["main"])
    assert len(table.steps) == 1 and sorted(table.steps[0].args[:2]) == ["low", "skip"]
