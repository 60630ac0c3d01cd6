"""NAME.mk and NAME.cmake, written with every compile, build the model into a firmware of the
user's own (here a tiny host program) without the Python package: only the fragment names the
sources and include directories of the chosen storage backend."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from api_models import inputs_of, skip_model, tflm_outputs
from tvm_tinyseg.driver import compile_model

MAIN_C = """#include <stdio.h>
#include "seg_model.h"

int main(int argc, char **argv) {
  FILE *f = argc == 3 ? fopen(argv[1], "rb") : NULL;
  if (f == NULL || fread(seg_input_buffer(), 1, SEG_INPUT_BYTES, f) != SEG_INPUT_BYTES) return 66;
  fclose(f);
  int status = seg_run(seg_input_buffer(), seg_output_buffer());
  if (status != SEG_OK) return status;
  f = fopen(argv[2], "wb");
  if (f == NULL || fwrite(seg_output_buffer(), 1, SEG_OUTPUT_BYTES, f) != SEG_OUTPUT_BYTES) return 73;
  return fclose(f) == 0 ? 0 : 73;
}
"""

MAKEFILE = """include {model_dir}/seg.mk
CFLAGS = -std=c99 -O2 -Wall -Wextra -Werror $(addprefix -I,$(SEG_INCLUDE_DIRS))

app: main.c $(SEG_SOURCES)
\t$(CC) $(CFLAGS) $^ -o $@ $(SEG_LDLIBS)
"""

CMAKELISTS = """cmake_minimum_required(VERSION 3.13)
project(app C)
include({model_dir}/seg.cmake)
add_executable(app main.c)
target_link_libraries(app PRIVATE seg)
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return skip_model(tmp_path_factory.mktemp("fragments") / "seg.tflite")


def _run_and_compare(model_path, spec, exe, workdir):
    x = inputs_of(spec, seed=11)[0]
    x.tofile(workdir / "in.bin")
    env = dict(os.environ, SEG_STORAGE_FILE=str(workdir / "storage.bin"))
    proc = subprocess.run([exe, str(workdir / "in.bin"), str(workdir / "out.bin")], env=env, cwd=workdir)
    assert proc.returncode == 0
    (want,) = tflm_outputs(model_path, [x], 1)
    np.testing.assert_array_equal(np.fromfile(workdir / "out.bin", dtype=np.int8).reshape(want.shape), want)


def _app_dir(tmp_path, build_file, text, model_dir):
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.c").write_text(MAIN_C)
    (app / build_file).write_text(text.format(model_dir=model_dir))
    return app


def test_makefile_fragment_builds_the_model(model, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    result = compile_model(model, str(tmp_path / "seg"), module_name="seg", ram_budget=-1, storage="mmap")
    assert result.memory_report["spilled"]
    app = _app_dir(tmp_path, "Makefile", MAKEFILE, tmp_path / "seg")
    proc = subprocess.run(["make", "-s", "-C", str(app)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    _run_and_compare(model, result.io_spec, str(app / "app"), app)


def test_cmake_fragment_builds_the_model(model, tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake not installed")
    result = compile_model(model, str(tmp_path / "seg"), module_name="seg", ram_budget=-1, storage="file")
    app = _app_dir(tmp_path, "CMakeLists.txt", CMAKELISTS, tmp_path / "seg")
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(app), "-B", str(build), "-DCMAKE_C_FLAGS=-Wall -Wextra -Werror"],
                ["cmake", "--build", str(build)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    _run_and_compare(model, result.io_spec, str(build / "app"), tmp_path)
