"""Models as users write them (models/user/, made by models/generate_user_models.py): each compiles
without TinySeg and with the smallest RAM budget, and matches its reference runtime on 3 seeded
inputs: TFLite Micro bit-exactly (int8 .tflite; for RESHAPE/TILE upsampling, which TFLite Micro
lacks, TFLite Micro on the equivalent RESIZE_NEAREST_NEIGHBOR model), LiteRT's reference kernels
within 1e-5 relative (float), onnxruntime within ONNX_LSB_BOUND (QDQ).

NOT_YET lists the models that do not compile (or match) today, with what is in the way. Its
entries are strict xfails: a model that starts to pass fails the suite until its entry is removed.
"""
import importlib
import os

import numpy as np
import pytest

from conftest import SEEDS, seeded_input, tflm_reference
from onnx_reference import onnxruntime_output
from tvm_tinyseg.frontend.tflite_converter import builtin_code
from tvm_tinyseg.models import MODELS_DIR
from tvm_tinyseg.boards import host

USER_MODELS = os.path.join(MODELS_DIR, "user")
TFLM_OPS_FILE = os.path.join(os.path.dirname(MODELS_DIR), "docs", "tflm_builtin_ops.txt")

NOT_YET = {}  # every model matches its reference today

# Compiling and running one of these takes about 10 s per configuration: all but QUICK are marked
# slow (deselected by -m "not slow"), so the quick suite stays quick as more of them compile.
QUICK = {"unet_sepconv_keras3_b1.tflite"}

CONFIGS = {"no_tinyseg": dict(tinyseg=False), "tinyseg_min": dict(ram_budget=-1)}

# The largest |ours - onnxruntime| allowed, in whole steps of the output's quantization (LSB).
# onnxruntime leaves some Conv and the ConvTranspose of torch_unet_qdq.onnx in float (DQ → float op →
# Q), whose float32 sum rounds the other way than the fused QLinear arithmetic we follow when the
# value lies within ~1e-5 LSB of a rounding tie: 1 LSB at that op, up to 2 at the output once it
# propagates (docs/onnx-int8.md, "Residual differences").
ONNX_LSB_BOUND = 2
FLOAT_TOLERANCE = 1e-5

# Ops TFLite Micro has but computes wrongly in int8: models with them are checked against LiteRT's
# reference kernels (bit-exact). TFLM's SPACE_TO_BATCH_ND leaves its padding unset, so a dilated
# conv exported as SPACE_TO_BATCH_ND → CONV_2D → BATCH_TO_SPACE_ND gives ~99 % different outputs.
TFLM_WRONG = {"SPACE_TO_BATCH_ND"}

# Keras 3 models whose reference is their tf_keras twin (see the twin test below).
TWINS = {f"{arch}_{style}.tflite": f"{arch}_tfkeras.tflite"
         for arch in ("unet_nearest", "unet_nearest_softmax") for style in ("keras3", "keras3_b1")}


def user_models():
    return sorted(f for f in os.listdir(USER_MODELS) if f.endswith((".tflite", ".onnx")))


def _params():
    params = []
    for name in user_models():
        for config in CONFIGS:
            marks = [] if name in QUICK else [pytest.mark.slow]
            if name in NOT_YET:
                marks.append(pytest.mark.xfail(strict=True, reason=NOT_YET[name]))
            params.append(pytest.param(name, config, id=f"{name}-{config}", marks=marks))
    return params


def tflite_ops(path) -> set:
    """The builtin op names of a .tflite file."""
    schema = importlib.import_module("tflite.Model").Model
    names = {code: name for name, code in vars(importlib.import_module("tflite.BuiltinOperator").BuiltinOperator)
             .items() if not name.startswith("_")}
    with open(path, "rb") as f:
        model = schema.GetRootAsModel(f.read(), 0)
    graph = model.Subgraphs(0)
    ops = set()
    for i in range(graph.OperatorsLength()):
        ops.add(names.get(builtin_code(model.OperatorCodes(graph.Operators(i).OpcodeIndex())), "CUSTOM"))
    return ops


def tflm_ops() -> set:
    with open(TFLM_OPS_FILE) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def litert_output(path, x, resolver="BUILTIN_REF"):
    """LiteRT's output with its reference kernels (or another resolver: see the twin test)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=path, experimental_op_resolver_type=getattr(OpResolverType, resolver))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def onnx_output_step(path) -> float:
    """The quantization step of a QDQ model's output (the scale of its last DequantizeLinear)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    (last,) = [n for n in graph.node if graph.output[0].name in n.output]
    assert last.op_type == "DequantizeLinear", last.op_type
    return float(initializers[last.input[1]])


def _check_tflite_int8(path, got, x, seed):
    twin = TWINS.get(os.path.basename(path))
    ops = tflite_ops(path)
    if ops <= tflm_ops() and not ops & TFLM_WRONG:
        expected, runtime = tflm_reference(path, x), "TFLite Micro"
    elif twin:
        expected, runtime = tflm_reference(os.path.join(USER_MODELS, twin), x), f"TFLite Micro on {twin}"
    else:
        expected, runtime = litert_output(path, x), "LiteRT"
    assert got.dtype == expected.dtype and got.shape == expected.shape
    mismatches = int(np.count_nonzero(got != expected))
    assert mismatches == 0, f"seed {seed}: {mismatches} of {got.size} outputs differ from {runtime}"
    assert len(np.unique(expected)) > 8, "degenerate reference output: the check would prove little"


@pytest.mark.parametrize("name, config", _params())
def test_user_model_matches_reference(name, config, compiled_zoo):
    path = os.path.join(USER_MODELS, name)
    result, out_dir, exe = compiled_zoo.get(path, **CONFIGS[config])
    spec = result.io_spec["input"]
    for seed in SEEDS:
        x = seeded_input(spec["shape"], spec["dtype"], seed)
        got = host.run(out_dir, x, exe)
        if name.endswith(".onnx"):
            expected = onnxruntime_output(path, x)
            lsb = int(np.rint(np.abs(got - expected) / onnx_output_step(path)).max())
            assert lsb <= ONNX_LSB_BOUND, f"seed {seed}: {lsb} LSB from onnxruntime"
        elif spec["dtype"] == "int8":
            _check_tflite_int8(path, got, x, seed)
        else:
            expected = litert_output(path, x)
            assert got.shape == expected.shape
            error = float(np.abs(got - expected).max() / np.abs(expected).max())
            assert error <= FLOAT_TOLERANCE, f"seed {seed}: relative error {error:.2e} from LiteRT"


@pytest.mark.parametrize("name", sorted(TWINS))
def test_tile_upsampling_model_equals_its_resize_twin(name):
    """The reference for a model with Keras 3's RESHAPE/TILE nearest upsampling, which TFLite Micro
    cannot run and LiteRT's reference kernels lack (int8 TILE), is its tf_keras twin (same weights
    and calibration, RESIZE_NEAREST_NEIGHBOR) in TFLite Micro. Check that the two are the same
    model: LiteRT's builtin kernels, which run both (and round unlike TFLite Micro, hence not the
    reference), give the same bytes. Needs no compiler: holds while the model is in NOT_YET."""
    tiled, twin = os.path.join(USER_MODELS, name), os.path.join(USER_MODELS, TWINS[name])
    assert "TILE" in tflite_ops(tiled) and "TILE" not in tflite_ops(twin)
    for seed in SEEDS:
        x = seeded_input((1, 64, 64, 3), np.int8, seed)
        np.testing.assert_array_equal(litert_output(tiled, x, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"),
                                      litert_output(twin, x, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"))
