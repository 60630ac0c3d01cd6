"""The boards a compiled model directory is built for, one module per board kind.

A board module declares ``NAME`` and, where the board has them::

    export_project(model_dir, ram_budget=None)     write a ready project into the model's directory
    build(model_dir, ...) -> str                   build it; return the executable or ELF
    run(model_dir, x, artifact=None, stats=None, storage_server=None) -> output
    available() -> bool                            whether the board's tools are installed
    stats_lines(stats) -> list                     what ``tinyseg run`` prints about a run
    FIRMWARE_RAM_BYTES                             RAM its firmware needs beside the arena
    MCPU                                           the only CPU it runs (``--mcpu``), if any

This registry names them without importing them: the CLI builds its parser from it, and a board's
module is imported only when it is used.
"""
import importlib
from dataclasses import dataclass

from tvm_tinyseg.errors import TinySegError


@dataclass(frozen=True)
class BoardKind:
    name: str  # --project NAME (when ``project``)
    module: str
    summary: str
    project: bool = True  # has export_project
    platform: str = None  # 'tinyseg run --platform NAME' (None: not built and run by the package)
    ram_budget: bool = False  # its build takes a RAM budget (the linker's RAM region)


BOARDS = (
    BoardKind("host", "tvm_tinyseg.boards.host", "the host C compiler", project=False, platform="host"),
    BoardKind("qemu_cortex_m", "tvm_tinyseg.boards.qemu_cortex_m",
              "bare-metal Cortex-M7 firmware (make), run under QEMU mps2-an500", platform="qemu", ram_budget=True),
    BoardKind("zephyr", "tvm_tinyseg.boards.zephyr", "a Zephyr application (west build -b BOARD)"),
    BoardKind("arduino", "tvm_tinyseg.boards.arduino",
              "an ATmega2560 sketch and library (arduino-builder), run in simavr", platform="avr"),
)
_BY_NAME = {kind.name: kind for kind in BOARDS}
_BY_PLATFORM = {kind.platform: kind for kind in BOARDS if kind.platform}


def project_kinds() -> list:
    """The ``--project`` choices."""
    return [kind.name for kind in BOARDS if kind.project]


def platforms() -> list:
    """The ``tinyseg run --platform`` choices."""
    return list(_BY_PLATFORM)


def kind(name: str) -> BoardKind:
    if name not in _BY_NAME:
        raise TinySegError(f"unknown board {name!r} (known: {', '.join(_BY_NAME)})")
    return _BY_NAME[name]


def kind_for_platform(platform: str) -> BoardKind:
    if platform not in _BY_PLATFORM:
        raise TinySegError(f"unknown platform {platform!r} (known: {', '.join(_BY_PLATFORM)})")
    return _BY_PLATFORM[platform]


def board(name: str):
    """The module of board kind ``name``."""
    return importlib.import_module(kind(name).module)


def exporter(name: str):
    """The function writing a project of kind ``name`` into a compiled model directory:
    ``exporter(name)(model_dir, ram_budget)``."""
    if not kind(name).project:
        raise TinySegError(f"board {name!r} has no project (projects: {', '.join(project_kinds())})")
    return board(name).export_project


def arena_budget(name: str, ram_budget):
    """The arena budget that leaves room for the firmware within a board's ``ram_budget`` (bytes;
    None or <= 0, e.g. 'min', pass through unchanged)."""
    if ram_budget is None or ram_budget <= 0:
        return ram_budget
    reserve = board(name).FIRMWARE_RAM_BYTES
    if ram_budget - reserve <= 0:
        raise TinySegError(f"RAM budget {ram_budget} B leaves nothing for the arena: the {name} firmware "
                           f"needs {reserve} B for its stack and state")
    return ram_budget - reserve


def check_project_mcpu(name: str, mcpu: str) -> None:
    """A TinySegError when ``--mcpu`` names another CPU than board ``name``'s."""
    want = getattr(board(name), "MCPU", None)
    if None not in (mcpu, want) and mcpu != want:
        raise TinySegError(f"--project {name} is a {want} board; --mcpu {mcpu} does not match it")
