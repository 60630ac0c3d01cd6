"""TinySeg's options live in TVM's own PassContext: registered by a cached C++ shim, typed, validated."""
import dataclasses
import os
import subprocess
import sys
import textwrap

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


def test_registration_is_idempotent_and_cache_reused():
    path = pass_config.shim_path()
    assert path.exists()
    mtime, count = path.stat().st_mtime_ns, pass_config.compile_count
    register_options()
    assert pass_config.build_shim() == path
    # Registering again through the shim itself is harmless too (TVM would ICHECK on a duplicate).
    pass_config._registered.clear()
    register_options()
    assert path.stat().st_mtime_ns == mtime and pass_config.compile_count == count
    with tvm.transform.PassContext(config={"tinyseg.ram_budget": 1}):
        assert current_options().ram_budget == 1


def test_no_compiler_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYSEG_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(TinySegError, match="no C.. compiler found .install g..") as info:
        pass_config.build_shim()
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


_CHILD = textwrap.dedent("""
    import tvm
    from tvm_tinyseg import pass_config
    pass_config.register_options()
    with tvm.transform.PassContext(config={"tinyseg.storage": "mmap"}):
        assert pass_config.current_options().storage == "mmap"
    print(pass_config.compile_count, pass_config.shim_path())
""")


def test_cache_dir_env_builds_there_and_is_reused(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "TINYSEG_CACHE_DIR": str(cache)}

    def child():
        result = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        count, path = result.stdout.split()
        return int(count), path

    count, path = child()
    assert count == 1 and os.path.dirname(path) == str(cache)
    assert [p.name for p in cache.iterdir()] == [os.path.basename(path)]  # no temporary left behind
    assert child() == (0, path)
