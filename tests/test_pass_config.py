"""TinySeg's options live in TVM's own PassContext: registered on demand (tvm_ffi builds the
registration once), typed, validated."""
import dataclasses
import os
import subprocess
import sys
import textwrap
import time

import pytest
import tvm

from tvm_tinyseg import pass_config
from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.pass_config import OPTIONS, STORAGE_KINDS, TinySegOptions, current_options, register_options


@pytest.fixture(scope="module", autouse=True)
def registered():
    register_options()


def test_table_matches_dataclass():
    fields = {f.name: f.default for f in dataclasses.fields(TinySegOptions)}
    assert {o.key.removeprefix("tinyseg."): o.default for o in OPTIONS} == fields
    assert all(isinstance(o.default, o.type) for o in OPTIONS)


def test_registered_with_types():
    configs = tvm.transform.PassContext.list_configs()
    for option in OPTIONS:
        assert configs[option.key]["type"] == option.type.__name__


def test_values_inside_context_and_defaults_outside():
    assert current_options() == TinySegOptions()
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 4096, "tinyseg.storage": "mmap"}):
        options = current_options()
    assert options == TinySegOptions(ram_budget=4096, storage="mmap")
    assert type(options.ram_budget) is int and type(options.storage) is str
    assert current_options() == TinySegOptions()


def test_all_options_and_explicit_context():
    config = {"tinyseg.ram_budget": 131072, "tinyseg.storage": "uart", "tinyseg.fuse_fetch": False,
              "tinyseg.planner": "greedy_by_size", "tinyseg.enable": False, "tinyseg.overwrite_rows": False}
    ctx = tvm.transform.PassContext(config=config)
    assert current_options(ctx) == TinySegOptions(131072, "uart", False, "greedy_by_size", False, False)


@pytest.mark.parametrize("key, value, expected", [
    ("tinyseg.ram_budget", "big", "int"),
    ("tinyseg.ram_budget", True, "int"),
    ("tinyseg.ram_budget", 1.5, "int"),
    ("tinyseg.fuse_fetch", "yes", "bool"),
    ("tinyseg.storage", 3, "str"),
])
def test_wrong_type_names_key_and_type(key, value, expected):
    with pytest.raises(TypeError) as info:
        tvm.transform.PassContext(config={key: value})
    assert isinstance(info.value, TinySegError)
    message = str(info.value)
    assert key in message and f"expects {expected}" in message and "\n" not in message


def test_bool_accepts_0_and_1():
    with tvm.transform.PassContext(config={"tinyseg.fuse_fetch": 0}):
        assert current_options().fuse_fetch is False


def test_unknown_tinyseg_key_still_rejected():
    with pytest.raises(Exception, match="Invalid config option 'tinyseg.ram_budgett'"):
        tvm.transform.PassContext(config={"tinyseg.ram_budgett": 1})


@pytest.mark.parametrize("config, words", [
    ({"tinyseg.storage": "qspi"}, ["tinyseg.storage", *map(repr, STORAGE_KINDS), "'qspi'"]),
    ({"tinyseg.ram_budget": -2}, ["tinyseg.ram_budget", ">= 0"]),
    ({"tinyseg.planner": "tetris"}, ["tinyseg.planner", "'greedy_by_size'", "'best_of'", "'tetris'"]),
])
def test_invalid_value_names_key_and_allowed_values(config, words):
    with tvm.transform.PassContext(config=config):
        with pytest.raises(TinySegError) as info:
            current_options()
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "\n" not in message


def test_registration_is_idempotent():
    # Registering again is harmless (TVM would ICHECK on a duplicate key: the registration looks first).
    pass_config._registered.clear()
    register_options()
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 1}):
        assert current_options().ram_budget == 1


def test_no_compiler_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TVM_FFI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(TinySegError, match="cannot build TinySeg's PassContext options") as info:
        pass_config._registrar()
    assert "\n" not in str(info.value)


_CHILD = textwrap.dedent("""
    import tvm
    from tvm_tinyseg import pass_config
    pass_config.register_options()
    with tvm.transform.PassContext(config={"tinyseg.storage": "mmap"}):
        assert pass_config.current_options().storage == "mmap"
""")


@pytest.mark.slow
def test_registration_is_built_once_reused_from_the_cache_and_rebuilt_if_truncated(tmp_path):
    env = {**os.environ, "TVM_FFI_CACHE_DIR": str(tmp_path)}

    def child():
        result = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        return {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.so")}

    built = child()
    assert len(built) == 1
    assert child() == built  # not rebuilt
    (library,) = built
    size = library.stat().st_size
    with open(library, "r+b") as f:  # a build cut short: loading it as is would end in SIGBUS
        f.truncate(size // 2)
    child()
    assert library.stat().st_size == size


_IMPORT = textwrap.dedent("""
    import sys, time
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline
    start = time.perf_counter()
    import tvm_tinyseg.pipeline
    seconds = time.perf_counter() - start
    assert not [k for k in tvm.transform.PassContext.list_configs() if k.startswith("tinyseg.")]
    print(seconds)
""")


def test_importing_the_pipeline_runs_no_compiler_and_is_quick(tmp_path):
    # No compiler, no ninja on PATH, an empty tvm_ffi cache: an import that built anything would fail.
    env = {**os.environ, "PATH": str(tmp_path), "TVM_FFI_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("CXX", None)
    result = subprocess.run([sys.executable, "-c", _IMPORT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1.0  # beyond TVM itself
    assert not (tmp_path / "cache").exists()


def _fake_build(tmp_path, log):
    """A stand-in for tvm_ffi's cached build: writes the library only when it is missing."""
    library = tmp_path / "libshim.so"

    def build():
        if not library.exists():
            library.write_bytes(b"\x7fELF" + bytes(range(256)) * 64)
            log.append("built")
        return str(library)
    return library, build


@pytest.mark.parametrize("damage", ["truncated", "bytes changed in place", "no record"])
def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path, damage):
    log = []
    library, build = _fake_build(tmp_path, log)
    assert pass_config.checked_build(build) == str(library) and log == ["built"]
    good = library.read_bytes()
    old = time.time() - 60  # made by an earlier process
    os.utime(library, (old, old))
    assert pass_config.checked_build(build) == str(library) and log == ["built"]  # intact: reused
    if damage == "truncated":
        library.write_bytes(good[:len(good) // 2])
    elif damage == "bytes changed in place":
        library.write_bytes(good[:100] + bytes(64) + good[164:])
    else:
        os.unlink(str(library) + ".sha256")
    os.utime(library, (old, old))
    assert pass_config.checked_build(build) == str(library)
    assert log == ["built", "built"] and library.read_bytes() == good
