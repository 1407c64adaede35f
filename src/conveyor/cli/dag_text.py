"""A run's DAG as text, for `conveyor run describe RUN --dag`: formatting only (the data comes from the Client).

Steps are laid out top-down in layers: a step sits one layer below the deepest step it waits for, so every edge
points down. Each line names a step, its status and where it ran, and the steps it waits for (`← a, b`), which keeps
diamonds readable without crossing lines. Siblings of a wide fan-out (more than `FAN_OUT_LIMIT` steps of one layer
waiting for the same steps) collapse into one line with their counts per status.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

__all__ = ["FAN_OUT_LIMIT", "DagNode", "layers", "render_dag"]

#: more siblings than this (same layer, same upstream steps) are drawn as one line
FAN_OUT_LIMIT = 20
#: at most this many names in one `←` list; the rest are counted
UPSTREAM_NAMES = 6
MARK = {"completed": "✓", "cached": "✓", "running": "▶", "queued": "…", "pending": "·", "failed": "✗",
        "stopped": "■", "skipped": "-"}
COUNT_ORDER = ("completed", "cached", "running", "pending", "failed", "stopped", "skipped")


@dataclass(frozen=True)
class DagNode:
    """One step as the DAG shows it."""

    name: str
    status: str
    where: str  # "in-process", "slurm (slurm)", "cache"
    upstream: tuple[str, ...] = ()


def layers(nodes: list[DagNode]) -> list[list[DagNode]]:
    """Nodes by depth (longest path from a step that waits for nothing), each layer in the given order. An
    upstream name that is not a node (a step the run no longer has) is ignored."""
    by_name = {n.name: n for n in nodes}
    depth: dict[str, int] = {}

    def depth_of(name: str) -> int:
        stack, seen = [name], set()
        while stack:  # iterative: a chain of thousands of steps must not hit the recursion limit
            top = stack[-1]
            ups = [u for u in by_name[top].upstream if u in by_name and u not in depth]
            if ups and top not in seen:
                seen.add(top)
                stack.extend(u for u in ups if u not in seen)
                continue
            stack.pop()
            depth[top] = 1 + max((depth.get(u, 0) for u in by_name[top].upstream if u in by_name), default=-1)
        return depth[name]

    out: list[list[DagNode]] = []
    for n in nodes:
        d = depth_of(n.name)
        while len(out) <= d:
            out.append([])
        out[d].append(n)
    return out


def _counts(nodes: list[DagNode]) -> str:
    counts = Counter(str(n.status) for n in nodes)
    order = [s for s in COUNT_ORDER if counts[s]] + sorted(s for s in counts if s not in COUNT_ORDER)
    return " · ".join(f"{counts[s]} {s}" for s in order)


def _group_label(names: list[str]) -> str:
    prefix = os.path.commonprefix(names)
    return f"{prefix}*" if prefix else f"{names[0]}…{names[-1]}"


def _entries(layer: list[DagNode]) -> list[DagNode | list[DagNode]]:
    """A layer's lines: single steps, and fan-outs (lists) where more than FAN_OUT_LIMIT siblings share their
    upstream steps; each at the place of its first member."""
    families: dict[tuple[str, ...], list[DagNode]] = {}
    for n in layer:
        families.setdefault(tuple(sorted(n.upstream)), []).append(n)
    out: list[DagNode | list[DagNode]] = []
    placed: set[tuple[str, ...]] = set()
    for n in layer:
        key = tuple(sorted(n.upstream))
        family = families[key]
        if len(family) <= FAN_OUT_LIMIT:
            out.append(n)
        elif key not in placed:
            placed.add(key)
            out.append(family)
    return out


def _upstream_text(upstream: tuple[str, ...], groups: dict[str, tuple[str, int]]) -> str:
    """`← a, b`, with the members of a collapsed fan-out named once by their group (`work_* (300)`)."""
    names: list[str] = []
    seen_groups: set[str] = set()
    for u in upstream:
        if u in groups:
            label, size = groups[u]
            if label not in seen_groups:
                seen_groups.add(label)
                names.append(f"{label} ({size})")
        else:
            names.append(u)
    if not names:
        return ""
    shown = names[:UPSTREAM_NAMES]
    more = f", and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return "← " + ", ".join(shown) + more


def render_dag(nodes: list[DagNode], title: str = "") -> str:
    """The DAG as lines of text (no styling): layers top-down, one line per step or per collapsed fan-out."""
    laid = layers(nodes)
    entries = [_entries(layer) for layer in laid]
    groups: dict[str, tuple[str, int]] = {}
    for layer in entries:
        for e in layer:
            if isinstance(e, list):
                label = _group_label([n.name for n in e])
                groups.update({n.name: (label, len(e)) for n in e})
    rows: list[tuple[str, str, str, str, str]] = []  # layer, mark + name, status, where, upstream
    for i, layer in enumerate(entries, 1):
        for j, e in enumerate(layer):
            number = str(i) if j == 0 else ""
            if isinstance(e, list):
                label, size = groups[e[0].name]
                wheres = sorted({n.where for n in e})
                failed = [n.name for n in e if n.status == "failed"][:3]
                status = _counts(e) + (f" (failed: {', '.join(failed)}{', …' if len(failed) == 3 else ''})"
                                       if failed else "")
                rows.append((number, f"▤ {label} ({size} steps)", status, ", ".join(wheres),
                             _upstream_text(e[0].upstream, groups)))
            else:
                rows.append((number, f"{MARK.get(str(e.status), '?')} {e.name}", str(e.status), e.where,
                             _upstream_text(e.upstream, groups)))
    w_name = max((len(r[1]) for r in rows), default=0)
    w_status = max((len(r[2]) for r in rows if not r[1].startswith("▤")), default=0)
    w_where = max((len(r[3]) for r in rows), default=0)
    lines = [title] if title else []
    lines.append(f"{len(nodes)} steps in {len(laid)} layers; each waits for the steps after ←")
    for k, (number, name, status, where, ups) in enumerate(rows):
        if number and k:
            lines.append("    │")
        if name.startswith("▤"):  # a fan-out's counts are long: they get a line of their own
            lines.append(f"{number:>3} {name.ljust(w_name)}  {where.ljust(w_where)}  {ups}".rstrip())
            lines.append(f"{'':>3}   {status}")
        else:
            lines.append(f"{number:>3} {name.ljust(w_name)}  {status.ljust(w_status)}  {where.ljust(w_where)}  "
                         f"{ups}".rstrip())
    return "\n".join(lines)
