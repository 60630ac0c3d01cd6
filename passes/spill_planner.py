"""Choose which tensors to spill so the arena fits a RAM budget while moving the fewest bytes.

A tensor is a spill candidate when it sits idle in RAM for a while: its *cold range* is the longest
gap between two consecutive uses (TinySeg's long-living tensors: U-Net skips). Spilling it writes
it to storage after the use that opens the gap and brings it back for the use that closes it:

* memory-mapped storage (``mmap``) with fused fetching: later consumers read it in place, so it
  needs no RAM after the spill;
* otherwise it is fetched into a RAM copy that lives from that consumer to its last use.

Unlike the published TinySeg (victim = longest cold range at the peak, repeated), the choice here
is the feasible set that moves the fewest bytes: exact over all subsets when there are few
candidates (U-Nets have a handful of skips), greedy by bytes saved per byte moved otherwise.
"""
import dataclasses
from dataclasses import dataclass
from itertools import combinations

import tvm_ffi

from tvm_tinyseg.errors import TinySegError

from .arena_planner import Buffer, align, peak_live_bytes, plan_arena
from .lifetime import LifetimeTable
from .row_overwrite import with_overwrites

EXACT_SEARCH_LIMIT = 12  # candidates; 2^12 subsets, each bounded in well under a millisecond
PLANS_PER_SEARCH = 8  # subsets, best bound first, that get a full arena plan


@dataclass(frozen=True)
class Spill:
    """Write ``tensor`` to storage after step ``after``; it is needed again at step ``until``.

    A partial spill (``rows`` set) writes only the first ``rows`` rows (axis 1: a contiguous prefix
    of an NHWC tensor); the other ``kept_nbytes`` stay in RAM until the tensor's last use."""

    tensor: str
    nbytes: int  # bytes written to storage
    after: int
    until: int
    reads: int  # uses at or after ``until`` (each reads the stored copy once)
    rows: int = None
    kept_nbytes: int = 0

    @property
    def moved_bytes(self) -> int:
        return self.nbytes * (1 + self.reads)

    def partial(self, rows: int, total_rows: int) -> "Spill":
        whole = self.nbytes + self.kept_nbytes
        stored = whole // total_rows * rows
        return dataclasses.replace(self, nbytes=stored, rows=rows, kept_nbytes=whole - stored)


@dataclass
class SpillPlan:
    spills: list
    arena_bytes: int
    storage_bytes: int

    @property
    def moved_bytes(self) -> int:
        return sum(s.moved_bytes for s in self.spills)


def candidates(table: LifetimeTable) -> list:
    """Spill candidates: every tensor but the model's input and output with an idle gap."""
    found = []
    for tensor in table.tensors.values():
        gap = tensor.cold_range
        if tensor.is_input or tensor.is_output or gap is None:
            continue
        reads = sum(1 for c in tensor.consumers if c >= gap[1])
        found.append(Spill(tensor.name, tensor.nbytes, gap[0], gap[1], reads))
    return found


def ram_buffers(table: LifetimeTable, spills, reads_in_place: bool, extra=(), overwrites=()) -> list:
    """Arena buffers once ``spills`` are applied (``reads_in_place``: mmap + fused fetch);
    ``overwrites`` (passes/row_overwrite.py) hold where the input still dies at its overwriter."""
    spilled = {s.tensor: s for s in spills}
    buffers = list(extra)
    for tensor in table.ram_tensors():
        spill = spilled.get(tensor.name)
        if spill is None:
            buffers.append(Buffer(tensor.name, tensor.nbytes, tensor.first, tensor.last))
            continue
        buffers.append(Buffer(tensor.name, tensor.nbytes, tensor.first, spill.after))
        if spill.kept_nbytes:
            buffers.append(Buffer(tensor.name + "@kept", spill.kept_nbytes, spill.after, tensor.last))
        if not reads_in_place:
            buffers.append(Buffer(tensor.name + "@fetched", tensor.nbytes, spill.until, tensor.last))
    return with_overwrites(buffers, overwrites)


def _storage_bytes(spills) -> int:
    return sum(s.nbytes for s in spills)


SMALLEST_FEASIBLE = -1  # a ram_budget asking for the smallest arena any spill set reaches


def choose_spills(table: LifetimeTable, ram_budget: int, *, reads_in_place: bool, planner: str = "exact",
                  extra_buffers=(), overwrites=()) -> SpillPlan:
    """The spill set that moves the fewest bytes while the arena fits ``ram_budget``
    (``SMALLEST_FEASIBLE``: the smallest arena reachable, then the fewest bytes moved).
    Raises BudgetError naming the smallest feasible budget when no set fits."""

    def buffers(spills):
        return ram_buffers(table, spills, reads_in_place, extra_buffers, overwrites)

    def arena(spills) -> int:
        return plan_arena(buffers(spills), planner).size

    options = candidates(table)
    base = arena([])
    if ram_budget != SMALLEST_FEASIBLE and base <= ram_budget:
        return SpillPlan([], base, 0)
    if len(options) <= EXACT_SEARCH_LIMIT:
        best, best_size = _exact_search(options, buffers, arena, ram_budget, base)
    else:
        best, best_size = _greedy(options, arena, ram_budget, base)
    if ram_budget != SMALLEST_FEASIBLE and best_size <= ram_budget and reads_in_place:
        best, best_size = _trim_to_budget(table, best, arena, ram_budget, best_size)
    if ram_budget == SMALLEST_FEASIBLE or best_size <= ram_budget:
        return SpillPlan(best, best_size, _storage_bytes(best))
    if len(options) <= EXACT_SEARCH_LIMIT:  # the budget search skipped subsets that cannot fit
        best_size = _exact_search(options, buffers, arena, SMALLEST_FEASIBLE, base)[1]
    raise BudgetError(f"RAM budget {ram_budget} B cannot be met: the smallest feasible arena is {best_size} B; "
                      f"set the budget (tinyseg.ram_budget, --ram-budget) to {best_size} or more")


def _moved(subset) -> int:
    return sum(s.moved_bytes for s in subset)


def _exact_search(options, buffers, arena, ram_budget, base):
    """Every subset, ranked by its lower bound (peak live bytes): for a budget, the fewest bytes
    moved among subsets whose bound meets it; for SMALLEST_FEASIBLE, the lowest bound, then the
    fewest bytes moved. Only the PLANS_PER_SEARCH best-ranked subsets get an arena plan (plans
    rarely exceed their bound by more than a few rows: a plan per subset would cost seconds each)."""
    subsets = [list(c) for k in range(1, len(options) + 1) for c in combinations(options, k)]
    bounds = [align(peak_live_bytes(buffers(subset))) for subset in subsets]
    if ram_budget == SMALLEST_FEASIBLE:
        ranked = sorted(range(len(subsets)), key=lambda i: (bounds[i], _moved(subsets[i])))
    else:
        ranked = sorted((i for i in range(len(subsets)) if bounds[i] <= ram_budget),
                        key=lambda i: (_moved(subsets[i]), bounds[i]))
    best, best_size = [], base
    for i in ranked[:PLANS_PER_SEARCH]:
        if ram_budget == SMALLEST_FEASIBLE and bounds[i] > best_size:
            break
        size = arena(subsets[i])
        if ram_budget != SMALLEST_FEASIBLE and size <= ram_budget:
            return subsets[i], size
        if size < best_size or (size == best_size and _moved(subsets[i]) < _moved(best)):
            best, best_size = subsets[i], size
    return best, best_size


def partial_rows(table: LifetimeTable, spill: Spill) -> int:
    """Rows a partial spill of ``spill.tensor`` can split (0: the tensor cannot be split)."""
    shape = table.tensors[spill.tensor].shape
    return int(shape[1]) if len(shape) == 4 and int(shape[0]) == 1 and int(shape[1]) > 1 else 0


def _trim_to_budget(table, spills, arena, ram_budget, size):
    """Partial spilling: keep in RAM as many rows of each spilled tensor (largest first) as the
    budget allows — fewer bytes moved for the same fit. Needs fused fetching (the consumer joins
    the stored and the kept rows as it reads them)."""
    spills = list(spills)
    for i in sorted(range(len(spills)), key=lambda i: -spills[i].nbytes):
        total = partial_rows(table, spills[i])
        if not total:
            continue
        low, high = 1, total  # the fewest rows that still fit lies in [low, high]
        while low < high:
            mid = (low + high) // 2
            trial = spills[:i] + [spills[i].partial(mid, total)] + spills[i + 1:]
            trial_size = arena(trial)
            if trial_size <= ram_budget:
                high = mid
            else:
                low = mid + 1
        if high < total:
            spills[i] = spills[i].partial(high, total)
            size = arena(spills)
    return spills, size


def _greedy(options, arena, ram_budget, base):
    chosen, size, remaining = [], base, list(options)
    while (ram_budget == SMALLEST_FEASIBLE or size > ram_budget) and remaining:
        scored = [(size - arena(chosen + [s]), s) for s in remaining]
        gain, pick = max(scored, key=lambda item: item[0] / item[1].moved_bytes)
        if gain <= 0:
            break
        chosen.append(pick)
        remaining.remove(pick)
        size -= gain
    return chosen, size


class BudgetError(TinySegError):
    """No spill set brings the arena under the RAM budget (the message names the smallest that can)."""


tvm_ffi.register_error(BudgetError.__name__, BudgetError)  # raised inside a pass, crosses the FFI
