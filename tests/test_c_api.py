"""The C API a firmware engineer drops in: the header (shapes, quantization, status codes,
extern "C"), --module-name (two models in one program, host and Cortex-M7; no symbol outside the
prefix), and the arena passed by the caller (size and alignment checked)."""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from api_models import inputs_of, skip_model, tflm_outputs, two_io_model
from tvm_tinyseg.codegen.c_api import STATUS_CODES
from tvm_tinyseg.driver import compile_model
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.microtvm_projects import template_dir
from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.boards.host import STRICT_CFLAGS

TWO_MODELS_MAIN = os.path.join(os.path.dirname(__file__), "firmware", "two_models.c")
CORTEX_M7 = ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """`pair` (2 inputs, 2 outputs) and `seg` (spilling to a memory-mapped pool), compiled."""
    root = tmp_path_factory.mktemp("c_api")
    pair_path, seg_path = two_io_model(root / "pair.tflite"), skip_model(root / "seg.tflite")
    pair = compile_model(pair_path, str(root / "pair"), module_name="pair")
    seg = compile_model(seg_path, str(root / "seg"), module_name="seg", ram_budget=-1, storage="mmap")
    assert seg.memory_report["spilled"], "the seg model should spill at the smallest budget"
    return {"root": root, "pair": (pair_path, pair, str(root / "pair")), "seg": (seg_path, seg, str(root / "seg"))}


def _sources(out_dir: str) -> list:
    return [os.path.join(out_dir, f) for f in sorted(os.listdir(out_dir)) if f.endswith(".c")]


def _macro(header: str, name: str) -> str:
    match = re.search(rf"^#define {name}\s+(.+?)(\s+/\*.*)?$", header, re.M)
    assert match, f"{name} not in the header"
    return match.group(1)


def test_header_lists_io_quantization_and_status(two_models):
    path, result, out_dir = two_models["pair"]
    header = open(os.path.join(out_dir, "pair_model.h")).read()
    spec = json.load(open(os.path.join(out_dir, "io.json")))
    # the quantization written into the .tflite (int8_net's input and the ADD's output)
    assert (spec["inputs"][0]["scale"], spec["inputs"][0]["zero_point"]) == (pytest.approx(0.047), -7)
    assert (spec["outputs"][1]["scale"], spec["outputs"][1]["zero_point"]) == (pytest.approx(0.09), -2)
    assert _macro(header, "PAIR_NUM_INPUTS") == "2" and _macro(header, "PAIR_NUM_OUTPUTS") == "2"
    for role in ("input", "output"):
        for i, tensor in enumerate(spec[role + "s"]):
            macro = f"PAIR_{role.upper()}{i}"
            assert _macro(header, f"{macro}_SHAPE") == "{" + ", ".join(map(str, tensor["shape"])) + "}"
            assert _macro(header, f"{macro}_BYTES") == f"{int(np.prod(tensor['shape']))}u"
            assert float(_macro(header, f"{macro}_SCALE").rstrip("f")) == pytest.approx(tensor["scale"], rel=1e-7)
            assert _macro(header, f"{macro}_ZERO_POINT") == f"({tensor['zero_point']})"
            assert f"typedef int8_t pair_{role}{i}_t;" in header
    for name, value, _ in STATUS_CODES:
        assert _macro(header, f"PAIR_{name}") == str(value)
    from tvm_tinyseg import __version__
    assert _macro(header, "PAIR_GENERATOR_VERSION") == f'"tvm_tinyseg {__version__}"'
    assert _macro(header, "PAIR_ARENA_BYTES") == f"{result.plan.size}u"


def test_header_links_from_cpp(two_models, tmp_path):
    """C++ firmware calls the C runner: without extern "C" the mangled name would not link."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    _, _, out_dir = two_models["pair"]
    main = tmp_path / "main.cpp"
    main.write_text('#include "pair_model.h"\n'
                    "int main() {\n"
                    "  return pair_run(pair_input0_buffer(), pair_input1_buffer(), pair_output0_buffer(),\n"
                    "                  pair_output1_buffer()) == PAIR_OK ? 0 : 1;\n}\n")
    objects = []
    for source in _sources(out_dir):
        objects.append(str(tmp_path / (os.path.basename(source) + ".o")))
        subprocess.run(["cc", *STRICT_CFLAGS, "-I", out_dir, "-c", source, "-o", objects[-1]], check=True)
    proc = subprocess.run(["g++", "-Wall", "-Wextra", "-Werror", "-I", out_dir, str(main), *objects,
                           "-o", str(tmp_path / "cpp_main"), "-lm"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run([str(tmp_path / "cpp_main")]).returncode == 0


def _build_two_models(two_models, cc, flags, out):
    dirs = [two_models["pair"][2], two_models["seg"][2]]
    sources = [s for d in dirs for s in _sources(d)]
    cmd = [cc, *STRICT_CFLAGS, *flags, "-DSEG_NO_STATIC_ARENA", *(f"-I{d}" for d in dirs), *sources,
           TWO_MODELS_MAIN, "-o", str(out), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return str(out)


def _io_files(two_models, seed):
    pair_spec, seg_spec = two_models["pair"][1].io_spec, two_models["seg"][1].io_spec
    xs = inputs_of(pair_spec, seed) + inputs_of(seg_spec, seed + 1)
    want = (tflm_outputs(two_models["pair"][0], xs[:2], 2) + tflm_outputs(two_models["seg"][0], xs[2:], 1))
    return xs, want


def _check_outputs(workdir, names, want):
    for name, expected in zip(names, want):
        got = np.fromfile(os.path.join(workdir, name), dtype=np.int8).reshape(expected.shape)
        np.testing.assert_array_equal(got, expected)


def test_two_models_in_one_host_program(two_models, tmp_path):
    exe = _build_two_models(two_models, "cc", [], tmp_path / "two_models")
    xs, want = _io_files(two_models, seed=3)
    files = [str(tmp_path / n) for n in ("in0.bin", "in1.bin", "in2.bin", "out0.bin", "out1.bin", "out2.bin")]
    for path, x in zip(files, xs):
        x.tofile(path)
    proc = subprocess.run([exe, *files], capture_output=True, text=True)
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr}"
    _check_outputs(tmp_path, files[3:], want)


def _external_symbols(objects, nm="nm"):
    proc = subprocess.run([nm, "-g", "--defined-only", *objects], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in proc.stdout.splitlines() if len(line.split()) == 3]


@pytest.mark.parametrize("module", ["pair", "seg"])
def test_every_external_symbol_carries_the_prefix(two_models, module, tmp_path):
    out_dir = two_models[module][2]
    objects = []
    for source in _sources(out_dir):
        objects.append(str(tmp_path / (os.path.basename(source) + ".o")))
        subprocess.run(["cc", *STRICT_CFLAGS, "-I", out_dir, "-c", source, "-o", objects[-1]], check=True)
    symbols = _external_symbols(objects)
    assert f"{module}_run_with_arena" in symbols and f"{module}_storage_read" in symbols
    assert [s for s in symbols if not s.startswith(module + "_")] == []
    everything = subprocess.run(["nm", *objects], capture_output=True, text=True, check=True).stdout
    assert "tvm" not in everything.lower() and "tinyseg" not in everything


def test_module_name_must_be_a_c_identifier(two_models):
    with pytest.raises(TinySegError, match="module name '2nd-model'"):
        compile_model(two_models["pair"][0], module_name="2nd-model")


def test_arena_section_macro(two_models, tmp_path):
    """The static arena goes to .bss.NAME_arena, or to the section NAME_ARENA_SECTION names."""
    out_dir = two_models["pair"][2]
    source = os.path.join(out_dir, "pair_model.c")
    sections = {}
    for flags in ([], ['-DPAIR_ARENA_SECTION=".sram2"']):
        obj = str(tmp_path / "pair_model.o")
        subprocess.run(["cc", *STRICT_CFLAGS, *flags, "-I", out_dir, "-c", source, "-o", obj], check=True)
        table = subprocess.run(["objdump", "-t", obj], capture_output=True, text=True, check=True).stdout
        (line,) = [ln for ln in table.splitlines() if ln.endswith(" pair_arena")]
        sections[tuple(flags)] = line.split()[-3]
    assert sections == {(): ".bss.pair_arena", ('-DPAIR_ARENA_SECTION=".sram2"',): ".sram2"}


@pytest.mark.skipif(not qemu.available(), reason="arm-none-eabi-gcc or qemu-system-arm not installed")
def test_two_models_on_cortex_m7_under_qemu(two_models, tmp_path):
    template = template_dir("qemu_cortex_m")
    for name in ("startup.c", "semihost.c", "semihost.h", "mps2_an500.ld"):
        shutil.copy(os.path.join(template, name), tmp_path)
    flags = [*CORTEX_M7, "-ffunction-sections", "-fdata-sections", f"-I{tmp_path}",
             str(tmp_path / "startup.c"), str(tmp_path / "semihost.c"), "-nostartfiles", "--specs=nano.specs",
             "-T", str(tmp_path / "mps2_an500.ld"), "-Wl,--gc-sections"]
    elf = _build_two_models(two_models, qemu.CC, flags, tmp_path / "two_models.elf")
    symbols = subprocess.run(["arm-none-eabi-nm", elf], capture_output=True, text=True, check=True).stdout
    assert "tvm" not in symbols.lower() and {"pair_run", "seg_run_with_arena"} <= set(symbols.split())
    xs, want = _io_files(two_models, seed=5)
    for i, x in enumerate(xs):
        x.tofile(tmp_path / f"in{i}.bin")
    proc = qemu.run_firmware(elf, str(tmp_path), timeout=60)
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stdout} {proc.stderr}"
    _check_outputs(tmp_path, ["out0.bin", "out1.bin", "out2.bin"], want)


def test_readme_firmware_example_builds_and_runs(tmp_path):
    """The README's firmware example, with two models compiled under its names."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    example = re.search(r"### In your firmware.*?```c\n(.*?)```", readme, re.S).group(1)
    model = skip_model(tmp_path / "seg.tflite")
    dirs = []
    for name in ("person", "road"):
        dirs.append(str(tmp_path / name))
        compile_model(model, dirs[-1], module_name=name, ram_budget=-1, storage="mmap")
    (tmp_path / "example.c").write_text(example + "\nint main(void) {\n  static const int8_t frame[PERSON_INPUT_BYTES];\n"
                                        "  return segment_frame(frame) != PERSON_OK || person_score(0) != person_score(0);\n}\n")
    exe = str(tmp_path / "example")
    cmd = ["cc", *STRICT_CFLAGS, "-DROAD_NO_STATIC_ARENA", *(f"-I{d}" for d in dirs),
           *(s for d in dirs for s in _sources(d)), str(tmp_path / "example.c"), "-o", exe, "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run([exe]).returncode == 0
