"""Declared shapes against the shapes the ops compute (tflite_converter.py's guard), on edits of
a zoo model that TFLite Micro runs past its buffers or with the declared (wrong) shapes:

* a dimension of any intermediate tensor changed by +131072 or +1 (the issue's example: 121 of
  1024 outputs differed), or of a folded shape-arithmetic tensor;
* a stride or a window changed so that the op computes another shape than the file declares;
* a window changed so that the shape stays the same: TFLite Micro runs it, and the compiled model
  must give its output exactly.
"""
import os
import struct

import numpy as np
import pytest

from conftest import MODELS, seeded_input, tflm_reference
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.frontend import load_model
from tvm_tinyseg.frontend.tflite_converter import ConverterMismatch
from tvm_tinyseg.boards import host

BASE = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
INPUT = (1, 32, 32, 1)
CONV, POOL = 0, 2  # operators #0 (CONV_2D, SAME, stride 1) and #2 (MAX_POOL_2D, VALID, 2x2 window, stride 2)
# vtable offsets of Conv2DOptions.stride_w and Pool2DOptions.stride_w / filter_width
CONV_STRIDE_W, POOL_STRIDE_W, POOL_FILTER_W = 6, 6, 10


def _model(data):
    from tflite.Model import Model
    return Model.GetRootAsModel(data, 0)


def _edit_int32(data, at, delta):
    data = bytearray(data)
    struct.pack_into("<i", data, at, struct.unpack_from("<i", data, at)[0] + delta)
    return bytes(data)


def _shape_edits(data, delta, last_dim_only):
    """(tensor name, edited file) for each dimension of each tensor an op computes."""
    model = _model(data)
    subgraph = model.Subgraphs(0)
    computed = {int(t) for i in range(subgraph.OperatorsLength()) for t in subgraph.Operators(i).OutputsAsNumpy()}
    for index in sorted(computed):
        tensor = subgraph.Tensors(index)
        shape = tensor._tab.Vector(tensor._tab.Offset(4))
        dims = [tensor.ShapeLength() - 1] if last_dim_only else range(tensor.ShapeLength())
        for dim in dims:
            yield f"{tensor.Name().decode()}[{dim}]", _edit_int32(data, shape + 4 * dim, delta)


def _check_refused(tmp_path, edits):
    path = str(tmp_path / "edited.tflite")
    count = 0
    for what, data in edits:
        with open(path, "wb") as f:
            f.write(data)
        with pytest.raises(TinySegError) as info:
            load_model(path)
        assert "\n" not in str(info.value), what
        count += 1
    return count


def test_an_intermediate_dimension_plus_131072_is_refused(tmp_path):
    assert _check_refused(tmp_path, _shape_edits(open(BASE, "rb").read(), 131072, last_dim_only=True)) == 24


@pytest.mark.slow
@pytest.mark.parametrize("delta", [131072, 1, -1])
def test_every_dimension_of_every_computed_tensor_edited_is_refused(tmp_path, delta):
    assert _check_refused(tmp_path, _shape_edits(open(BASE, "rb").read(), delta, last_dim_only=False)) == 96


def _options_field(data, op_index, table, vtable_offset):
    import importlib
    model = _model(data)
    raw = model.Subgraphs(0).Operators(op_index).BuiltinOptions()
    options = getattr(importlib.import_module("tflite." + table), table)()
    options.Init(raw.Bytes, raw.Pos)
    return options._tab.Pos + options._tab.Offset(vtable_offset)


@pytest.mark.parametrize("op_index, table, field, delta, message", [
    (CONV, "Conv2DOptions", CONV_STRIDE_W, 1, "CONV_2D output '{}' is declared [1, 32, 32, 8], but the op computes "
                                              "[1, 32, 16, 8]"),
    (CONV, "Conv2DOptions", CONV_STRIDE_W, 6, "is declared [1, 32, 32, 8], but the op computes [1, 32, 5, 8]"),
    (POOL, "Pool2DOptions", POOL_STRIDE_W, 1, "MAX_POOL_2D output '{}' is declared [1, 16, 16, 8], but the op "
                                              "computes [1, 16, 11, 8]"),
    (POOL, "Pool2DOptions", POOL_FILTER_W, 1, "is declared [1, 16, 16, 8], but the op computes [1, 16, 15, 8]"),
], ids=["conv_stride+1", "conv_stride+6", "pool_stride+1", "pool_window+1"])
def test_a_stride_or_window_edit_that_changes_the_shape_is_refused(tmp_path, op_index, table, field, delta, message):
    data = open(BASE, "rb").read()
    output = _model(data).Subgraphs(0).Tensors(_model(data).Subgraphs(0).Operators(op_index).Outputs(0))
    path = tmp_path / "edited.tflite"
    path.write_bytes(_edit_int32(data, _options_field(data, op_index, table, field), delta))
    with pytest.raises(ConverterMismatch) as info:
        load_model(str(path))
    assert message.format(output.Name().decode()) in str(info.value)


@pytest.mark.slow
def test_a_window_edit_that_keeps_the_shape_gives_tflite_micros_output(tmp_path):
    """MAX_POOL_2D 2x2 → 2x1 (VALID, stride 2): still 16x16, other values; TFLite Micro runs it."""
    data = open(BASE, "rb").read()
    path = tmp_path / "window.tflite"
    path.write_bytes(_edit_int32(data, _options_field(data, POOL, "Pool2DOptions", POOL_FILTER_W), -1))
    out_dir = str(tmp_path / "out")
    compile_model(str(path), out_dir)
    for seed in (0, 1):
        x = seeded_input(INPUT, np.int8, seed)
        expected = tflm_reference(path, x)
        assert not np.array_equal(expected, tflm_reference(BASE, x))  # the edit matters
        np.testing.assert_array_equal(host.run(out_dir, x), expected)
