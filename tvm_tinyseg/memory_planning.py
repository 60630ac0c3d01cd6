"""The memory planning stage: a kernel module and the TinySeg options → a :class:`MemoryPlan`.

The driver (C for microcontrollers), the registered Relax pipeline and ``tinyseg bench`` all plan
through :func:`plan_memory`; nothing else chooses spills or places buffers. The stage:

1. chooses the spill set for the RAM budget (``passes/spill_planner.choose_spills``, judging each
   set with the row overwrites ``passes/row_overwrite.find_overwrites`` finds);
2. rewrites the module for it (``InsertSpillFetch(spills)``, then the passes that schedule the
   spilled reads: StreamStoredRows, MCUSchedule, RollStreamWindows);
3. places the RAM buffers of the result — tensors, kernel workspaces (the streamed row windows the
   spill planner cannot foresee), overwrite pairs — in the arena, and the stored tensors in the
   storage pool, with the arena planner ``options.planner`` (``arena_planner.PLANNERS``).

When step 3 overshoots the budget, steps 1-2 are repeated for a budget tighter by the overshoot;
failing that, the spill set of the smallest arena is used — with ``options.stream_rows``, plus the
chains of row-local kernels ``stream_chains`` picks to run through row rings (the chain touching
the arena's peak first) — if it fits, else :class:`BudgetError` names the user's budget and that
arena, which this function really planned; spills that a fitting streamed plan does not need are then
dropped one by one (``_fewer_spills``). ``SMALLEST_FEASIBLE`` streams chains while the arena shrinks.
"""
import logging
from dataclasses import dataclass, field

import tvm

from tvm_tinyseg.codegen.emit_c import workspace_buffer
from tvm_tinyseg.pass_config import TinySegOptions
from tvm_tinyseg.progress import Accumulated
from tvm_tinyseg.passes.arena_planner import ArenaPlan, Buffer, peak_live_bytes, plan_arena
from tvm_tinyseg.passes.insert_spill_fetch import InsertSpillFetch, reads_in_place
from tvm_tinyseg.passes.lifetime import EXTERNAL_IO_ATTR, LifetimeTable, analyze_lifetimes
from tvm_tinyseg.passes.mcu_schedule import MCUSchedule
from tvm_tinyseg.passes.row_overwrite import find_overwrites, with_overwrites
from tvm_tinyseg.passes.spill_at_production import WriteSpillsAtProduction
from tvm_tinyseg.passes.spill_planner import SMALLEST_FEASIBLE, BudgetError, candidates, choose_spills
from tvm_tinyseg.passes.stream_row_chains import StreamRowChains, find_chains
from tvm_tinyseg.passes.stream_stored_rows import STREAM_BYTES_ATTR, RollStreamWindows, StreamStoredRows

_log = logging.getLogger(__name__)
MAX_BUDGET_ROUNDS = 3  # spill sets tried for a budget before falling back to the smallest arena
TIMELINE_WIDTH = 64  # characters standing for the arena in MemoryPlan.to_text


@dataclass
class MemoryPlan:
    """Where every byte of one inference lives: ``mod`` is the kernel module with the spills
    inserted, ``table`` its lifetimes, ``arena`` the RAM buffers' offsets, ``storage`` the stored
    tensors' offsets in the storage pool."""

    mod: tvm.IRModule
    table: LifetimeTable
    spills: list  # spill_planner.Spill
    overwrites: list  # row_overwrite.Overwrite, of ``mod``
    arena: ArenaPlan
    storage: ArenaPlan
    workspace_bytes: dict  # kernel name -> bytes
    options: TinySegOptions
    chains: list = field(default_factory=list)  # stream_row_chains.RowChain, streamed in ``mod``

    @property
    def lower_bound(self) -> int:
        """What no placement of these buffers can beat (overwrite pairs sharing bytes)."""
        return peak_live_bytes(self.arena.buffers)

    @property
    def moved_bytes(self) -> int:
        """Bytes written to and read from storage per inference: each spill writes its tensor; a
        fetch or an in-place reader reads it once, a streaming kernel the row windows it counted (a
        kernel writing its output to storage at production counts as its spill)."""
        table, total = self.table, 0
        for step in table.steps:
            stored = [a for a in step.args if isinstance(a, str) and table.tensors[a].in_storage]
            if step.kind == "spill" or table.tensors[step.output].in_storage:  # a spill, or written at production
                total += table.tensors[step.output].nbytes
            if step.kind != "spill" and stored:  # a producer writing to storage may read stored tensors too
                attrs = self.mod[step.kernel].attrs if step.kind == "kernel" else None
                streamed = attrs is not None and STREAM_BYTES_ATTR in attrs
                total += int(attrs[STREAM_BYTES_ATTR]) if streamed else sum(table.tensors[a].nbytes for a in stored)
        return total

    def to_text(self) -> str:
        """The plan as TFLite Micro's GreedyMemoryPlanner prints it: the figures, each buffer's
        offset and lifetime, then per step the arena as a row of characters (one symbol per
        buffer, ``.`` free, ``!`` an overwrite pair's shared bytes) and its high-water mark."""
        arena, budget = self.arena, self.options.ram_budget
        budget_text = {SMALLEST_FEASIBLE: "smallest feasible", 0: "none"}.get(budget, f"{budget} B")
        spilled = ", ".join(f"{s.tensor} after step {s.after}" + (f" ({s.rows} rows)" if s.rows else "")
                            for s in self.spills)
        lines = [f"memory plan: arena {arena.size} B, lower bound {self.lower_bound} B, budget {budget_text}",
                 f"storage pool {self.storage.size} B ({self.options.storage}), {self.moved_bytes} B moved per "
                 f"inference; spilled: {spilled or 'nothing'}"]
        lines += [chain_text(c) for c in self.chains]
        lines.append(arena.to_text())
        ordered = sorted(arena.buffers, key=lambda b: (arena.offsets[b.name], b.first))
        symbols = {b.name: _symbol(i) for i, b in enumerate(ordered)}
        scale = max(arena.size, 1) / TIMELINE_WIDTH
        for step, top in enumerate(self.table.memory_at(arena)):
            row = ["."] * TIMELINE_WIDTH
            live = [b for b in ordered if b.first <= step <= b.last]
            for b in live:
                start = arena.offsets[b.name]
                for c in range(int(start / scale), min(TIMELINE_WIDTH, -int(-(start + b.nbytes) // scale))):
                    row[c] = symbols[b.name] if row[c] == "." else "!"
            lines.append(f"{step:>4}: |{''.join(row)}| {top}")
        lines.append("symbols: " + " ".join(f"{s}={name}" for name, s in symbols.items()))
        return "\n".join(lines)


def _symbol(i: int) -> str:
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return alphabet[i] if i < len(alphabet) else "*"


def arena_buffers(table: LifetimeTable, workspace_bytes: dict, overwrites=()) -> list:
    """Everything the arena holds: input, activations, output (but not stored copies) and the
    (ideally empty) per-kernel workspaces; ``overwrites`` let outputs share bytes with the input
    rows they no longer need."""
    buffers = [Buffer(t.name, t.nbytes, t.first, t.last) for t in table.ram_tensors()]
    for step in table.steps:
        nbytes = workspace_bytes.get(step.kernel, 0)
        if nbytes:
            buffers.append(Buffer(workspace_buffer(step.index), nbytes, step.index, step.index))
    return with_overwrites(buffers, overwrites)


def storage_buffers(table: LifetimeTable) -> list:
    return [Buffer(t.name, t.nbytes, t.first, t.last) for t in table.storage_tensors()]


def rewrite_passes(spills, options: TinySegOptions) -> list:
    """Insert ``spills`` and schedule the kernels reading them (the passes after spill choice)."""
    return [InsertSpillFetch(spills, storage=options.storage, fuse_fetch=options.fuse_fetch),
            StreamStoredRows, MCUSchedule, RollStreamWindows]


def plan_for_spills(mod: tvm.IRModule, spills, options: TinySegOptions) -> MemoryPlan:
    """Rewrite ``mod`` for ``spills`` and place every buffer of the result."""
    mod = tvm.transform.Sequential(rewrite_passes(spills, options))(mod)
    return _place(mod, spills, options)


def _place(mod: tvm.IRModule, spills, options: TinySegOptions, chains=()) -> MemoryPlan:
    from tvm_tinyseg.codegen.tir_to_c import workspace_bytes

    table = analyze_lifetimes(mod["main"], mod)
    workspaces = workspace_bytes(mod)
    overwrites = find_overwrites(mod, table) if options.enable and options.overwrite_rows else []
    arena = plan_arena(arena_buffers(table, workspaces, overwrites), options.planner)
    storage = plan_arena(storage_buffers(table), options.planner)
    return MemoryPlan(mod, table, list(spills), overwrites, arena, storage, workspaces, options, list(chains))


def chain_text(chain) -> str:
    rings = ", ".join(f"{t} {r} rows ({b} of {n} B)" for t, r, b, n in
                      zip(chain.tensors, chain.ring_rows, chain.ring_bytes, chain.tensor_bytes))
    return f"row-streamed chain, steps {chain.steps[0]}-{chain.steps[-1]}: rings {rings}; 0 MACs recomputed"


def _peak_tensors(plan: MemoryPlan) -> set:
    """Names of the tensors live where the arena reaches its high-water mark."""
    tops = plan.table.memory_at(plan.arena)
    step = max(range(len(tops)), key=tops.__getitem__) if tops else 0
    return {t.name for t in plan.table.ram_tensors() if t.live_at(step)}


def stream_chains(plan: MemoryPlan, budget: int) -> MemoryPlan:
    """Greedy choice of row-streamed chains (passes/stream_row_chains.py) for ``plan`` (spills
    already chosen): while the arena exceeds ``budget`` (SMALLEST_FEASIBLE: while it shrinks), stream
    the chain touching the arena's peak that frees the most bytes (for a budget, when none touches
    it, the one freeing the most of all), kept only if the arena shrinks."""
    best = plan
    base = plan.mod
    if in_place_mapped(plan.options) and plan.spills:
        base = WriteSpillsAtProduction(base)
        at_production = _place(base, plan.spills, plan.options)
        best = at_production if at_production.arena.size <= plan.arena.size else plan
    table = analyze_lifetimes(base["main"], base)
    candidates = find_chains(base, table)
    chosen = []

    def touches(chain, names):
        steps = [table.steps[i] for i in chain.steps]
        return names & ({s.output for s in steps} | {a for s in steps for a in s.args if isinstance(a, str)})

    while candidates and (budget == SMALLEST_FEASIBLE or best.arena.size > budget):
        peak = _peak_tensors(best)
        touching = [c for c in candidates if touches(c, peak)]
        if not touching and budget == SMALLEST_FEASIBLE:
            break
        # for a budget, the other chains too: the high-water mark may sit where placement put it
        pick = max(touching or candidates, key=lambda c: sum(c.tensor_bytes) - sum(c.ring_bytes))
        candidates.remove(pick)
        trial = _place(StreamRowChains(chosen + [pick])(base), plan.spills, plan.options, chosen + [pick])
        if trial.arena.size < best.arena.size:
            chosen, best = chosen + [pick], trial
    return best


def _spill_chooser(mod: tvm.IRModule, options: TinySegOptions):
    """budget → the spill set ``choose_spills`` picks for ``mod`` (raises BudgetError)."""
    table = analyze_lifetimes(mod["main"], mod)
    # outputs that may overwrite dead input rows need less arena: judge spills with them
    overwrites = find_overwrites(MCUSchedule(mod), table) if options.overwrite_rows else ()
    in_place = reads_in_place(options.storage, options.fuse_fetch)

    def choose(budget: int) -> list:
        return choose_spills(table, budget, reads_in_place=in_place, planner=options.planner,
                             overwrites=overwrites).spills

    return choose


def budget_error(budget: int, smallest: int) -> BudgetError:
    return BudgetError(f"RAM budget {budget} B cannot be met: the smallest feasible arena is {smallest} B; "
                       f"set the budget (tinyseg.ram_budget, --ram-budget) to {smallest} or more")


def in_place_mapped(options: TinySegOptions) -> bool:
    """Stored tensors are read (and may be written) in place through a pointer."""
    return options.storage == "mmap" and reads_in_place(options.storage, options.fuse_fetch)


def _streamed(mod: tvm.IRModule, place, spills, budget: int, options: TinySegOptions) -> MemoryPlan:
    """The plan for ``spills`` with chains streamed (``options.stream_rows``). Spills and streaming
    are chosen together as far as this: with memory-mapped storage, spilling every long-living
    tensor, written at production, is tried too (a skip streamed into storage needs no RAM) and the
    smaller arena wins (then the fewer bytes moved)."""
    plan = place(spills)
    if not options.stream_rows:
        return plan
    plans = [stream_chains(plan, budget)]
    if in_place_mapped(options):
        every = candidates(analyze_lifetimes(mod["main"], mod))
        if {s.tensor for s in every} != {s.tensor for s in spills}:
            plans.append(stream_chains(place(every), budget))
    fitting = [p for p in plans if budget != SMALLEST_FEASIBLE and p.arena.size <= budget]
    if fitting:
        return _fewer_spills(min(fitting, key=lambda p: (p.moved_bytes, p.arena.size)), place, budget)
    return min(plans, key=lambda p: (p.arena.size, p.moved_bytes))  # the smallest (what a BudgetError names)


def _fewer_spills(plan: MemoryPlan, place, budget: int) -> MemoryPlan:
    """``plan`` (streamed, within ``budget``) with spills dropped while the streamed arena still fits,
    the spill moving the most bytes tried first: the spill set of the smallest arena is more than a
    larger budget needs, and a tensor kept in RAM moves nothing."""
    improved = True
    while improved and plan.spills:
        improved = False
        for spill in sorted(plan.spills, key=lambda s: -s.moved_bytes):
            trial = stream_chains(place([s for s in plan.spills if s is not spill]), budget)
            if trial.arena.size <= budget and trial.moved_bytes < plan.moved_bytes:
                plan, improved = trial, True
                break
    return plan


def with_external_io(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` whose inputs and outputs stay in the caller's buffers (``tinyseg.io_in_arena`` false):
    lifetime analysis then leaves them out of the arena (passes/lifetime.py)."""
    functions = {gv: (f.with_attr(EXTERNAL_IO_ATTR, True) if gv.name_hint == "main" else f)
                 for gv, f in mod.functions.items()}
    return tvm.IRModule(functions, attrs=mod.attrs, global_infos=mod.global_infos)


def plan_memory(mod: tvm.IRModule, options: TinySegOptions) -> MemoryPlan:
    """The memory plan of ``mod`` (one ``call_tir`` per kernel, nothing spilled yet) under
    ``options``: with TinySeg enabled and ``options.ram_budget`` set, the spill set moving the
    fewest bytes whose real arena fits the budget (``SMALLEST_FEASIBLE``: the smallest arena).
    Raises BudgetError naming the budget and the smallest arena found when none fits. Logs the
    time of the spill search and of the placements (progress.py)."""
    search, placement = Accumulated(), Accumulated()
    if not options.io_in_arena:
        mod = with_external_io(mod)

    def place(spills) -> MemoryPlan:
        with placement:
            return plan_for_spills(mod, spills, options)

    try:
        return _plan(mod, options, place, search)
    finally:
        search.log(_log, "spill search")
        placement.log(_log, f"rewrite and arena placement ({options.planner} planner)")


def _plan(mod: tvm.IRModule, options: TinySegOptions, place, search: Accumulated) -> MemoryPlan:
    budget = options.ram_budget
    if not (options.enable and budget):
        plan = place([])
        if budget > 0 and plan.arena.size > budget:
            raise budget_error(budget, plan.arena.size)
        return plan
    spill_chooser = _spill_chooser(mod, options)

    def choose(target: int) -> list:
        with search:
            return spill_chooser(target)

    if budget == SMALLEST_FEASIBLE:
        return _streamed(mod, place, choose(SMALLEST_FEASIBLE), budget, options)
    target = budget
    for _ in range(MAX_BUDGET_ROUNDS):
        try:
            spills = choose(target)
        except BudgetError:  # the spill planner's estimate: the real smallest arena is found below
            break
        plan = place(spills)
        if plan.arena.size <= budget:
            return plan
        target -= plan.arena.size - budget  # buffers the spill planner did not foresee: aim lower
        if target <= 0:
            break
    smallest = _streamed(mod, place, choose(SMALLEST_FEASIBLE), budget, options)
    if smallest.arena.size <= budget:
        return smallest
    raise budget_error(budget, smallest.arena.size)
