"""The .tflite verifier, against the references' own decisions.

* Structure (flatbuffer_verify.py): edits of fields the compiler never reads (metadata, signature
  definitions, description, subgraph name, ...) that LiteRT's flatbuffers Verifier and TFLite
  Micro refuse are refused in one line naming the field; on random mutations of the zoo, the
  verifier accepts exactly the files LiteRT's Verifier accepts, and every file TFLite Micro
  refuses to load is refused.
* Operator codes are read as TFLite reads them (the larger of builtin_code and
  deprecated_builtin_code), compared with LiteRT's own reading of edited files.
* Constants: NaN or infinity in float weights or options, where LiteRT computes NaN, are refused
  with the tensor's name; quantization parameters outside TFLite Micro's ranges are refused.
"""
import json
import os
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
import tvm

from conftest import MODELS, float_reference, seeded_input, tflm_reference
from model_fuzz import mutate
from tflite_builder import TFLiteBuilder
from tvm_tinyseg.errors import ModelFileError, TinySegError, UnsupportedModelError
from tvm_tinyseg.frontend import load_model
from tvm_tinyseg.frontend.flatbuffer_verify import FlatbufferError, _fields, schema_tables, verify_model_buffer
from tvm_tinyseg.frontend.tflite_model import _op_names

BASE = os.path.join(MODELS, "tinyunet_32x32_c1.tflite")
FLOAT_BASE = os.path.join(MODELS, "tinyunet_80x120_float.tflite")
FAR = 0x7FFFF000  # an offset far past the end of any test file


def _model(data):
    from tflite.Model import Model
    return Model.GetRootAsModel(data, 0)


def _field_at(table, vtable_offset):
    """Absolute position of a table's field in the file."""
    offset = table._tab.Offset(vtable_offset)
    assert offset, f"field at vtable offset {vtable_offset} absent"
    return table._tab.Pos + offset


def _edit(data, at, fmt, value):
    data = bytearray(data)
    struct.pack_into("<" + fmt, data, at, value)
    return bytes(data)


# Each worker line: LiteRT's and TFLite Micro's decision on one file ("ok" or why not); a crash of
# the worker counts as a refusal of the file it was reading.
REFERENCE_WORKER = r"""
import json, sys
for path in sys.argv[1:]:
    result = {}
    try:
        from ai_edge_litert.interpreter import Interpreter
        Interpreter(model_path=path)
        result["litert"] = "ok"
    except Exception as err:
        result["litert"] = (str(err).strip().splitlines() or [type(err).__name__])[0]
    try:
        from tflite_micro.python.tflite_micro import runtime
        runtime.Interpreter.from_file(path, arena_size=16 << 20)
        result["tflm"] = "ok"
    except Exception as err:
        result["tflm"] = type(err).__name__
    print(json.dumps(result), flush=True)
"""


def reference_decisions(paths):
    decisions = []
    while len(decisions) < len(paths):
        run = subprocess.run([sys.executable, "-c", REFERENCE_WORKER, *paths[len(decisions):]],
                             capture_output=True, text=True, timeout=300)
        decisions += [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        if run.returncode != 0 and len(decisions) < len(paths):
            decisions.append({"litert": "crash", "tflm": "crash"})
    return decisions


def test_schema_is_derived_from_the_tflite_package():
    tables = schema_tables()
    assert len(tables) > 150
    for name in tables:
        _fields(name)  # every generated class parses (enums have no fields)
    kinds = {name: {f.name: (f.kind, f.width, f.table) for f in _fields(name)}
             for name in ("Model", "Tensor", "Buffer", "Operator", "QuantizationParameters")}
    assert kinds["Model"]["metadata"] == ("tables", 0, "Metadata")
    assert kinds["Model"]["signature_defs"] == ("tables", 0, "SignatureDef")
    assert kinds["Model"]["description"][0] == "string"
    assert kinds["Tensor"]["type"] == ("scalar", 1, "") and kinds["Tensor"]["shape"] == ("vector", 4, "")
    assert kinds["Buffer"]["offset"] == ("scalar", 8, "") and kinds["Buffer"]["data"] == ("vector", 1, "")
    assert kinds["Operator"]["builtin_options"] == ("union", 0, "BuiltinOptions")
    assert kinds["QuantizationParameters"]["zero_point"] == ("vector", 8, "")


def _structural_edits():
    base = open(BASE, "rb").read()
    model = _model(base)
    assert model.MetadataLength() and model.SignatureDefsLength()
    subgraph, tensor = model.Subgraphs(0), model.Subgraphs(0).Tensors(0)
    shape_offset = _field_at(tensor, 4)
    description = model._tab.Pos + model._tab.Offset(10)
    description_end = description + struct.unpack_from("<I", base, description)[0]
    description_end += 4 + struct.unpack_from("<I", base, description_end)[0]
    model_vtable = model._tab.Pos - struct.unpack_from("<i", base, model._tab.Pos)[0]
    metadata_vector = model._tab.Vector(model._tab.Offset(16))
    return {
        # name: (file, field path the message must name)
        "metadata_name_outside": (_edit(base, _field_at(model.Metadata(0), 4), "I", FAR), "Model.metadata[0].name"),
        "metadata_length_past_end": (_edit(base, metadata_vector - 4, "I", 100000), "Model.metadata"),
        "signature_def_outside": (_edit(base, model._tab.Vector(model._tab.Offset(18)), "I", FAR),
                                  "Model.signature_defs[0]"),
        "description_outside": (_edit(base, _field_at(model, 10), "I", FAR), "Model.description"),
        "description_not_terminated": (_edit(base, description_end, "B", ord("x")), "Model.description"),
        "subgraph_name_outside": (_edit(base, _field_at(subgraph, 12), "I", FAR), "Model.subgraphs[0].name"),
        "shape_misaligned": (_edit(base, shape_offset, "I", struct.unpack_from("<I", base, shape_offset)[0] + 1),
                             "Model.subgraphs[0].tensors[0].shape"),
        "model_vtable_odd_size": (_edit(base, model_vtable, "H", struct.unpack_from("<H", base, model_vtable)[0] + 1),
                                  "Model vtable"),
    }


TFLM_ACCEPTS = {"description_not_terminated", "model_vtable_odd_size"}


@pytest.fixture(scope="module")
def structural_edits(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits")
    edits = {}
    for name, (data, field) in _structural_edits().items():
        path = root / f"{name}.tflite"
        path.write_bytes(data)
        edits[name] = (str(path), field)
    decisions = reference_decisions([path for path, _ in edits.values()])
    return {name: (path, field, decision) for (name, (path, field)), decision in zip(edits.items(), decisions)}


@pytest.mark.parametrize("name", list(_structural_edits()))
def test_fields_the_compiler_never_reads_are_verified(structural_edits, name):
    path, field, decision = structural_edits[name]
    # LiteRT's Verifier refuses every one; TFLite Micro (no Verifier) all that make it read outside the file
    assert decision["litert"] != "ok" and (decision["tflm"] == "ok") == (name in TFLM_ACCEPTS)
    with pytest.raises(ModelFileError) as info:  # ... and so must we, naming the field
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: malformed TFLite flatbuffer: {field}") and "\n" not in message


def test_the_command_line_refuses_it_in_one_line_with_status_1(structural_edits, tmp_path, capsys):
    from tvm_tinyseg import cli

    path, field, _ = structural_edits["metadata_name_outside"]
    assert cli.main(["compile", path, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tinyseg: error: {path}: malformed TFLite flatbuffer: {field} at byte ")
    assert err[-1].endswith(f"runs past the end of the file ({os.path.getsize(path)} bytes)")


def test_verifier_accepts_exactly_what_litert_accepts_on_random_mutations():
    from ai_edge_litert.interpreter import Interpreter

    rng = random.Random(13)
    files = [open(os.path.join(MODELS, f), "rb").read() for f in sorted(os.listdir(MODELS)) if f.endswith(".tflite")]
    counts = {}
    for case in range(500):
        data = mutate(rng.choice(files), rng.choice(("flip", "flip", "overwrite", "truncate")), rng, b"")
        try:
            verify_model_buffer(data)
            ours = "accept"
        except FlatbufferError as err:
            ours, reason = "refuse", str(err)
        try:
            Interpreter(model_content=data)
            theirs = "accept"
        except ValueError as err:
            theirs = "refuse" if "not a valid Flatbuffer" in str(err) else "accept"  # other checks than the Verifier's
        assert ours == theirs, f"case {case}: LiteRT's Verifier {theirs}s, we {ours}" + (
            f" ({reason})" if ours == "refuse" else "")
        counts[ours] = counts.get(ours, 0) + 1
    assert counts.get("refuse", 0) >= 40 and counts.get("accept", 0) >= 40  # both decisions are exercised


def test_every_mutation_tflite_micro_refuses_at_load_is_refused(tmp_path):
    """Random mutations of the int8 zoo: each file TFLite Micro refuses (or crashes on) when
    loading it is refused here too, in one line."""
    rng = random.Random(7)
    files = [open(os.path.join(MODELS, f), "rb").read() for f in sorted(os.listdir(MODELS)) if f.endswith(".tflite")]
    paths = []
    for case in range(200):
        paths.append(str(tmp_path / f"{case}.tflite"))
        with open(paths[-1], "wb") as f:
            f.write(mutate(rng.choice(files), rng.choice(("flip", "flip", "overwrite", "truncate")), rng, b""))
    refused_by_tflm = 0
    for path, decision in zip(paths, reference_decisions(paths)):
        if decision["tflm"] == "ok":
            continue
        refused_by_tflm += 1
        with pytest.raises(TinySegError) as info:
            load_model(path)
        assert "\n" not in str(info.value)
    assert refused_by_tflm >= 40


def _shared_buffer_tables(count):
    """The zoo model with ``Model.buffers`` replaced by ``count`` offsets to one empty table
    appended to the file (a Verifier counts each visit: its limit is 10**6 tables)."""
    data = bytearray(open(BASE, "rb").read())
    data += bytes(-len(data) % 4)
    model = _model(bytes(data))
    field = model._tab.Pos + model._tab.Offset(12)  # Model.buffers
    vector = len(data)
    table = vector + 4 + 4 * count + 4  # after its 4-byte vtable
    data += struct.pack("<I", count)
    data += (table - (vector + 4 + 4 * np.arange(count, dtype=np.int64))).astype("<u4").tobytes()
    data += struct.pack("<HHi", 4, 4, 4)  # vtable (4 bytes, object 4 bytes), table → its vtable
    struct.pack_into("<I", data, field, vector - field)
    return bytes(data)


@pytest.mark.parametrize("count", [1000, pytest.param(1_000_001, marks=pytest.mark.slow)])
def test_the_table_count_limit_is_litert_s(count):
    from ai_edge_litert.interpreter import Interpreter

    data = _shared_buffer_tables(count)
    try:
        Interpreter(model_content=data)
        theirs = "accept"
    except ValueError as err:
        assert "not a valid Flatbuffer" in str(err)
        theirs = "refuse"
    assert theirs == ("accept" if count == 1000 else "refuse")
    if theirs == "accept":
        verify_model_buffer(data)
    else:
        with pytest.raises(FlatbufferError, match=r"Model\.buffers\[\d+\]: more than 1000000 tables"):
            verify_model_buffer(data)


# -- operator codes -------------------------------------------------------------------------------
def _opcode_edits():
    base = open(BASE, "rb").read()
    model = _model(base)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    deprecated = [_field_at(c, 4) for c in codes]
    builtin = [_field_at(c, 10) for c in codes]
    no_deprecated = base
    for at in deprecated:
        no_deprecated = _edit(no_deprecated, at, "b", 0)  # ADD in the old field; TFLite keeps the new one
    no_builtin = base
    for at in builtin:
        no_builtin = _edit(no_builtin, at, "i", 0)
    first, last = struct.unpack_from("<i", base, builtin[0])[0], struct.unpack_from("<i", base, builtin[-1])[0]
    swapped = _edit(_edit(base, builtin[0], "i", last), builtin[-1], "i", first)  # the CONV_2D/CONCATENATION
    return {"deprecated_zeroed": no_deprecated, "builtin_zeroed": no_builtin, "builtin_swapped": swapped}


@pytest.mark.parametrize("name", list(_opcode_edits()))
def test_opcodes_are_read_as_tflite_reads_them(name):
    from ai_edge_litert.interpreter import Interpreter

    data = _opcode_edits()[name]
    model = _model(data)
    theirs = [op["op_name"] for op in Interpreter(model_content=data)._get_ops_details()]
    assert _op_names(model, model.Subgraphs(0)) == theirs


def test_a_deprecated_opcode_field_edit_compiles_the_model_tflite_runs(tmp_path):
    """deprecated_builtin_code set to 0 (ADD) everywhere: TFLite Micro still runs the original
    model, and the imported module is the original's (before: every op read as ADD)."""
    edited = tmp_path / "deprecated_zeroed.tflite"
    edited.write_bytes(_opcode_edits()["deprecated_zeroed"])
    x = seeded_input((1, 32, 32, 1), np.int8, 0)
    np.testing.assert_array_equal(tflm_reference(edited, x), tflm_reference(BASE, x))
    tvm.ir.assert_structural_equal(load_model(str(edited)).mod, load_model(BASE).mod)


# -- constants and quantization parameters ----------------------------------------------------
def _first_float_weight(data):
    model = _model(data)
    subgraph = model.Subgraphs(0)
    for i in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(i)
        buffer = model.Buffers(tensor.Buffer())
        if tensor.Type() == 0 and buffer.DataLength() >= 4:
            return tensor.Name().decode(), buffer._tab.Vector(buffer._tab.Offset(4))
    raise AssertionError("no float constant")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_float_weights_are_refused_with_the_tensor_name(tmp_path, value):
    base = open(FLOAT_BASE, "rb").read()
    name, at = _first_float_weight(base)
    path = tmp_path / "weight.tflite"
    path.write_bytes(_edit(base, at, "f", value))
    assert not np.isfinite(float_reference(str(path), seeded_input((1, 80, 120, 3), np.float32, 0))).all()
    with pytest.raises(ModelFileError) as info:
        load_model(str(path))
    assert f"'{name}' holds 1 non-finite constants (first: {value})" in str(info.value)


def test_a_non_finite_float_option_is_refused(tmp_path):
    b = TFLiteBuilder()
    x, y = b.tensor("x", [1, 4, 4, 3], np.float32), b.tensor("y", [1, 4, 4, 3], np.float32)
    b.op("LEAKY_RELU", [x], [y], options=("LeakyReluOptions", {"alpha": float("nan")}))
    path = str(tmp_path / "leaky.tflite")
    b.save(path, inputs=[x], outputs=[y])
    assert np.isnan(float_reference(path, seeded_input((1, 4, 4, 3), np.float32, 0))).any()
    with pytest.raises(ModelFileError, match=r"operator #0 LeakyReluOptions\.alpha is nan$"):
        load_model(path)


def _pool_model(path, x_quant=(0.05, 0), y_quant=(0.05, 0)):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.int8, quant=x_quant)
    y = b.tensor("y", [1, 2, 2, 3], np.int8, quant=y_quant)
    b.op("MAX_POOL_2D", [x], [y], options=("Pool2DOptions", {"padding": "VALID", "stride_h": 2, "stride_w": 2,
                                                               "filter_height": 2, "filter_width": 2}))
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


@pytest.mark.parametrize("y_quant, message", [
    ((0.05, 128), "tensor #1 'y' has zero point 128, outside [-128, 127] for int8"),
    ((0.05, -129), "tensor #1 'y' has zero point -129, outside [-128, 127] for int8"),
    ((float("nan"), 0), "tensor #1 'y' has a non-positive or non-finite quantization scale"),
    ((float("inf"), 0), "tensor #1 'y' has a non-positive or non-finite quantization scale"),
    ((0.0, 0), "tensor #1 'y' has a non-positive or non-finite quantization scale"),
    ((-0.05, 0), "tensor #1 'y' has a non-positive or non-finite quantization scale"),
    (([0.05, 0.05], [0, 0], 3), "tensor #1 'y' has 2 per-axis scales on axis 3 of shape [1, 2, 2, 3]"),
], ids=["zp128", "zp-129", "nan_scale", "inf_scale", "zero_scale", "negative_scale", "per_axis_length"])
def test_quantization_outside_tflm_ranges_is_refused(tmp_path, y_quant, message):
    path = _pool_model(tmp_path / "m.tflite", y_quant=y_quant)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value).endswith(message)


def test_scales_without_zero_points_are_refused(tmp_path):
    """TFLite Micro drops such a tensor's quantization (and its int8 kernels then refuse it)."""
    path = str(tmp_path / "m.tflite")
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.int8, quant=(0.05, 0))
    y = b.tensor("y", [1, 2, 2, 3], np.int8, quant=(0.05, 0))
    name, shape, tensor_type, buffer, _, signature = b._tensors[y]
    b._tensors[y] = (name, shape, tensor_type, buffer, ([0.05], [], 0), signature)
    b.op("MAX_POOL_2D", [x], [y], options=("Pool2DOptions", {"padding": "VALID", "stride_h": 2, "stride_w": 2,
                                                               "filter_height": 2, "filter_width": 2}))
    b.save(path, inputs=[x], outputs=[y])
    assert reference_decisions([path])[0]["tflm"] != "ok"
    with pytest.raises(ModelFileError, match=r"tensor #1 'y' has 1 scales but 0 zero points$"):
        load_model(path)


def _binary_model(path, op, x_scale, y_scale, softmax=False):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.int8, quant=(x_scale, 0))
    if softmax:
        y = b.tensor("y", [1, 4, 4, 3], np.int8, quant=(1 / 256, -128))
        b.op("SOFTMAX", [x], [y], options=("SoftmaxOptions", {"beta": 1.0}))
    else:
        y = b.tensor("y", [1, 4, 4, 3], np.int8, quant=(y_scale, 0))
        b.op(op, [x, x], [y], options=(f"{op.title()}Options", {}))
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


# (op, input scale, output scale): ADD/SUB's output rescaling is 2 * input scale / (2^20 * output
# scale), which TFLite Micro requires below 1 (exactly 1 aborts too); SOFTMAX's input scale times
# 2^26 must exceed 1.
RESCALINGS = [("ADD", 0.05, 0.05), ("ADD", 2.0**-10, 2.0**-29), ("ADD", 1e30, 0.06), ("SUB", 0.05, 0.05),
              ("SUB", 2.0**-10, 2.0**-29), ("SUB", 3e38, 0.05), ("SOFTMAX", 0.05, None), ("SOFTMAX", 2.0**-26, None),
              ("SOFTMAX", 1e-9, None)]


def test_rescalings_tflite_micro_aborts_on_are_refused(tmp_path):
    """Fuzzer seed 14 case 921 (an input scale of 1e30 before an ADD): TFLite Micro's Prepare
    aborts on rescalings outside the range its kernels assume; exactly those models are refused."""
    paths = [_binary_model(tmp_path / f"{i}.tflite", op, x, y, softmax=op == "SOFTMAX")
             for i, (op, x, y) in enumerate(RESCALINGS)]
    decisions = [d["tflm"] == "ok" for d in reference_decisions(paths)]
    assert decisions.count(True) == 3 and decisions.count(False) == 6  # both sides of each limit
    for path, (op, _, _), tflm_runs in zip(paths, RESCALINGS, decisions):
        if tflm_runs:
            load_model(path)
        else:
            with pytest.raises(UnsupportedModelError, match=rf"{op} \(operator #0\) .*TFLite Micro aborts on it"):
                load_model(path)


def test_the_in_range_pool_model_loads(tmp_path):
    """The model the quantization cases edit is fine as it stands: the refusals are the edits'."""
    assert load_model(_pool_model(tmp_path / "m.tflite")).ops == ["MAX_POOL_2D"]


class _OffsetBufferBuilder(TFLiteBuilder):
    """Writes the buffer holding the placeholder b"AFTER" as data kept after the flatbuffer
    (``offset``/``size``, for models over 2 GiB) at the given offset."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def _write_buffer(self, fb, data):
        if data != b"AFTER":
            return super()._write_buffer(fb, data)
        buffer = __import__("tflite.Buffer", fromlist=["Buffer"])
        buffer.BufferStart(fb)
        buffer.BufferAddOffset(fb, self.offset)
        buffer.BufferAddSize(fb, 12)
        return buffer.BufferEnd(fb)


def _add_constant_kept_after(path, offset):
    b = _OffsetBufferBuilder(offset)
    x, y = b.tensor("x", [1, 4, 4, 3], np.float32), b.tensor("y", [1, 4, 4, 3], np.float32)
    c = b.tensor("c", [1, 1, 1, 3], np.float32, data=np.zeros(3, np.float32))
    b._buffers[-1] = b"AFTER"
    b.op("ADD", [x, c], [y])
    b.save(path, inputs=[x], outputs=[y])
    return str(path)


def test_constant_data_outside_the_file_is_refused(tmp_path):
    outside = _add_constant_kept_after(tmp_path / "outside.tflite", 1 << 20)
    inside = _add_constant_kept_after(tmp_path / "inside.tflite", 16)
    decisions = reference_decisions([outside, inside])
    assert "out of range offset" in decisions[0]["litert"] and decisions[1]["litert"] == "ok"
    with pytest.raises(ModelFileError, match=r"buffer #1 data \(offset 1048576, 12 bytes\) lies outside the file"):
        load_model(outside)
    with pytest.raises(UnsupportedModelError, match=r"tensor #2 'c' keeps its data outside the flatbuffer"):
        load_model(inside)  # LiteRT reads it; TVM's frontend would not: refused, not misread
