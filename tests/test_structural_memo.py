"""structural_memo: an analysis runs once per structurally equal kernel, never shares a result
between kernels that differ."""
from tvm.script import tirx as T

from tvm_tinyseg.passes.structural_memo import structural_memo


def _kernel(scale: int):
    @T.prim_func
    def kernel(a: T.Buffer((4,), "int8"), b: T.Buffer((4,), "int8")):
        for i in range(4):
            b[i] = a[i] * T.int8(scale)

    return kernel


def test_structurally_equal_kernels_share_one_result_and_others_do_not():
    calls = []

    @structural_memo(size=8)
    def analysis(func, extra):
        calls.append(extra)
        return (len(calls), extra)

    first = analysis(_kernel(2), "x")
    assert analysis(_kernel(2), "x") == first  # a new but equal object: recalled
    assert analysis(_kernel(3), "x") != first  # another constant: computed
    assert analysis(_kernel(2), "y") != first  # other arguments: computed
    assert calls == ["x", "x", "y"]


def test_least_recently_used_results_are_dropped():
    calls = []

    @structural_memo(size=1)
    def analysis(func):
        calls.append(func)
        return len(calls)

    analysis(_kernel(2))
    analysis(_kernel(3))
    analysis(_kernel(2))
    assert len(calls) == 3
