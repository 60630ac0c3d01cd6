"""Frontend errors: a model's unsupported ops all named in one line; internal failures are ours."""
import numpy as np
import pytest

from conftest import run_tinyseg
from tflite_builder import TFLiteBuilder
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import UnsupportedModelError

Q = (0.05, 0)


def _chain(path, codes, dtype=np.int8):
    """x → codes[0] → codes[1] → ...; each op keeps the [1, 4, 4, 3] shape (no options)."""
    b = TFLiteBuilder()
    quant = Q if dtype == np.int8 else None
    x = t = b.tensor("x", [1, 4, 4, 3], dtype, quant=quant)
    for i, code in enumerate(codes):
        y = b.tensor(f"t{i}_{code.lower()}", [1, 4, 4, 3], dtype, quant=quant)
        b.op(code, [t], [y])
        t = y
    b.save(path, inputs=[x], outputs=[t])
    return str(path)


def test_all_unsupported_int8_ops_named_with_counts(tmp_path):
    path = _chain(tmp_path / "m.tflite", ["FLOOR", "ZEROS_LIKE", "FLOOR", "ZEROS_LIKE", "FLOOR"])
    with pytest.raises(UnsupportedModelError) as info:
        compile_model(path)
    message = str(info.value)
    assert "unsupported ops: FLOOR (3), ZEROS_LIKE (2)" in message
    assert "first: FLOOR operator #0, output 't0_floor'" in message and "\n" not in message


def test_ops_unknown_to_the_converter_and_custom_ops_are_listed(tmp_path):
    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3], np.float32)
    y = b.tensor("y", [1, 4, 4, 3], np.float32)
    z = b.tensor("z", [1, 4, 4, 3], np.float32)
    b.op("DYNAMIC_UPDATE_SLICE", [x], [y])
    b.op("CUSTOM", [y], [z], custom_code="Convolution2DTransposeBias")
    path = str(tmp_path / "m.tflite")
    b.save(path, inputs=[x], outputs=[z])
    with pytest.raises(UnsupportedModelError, match=r"unsupported ops: DYNAMIC_UPDATE_SLICE \(1\), "
                                                    r"CUSTOM 'Convolution2DTransposeBias' \(1\)"):
        compile_model(path)


def test_cli_unsupported_ops_exit_status_1(tmp_path):
    path = _chain(tmp_path / "m.tflite", ["FLOOR", "ZEROS_LIKE"])
    proc = run_tinyseg("compile", path, "-o", tmp_path / "out")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("tinyseg: error:")
    assert "FLOOR (1), ZEROS_LIKE (1)" in proc.stderr
