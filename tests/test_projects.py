"""Board projects written by 'tinyseg compile --project': the QEMU firmware project builds and runs
with make alone and matches TFLite Micro; the Zephyr project's sources compile with the ARM compiler
against stand-in Zephyr headers (tests/zephyr_stubs) and, built for the host over a simulated NOR
flash, match TFLite Micro too."""
import configparser
import fnmatch
import glob
import json
import os
import re
import shutil
import socket
import subprocess

import numpy as np
import pytest
from conftest import run_tinyseg

from tvm_tinyseg.boards import qemu_cortex_m as qemu
from tvm_tinyseg.boards import zephyr
from tvm_tinyseg.boards.model_io import parse_stats
from tvm_tinyseg.microtvm_projects import TEMPLATES_DIR
from tvm_tinyseg.models import model_path
from tvm_tinyseg.reference import tflm_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZEPHYR_STUBS = os.path.join(REPO, "tests", "zephyr_stubs")
TINYUNET_32 = model_path("tinyunet_32x32_c1.tflite")
SYSTEM_PATH = {"PATH": "/usr/local/bin:/usr/bin:/bin"}  # no virtualenv: the project needs no Python
needs_qemu = pytest.mark.skipif(not qemu.available(), reason="make, arm-none-eabi-gcc or qemu-system-arm missing")
needs_arm_gcc = pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc missing")


def _compile_project(out_dir, *options):
    proc = run_tinyseg("compile", TINYUNET_32, "-o", out_dir, *options)
    assert proc.returncode == 0, proc.stderr
    return proc


def _input(seed=0):
    return np.random.default_rng(seed).integers(-128, 128, size=(1, 32, 32, 1), dtype=np.int8)


@pytest.fixture(scope="module")
def qemu_project(tmp_path_factory):
    """TinyUNet 32x32 spilling to a semihosted file, as a qemu_cortex_m project for a 16 KiB board
    (its arena alone is 17,664 B without spilling), moved away from where it was written (it must
    refer to nothing outside itself)."""
    root = tmp_path_factory.mktemp("qemu_project")
    _compile_project(root / "written", "--ram-budget", "16K", "--storage", "file", "--project", "qemu_cortex_m")
    shutil.copytree(root / "written", root / "moved")
    shutil.rmtree(root / "written")
    return root / "moved"


@needs_qemu
def test_qemu_project_builds_and_runs_with_make_alone(qemu_project):
    build = subprocess.run(["make", "-C", qemu_project], capture_output=True, text=True, env=SYSTEM_PATH)
    assert build.returncode == 0, build.stderr
    ram = qemu.static_memory(str(qemu_project / qemu.ELF))["ram"]
    assert ram <= 16 * 1024
    x = _input()
    x.tofile(qemu_project / "input.bin")
    run = subprocess.run(["make", "-s", "-C", qemu_project, "run"], capture_output=True, text=True, env=SYSTEM_PATH)
    assert run.returncode == 0, run.stdout + run.stderr
    y = np.fromfile(qemu_project / "output.bin", dtype=np.int8).reshape(1, 32, 32, 1)
    np.testing.assert_array_equal(y, tflm_output(TINYUNET_32, x))
    stats = parse_stats(run.stdout)
    assert stats["status"] == 0 and stats["storage_written"] > 0 and stats["storage_read"] > 0
    assert int(re.search(r"instructions=(\d+)", run.stdout).group(1)) > 0


@needs_qemu
def test_qemu_project_over_its_ram_budget_fails_at_link_time(qemu_project):
    proc = subprocess.run(["make", "-C", qemu_project, "RAM_BUDGET=12K"], capture_output=True, text=True,
                          env=SYSTEM_PATH)
    assert proc.returncode != 0
    assert re.search(r"region `RAM' overflowed by \d+ bytes", proc.stderr)


@needs_qemu
@pytest.mark.slow
def test_cli_project_budget_leaves_room_for_the_firmware(tmp_path):
    """The arena is planned for the board's budget minus the firmware's stack and state, so the
    firmware links at exactly the budget given."""
    out = tmp_path / "p"
    _compile_project(out, "--ram-budget", "22K", "--storage", "mmap", "--project", "qemu_cortex_m")
    assert "RAM_BUDGET ?= 22528" in (out / "project.mk").read_text()
    stats = {}
    x = _input(1)
    y = qemu.run(str(out), x, elf=qemu.build(str(out)), stats=stats)
    np.testing.assert_array_equal(y, tflm_output(TINYUNET_32, x))
    assert stats["static_ram_bytes"] <= 22 * 1024 and stats["storage_written"] > 0 and stats["instructions"] > 0


def test_template_files_are_package_data():
    """Every template file matches a package_data pattern of setup.cfg, so a wheel carries it."""
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    patterns = [p.strip() for p in config["options.package_data"]["tvm_tinyseg.microtvm_projects"].split(",")]
    paths = glob.glob(os.path.join(TEMPLATES_DIR, "*", "**"), recursive=True)
    files = [os.path.relpath(p, TEMPLATES_DIR) for p in paths if os.path.isfile(p) and "__pycache__" not in p]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) and f.count("/") == p.count("/") for p in patterns)]
    assert not missing


# --- Zephyr ---------------------------------------------------------------------------------------

def _xorshift_input(nbytes, seed=1):
    """main.c's fill_input(): xorshift32 from seed, the state's top byte per input byte."""
    state, out = seed, bytearray(nbytes)
    for i in range(nbytes):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        out[i] = state >> 24
    return out


def _fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


@pytest.fixture(scope="module")
def zephyr_project(tmp_path_factory):
    """TinyUNet 32x32 at its smallest arena, spilling to flash, as a Zephyr project."""
    out = tmp_path_factory.mktemp("zephyr") / "p"
    _compile_project(out, "--ram-budget", "min", "--storage", "file", "--project", "zephyr")
    return out


def _arm_compile(src, *defines):
    return subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-std=c99", "-O2", "-Wall", "-Wextra",
                           "-Werror", "-I", ZEPHYR_STUBS, "-I", os.path.dirname(src),
                           "-DTINYSEG_FLASH_PARTITION=storage_partition", *defines, "-c", src, "-o", os.devnull],
                          capture_output=True, text=True)


def test_zephyr_project_is_complete(zephyr_project):
    for name in ("CMakeLists.txt", "prj.conf", "README.md", "src/main.c", "src/tinyseg_model.c",
                 "src/tinyseg_model.h", "src/storage_flash_map.c"):
        assert (zephyr_project / name).is_file(), name
    assert "CONFIG_FLASH_MAP=y" in (zephyr_project / "prj.conf").read_text()
    assert not (zephyr_project / "src" / "storage_file.c").exists()  # the host backend stays out


@needs_arm_gcc
def test_zephyr_sources_compile_for_cortex_m_against_zephyr_headers(zephyr_project):
    sources = sorted(glob.glob(str(zephyr_project / "src" / "*.c")))
    assert len(sources) == 3
    for src in sources:
        proc = _arm_compile(src)
        assert proc.returncode == 0, proc.stderr


@needs_arm_gcc
def test_zephyr_partition_smaller_than_the_pool_fails_to_compile(zephyr_project):
    proc = _arm_compile(str(zephyr_project / "src" / "storage_flash_map.c"),
                        "-DSTUB_PARTITION_SIZE_storage_partition=1024")
    assert proc.returncode != 0 and "smaller than the storage pool" in proc.stderr


@needs_arm_gcc
def test_zephyr_without_a_storage_partition_fails_with_one_line(zephyr_project):
    proc = _arm_compile(str(zephyr_project / "src" / "storage_flash_map.c"), "-DSTUB_NO_STORAGE_PARTITION")
    errors = [line for line in proc.stderr.splitlines() if ": error:" in line]  # diagnostics, not source echoes
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "no flash partition" in errors[0] and "TINYSEG_SIM_FLASH=ON" in errors[0]


def _dts_nodes(text: str) -> dict:
    """Node label -> its properties' text, for the simple overlays the export writes."""
    assert text.count("{") == text.count("}")
    return {m.group(1): re.split(r"[{}]", text[m.end():], maxsplit=1)[0]
            for m in re.finditer(r"(\w+): [\w@,-]+ \{", text)}


def test_zephyr_file_project_ships_a_simulated_flash_for_boards_without_a_partition(zephyr_project):
    """sim_flash.overlay: a zephyr,sim-flash controller whose flash holds a storage_partition at
    least as large as the pool; the CMake option TINYSEG_SIM_FLASH adds it and its Kconfig."""
    report = json.loads((zephyr_project / "memory.json").read_text())
    nodes = _dts_nodes((zephyr_project / "sim_flash.overlay").read_text())
    assert 'compatible = "zephyr,sim-flash"' in nodes["tinyseg_sim_flash_controller"]
    partition = int(re.search(r"reg = <0x0+ (0x[0-9a-f]+)>", nodes["storage_partition"]).group(1), 16)
    flash = int(re.search(r"reg = <0x0+ (0x[0-9a-f]+)>", nodes["tinyseg_sim_flash"]).group(1), 16)
    erase_block = int(re.search(r"erase-block-size = <(\d+)>", nodes["tinyseg_sim_flash"]).group(1))
    assert report["storage_bytes"] <= partition <= flash and partition % erase_block == 0
    assert "CONFIG_FLASH_SIMULATOR=y" in (zephyr_project / "sim_flash.conf").read_text()
    cmake = (zephyr_project / "CMakeLists.txt").read_text()
    option = cmake.index("if(TINYSEG_SIM_FLASH)")
    assert option < cmake.index("find_package(Zephyr")  # overlays and conf files are read by find_package
    assert "EXTRA_DTC_OVERLAY_FILE" in cmake[option:] and "EXTRA_CONF_FILE" in cmake[option:]


def _prj_conf(project) -> dict:
    lines = (project / "prj.conf").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.startswith("CONFIG_"))


@needs_qemu
def test_zephyr_main_stack_covers_the_stack_the_model_uses_under_qemu(zephyr_project, tmp_path):
    """CONFIG_MAIN_STACK_SIZE comes from the model's stack frames: smaller than Zephyr's usual 4 KiB,
    and what it leaves beside the allowance for main/printk/drivers holds the peak stack the same
    model uses as Cortex-M7 firmware under QEMU (measured by the firmware's stack painting)."""
    stack = int(_prj_conf(zephyr_project)["CONFIG_MAIN_STACK_SIZE"])
    assert stack % zephyr.STACK_ALIGN == 0 and stack < zephyr.DEFAULT_MAIN_STACK
    model_dir = tmp_path / "m"
    shutil.copytree(zephyr_project, model_dir)
    stats = {}
    x = _input()
    y = qemu.run(str(model_dir), x, qemu.build(str(model_dir)), stats=stats)
    np.testing.assert_array_equal(y, tflm_output(TINYUNET_32, x))
    assert 0 < stats["stack_used"] <= stack - zephyr.ZEPHYR_MAIN_ALLOWANCE


def _zephyr_host_build(project, tmp_path, sims, *defines) -> str:
    """The Zephyr project's sources built for the host with the stand-in APIs implemented by
    ``sims`` (tests/zephyr_stubs/*_sim.c)."""
    exe = str(tmp_path / "zephyr_host")
    sources = [*glob.glob(str(project / "src" / "*.c")), *(os.path.join(ZEPHYR_STUBS, f"{s}_sim.c") for s in sims)]
    build = subprocess.run(["cc", "-std=gnu99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", ZEPHYR_STUBS,
                            "-I", str(project / "src"), *defines, *sources, "-o", exe, "-lm"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe


def _zephyr_host_run(project, tmp_path, sims, *defines, env=None) -> dict:
    """Build and run; the stats line of a successful run."""
    run = subprocess.run([_zephyr_host_build(project, tmp_path, sims, *defines)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stdout
    return parse_stats(run.stdout)


def _tflm_hash_of_main_input():
    x = np.frombuffer(bytes(_xorshift_input(32 * 32)), dtype=np.int8).reshape(1, 32, 32, 1)
    return _fnv1a(tflm_output(TINYUNET_32, x).tobytes())


@pytest.mark.parametrize("write_block", [4, 16])
def test_zephyr_project_on_simulated_flash_matches_tflm(zephyr_project, tmp_path, write_block):
    """The Zephyr sources, linked with host implementations of the stand-in APIs (NOR flash that
    refuses to program unerased bytes), print the FNV-1a hash of TFLite Micro's output."""
    stats = _zephyr_host_run(zephyr_project, tmp_path, ["kernel", "flash"], f"-DSTUB_WRITE_BLOCK={write_block}u")
    assert stats["status"] == 0
    assert stats["output_fnv1a"] == _tflm_hash_of_main_input()
    assert stats["storage_written"] > 0 and stats["storage_read"] > 0


def test_zephyr_app_resets_the_board_when_done_under_qemu(zephyr_project, tmp_path):
    """On a QEMU target main() prints its stats, then resets the board (sys_reboot), which ends
    QEMU because the project runs it with -no-reboot."""
    assert "-no-reboot" in (zephyr_project / "CMakeLists.txt").read_text()
    assert _prj_conf(zephyr_project)["CONFIG_REBOOT"] == "y"
    exe = _zephyr_host_build(zephyr_project, tmp_path, ["kernel", "flash"], "-DCONFIG_QEMU_TARGET", "-DCONFIG_REBOOT")
    run = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.rstrip().endswith("stub: sys_reboot(1)")
    assert parse_stats(run.stdout)["output_fnv1a"] == _tflm_hash_of_main_input()
    plain = subprocess.run([_zephyr_host_build(zephyr_project, tmp_path, ["kernel", "flash"])], capture_output=True,
                           text=True, timeout=120)
    assert "sys_reboot" not in plain.stdout  # real boards keep running


@needs_arm_gcc
def test_zephyr_qemu_exit_compiles_for_cortex_m(zephyr_project):
    proc = _arm_compile(str(zephyr_project / "src" / "main.c"), "-DCONFIG_QEMU_TARGET", "-DCONFIG_REBOOT")
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def zephyr_uart_project(tmp_path_factory):
    """TinyUNet 32x32 at its smallest arena, spilling to the storage server over a UART."""
    out = tmp_path_factory.mktemp("zephyr_uart") / "p"
    _compile_project(out, "--ram-budget", "min", "--storage", "uart", "--project", "zephyr")
    return out


@needs_arm_gcc
@pytest.mark.slow
def test_zephyr_uart_project_compiles_for_cortex_m(zephyr_uart_project):
    names = sorted(os.path.basename(p) for p in glob.glob(str(zephyr_uart_project / "src" / "*.c")))
    assert names == ["link_uart.c", "main.c", "storage_remote.c", "tinyseg_model.c"]
    assert "CONFIG_SERIAL=y" in (zephyr_uart_project / "prj.conf").read_text()
    for name in names:
        proc = _arm_compile(str(zephyr_uart_project / "src" / name))
        assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_zephyr_uart_project_with_a_storage_server_matches_tflm(zephyr_uart_project, tmp_path):
    """Its UART link, on a host UART that is a TCP connection, spills to the package's storage
    server and the output hash is TFLite Micro's."""
    from tvm_tinyseg.storage_server import StorageServer

    with StorageServer() as server:
        env = dict(os.environ, STUB_UART_PORT=str(server.port))
        stats = _zephyr_host_run(zephyr_uart_project, tmp_path, ["kernel", "uart"], env=env)
    assert stats["status"] == 0
    assert stats["output_fnv1a"] == _tflm_hash_of_main_input()
    assert stats["storage_written"] > 0 and stats["storage_read"] > 0


@pytest.mark.slow
def test_zephyr_uart_project_without_a_server_reports_a_storage_error(zephyr_uart_project, tmp_path):
    exe = _zephyr_host_build(zephyr_uart_project, tmp_path, ["kernel", "uart"])
    with socket.socket() as unused:  # a loopback port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    run = subprocess.run([exe], capture_output=True, text=True, env=dict(os.environ, STUB_UART_PORT=str(port)),
                         timeout=60)
    assert run.returncode != 0 and parse_stats(run.stdout)["status"] != 0


@needs_arm_gcc
@pytest.mark.slow
def test_zephyr_project_with_mapped_storage_compiles(tmp_path):
    out = tmp_path / "p"
    _compile_project(out, "--ram-budget", "min", "--storage", "mmap", "--project", "zephyr")
    assert (out / "src" / "storage_buffer.c").is_file() and "CONFIG_FLASH" not in (out / "prj.conf").read_text()
    for src in glob.glob(str(out / "src" / "*.c")):
        proc = _arm_compile(src)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_zephyr_mapped_storage_counts_the_bytes_read_through_the_mapping(tmp_path):
    """mmap storage: consumers read the pool in place, and the stats count those reads, so the
    traffic printed is the report's moved bytes."""
    out = tmp_path / "p"
    _compile_project(out, "--ram-budget", "min", "--storage", "mmap", "--project", "zephyr")
    report = json.loads((out / "memory.json").read_text())
    assert not (out / "sim_flash.overlay").exists()  # flash storage only
    stats = _zephyr_host_run(out, tmp_path, ["kernel"])
    assert stats["status"] == 0 and stats["output_fnv1a"] == _tflm_hash_of_main_input()
    assert stats["storage_read"] > 0 and stats["storage_written"] + stats["storage_read"] == report["moved_bytes"]


# --- module names ---------------------------------------------------------------------------------

def _prefixed_identifiers(directory, prefix):
    """Identifiers starting with ``prefix`` in the C sources under ``directory``."""
    found = set()
    for path in glob.glob(str(directory / "**" / "*.[ch]"), recursive=True) + \
            glob.glob(str(directory / "**" / "*.ino"), recursive=True) + \
            glob.glob(str(directory / "**" / "*.cpp"), recursive=True):
        found.update(re.findall(rf"\b{prefix}\w*", re.sub(r"/\*.*?\*/|//[^\n]*", "", open(path).read(), flags=re.S)))
    return found


@pytest.mark.slow
def test_zephyr_project_under_a_module_name_matches_tflm(tmp_path):
    """--module-name seg: the project's code calls seg_run and includes seg_model.h; no tinyseg_
    name is left in it, and it still prints TFLite Micro's output hash."""
    out = tmp_path / "p"
    _compile_project(out, "--ram-budget", "min", "--storage", "file", "--project", "zephyr", "--module-name", "seg")
    src = out / "src"
    assert "seg_run(" in (src / "main.c").read_text() and (src / "seg_model.c").is_file()
    assert not _prefixed_identifiers(src, "tinyseg_") and not _prefixed_identifiers(src, "TINYSEG_")
    assert "SEG_SIM_FLASH" in (out / "CMakeLists.txt").read_text()
    stats = _zephyr_host_run(out, tmp_path, ["kernel", "flash"])
    assert stats["status"] == 0 and stats["output_fnv1a"] == _tflm_hash_of_main_input()


@needs_qemu
@pytest.mark.slow
def test_qemu_project_under_a_module_name_runs_and_matches_tflm(tmp_path):
    out = tmp_path / "p"
    _compile_project(out, "--ram-budget", "16K", "--storage", "file", "--project", "qemu_cortex_m",
                     "--module-name", "seg")
    assert "seg_run(" in (out / "main.c").read_text()
    assert "MODEL_SOURCES = seg_model.c" in (out / "project.mk").read_text()
    assert not _prefixed_identifiers(out, "tinyseg_run")
    x = _input(2)
    stats = {}
    np.testing.assert_array_equal(qemu.run(str(out), x, qemu.build(str(out)), stats=stats), tflm_output(TINYUNET_32, x))
    assert stats["storage_written"] > 0
