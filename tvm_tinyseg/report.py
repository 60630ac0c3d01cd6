"""Reports on a compiled model's memory: the lifetime analysis as text, the arena timeline as a PNG.

The timeline draws every RAM buffer of an ``ArenaPlan`` as a rectangle [first step, last step + 1) ×
[offset, offset + bytes); tensors spilled to storage are hatched, and the workspace of a row-streamed
chain is split into its row rings (one band per ring, in chain order). Plotting needs matplotlib (the
``plot`` extra); it is imported only when a picture is drawn.
"""
import os

from tvm_tinyseg.errors import TinySegError
from tvm_tinyseg.passes.arena_planner import peak_live_bytes, shared_bytes

INPUT_OUTPUT_COLOR = "#c8c8c8"
RING_HATCH = ".."
SPILL_COLOR = "crimson"
PEAK_COLOR = "gold"
LABEL_FONT_SIZE = 7
KIB = 1024


def spilled_copies(table) -> dict:
    """RAM tensor name → its stored copy (a ``Tensor`` in storage), for every spill step."""
    return {step.args[0]: table.tensors[step.output] for step in table.steps if step.kind == "spill"}


def chain_rings(result) -> dict:
    """Workspace buffer name → the (tensor, rows, bytes) rings of the row-streamed chain whose kernel
    owns that workspace, for a ``CompileResult`` (a bare LifetimeTable has no chains: {})."""
    from tvm_tinyseg.codegen.emit_c import workspace_buffer
    from tvm_tinyseg.passes.stream_row_chains import CHAIN_ATTR

    memory = getattr(result, "memory", None)
    if memory is None or not memory.chains:
        return {}
    by_tensors = {tuple(c.tensors): c for c in memory.chains}
    rings = {}
    for step in memory.table.steps:
        attrs = memory.mod[step.kernel].attrs if step.kind == "kernel" else None
        chain = by_tensors.get(tuple(str(t) for t in attrs[CHAIN_ATTR])) if attrs and CHAIN_ATTR in attrs else None
        if chain is not None:
            rings[workspace_buffer(step.index)] = list(zip(chain.tensors, chain.ring_rows, chain.ring_bytes))
    return rings


def format_analysis(table, plan, chains=()) -> str:
    """The lifetime table, the peak step and its live tensors, the long-living tensors, the spills,
    the row-streamed chains (``chains``: stream_row_chains.RowChain) and the arena size beside its
    lower bound."""
    peak = table.peak_step()
    lines = [table.to_text(), ""]
    if peak is not None:
        live = [t for t in table.ram_tensors() if t.live_at(peak)]
        lines.append(f"peak step {peak} ({table.steps[peak].kernel}): {table.live_bytes(peak)} B live in "
                     + ", ".join(f"{t.name} ({t.nbytes} B)" for t in sorted(live, key=lambda t: -t.nbytes)))
    long_living = table.long_living()
    lines.append(f"long-living tensors (idle >= 2 steps): {len(long_living)}")
    for t in long_living:
        where = " (in storage)" if t.in_storage else ""
        lines.append(f"  {t.name:<16} {t.nbytes:>9} B  cold range {t.cold_range[0]}-{t.cold_range[1]} "
                     f"({t.idle_steps} idle steps){where}")
    copies = spilled_copies(table)
    for name, stored in copies.items():
        lines.append(f"spilled: {name} -> {stored.name} ({stored.nbytes} B), written at step {stored.producer}, "
                     f"read at step {','.join(map(str, stored.consumers))}")
    copied = {stored.name for stored in copies.values()}
    for stored in table.storage_tensors():
        if stored.name not in copied:  # passes/spill_at_production.py: never in RAM
            lines.append(f"spilled: {stored.name} ({stored.nbytes} B), written to storage by step {stored.producer} "
                         f"as it is produced, read at step {','.join(map(str, sorted(set(stored.consumers))))}")
    for chain in chains:
        lines.append(f"row-streamed chain of steps {', '.join(map(str, chain.steps))} (before streaming; 0 MACs "
                     "recomputed): " + ", ".join(f"{t} in a ring of {r} rows, {b} B instead of {n} B" for t, r, b, n
                                                 in zip(chain.tensors, chain.ring_rows, chain.ring_bytes,
                                                        chain.tensor_bytes)))
    shared = [b for b in plan.buffers if b.overwrites]
    if shared:
        lines.append(f"outputs overwriting dead input rows: {len(shared)} ("
                     + ", ".join(f"{b.name} over {b.overwrites}, lead {b.lead} B" for b in shared) + ")")
    lines.append(f"arena: {plan.size} B ({plan.algorithm}); lower bound {table.largest_tensor_bytes()} B "
                 f"(largest tensor); peak live {table.peak_live_bytes()} B, "
                 f"{peak_live_bytes(plan.buffers)} B with overwrites")
    return "\n".join(lines)


def format_integrity(report: dict) -> str:
    """One line: the storage pool and what its integrity check costs (memory.json's figures)."""
    if not report["storage_bytes"]:
        return f"storage: nothing spilled ({report['storage']})"
    if not report["integrity"]:
        unchecked = "read in place, cannot be checked" if report["storage"] == "mmap" else "off (--no-integrity)"
        return f"storage: {report['storage_bytes']} B ({report['storage']}); integrity check {unchecked}"
    return (f"storage: {report['storage_bytes']} B ({report['storage']}); integrity check: a CRC-16 per 16-byte "
            f"block, {report['integrity_ram_bytes']} B of RAM, {report['integrity_storage_bytes']} B of storage "
            f"padding")


def _default_title(result_or_table, plan) -> str:
    """The model file, whether TinySeg ran (and its storage) and the arena size."""
    if not hasattr(result_or_table, "model"):
        return f"arena {plan.size:,} B ({plan.algorithm})"
    options = result_or_table.options
    mode = f"TinySeg, {options.storage} storage" if options.enable else "without TinySeg"
    return f"{os.path.basename(result_or_table.model.path)} ({mode}): arena {plan.size:,} B"


def plot_timeline(result_or_table, plan, path, title=None, ram_budget=None, y_max=None) -> None:
    """Write a PNG of ``plan`` over the execution steps: one rectangle per RAM buffer (spilled tensors
    hatched), the arena size and the RAM budget as lines, and live bytes per step below.

    ``result_or_table`` is a ``CompileResult`` or a ``LifetimeTable``; a result's own positive RAM
    budget is drawn unless ``ram_budget`` is given. ``y_max`` (bytes) puts several plans on one scale."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TinySegError("plotting needs matplotlib: pip install 'tvm_tinyseg[plot]'") from None
    table = getattr(result_or_table, "table", result_or_table)
    if ram_budget is None and hasattr(result_or_table, "options"):
        ram_budget = result_or_table.options.ram_budget
    ram_budget = ram_budget if ram_budget and ram_budget > 0 else None
    steps = max(len(table.steps), 1)
    arena_top = y_max or max(plan.size, ram_budget or 0) * 1.3 or 1

    fig = Figure(figsize=(11, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08, left=0.08, right=0.98, top=0.93, bottom=0.08)
    arena_ax = fig.add_subplot(grid[0])
    live_ax = fig.add_subplot(grid[1], sharex=arena_ax)
    arena_ax.set_xlim(0, steps)
    arena_ax.set_ylim(0, arena_top)
    _draw_buffers(arena_ax, table, plan, chain_rings(result_or_table))
    arena_ax.axhline(plan.size, color="black", linewidth=1.2, label=f"arena {plan.size:,} B ({plan.algorithm})")
    if ram_budget:
        arena_ax.axhline(ram_budget, color=SPILL_COLOR, linestyle="--", linewidth=1.2,
                         label=f"RAM budget {ram_budget:,} B")
    peak = table.peak_step()
    if peak is not None:
        peak_span = dict(color=PEAK_COLOR, alpha=0.35, zorder=0, linewidth=0)
        arena_ax.axvspan(peak, peak + 1, label=f"peak step {peak}: {table.live_bytes(peak):,} B live", **peak_span)
        live_ax.axvspan(peak, peak + 1, **peak_span)
    arena_ax.legend(loc="upper left", fontsize=8, ncol=2, framealpha=0.95)
    arena_ax.set_ylabel("arena offset")
    arena_ax.set_title(title or _default_title(result_or_table, plan), fontsize=11)
    arena_ax.tick_params(labelbottom=False)
    live_top = _draw_live_bytes(live_ax, table, plan, y_max)
    _format_axes(arena_ax, live_ax, table, arena_top, live_top)
    fig.savefig(path, dpi=100)


def _draw_buffers(ax, table, plan, rings=None) -> None:
    """A labelled rectangle per buffer of ``plan``; spilled tensors hatched, with an arrow to their next
    read; a chain's workspace (``rings``: chain_rings) split into its rings."""
    from matplotlib import colormaps, patches

    spilled = spilled_copies(table)
    palette = [c for c in colormaps["tab20"].colors if len(set(c)) > 1]  # no greys: those mark input/output
    points_per_step = ax.get_position().width * ax.figure.get_figwidth() * 72 / ax.get_xlim()[1]
    points_per_byte = ax.get_position().height * ax.figure.get_figheight() * 72 / ax.get_ylim()[1]
    for i, buf in enumerate(plan.buffers):
        tensor = table.tensors.get(buf.name)
        is_io = tensor is not None and (tensor.is_input or tensor.is_output)
        offset, width = plan.offsets[buf.name], buf.last + 1 - buf.first
        style = dict(facecolor=INPUT_OUTPUT_COLOR if is_io else palette[i % len(palette)], edgecolor="white",
                     linewidth=0.8)
        if buf.name in spilled:
            stored = spilled[buf.name]
            style.update(hatch="///", edgecolor=SPILL_COLOR, linewidth=1.4,
                         label=f"{buf.name}: spilled at step {stored.producer}, {stored.nbytes:,} B in storage, "
                               f"read at step {','.join(map(str, stored.consumers))}")
            ax.annotate("", xy=(max(stored.consumers, default=buf.last + 1), offset + buf.nbytes / 2),
                        xytext=(buf.last + 1, offset + buf.nbytes / 2),
                        arrowprops=dict(arrowstyle="->", color=SPILL_COLOR, linestyle="--", linewidth=1.2))
        ax.add_patch(patches.Rectangle((buf.first, offset), width, buf.nbytes, **style))
        if buf.name in (rings or {}):
            _draw_rings(ax, buf, offset, rings[buf.name], points_per_byte)
            continue
        _label(ax, buf, offset, width * points_per_step, buf.nbytes * points_per_byte)
    if any(t.is_input or t.is_output for t in table.ram_tensors()):
        ax.add_patch(patches.Rectangle((0, 0), 0, 0, facecolor=INPUT_OUTPUT_COLOR, label="model input / output"))
    if rings:
        ax.add_patch(patches.Rectangle((0, 0), 0, 0, facecolor="white", edgecolor="black", hatch=RING_HATCH,
                                       label="row rings of a streamed chain (a band per ring)"))


def _draw_rings(ax, buf, offset, rings, points_per_byte) -> None:
    """Bands for the rings of a chain's workspace, bottom up in chain order, each named (with its rows)
    where it is tall enough; the chain's ring total above them."""
    from matplotlib import patches

    bottom = offset
    for tensor, rows, nbytes in rings:
        ax.add_patch(patches.Rectangle((buf.first, bottom), buf.last + 1 - buf.first, nbytes, facecolor="none",
                                       edgecolor="black", linewidth=0.5, hatch=RING_HATCH, alpha=0.6))
        if nbytes * points_per_byte >= LABEL_FONT_SIZE * 1.2:
            ax.text(buf.first + (buf.last + 1 - buf.first) / 2, bottom + nbytes / 2, f"{tensor} ({rows} rows)",
                    ha="center", va="center", fontsize=LABEL_FONT_SIZE - 1)
        bottom += nbytes
    total = sum(nbytes for _, _, nbytes in rings)
    ax.text(buf.first + (buf.last + 1 - buf.first) / 2, offset + buf.nbytes, f"{len(rings)} ring{'s' if len(rings) > 1 else ''}, {total:,} B",
            ha="center", va="bottom", fontsize=LABEL_FONT_SIZE)


def _draw_live_bytes(ax, table, plan, y_max) -> float:
    """Live RAM bytes, the arena high-water mark and the bytes in storage per step; returns the y-axis top."""
    edges = range(len(table.steps) + 1)
    shared = shared_bytes(plan.buffers)  # an output over its input's dead rows needs fewer bytes
    live = [table.live_bytes(s.index) - shared.get(s.index, 0) for s in table.steps]
    label = "live tensors" + (" (outputs over dead input rows counted once)" if shared else "")
    ax.stairs(live, edges, fill=True, color="steelblue", alpha=0.5, label=label)
    ax.stairs(table.memory_at(plan), edges, color="black", linewidth=1.2, label="arena high-water mark")
    stored = [sum(t.nbytes for t in table.storage_tensors() if t.live_at(s.index)) for s in table.steps]
    live_and_stored = [a + b for a, b in zip(live, stored)]
    if any(stored):
        ax.stairs(live_and_stored, edges, baseline=live, fill=True, hatch="///", facecolor="none",
                  edgecolor=SPILL_COLOR, linewidth=0, label="+ in storage")
    top = y_max or max([plan.size] + live_and_stored) * 1.3 or 1
    ax.set_ylim(0, top)
    ax.set_ylabel("bytes")
    copies = any(step.kind != "kernel" for step in table.steps)
    ax.set_xlabel("execution step" + (" (red: storage copies)" if copies else ""))
    ax.legend(loc="upper left", fontsize=7, ncol=3, framealpha=0.95)
    return top


def _format_axes(arena_ax, live_ax, table, arena_top, live_top) -> None:
    """Byte axes in round KiB (B for tiny models); one x tick per step, storage copies in red."""
    from matplotlib import ticker

    unit, unit_name = (KIB, "KiB") if arena_top >= 8 * KIB else (1, "B")
    steps = len(table.steps)
    for ax, top, max_ticks in ((arena_ax, arena_top, 8), (live_ax, live_top, 4)):
        ax.yaxis.set_major_locator(ticker.MultipleLocator(_tick_step(top, unit, max_ticks)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value / unit:g} {unit_name}"))
        ax.set_xticks([s + 0.5 for s in range(steps)], [str(s) for s in range(steps)], fontsize=7)
    for tick, step in zip(live_ax.get_xticklabels(), table.steps):
        if step.kind != "kernel":
            tick.set_color(SPILL_COLOR)


def _tick_step(top, unit, max_ticks) -> float:
    """A round number of units (1, 2, 2.5, 5 × 10^k) giving at most ``max_ticks`` ticks up to ``top`` bytes."""
    steps = [n * 10**k * unit for k in range(10) for n in (1, 2, 2.5, 5)]
    return next(step for step in steps if top / step <= max_ticks)


def _label(ax, buf, offset, width_points, height_points) -> None:
    """Write the buffer's name (and size, when there is room) inside its rectangle, if it fits."""
    text_width = len(buf.name) * LABEL_FONT_SIZE * 0.62
    line_height = LABEL_FONT_SIZE * 1.3
    if width_points >= text_width and height_points >= line_height:
        rotation = 0
    elif height_points >= text_width and width_points >= line_height:
        rotation = 90
    else:
        return
    lines = [buf.name]
    if rotation == 0 and height_points >= 2 * line_height and width_points >= 7 * LABEL_FONT_SIZE * 0.62:
        lines.append(f"{buf.nbytes / KIB:.1f} KiB")
    ax.text(buf.first + (buf.last + 1 - buf.first) / 2, offset + buf.nbytes / 2, "\n".join(lines),
            ha="center", va="center", fontsize=LABEL_FONT_SIZE, rotation=rotation)
