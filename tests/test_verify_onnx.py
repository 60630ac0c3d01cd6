"""Non-finite ONNX parameters: wherever onnxruntime outputs NaN or infinity, the compiler refuses
the model in one line naming the initializer or node, and writes no C (before, a NaN epsilon gave
C containing ``nanf`` that did not build, and a NaN or negative variance gave finite outputs).
A QDQ scale that is not positive is refused too."""
import os
import re

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import MODELS, seeded_input
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import ModelFileError
from tvm_tinyseg.frontend import load_model
from tvm_tinyseg.boards import host

C = 3
SHAPE = [1, C, 4, 4]
NAN, INF = float("nan"), float("inf")


def _save(path, nodes, initializers):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializers),
                              opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _init(name, values):
    return numpy_helper.from_array(np.asarray(values, np.float32), name)


def batch_norm(path, variance=(1.0, 0.5, 2.0), epsilon=1e-5):
    initializers = [_init("scale", [1.0, 2.0, 0.5]), _init("bias", [0.1, 0.0, -0.1]),
                    _init("mean", [0.0, 0.2, -0.3]), _init("var", variance)]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], name="bn",
                            epsilon=epsilon)
    return _save(path, [node], initializers)


def leaky_relu(path, alpha=0.1):
    return _save(path, [helper.make_node("LeakyRelu", ["x"], ["y"], name="leaky", alpha=alpha)], [])


def add_constant(path, value):
    constant = helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(
        np.array([1.0, value, 1.0], np.float32).reshape(1, C, 1, 1)))
    return _save(path, [constant, helper.make_node("Add", ["x", "c"], ["y"], name="add")], [])


def add_sqrt_of(path, values):
    """y = x + sqrt(c): onnxruntime computes NaN for a negative c; TVM folds it into a weight."""
    nodes = [helper.make_node("Sqrt", ["c"], ["r"], name="sqrt"),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    return _save(path, nodes, [_init("c", np.reshape(values, (1, C, 1, 1)))])


CASES = {
    "bn_variance_nan": (lambda p: batch_norm(p, variance=(1.0, NAN, 2.0)),
                        "initializer 'var' holds 1 non-finite values"),
    "bn_variance_negative": (lambda p: batch_norm(p, variance=(1.0, -1.0, 2.0)),
                             "BatchNormalization node #0 'bn': variance + epsilon is -0.99999 in channel 1"),
    "bn_variance_zero_epsilon_zero": (lambda p: batch_norm(p, variance=(1.0, 0.0, 2.0), epsilon=0.0),
                                      "BatchNormalization node #0 'bn': variance + epsilon is 0 in channel 1"),
    "bn_epsilon_nan": (lambda p: batch_norm(p, epsilon=NAN),
                       "BatchNormalization node #0 'bn' attribute 'epsilon' holds 1 non-finite values"),
    "leaky_relu_alpha_nan": (lambda p: leaky_relu(p, alpha=NAN),
                             "LeakyRelu node #0 'leaky' attribute 'alpha' holds 1 non-finite values"),
    "constant_inf": (lambda p: add_constant(p, INF), "Constant node #0 'const' attribute 'value' holds 1 non-finite"),
    "sqrt_of_negative_constant": (lambda p: add_sqrt_of(p, [1.0, -1.0, 4.0]),
                                  "the model's constants compute NaN or infinity"),
}


def _onnxruntime(path):
    session = onnxruntime.InferenceSession(path)
    return session.run(None, {"x": seeded_input(SHAPE, np.float32, 0)})[0]


@pytest.mark.parametrize("case", list(CASES))
def test_where_onnxruntime_outputs_non_finite_values_the_model_is_refused(case, tmp_path):
    make, message = CASES[case]
    path = make(tmp_path / f"{case}.onnx")
    assert not np.isfinite(_onnxruntime(path)).all()
    out_dir = tmp_path / "out"
    with pytest.raises(ModelFileError) as info:
        compile_model(path, str(out_dir))
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value)
    assert not out_dir.exists()  # no C, least of all with nanf in it


@pytest.mark.parametrize("make", [batch_norm, leaky_relu, lambda p: add_constant(p, 2.0),
                                  lambda p: add_sqrt_of(p, [1.0, 0.25, 4.0])],
                         ids=["batch_norm", "leaky_relu", "constant", "sqrt_of_constant"])
def test_the_same_models_with_finite_parameters_give_onnxruntime_outputs(make, tmp_path):
    """The refusals above are the edits': unedited, each model compiles and runs."""
    path = make(tmp_path / "m.onnx")
    out_dir = str(tmp_path / "out")
    compile_model(path, out_dir)
    got = host.run(out_dir, seeded_input(SHAPE, np.float32, 0))
    np.testing.assert_allclose(got, _onnxruntime(path), rtol=1e-5, atol=1e-5)
    assert os.path.exists(os.path.join(out_dir, "tinyseg_model.c"))


@pytest.mark.parametrize("value", [0.0, -0.05])
def test_a_qdq_scale_that_is_not_positive_is_refused(tmp_path, value):
    model = onnx.load(os.path.join(MODELS, "user", "torch_unet_qdq.onnx"))
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"][1]
    scale = next(i for i in model.graph.initializer if i.name == quantize.input[1])
    scale.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(scale).shape, value, np.float32), scale.name))
    path = str(tmp_path / "scale.onnx")
    onnx.save(model, path)
    expected = f"QuantizeLinear node #\\d+ {re.escape(repr(quantize.name))} scale {re.escape(repr(scale.name))} is not"
    with pytest.raises(ModelFileError, match=expected + " positive$"):
        load_model(path)
