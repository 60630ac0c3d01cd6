"""The arena planner: no two buffers live at the same step share a byte; never below the bound."""
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from tvm_tinyseg.passes.arena_planner import PLANNERS, Buffer, greedy_by_size, peak_live_bytes, plan_arena


def _peak_live(buffers):
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    return max(sum(b.nbytes for b in buffers if b.first <= s <= b.last) for s in steps)


@st.composite
def lifetimes(draw):
    n = draw(st.integers(1, 24))
    buffers = []
    for i in range(n):
        first = draw(st.integers(0, 30))
        last = draw(st.integers(first, first + 12))
        buffers.append(Buffer(f"t{i}", draw(st.integers(1, 5000)), first, last))
    return buffers


@pytest.mark.parametrize("planner", sorted(set(PLANNERS) - {"exact"}))  # exact: small graphs below
@settings(max_examples=200, deadline=None)
@given(buffers=lifetimes())
def test_plans_are_valid_and_above_the_bound(planner, buffers):
    plan = plan_arena(buffers, planner)  # plan_arena runs ArenaPlan.check()
    assert plan.size >= _peak_live(buffers) == peak_live_bytes(buffers)
    for b in buffers:
        assert plan.offsets[b.name] % 16 == 0


@settings(max_examples=200, deadline=None)
@given(lifetimes())
def test_best_of_is_never_worse_than_greedy(buffers):
    assert plan_arena(buffers, "best_of").size <= plan_arena(buffers, "greedy_by_size").size


def test_best_of_reaches_the_bound_where_greedy_by_size_does_not():
    buffers = [Buffer("t0", 64, 0, 0), Buffer("t1", 32, 1, 3), Buffer("t2", 64, 0, 2), Buffer("t3", 48, 2, 2)]
    assert peak_live_bytes(buffers) == 144
    assert plan_arena(buffers, "greedy_by_size").size == 160
    assert plan_arena(buffers, "best_of").size == 144


def test_greedy_reuses_memory_of_dead_buffers():
    a, b, c = Buffer("a", 100, 0, 1), Buffer("b", 100, 1, 2), Buffer("c", 100, 2, 3)
    plan = greedy_by_size([a, b, c])
    assert plan.offsets["a"] == plan.offsets["c"] != plan.offsets["b"]
    assert plan.size == 224  # two 16-byte-aligned slots


def test_check_catches_overlap():
    plan = greedy_by_size([Buffer("a", 64, 0, 2), Buffer("b", 64, 1, 3)])
    plan.offsets["b"] = plan.offsets["a"]
    try:
        plan.check()
    except AssertionError as err:
        assert "a and b overlap" in str(err)
    else:
        raise AssertionError("an overlapping plan passed the check")


def test_plan_prints_every_buffer():
    plan = greedy_by_size([Buffer("skip", 4096, 0, 9), Buffer("tmp", 512, 3, 4)])
    text = plan.to_text()
    assert "greedy_by_size" in text and "skip" in text and "tmp" in text and str(plan.size) in text


@st.composite
def lifetimes_with_overwrites(draw, small=False):
    """Random lifetimes where some buffers may overwrite a buffer dying at their first step."""
    buffers = draw(small_lifetimes() if small else lifetimes())
    result = []
    for b in buffers:
        dying = [a.name for a in buffers if a.last == b.first and a.name != b.name]
        if dying and draw(st.booleans()):
            b = Buffer(b.name, b.nbytes, b.first, b.last, draw(st.sampled_from(dying)), draw(st.integers(0, b.nbytes)))
        result.append(b)
    return result


@st.composite
def small_lifetimes(draw):
    n = draw(st.integers(1, 8))
    return [Buffer(f"t{i}", draw(st.integers(1, 400)), first, draw(st.integers(first, first + 4)))
            for i, first in enumerate(draw(st.lists(st.integers(0, 8), min_size=n, max_size=n)))]


@pytest.mark.parametrize("planner", sorted(set(PLANNERS) - {"exact"}))
@settings(max_examples=200, deadline=None)
@given(buffers=lifetimes_with_overwrites())
def test_plans_with_overwrites_keep_every_output_its_lead_below(planner, buffers):
    plan = plan_arena(buffers, planner)  # check(): overlap only as an overwrite pair allows
    by_name = {b.name: b for b in buffers}
    for b in buffers:
        partner = by_name.get(b.overwrites)
        if partner is not None and b.may_overwrite(partner):
            lo, hi = plan.offsets[b.name], plan.offsets[b.name] + b.nbytes
            p_lo = plan.offsets[partner.name]
            assert lo + b.lead <= p_lo or hi <= p_lo or lo >= p_lo + partner.nbytes
    assert plan.size >= peak_live_bytes(buffers)


@settings(max_examples=60, deadline=None)
@given(buffers=lifetimes_with_overwrites(small=True))
def test_exact_is_between_the_bound_and_best_of(buffers):
    exact = plan_arena(buffers, "exact").size
    assert align16(peak_live_bytes(buffers)) <= exact <= plan_arena(buffers, "best_of").size


def align16(n):
    return (n + 15) // 16 * 16
