"""The quick subset of the differential fuzzer (tests/fuzz_differential.py): fixed cases of mutated
models through the reference runtime and through this compiler (C built with -Werror and run);
every case must end in an OK class. The long run is ``python tests/fuzz_differential.py --count 2000``
(its last result: docs/reliability.md)."""
import os
import tempfile

import numpy as np
import pytest

import fuzz_differential as fuzz

QUICK_SEED = 2026
QUICK_CASES = 22  # about 2 s each on one core

@pytest.mark.parametrize("base", sorted(fuzz.BASES))
def test_unmutated_base_matches_its_reference(base):
    """Without this the fuzzer would prove nothing: each base model runs on its reference and here,
    with the same output."""
    ext, reference, _ = fuzz.BASES[base]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model" + ext)
        with open(path, "wb") as f:
            f.write(fuzz.base_bytes(base))
        ref_class, inputs, expected = fuzz.reference_outputs(path, reference)
        assert ref_class == "ok", inputs
        ours, got, spec = fuzz.our_outputs(path, tmp, inputs)
    assert ours == "ok", got
    for g, e in zip(got, expected):
        assert fuzz.compare(g, e, integer=spec["dtype"] == "int8") is None
        assert len(np.unique(e)) > 4, "a near-constant reference output would hide differences"


def test_compare_sees_differences():
    a = np.array([1.0, np.nan, np.inf, 2.0], np.float32)
    assert fuzz.compare(a, a.copy(), integer=False) is None
    assert "NaN" in fuzz.compare(np.array([1.0, 0, np.inf, 2.0], np.float32), a, integer=False)
    assert "infinities" in fuzz.compare(np.array([1.0, np.nan, -np.inf, 2.0], np.float32), a, integer=False)
    assert "relative error" in fuzz.compare(np.array([1.0, np.nan, np.inf, 2.1], np.float32), a, integer=False)
    assert "1 of 2" in fuzz.compare(np.array([1, 2], np.int8), np.array([1, 3], np.int8), integer=True)
    assert "reference's" in fuzz.compare(np.zeros(3, np.int8), np.zeros(4, np.int8), integer=True)


def test_cases_are_reproducible_and_mutate():
    for i in range(8):
        first, again = fuzz.make_case(QUICK_SEED, i), fuzz.make_case(QUICK_SEED, i)
        assert first == again
        assert first[3] != fuzz.base_bytes(first[0]) or first[4].startswith(("field", "opcode", "onnx"))


def test_quick_differential_subset():
    results = fuzz.run_cases(QUICK_SEED, range(QUICK_CASES), jobs=1)
    assert len(results) == QUICK_CASES
    failures = [r for r in results if r["class"] in fuzz.FAILURE_CLASSES]
    assert not failures, "\n".join(
        f"{r['class']}: case {r['index']} ({r['base']}, {r['kind']}): {r['detail']} "
        f"[python tests/fuzz_differential.py --seed {QUICK_SEED} --case {r['index']}]" for r in failures)
    verdicts = {r["class"] for r in results}
    assert verdicts & {"match"} and verdicts & {"both-refuse", "refused"}, f"too one-sided to prove much: {verdicts}"


def _run_onnx_variant(base, edit, tmp_path):
    """The base ONNX net with ``edit(model)`` applied, through onnxruntime and this compiler."""
    import onnx

    model = onnx.load_from_string(fuzz.base_bytes(base))
    edit(model)
    path = str(tmp_path / "variant.onnx")
    onnx.save(model, path)
    reference = fuzz.reference_outputs(path, "onnxruntime")
    return reference, fuzz.our_outputs(path, str(tmp_path), reference[1] if reference[0] == "ok" else None)


def test_non_finite_attribute_is_refused_by_name(tmp_path):
    """Found by the fuzzer: a NaN LeakyRelu slope was printed as `nanf`, and the C did not build.
    onnxruntime outputs NaN; the model is refused in one line naming the node and attribute (the
    kernels' inline infinities, e.g. the ONNX importer's where(x, -inf) for an absent Clip bound,
    still become C's INFINITY: the unmutated onnx_unet base matches onnxruntime)."""
    def nan_slope(model):
        next(n for n in model.graph.node if n.op_type == "LeakyRelu").attribute[0].f = float("nan")

    (ref_class, _, expected), (ours, message, _) = _run_onnx_variant("onnx_batchnorm", nan_slope, tmp_path)
    assert ref_class == "ok" and np.isnan(expected[0]).any()
    assert ours == "refused" and "LeakyRelu" in message and "'alpha'" in message and "\n" not in message


def test_clip_with_min_above_max_is_refused(tmp_path):
    """Found by the fuzzer: onnxruntime gives max everywhere, TVM's clip gave min."""
    import onnx

    def raise_min(model):
        init = next(i for i in model.graph.initializer if i.name == "zero")
        init.CopyFrom(onnx.numpy_helper.from_array(np.float32(7.0), "zero"))

    (ref_class, _, _), (ours, message, _) = _run_onnx_variant("onnx_unet", raise_min, tmp_path)
    assert ref_class == "ok" and ours == "refused"
    assert "Clip node #4 'relu6': min 7.0 is above max 6.0" in message


LONG_RUN_CASES = {14: {33: "both-refuse", 87: "both-refuse", 921: "both-refuse", 1236: "both-refuse",
                        1488: "both-refuse"},
                   15: {1360: "refused"},
                   16: {727: "refused", 844: "both-refuse", 1998: "refused"},
                   17: {993: "both-refuse"}}


@pytest.mark.slow
@pytest.mark.parametrize("seed", sorted(LONG_RUN_CASES))
def test_cases_the_long_run_found(seed):
    """Found by the 2000-case run of seed 14: an ONNX initializer whose dims no longer match its
    data (33: numpy's reshape error was an internal error), a TRANSPOSE_CONV whose output_shape
    constant asks for batch 3 where its output is declared batch 1 (87: LiteRT refuses; it was
    accepted with the declared shape), an input scale of 1e30 before an ADD (921: TFLite Micro
    aborts in Prepare; it was compiled), a CONV_2D whose first input is marked omitted (1236: -1;
    the flatbuffers package's TypeError was an internal error), and a CONV_2D with 5 inputs (1488:
    TFLite Micro refuses; it was accepted). By the run of seed 15: a CONV_2D given another conv's
    1-value bias for its 8 channels (1360: TFLite Micro reads past the bias; it was compiled with the
    value broadcast, a silent difference). By the run of seed 16: an ONNX Resize scale of 2.0039 on
    8 pixels (727: onnxruntime maps pixels through the scale, TVM through the sizes' ratio), a PAD
    output declared a scalar (844: TFLite Micro refuses; the declared shape was not checked), a batch
    norm gamma of 2.9e38 (1998: NaNs where float32 overflows in another order than onnxruntime's).
    By the run of seed 17: an opcode edited to MATRIX_SET_DIAG (993: TVM imports it as a runtime
    library call; an internal error).
    In worker processes, as the long runs have them: the reference aborts on 921."""
    results = fuzz.run_cases(seed, sorted(LONG_RUN_CASES[seed]))
    assert {r["index"]: r["class"] for r in results} == LONG_RUN_CASES[seed], results
