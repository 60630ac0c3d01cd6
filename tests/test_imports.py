"""Every tvm_tinyseg module imports on its own, and the package's modules import each other in
no cycle (counting imports inside functions: a lazy import hides a cycle, it does not break it)."""
import ast
import inspect
import os
import subprocess
import sys
import textwrap

import tvm_tinyseg

PACKAGE_DIR = os.path.dirname(tvm_tinyseg.__file__)
PASSES_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "passes")  # installed as tvm_tinyseg.passes


def _modules() -> dict:
    """Module name → source file, for every module of the package."""
    found = {}
    for prefix, root in (("tvm_tinyseg", PACKAGE_DIR), ("tvm_tinyseg.passes", PASSES_DIR)):
        for folder, _, files in os.walk(root):
            for name in files:
                if not name.endswith(".py") or "__pycache__" in folder:
                    continue
                parts = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                if parts[:1] == ["passes"] and prefix == "tvm_tinyseg":
                    continue  # a source checkout's passes/ link, if any: listed under its own prefix
                found[".".join([prefix, *parts])] = os.path.join(folder, name)
    return found


def _imports(module: str, path: str, known) -> set:
    """The package's modules ``module`` imports anywhere in its file (relative imports resolved)."""
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        found.update(n for n in names if n in known and n != module)
    return found


def test_package_modules_import_each_other_in_no_cycle():
    modules = _modules()
    graph = {m: _imports(m, path, modules) for m, path in modules.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open" and not n.startswith(m + "."):  # importing one's own submodule is fine
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    real = [c for c in cycles if not _parent_package_edge(c)]
    assert not real, "import cycles: " + "; ".join(real)


def _parent_package_edge(cycle: str) -> bool:
    """A package's __init__ importing its own submodule (``a -> a.b -> a``) is not a cycle."""
    names = cycle.split(" -> ")
    return any(b.startswith(a + ".") for a, b in zip(names, names[1:]))


def test_every_module_imports_in_a_fresh_interpreter():
    """One interpreter imports TVM once, then forks a child per module that imports just that module."""
    script = textwrap.dedent("""
        import importlib, os, sys, traceback
        import tvm, tvm_ffi, numpy  # third-party only: every child starts with no tvm_tinyseg module
        assert not any(m.startswith("tvm_tinyseg") for m in sys.modules)
        failed = []
        for name in sys.argv[1:]:
            pid = os.fork()
            if pid == 0:
                try:
                    importlib.import_module(name)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            if os.waitpid(pid, 0)[1] != 0:
                failed.append(name)
        print("FAILED", failed)
        sys.exit(1 if failed else 0)
    """)
    modules = sorted(m for m in _modules() if not m.endswith("__main__"))
    proc = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_the_board_registry_imports_no_board_until_one_is_used():
    """The CLI builds its --project/--platform choices from the registry alone."""
    script = ("import sys, tvm_tinyseg.cli; "
              "print(sorted(m for m in sys.modules if m.startswith('tvm_tinyseg.boards.')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-2000:]


def test_every_registered_board_module_has_the_board_interface():
    from tvm_tinyseg import boards

    for kind in boards.BOARDS:
        module = boards.board(kind.name)
        assert module.NAME == kind.name and module.FIRMWARE_RAM_BYTES >= 0
        assert callable(getattr(module, "export_project", None)) == kind.project, kind.name
        if kind.platform:
            for function in ("build", "run", "available", "stats_lines"):
                assert callable(getattr(module, function, None)), (kind.name, function)
            assert "ram_budget" in inspect.signature(module.build).parameters or not kind.ram_budget
            run = list(inspect.signature(module.run).parameters)  # model_dir, x, the built file, stats
            assert run[:2] == ["model_dir", "x"] and run[3] == "stats" and "storage_server" in run, kind.name
