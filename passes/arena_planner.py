"""Static arena planning: give every buffer an offset so no two live buffers overlap.

Planners are plain functions ``planner(buffers) -> ArenaPlan`` registered in ``PLANNERS``, so the
driver, the benchmarks and the tests can swap them. Lifetimes are inclusive step ranges.

One exception to "no overlap": a buffer produced by a kernel that writes its output rows over
input rows it no longer needs (passes/row_overwrite.py) names that input in ``overwrites``; the
two may share bytes when the output starts at least ``lead`` bytes below the input. To a buffer
being placed, an overwrite partner therefore blocks a shorter range than its own bytes.
"""
import logging
import time
from dataclasses import dataclass

_log = logging.getLogger(__name__)

ALIGNMENT = 16


def align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(frozen=True)
class Buffer:
    name: str
    nbytes: int
    first: int
    last: int
    overwrites: str = None  # an input of this buffer's producer whose dead rows it may take
    lead: int = 0  # ... when it starts at least this many bytes below that input

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return not (self.last < other.first or other.last < self.first)

    def may_overwrite(self, other: "Buffer") -> bool:
        """Whether this buffer may take ``other``'s dead bytes: ``other`` dies where it is born
        (and does not claim the same of this one)."""
        return self.overwrites == other.name and other.last == self.first and other.overwrites != self.name


def blocked_range(placed: Buffer, offset: int, buf: Buffer) -> tuple:
    """The [start, end) bytes ``placed`` (at ``offset``) keeps ``buf`` out of while both live:
    all of its own bytes, except for an overwrite pair, where ``buf`` may overlap it as long as
    the output stays ``lead`` bytes below the input."""
    if buf.may_overwrite(placed):  # buf (output) below placed (input): buf.end <= offset - lead + buf.nbytes
        return offset - buf.lead + buf.nbytes, offset + placed.nbytes
    if placed.may_overwrite(buf):  # buf (input) at or above placed (output) + lead
        return offset, offset + placed.lead
    return offset, offset + placed.nbytes


def shared_bytes(buffers) -> dict:
    """Per step, the bytes overwrite pairs save at best (the lower bound's correction)."""
    by_name = {b.name: b for b in buffers}
    saved = {}
    for b in buffers:
        partner = by_name.get(b.overwrites)
        if partner is not None and b.may_overwrite(partner):
            union = max(b.lead + partner.nbytes, b.nbytes)
            saved[b.first] = saved.get(b.first, 0) + max(0, b.nbytes + partner.nbytes - union)
    return saved


@dataclass
class ArenaPlan:
    algorithm: str
    offsets: dict  # name -> byte offset
    size: int
    buffers: list

    def check(self) -> None:
        """Raise if two buffers live at the same time share bytes (a planner bug)."""
        for i, a in enumerate(self.buffers):
            for b in self.buffers[i + 1:]:
                if a.overlaps_in_time(b):
                    start, end = blocked_range(b, self.offsets[b.name], a)
                    lo_a = self.offsets[a.name]
                    if lo_a < end and start < lo_a + a.nbytes:
                        raise AssertionError(f"{self.algorithm}: {a.name} and {b.name} overlap")
            if self.offsets[a.name] + a.nbytes > self.size:
                raise AssertionError(f"{self.algorithm}: {a.name} exceeds the arena")

    def to_text(self) -> str:
        rows = [f"arena plan ({self.algorithm}): {self.size} bytes",
                f"{'buffer':<16} {'offset':>8} {'bytes':>8} {'steps':>9}"]
        for b in sorted(self.buffers, key=lambda b: (self.offsets[b.name], b.first)):
            rows.append(f"{b.name:<16} {self.offsets[b.name]:>8} {b.nbytes:>8} {b.first:>4}-{b.last:<4}")
        return "\n".join(rows)


def _gaps(buf, placed, offsets):
    """Free [start, end) ranges of the arena while ``buf`` lives (end None: unbounded)."""
    conflicts = sorted(blocked_range(p, offsets[p.name], buf) for p in placed if p.overlaps_in_time(buf))
    gaps, cursor = [], 0
    for start, end in conflicts:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, align(end))
    return gaps + [(cursor, None)]


def _place(buffers, order, choose) -> dict:
    placed, offsets = [], {}
    for buf in sorted(buffers, key=order):
        fitting = [(lo, hi) for lo, hi in _gaps(buf, placed, offsets) if hi is None or hi - lo >= buf.nbytes]
        offsets[buf.name] = choose(fitting, buf)
        placed.append(buf)
    return offsets


def _plan(name, buffers, offsets) -> ArenaPlan:
    size = max((offsets[b.name] + b.nbytes for b in buffers), default=0)
    return ArenaPlan(name, offsets, align(size), list(buffers))


def _first_fit(gaps, buf) -> int:
    return gaps[0][0]


def _best_fit(gaps, buf) -> int:
    """The tightest bounded gap that holds ``buf``, else the end of the arena."""
    bounded = [(hi - lo, lo) for lo, hi in gaps if hi is not None]
    return min(bounded)[1] if bounded else gaps[-1][0]


def _by_size(b):
    return (-b.nbytes, b.first, b.name)


def greedy_by_size(buffers) -> ArenaPlan:
    """TFLite Micro's GreedyMemoryPlanner: largest first, each at the lowest offset that fits
    between the buffers already placed whose lifetimes overlap it."""
    return _plan("greedy_by_size", buffers, _place(buffers, _by_size, _first_fit))


def best_fit(buffers) -> ArenaPlan:
    """Largest first, each in the tightest gap it fits (keeps big gaps for big buffers)."""
    return _plan("best_fit", buffers, _place(buffers, _by_size, _best_fit))


# Placement orders tried by best_of: by size, by time-area (bytes x steps), by first use, by length.
ORDERS = (
    _by_size,
    lambda b: (-b.nbytes * (b.last - b.first + 1), b.name),
    lambda b: (b.first, -b.nbytes, b.name),
    lambda b: (-(b.last - b.first), -b.nbytes, b.name),
)


def overwrite_chains(buffers) -> list:
    """Placement units: each chain of overwrite pairs (an output over its input, that output's own
    output over it, ...) as ``[(buffer, offset relative to the unit)]`` with every output exactly
    its lead below its input; every other buffer alone at 0."""
    by_name = {b.name: b for b in buffers}
    next_of = {}  # input name -> the (first) output overwriting it
    for b in buffers:
        partner = by_name.get(b.overwrites)
        if partner is not None and partner is not b and b.may_overwrite(partner):
            next_of.setdefault(partner.name, b)
    continuations = {b.name for b in next_of.values()}
    units, seen = [], set()
    for head in [b for b in buffers if b.name not in continuations] + buffers:  # then the rest (cut chains)
        if head.name in seen:
            continue
        chain, rel = [(head, 0)], 0
        seen.add(head.name)
        while chain[-1][0].name in next_of and next_of[chain[-1][0].name].name not in seen:
            out = next_of[chain[-1][0].name]
            if any(out.overlaps_in_time(b) for b, _ in chain[:-1]):
                break  # fixed offsets would overlap a non-adjacent member: out starts its own unit
            rel -= align(out.lead)
            chain.append((out, rel))
            seen.add(out.name)
        low = min(r for _, r in chain)
        units.append([(b, r - low) for b, r in chain])
    return units


def _fits(buf, offset, placed, offsets) -> bool:
    for p in placed:
        if p.overlaps_in_time(buf):
            start, end = blocked_range(p, offsets[p.name], buf)
            if offset < end and start < offset + buf.nbytes:
                return False
    return True


def _place_units(units, order) -> dict:
    """First fit of whole units: the lowest base at which no member meets a placed buffer."""
    placed, offsets = [], {}
    for unit in sorted(units, key=order):
        candidates = {0}
        for buf, rel in unit:
            for p in placed:
                if p.overlaps_in_time(buf):
                    candidates.add(max(0, align(blocked_range(p, offsets[p.name], buf)[1] - rel)))
        base = next(c for c in sorted(candidates)
                    if all(_fits(buf, c + rel, placed, offsets) for buf, rel in unit))
        for buf, rel in unit:
            offsets[buf.name] = base + rel
            placed.append(buf)
    return offsets


# Unit orders tried by best_of: by largest member, by time-area, by first use.
UNIT_ORDERS = (
    lambda u: (-max(b.nbytes for b, _ in u), u[0][0].first, u[0][0].name),
    lambda u: (-sum(b.nbytes * (b.last - b.first + 1) for b, _ in u), u[0][0].name),
    lambda u: (u[0][0].first, u[0][0].name),
)


def best_of(buffers) -> ArenaPlan:
    """The smallest of first-fit and best-fit placements in several orders (never worse than
    greedy_by_size, which is one of them) and, when outputs may overwrite inputs, of first-fit
    placements of whole overwrite chains; stops early at the lower bound."""
    bound = align(peak_live_bytes(buffers))
    attempts = [lambda order=order, choose=choose: _place(buffers, order, choose)
                for order in ORDERS for choose in (_first_fit, _best_fit)]
    units = overwrite_chains(buffers)
    if len(units) < len(buffers):
        attempts += [lambda order=order: _place_units(units, order) for order in UNIT_ORDERS]
    best = None
    for attempt in attempts:
        plan = _plan("best_of", buffers, attempt())
        if best is None or plan.size < best.size:
            best = plan
        if best.size <= bound:
            break
    return best


EXACT_TIME_LIMIT = 20.0  # seconds HiGHS may search (zoo plans are proven optimal in < 2 s); then the best so far


def exact(buffers, time_limit: float = EXACT_TIME_LIMIT) -> ArenaPlan:
    """The smallest arena, as a mixed-integer program solved by HiGHS (scipy.optimize.milp).

    Offsets are integers in units of ALIGNMENT; every pair of buffers live at the same time gets a
    binary choosing which of the two lies lower (an overwrite pair's output may instead start its
    lead below the input). best_of's plan bounds the search; when HiGHS finds nothing better within
    ``time_limit`` (large graphs), that plan is returned."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    fallback = best_of(buffers)
    bound = align(peak_live_bytes(buffers))
    if fallback.size <= bound or len(buffers) < 2:
        return fallback
    units = [-(-b.nbytes // ALIGNMENT) for b in buffers]
    top = fallback.size // ALIGNMENT  # big M: no useful plan is larger
    pairs = [(i, j) for i in range(len(buffers)) for j in range(i + 1, len(buffers))
             if buffers[i].overlaps_in_time(buffers[j])]
    n, size_var = len(buffers), len(buffers)
    rows, upper = np.zeros((n + 2 * len(pairs), n + 1 + len(pairs))), []
    for i in range(n):  # offset_i + size_i <= arena
        rows[i, i], rows[i, size_var] = 1, -1
        upper.append(-units[i])
    for k, (i, j) in enumerate(pairs):
        below = n + 1 + k  # 0: i lies below j, 1: j lies below i
        gap_i = -(-buffers[i].lead // ALIGNMENT) if buffers[i].may_overwrite(buffers[j]) else units[i]
        gap_j = -(-buffers[j].lead // ALIGNMENT) if buffers[j].may_overwrite(buffers[i]) else units[j]
        r = n + 2 * k
        rows[r, [i, j, below]] = 1, -1, -top  # o_i + gap_i <= o_j  (unless below = 1)
        rows[r + 1, [j, i, below]] = 1, -1, top  # o_j + gap_j <= o_i  (unless below = 0)
        upper += [-gap_i, top - gap_j]
    cost = np.zeros(n + 1 + len(pairs))
    cost[size_var] = 1
    lower = np.zeros(len(cost))
    lower[size_var] = bound // ALIGNMENT
    start = time.perf_counter()
    result = milp(cost, constraints=LinearConstraint(rows, -np.inf, upper), integrality=np.ones(len(cost)),
                  bounds=Bounds(lower, [top] * (n + 1) + [1] * len(pairs)),
                  options={"time_limit": time_limit, "disp": False})
    _log.debug("MILP over %d buffers, %d pairs: %.2f s (%s)", n, len(pairs), time.perf_counter() - start,
               result.message)
    if result.x is None or round(result.x[size_var]) * ALIGNMENT >= fallback.size:
        return fallback
    offsets = {b.name: int(round(result.x[i])) * ALIGNMENT for i, b in enumerate(buffers)}
    return _plan("exact", buffers, offsets)


def peak_live_bytes(buffers) -> int:
    """Lower bound of any plan: the most bytes live at one step (less what overwrite pairs share)."""
    steps = {s for b in buffers for s in (b.first, b.last)}
    saved = shared_bytes(buffers)
    return max((sum(b.nbytes for b in buffers if b.first <= s <= b.last) - saved.get(s, 0) for s in steps),
               default=0)


PLANNERS = {"greedy_by_size": greedy_by_size, "best_fit": best_fit, "best_of": best_of, "exact": exact}


def plan_arena(buffers, algorithm: str = "best_of") -> ArenaPlan:
    plan = PLANNERS[algorithm](buffers)
    plan.check()
    return plan
