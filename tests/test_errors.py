"""Bad input gives one clear line naming the problem — through the API and the command line."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import MODELS, run_tinyseg
from tflite_builder import TFLiteBuilder
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import ModelFileError, UnsupportedModelError

TINYUNET = f"{MODELS}/tinyunet_80x120.tflite"


def _one_op_model(path, op, dtype=np.int8, quant=(0.05, 0), options=None):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], dtype, quant=quant)
    y = b.tensor("y_of_" + op.lower(), [1, 4, 4, 3], dtype, quant=quant)
    b.op(op, [x], [y], options=options)
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


@pytest.fixture
def truncated_tflite(tmp_path):
    path = tmp_path / "truncated.tflite"
    path.write_bytes(open(TINYUNET, "rb").read()[:3000])
    return str(path)


@pytest.fixture
def random_tflite(tmp_path):
    path = tmp_path / "random.tflite"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data[4:8] = b"TFL3"  # past the magic check: the parser itself must meet garbage
    path.write_bytes(bytes(data))
    return str(path)


@pytest.fixture
def wrong_magic_tflite(tmp_path):
    path = tmp_path / "wrong_magic.tflite"
    data = bytearray(open(TINYUNET, "rb").read())
    data[4:8] = b"XXXX"
    path.write_bytes(bytes(data))
    return str(path)


@pytest.fixture
def malformed_onnx(tmp_path):
    path = tmp_path / "malformed.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    return str(path)


@pytest.fixture
def dynamic_onnx(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _conv_model(path, act_dtype=np.int8, act_quant=(0.05, 0), weight_quant_axis=0, subgraphs=1,
                shape_signature=None):
    """A one-conv int8 model whose parts the error tests below break one at a time."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], act_dtype, quant=act_quant, shape_signature=shape_signature)
    channels = [8, 3, 3, 3][weight_quant_axis]
    w = b.tensor("w", [8, 3, 3, 3], np.int8, data=np.ones([8, 3, 3, 3]),
                 quant=([0.01] * channels, [0] * channels, weight_quant_axis))
    bias = b.tensor("bias", [8], np.int32, data=np.zeros(8), quant=([0.0005] * 8, [0] * 8, 0))
    y = b.tensor("y", [1, 4, 4, 8], act_dtype, quant=act_quant)
    b.op("CONV_2D", [x, w, bias], [y], options=("Conv2DOptions", {"padding": "SAME", "stride_h": 1, "stride_w": 1}))
    b.save(path, inputs=[x], outputs=[y], subgraphs=subgraphs)
    return str(path)


def _onnx_model(path, nodes, initializers=(), opset=17, y_shape=(1, 3, 8, 8)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return str(path)


@pytest.fixture
def truncated_onnx(tmp_path):
    path = tmp_path / "truncated.onnx"
    data = open(f"{MODELS}/tinyunet_80x120.onnx", "rb").read()
    path.write_bytes(data[:len(data) // 2])
    return str(path)


@pytest.fixture
def random_onnx(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return str(path)


@pytest.fixture
def tflite_named_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(open(TINYUNET, "rb").read())
    return str(path)


@pytest.fixture
def empty_tflite(tmp_path):
    path = tmp_path / "empty.tflite"
    path.write_bytes(b"")
    return str(path)


@pytest.fixture
def bad_tensor_index_tflite(tmp_path):
    """A structurally valid flatbuffer whose operator reads a tensor that does not exist."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.int8, quant=(0.05, 0))
    y = b.tensor("y", [1, 4, 4, 3], np.int8, quant=(0.05, 0))
    b.op("RELU", [x + 7], [y])
    path = tmp_path / "bad_index.tflite"
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


@pytest.fixture
def short_weights_tflite(tmp_path):
    """Constant data shorter than the tensor's shape needs."""
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4], np.float32)
    c = b.tensor("c", [1, 4], np.float32, data=np.ones(4))
    y = b.tensor("y", [1, 4], np.float32)
    b.op("ADD", [x, c], [y], options=("AddOptions", {}))
    data = bytearray(b.serialize(inputs=[x], outputs=[y]))
    data_at = bytes(data).find(np.ones(4, np.float32).tobytes())
    data[data_at - 4:data_at] = (8).to_bytes(4, "little")  # the vector's length: 8 bytes instead of 16
    path = tmp_path / "short_weights.tflite"
    path.write_bytes(bytes(data))
    return str(path)


def _pool_model(path, in_shape, out_shape, window):
    b = TFLiteBuilder()
    x = b.tensor("x", in_shape, np.int8, quant=(0.05, 0))
    y = b.tensor("y", out_shape, np.int8, quant=(0.05, 0))
    b.op("MAX_POOL_2D", [x], [y], options=("Pool2DOptions", {
        "padding": "VALID", "stride_h": 1, "stride_w": 1, "filter_height": window, "filter_width": window}))
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


@pytest.fixture
def empty_tensor_tflite(tmp_path):
    return _pool_model(tmp_path / "empty_tensor.tflite", [1, 4, 4, 3], [1, 0, 0, 3], 5)


@pytest.fixture
def window_larger_than_input_tflite(tmp_path):
    """Declared shapes are fine; the output TVM infers for a 5x5 window on a 4x4 input is empty."""
    return _pool_model(tmp_path / "big_window.tflite", [1, 4, 4, 3], [1, 1, 1, 3], 5)


@pytest.fixture
def int16_tflite(tmp_path):
    return _conv_model(tmp_path / "int16.tflite", act_dtype=np.int16, act_quant=(0.001, 0))


@pytest.fixture
def weight_axis_tflite(tmp_path):
    return _conv_model(tmp_path / "axis3.tflite", weight_quant_axis=3)


@pytest.fixture
def two_subgraph_tflite(tmp_path):
    return _conv_model(tmp_path / "two_subgraphs.tflite", subgraphs=2)


@pytest.fixture
def dynamic_tflite(tmp_path):
    return _conv_model(tmp_path / "dynamic.tflite", shape_signature=[1, -1, -1, 3])


@pytest.fixture
def unsupported_op_onnx(tmp_path):
    return _onnx_model(tmp_path / "det.onnx", [helper.make_node("Det", ["x"], ["y"], name="det0")], y_shape=(1, 3))


@pytest.fixture
def int16_qdq_onnx(tmp_path):
    scale = onnx.numpy_helper.from_array(np.array(0.05, np.float32), "s")
    zero_point = onnx.numpy_helper.from_array(np.array(0, np.int16), "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q0"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq0")]
    return _onnx_model(tmp_path / "int16_qdq.onnx", nodes, [scale, zero_point], opset=21)


@pytest.fixture
def version_2_tflite(tmp_path):
    """Found by tests/fuzz_differential.py: LiteRT and TFLite Micro refuse it, the compiler accepted it."""
    import tflite

    path = _conv_model(tmp_path / "ok.tflite")
    data = bytearray(open(path, "rb").read())
    tab = tflite.Model.GetRootAsModel(data, 0)._tab
    data[tab.Pos + tab.Offset(4)] = 2  # Model.version
    (tmp_path / "version2.tflite").write_bytes(bytes(data))
    return str(tmp_path / "version2.tflite")


@pytest.fixture
def fused_tanh_float_tflite(tmp_path):
    """Found by tests/fuzz_differential.py: LiteRT's kernels ignore a fused TANH, TVM applied it."""
    from float_net import FloatNet

    net = FloatNet((1, 6, 6, 3))
    return net.save(tmp_path / "fused_tanh.tflite", net.conv(net.x, 4, activation="TANH"))


@pytest.fixture
def wide_window_tflite(tmp_path):
    """Found by tests/fuzz_differential.py: TFLite Micro wraps a SAME padding above 32767 (int16)."""
    from int8_net import Net

    net = Net()
    return net.save(tmp_path / "wide_window.tflite", net.pool(net.x, "MAX_POOL_2D", (1, 70000), 1, "SAME"))


@pytest.fixture
def negative_pads_onnx(tmp_path):
    """Found by tests/fuzz_differential.py: onnxruntime refuses it, the compiler accepted it."""
    w = onnx.numpy_helper.from_array(np.zeros((3, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv0", kernel_shape=[3, 3], pads=[1, -1, 1, 3])
    return _onnx_model(tmp_path / "negative_pads.onnx", [node], [w])


@pytest.fixture
def bad_resize_mode_onnx(tmp_path):
    """Found by tests/fuzz_differential.py: TVM's Resize legalization raised a ValueError (an internal error)."""
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 1, 1], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="resize0", mode="nearest",
                            nearest_mode="linear")
    return _onnx_model(tmp_path / "bad_resize.onnx", [node], [scales])


@pytest.fixture
def short_initializer_onnx(tmp_path):
    """Found by tests/fuzz_differential.py: an initializer's dims edited to hold fewer values than
    its data gave numpy's reshape error as an internal error."""
    w = onnx.numpy_helper.from_array(np.zeros((3, 3, 3, 3), np.float32), "w")
    w.dims[-1] = 2
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv0")
    return _onnx_model(tmp_path / "short_initializer.onnx", [node], [w], y_shape=(1, 3, 6, 7))


@pytest.mark.parametrize("fixture, error, words", [
    ("truncated_tflite", ModelFileError, "malformed TFLite"),
    ("random_tflite", ModelFileError, "malformed TFLite"),
    ("wrong_magic_tflite", ModelFileError, "not a TFLite flatbuffer"),
    ("empty_tflite", ModelFileError, "not a TFLite flatbuffer"),
    ("bad_tensor_index_tflite", ModelFileError, "operator #0 input refers to #7, but there are 2"),
    ("short_weights_tflite", ModelFileError, "tensor #1 'c' has 8 data bytes but its shape [1, 4] needs 16"),
    ("empty_tensor_tflite", UnsupportedModelError, "tensor #1 'y' is empty (shape [1, 0, 0, 3])"),
    ("window_larger_than_input_tflite", UnsupportedModelError,
     "relax.nn.max_pool2d produces a tensor of shape [1, 0, 0, 3] (empty or dynamic)"),
    ("int16_tflite", UnsupportedModelError, "int16 tensor 'x'"),
    ("weight_axis_tflite", UnsupportedModelError, "tensor 'w' is quantized per-axis on axis 3; expected axis 0"),
    ("two_subgraph_tflite", UnsupportedModelError, "2 subgraphs"),
    ("dynamic_tflite", UnsupportedModelError, "input 'x' has dynamic dimensions (1x?x?x3)"),
    ("malformed_onnx", ModelFileError, "malformed ONNX"),
    ("truncated_onnx", ModelFileError, "malformed ONNX"),
    ("random_onnx", ModelFileError, "malformed ONNX"),
    ("tflite_named_onnx", ModelFileError, "a TFLite flatbuffer, not an ONNX model"),
    ("dynamic_onnx", UnsupportedModelError, "give its shape with --input-shape x:Nx3xNx8"),
    ("unsupported_op_onnx", UnsupportedModelError, "unsupported op Det (node #0 'det0')"),
    ("int16_qdq_onnx", UnsupportedModelError, "quantized ONNX model (QuantizeLinear node #0 'q0', int16)"),
    ("version_2_tflite", ModelFileError, "TFLite schema version 2; only version 3 is supported"),
    ("fused_tanh_float_tflite", UnsupportedModelError, "fused activation TANH: TFLite's kernels ignore it"),
    ("wide_window_tflite", UnsupportedModelError,
     "MAX_POOL_2D (operator #0) needs a SAME padding of 69999 for a window of 70000; TFLite holds padding in 16 bits"),
    ("negative_pads_onnx", ModelFileError, "Attribute pads must not contain negative values"),
    ("short_initializer_onnx", ModelFileError, "initializer 'w' does not hold its declared shape [3, 3, 3, 2]"),
    ("bad_resize_mode_onnx", ModelFileError,
     "Resize node #0 'resize0': attribute nearest_mode is 'linear'; ONNX allows ceil, floor"),
])
def test_bad_model_file_gives_one_line_error(fixture, error, words, request):
    path = request.getfixturevalue(fixture)
    with pytest.raises(error) as info:
        compile_model(path)
    message = str(info.value)
    assert words in message and path in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        compile_model(str(tmp_path / "nope.tflite"))


def test_directory_is_not_a_model(tmp_path):
    (tmp_path / "model.tflite").mkdir()
    with pytest.raises(ModelFileError, match="not a regular file"):
        compile_model(str(tmp_path / "model.tflite"))


def test_unknown_extension(tmp_path):
    path = tmp_path / "model.pb"
    path.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="unknown model format"):
        compile_model(str(path))


def test_unsupported_int8_op_is_named(tmp_path):
    path = _one_op_model(tmp_path / "exp.tflite", "EXP")
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(path)
    message = str(info.value)
    assert "EXP" in message and "y_of_exp" in message and "\n" not in message


def test_uint8_quantization_is_rejected(tmp_path):
    path = _one_op_model(tmp_path / "u8.tflite", "RELU", dtype=np.uint8, quant=(0.05, 128))
    with pytest.raises(UnsupportedModelError, match="uint8"):
        compile_model(path)


def test_cli_reports_user_errors_in_one_line_with_status_1(truncated_tflite, tmp_path):
    proc = run_tinyseg("compile", truncated_tflite, "-o", tmp_path / "out")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("tinyseg: error:") and "malformed TFLite" in lines[-1]
    assert "Traceback" not in proc.stderr

