"""Dynamic input shapes: a dynamic batch is fixed to 1 (with a note), other dynamic dimensions need
``--input-shape``/``input_shapes=``, and shape arithmetic on a fixed shape folds to constants."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import SEEDS, run_tinyseg, seeded_input
from float_net import FloatNet, litert_reference
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import UnsupportedModelError
from tvm_tinyseg.boards import host

SHAPE = (1, 7, 9, 3)


def _assert_matches(path, out_dir, shape, reference):
    exe = host.build(out_dir)
    for seed in SEEDS:
        x = seeded_input(shape, np.float32, seed)
        expected, got = reference(path, x), host.run(out_dir, x, exe)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def _shape_folded_reshape(path):
    """conv(x) with a batch of -1, then RESHAPE to [batch, W, H, C] where the batch comes from
    SHAPE → STRIDED_SLICE → PACK, as Keras 3 exports it."""
    net = FloatNet(SHAPE, shape_signature=[-1, *SHAPE[1:]])
    y = net.conv(net.x, 4)
    shape = net.tensor("shape", [4], dtype=np.int32)
    net.b.op("SHAPE", [y], [shape], options=("ShapeOptions", {"out_type": 2}))  # int32
    batch = net.tensor("batch", [], dtype=np.int32)
    net.b.op("STRIDED_SLICE", [shape, net.const("begin", [0]), net.const("end", [1]), net.const("strides", [1])],
             [batch], options=("StridedSliceOptions", {"shrink_axis_mask": 1}))
    new_shape = net.tensor("new_shape", [4], dtype=np.int32)
    net.b.op("PACK", [batch, net.const("w", 9), net.const("h", 7), net.const("c", 4)], [new_shape],
             options=("PackOptions", {"values_count": 4, "axis": 0}))
    out = net.tensor("reshaped", [1, 9, 7, 4])
    net.b.op("RESHAPE", [y, new_shape], [out])
    return net.save(path, out)


def test_dynamic_batch_is_fixed_to_one_and_shape_arithmetic_folds(tmp_path, caplog):
    path = _shape_folded_reshape(tmp_path / "model.tflite")
    out_dir = str(tmp_path / "c")
    result = compile_model(path, out_dir)
    assert "input 'x0' has a dynamic batch dimension; fixed to 1" in caplog.text
    assert result.io_spec["input"]["shape"] == list(SHAPE)
    _assert_matches(path, out_dir, SHAPE, litert_reference)


def _dynamic_size_model(path):
    """A conv whose input is [1, -1, -1, 3]: the file's shapes are placeholders (1) inside."""
    net = FloatNet((1, 1, 1, 3), shape_signature=[1, -1, -1, 3])
    return net.save(path, net.conv(net.x, 4))


def test_dynamic_size_needs_input_shape(tmp_path):
    path = _dynamic_size_model(tmp_path / "model.tflite")
    with pytest.raises(UnsupportedModelError, match=r"input 'x0' has dynamic dimensions \(1x\?x\?x3\); give its "
                                                    r"shape with --input-shape x0:1xNxNx3"):
        compile_model(path)


def test_dynamic_size_with_input_shape_matches_litert(tmp_path):
    path = _dynamic_size_model(tmp_path / "model.tflite")
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir, input_shapes={"x0": SHAPE})

    def reference(model, x):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interpreter = Interpreter(model_path=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interpreter.resize_tensor_input(0, list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    _assert_matches(path, out_dir, SHAPE, reference)


def test_input_shape_that_does_not_fit_is_refused(tmp_path):
    path = _dynamic_size_model(tmp_path / "model.tflite")
    with pytest.raises(UnsupportedModelError, match=r"--input-shape x0:1x7x9x4 does not fit the input's shape"):
        compile_model(path, input_shapes={"x0": (1, 7, 9, 4)})
    with pytest.raises(UnsupportedModelError, match=r"--input-shape names no input of the model: y"):
        compile_model(path, input_shapes={"x0": SHAPE, "y": SHAPE})


def _onnx_relu_conv(path, dims):
    rng = np.random.default_rng(3)
    w = onnx.numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [dims[0], 4, dims[2], dims[3]])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _onnxruntime(path, x):
    import onnxruntime

    return onnxruntime.InferenceSession(path).run(None, {"x": x})[0]


def test_onnx_symbolic_batch_is_fixed_to_one(tmp_path, caplog):
    path = _onnx_relu_conv(tmp_path / "model.onnx", ["batch", 3, 7, 9])
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir)
    assert "input 'x' has a dynamic batch dimension; fixed to 1" in caplog.text
    _assert_matches(path, out_dir, (1, 3, 7, 9), _onnxruntime)


def test_onnx_symbolic_size_needs_input_shape(tmp_path):
    path = _onnx_relu_conv(tmp_path / "model.onnx", ["batch", 3, "height", "width"])
    with pytest.raises(UnsupportedModelError, match=r"--input-shape x:Nx3xNxN"):
        compile_model(path)
    out_dir = str(tmp_path / "c")
    compile_model(path, out_dir, input_shapes={"x": (1, 3, 7, 9)})
    _assert_matches(path, out_dir, (1, 3, 7, 9), _onnxruntime)


@pytest.mark.slow
def test_cli_input_shape(tmp_path):
    path = _dynamic_size_model(tmp_path / "model.tflite")
    proc = run_tinyseg("compile", path, "-o", tmp_path / "c")
    assert proc.returncode == 1 and "--input-shape x0:1xNxNx3" in proc.stderr.strip().splitlines()[-1]
    proc = run_tinyseg("compile", path, "-o", tmp_path / "c", "--input-shape", "x0:1x7x9x3")
    assert proc.returncode == 0, proc.stderr
    proc = run_tinyseg("compile", path, "-o", tmp_path / "c", "--input-shape", "x0:1x7xQx3")
    assert proc.returncode == 1 and "expected NAME:DIMS" in proc.stderr
