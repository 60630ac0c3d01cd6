"""Models with several inputs and outputs (issue 10 item 5): the runner takes them all in model
order, io.json lists them, ``tinyseg run`` takes one --input per input and writes one .npy per
output; int8 outputs are bit-exact with TFLite Micro, also when tensors are spilled."""
import json
import os

import numpy as np
import pytest

from api_models import inputs_of, tflm_outputs, two_io_model
from tvm_tinyseg.cli import main
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.boards import host


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return two_io_model(tmp_path_factory.mktemp("multi_io") / "two_io.tflite")


@pytest.mark.parametrize("options", [dict(tinyseg=False), dict(ram_budget=-1, storage="file"),
                                     dict(ram_budget=-1, storage="mmap", io_in_arena=False)],
                         ids=["no_tinyseg", "tinyseg_min_file", "tinyseg_min_io_outside_arena"])
def test_two_inputs_two_outputs_bit_exact_with_tflm(model, options, tmp_path):
    result = compile_model(model, str(tmp_path), **options)
    spec = json.load(open(tmp_path / "io.json"))
    assert [t["name"] for t in spec["inputs"]] == ["x0", "side1"]
    assert [t["shape"] for t in spec["outputs"]] == [[1, 4, 5, 3], [1, 8, 10, 3]]
    exe = host.build(str(tmp_path))
    for seed in (0, 1, 2):
        xs = inputs_of(spec, seed)
        got = host.run(str(tmp_path), xs, exe)
        want = tflm_outputs(model, xs, 2)
        assert len(got) == 2
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert result.memory_report["input_bytes"] == sum(t["bytes"] for t in spec["inputs"])
    assert bool(result.memory_report["spilled"]) == ("ram_budget" in options)


def test_cli_run_takes_one_input_per_model_input(model, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["compile", model, "-o", str(out)]) == 0
    xs = inputs_of(json.load(open(out / "io.json")), seed=4)
    for i, x in enumerate(xs):
        np.save(tmp_path / f"x{i}.npy", x)
    args = ["run", str(out), "--input", str(tmp_path / "x0.npy"), "--input", str(tmp_path / "x1.npy")]
    assert main(args + ["--output", str(tmp_path / "y0.npy"), "--output", str(tmp_path / "y1.npy")]) == 0
    for i, want in enumerate(tflm_outputs(model, xs, 2)):
        np.testing.assert_array_equal(np.load(tmp_path / f"y{i}.npy"), want)
    capsys.readouterr()
    assert main(args[:4]) == 1  # one --input for two inputs
    assert "1 --input given; the model has 2 inputs (x0, side1)" in capsys.readouterr().err
    os.remove(tmp_path / "y1.npy")
    assert main(args + ["--output", str(tmp_path / "y0.npy")]) == 1
    assert "1 --output given; the model has 2 outputs" in capsys.readouterr().err


def test_an_input_returned_as_an_output_is_refused_in_one_line(tmp_path):
    from int8_net import Net
    from tvm_tinyseg.errors import UnsupportedModelError

    n = Net()
    y = n.conv(n.x, 4)
    n.b.save(str(tmp_path / "passthrough.tflite"), inputs=[n.x], outputs=[y, n.x])
    with pytest.raises(UnsupportedModelError, match=r"passthrough.tflite: output '\w+' is a model input"):
        compile_model(str(tmp_path / "passthrough.tflite"))
