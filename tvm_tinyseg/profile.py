"""Per-kernel profile of a compiled model: each step's multiply-accumulates (counted in its TIR at
compile time, written to memory.json) and, from a profile run, its executed instructions.

A profile build (``-DTINYSEG_PROFILE``) calls ``tinyseg_profile_mark()`` before every step and
after the last; the QEMU plugin records its instruction count at each call, so step i executed
``marks[i + 1] - marks[i]`` instructions (the call itself included, a few instructions).
"""
import json

from tvm_tinyseg.passes.mac_count import count_macs

MARK_FUNCTION = "tinyseg_profile_mark"


def step_records(table, mod) -> list:
    """Every step of the runner in order: its name (the kernel, or "spill/fetch TENSOR"), kind and MACs."""
    records = []
    for step in table.steps:
        if step.kind == "kernel":
            name, macs = step.kernel, count_macs(mod[step.kernel])
        else:
            name, macs = f"{step.kind} {step.args[0]}", 0
        records.append({"name": name, "kind": step.kind, "macs": macs})
    return records


def profile_rows(steps: list, marks: list) -> list:
    """Rows of the profile table from memory.json's ``steps`` and the instruction counts at each mark."""
    if len(marks) != len(steps) + 1:
        raise ValueError(f"{len(marks)} profile marks for {len(steps)} steps (expected {len(steps) + 1})")
    rows = []
    for i, step in enumerate(steps):
        instructions = marks[i + 1] - marks[i]
        rows.append({"step": i, "name": step["name"], "kind": step["kind"], "instructions": instructions,
                     "macs": step["macs"],
                     "instructions_per_mac": round(instructions / step["macs"], 3) if step["macs"] else None})
    return rows


def format_profile(rows: list, total_instructions: int) -> str:
    """A MicroProfiler-style table: one line per step, then the totals."""
    width = max([len("kernel")] + [len(r["name"]) for r in rows])
    lines = [f"{'step':>4}  {'kernel':<{width}}  {'instructions':>13}  {'MACs':>11}  {'instr/MAC':>9}"]
    for r in rows:
        per_mac = f"{r['instructions_per_mac']:.2f}" if r["macs"] else "-"
        lines.append(f"{r['step']:>4}  {r['name']:<{width}}  {r['instructions']:>13,}  {r['macs']:>11,}  {per_mac:>9}")
    steps_total = sum(r["instructions"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    per_mac = f"{steps_total / macs:.2f}" if macs else "-"
    lines.append(f"{'':>4}  {'all steps':<{width}}  {steps_total:>13,}  {macs:>11,}  {per_mac:>9}")
    lines.append(f"{'':>4}  {'whole firmware run':<{width}}  {total_instructions:>13,}")
    return "\n".join(lines)


def profile_json(rows: list, total_instructions: int) -> str:
    return json.dumps({"instructions": total_instructions, "steps": rows}, indent=1) + "\n"
