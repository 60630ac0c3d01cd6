"""``tinyseg compile -o DIR`` replaces DIR whole or not at all (tvm_tinyseg/output_dir.py): stale
files of an earlier compile go, files the tool did not write are refused unless --force, and a
compile that fails or is killed leaves DIR as it was."""
import json
import os
import stat
import subprocess
import sys

import pytest
from conftest import MODELS

from tvm_tinyseg import cli, output_dir
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.boards import host, qemu_cortex_m as qemu

SMALL = f"{MODELS}/tinyunet_32x32_c1.tflite"


def _compile(capfd, out, *options) -> tuple:
    status = cli.main(["compile", SMALL, "-o", str(out), *options])
    return status, [line for line in capfd.readouterr().err.splitlines() if not line.startswith("[tinyseg]")]


def _contents(directory) -> dict:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _manifest(directory) -> list:
    return json.loads((directory / output_dir.MANIFEST).read_text())["files"]


def test_a_recompile_removes_the_stale_files_of_the_earlier_one(tmp_path, capfd):
    out = tmp_path / "out"
    assert _compile(capfd, out, "--storage", "file") == (0, [])
    host.build(str(out))  # a build product: an executable of this model
    qemu.export_project(str(out))  # what 'tinyseg run --platform qemu' writes first: template copies, project.mk
    assert {"storage_file.c", "tinyseg_host", "main.c", "project.mk", "README.md"} <= set(os.listdir(out))
    assert _compile(capfd, out, "--storage", "mmap", "--ram-budget", "min") == (0, [])
    files = set(os.listdir(out))
    assert "storage_buffer.c" in files
    assert not {"storage_file.c", "tinyseg_host", "main.c", "project.mk", "README.md"} & files
    assert sorted(files - {output_dir.MANIFEST}) == _manifest(out)
    assert json.loads((out / "memory.json").read_text())["storage"] == "mmap"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging or replaced directory left


def test_the_replaced_directory_keeps_its_permissions(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o751)
    with output_dir.replacing(out) as staging:
        open(os.path.join(staging, "a.c"), "w").write("x")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o751
    with output_dir.replacing(tmp_path / "new") as staging:
        pass
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o777 & ~umask


def test_a_directory_with_files_the_tool_did_not_write_needs_force(tmp_path, capfd):
    out = tmp_path / "firmware"
    out.mkdir()
    (out / "main.c").write_text("int main(void) { return 0; }\n")
    status, errors = _compile(capfd, out)
    assert status == 1 and len(errors) == 1, errors
    assert "firmware: holds files tinyseg did not write (main.c); give --force" in errors[0]
    assert os.listdir(out) == ["main.c"]

    assert _compile(capfd, out, "--force") == (0, [])
    assert (out / "main.c").read_text() == "int main(void) { return 0; }\n"  # kept
    assert "main.c" not in _manifest(out) and "tinyseg_model.c" in _manifest(out)
    status, errors = _compile(capfd, out)  # still not the tool's
    assert status == 1 and "main.c" in errors[0]


_KILLED_WHILE_WRITING = """
import os, signal, sys
from tvm_tinyseg import cli
from tvm_tinyseg.codegen import model_files

def copy_runtime(*args):  # the generated .c and .h are written; die before the rest
    os.kill(os.getpid(), signal.SIGKILL)

model_files.copy_runtime = copy_runtime
cli.main(["compile", sys.argv[1], "-o", sys.argv[2], "--storage", "mmap", "--ram-budget", "min"])
"""


@pytest.mark.slow
def test_a_compile_killed_while_writing_leaves_the_directory_as_it_was(tmp_path, capfd):
    out = tmp_path / "out"
    assert _compile(capfd, out) == (0, [])
    before = _contents(out)
    proc = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, SMALL, str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr
    assert _contents(out) == before  # not the new .c beside the old .h
    leftovers = [name for name in os.listdir(tmp_path) if name != "out"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.tinyseg-")
    assert _compile(capfd, out) == (0, [])  # the next compile clears what the killed one left
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_a_failure_inside_the_block_leaves_the_directory_and_names_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / output_dir.MANIFEST).write_text(json.dumps({"files": ["a.c"]}))
    (out / "a.c").write_text("old")
    with pytest.raises(TinySegError, match=f"^{out}: half written$"):
        with output_dir.replacing(out) as staging:
            (open(os.path.join(staging, "a.c"), "w")).write("new")
            raise TinySegError(f"{staging}: half written")
    assert (out / "a.c").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out"]


def test_a_symbolic_link_is_followed_and_kept(tmp_path):
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real)
    with output_dir.replacing(tmp_path / "link") as staging:
        open(os.path.join(staging, "a.c"), "w").write("x")
    assert (tmp_path / "link").is_symlink() and (real / "a.c").read_text() == "x"


def test_the_current_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TinySegError, match="is the current directory"):
        output_dir.check_target(".")
