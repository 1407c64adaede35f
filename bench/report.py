"""The benchmark's table: the core rows built from the samples (median, min-max, target, verdict; the `--compare`
revision's median and the ratio; ZenML's figure), and printing it (rich when installed, plain text otherwise).

Targets are issue 3's and issue 15's. RECORDED holds ZenML 0.98's figures measured on this machine kind (2 cores),
shown when ZENML_PYTHON is not set.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from common import Row, fmt, fmt_range, spread

__all__ = ["RECORDED", "core_rows", "print_report"]

#: ZenML 0.98 on this machine kind (2 cores, Python 3.11, local orchestrator, fresh SQLite store): figure → value.
RECORDED: dict[str, float] = {
    "import": 1.9, "fixed": 4.7, "slope": 0.088, "local_extra": 4.1,
}

MB = 1e6


def _figure(metric: str, data: dict[str, dict[str, Any]], current: str, previous: str | None,
            get: Any, target: float | None, reference: float | None, note: str, unit: str = "s") -> Row:
    """A row from one figure's samples (`get(side data)` → list of samples, or None when not measured)."""
    samples = get(data[current])
    if not samples:
        return Row(metric, None, target, reference, note, unit)
    median, low, high = spread(samples)
    prev = get(data[previous]) if previous else None
    previous_median = statistics.median(prev) if prev else None
    if len(samples) == 1:
        return Row(metric, median, target, reference, note, unit, previous=previous_median)
    return Row(metric, median, target, reference, f"{note}; median of {len(samples)}", unit, low, high,
               previous_median)


def core_rows(data: dict[str, dict[str, Any]], current: str, previous: str | None, cfg: Any,
              zenml: dict[str, Any] | None) -> list[Row]:
    """The core rows (issues 3 and 15) for the side labelled `current`, with `previous`'s medians beside them."""

    def ref(key: str) -> float | None:
        if zenml is not None:
            return statistics.median(zenml[key]) if zenml.get(key) else None
        return RECORDED.get(key)

    def minus_bare(key: str) -> Any:
        return lambda d: [a - b for a, b in zip(d["import"][key], d["import"]["bare"])]

    def row(metric: str, get: Any, target: float | None, reference: float | None, note: str,
            unit: str = "s") -> Row:
        return _figure(metric, data, current, previous, get, target, reference, note, unit)

    bare = statistics.median(data[current]["import"]["bare"])
    sizes = "/".join(map(str, sorted(set(cfg.sizes) | {1})))
    n = cfg.local_steps
    rows = [
        row("import conveyor", minus_bare("import"), 0.100, ref("import"),
            f"minus bare `python -c pass` ({fmt(bare)})"),
        row("from conveyor import step, pipeline, Client", minus_bare("sdk"), None, None,
            "what a pipeline script pays before running, minus bare"),
        row("fixed cost: 1-step pipeline run, in process", lambda d: d["fixed"], None, ref("fixed"),
            "store warm, cache off"),
        row("per step, in process (slope)", lambda d: d["slope"], 0.003, ref("slope"),
            f"least-squares slope of run time over {sizes}-step chains, one fit per repetition"),
        row(f"extra per step through `local` (chain of {n})", lambda d: d["local_extra"], 0.060, ref("local_extra"),
            f"(T{n} − T1)/{n - 1} on `local` minus the in-process slope; "
            f"{fmt(statistics.median(data[current]['local_per_step']))}/step in all"),
        row("1-step pipeline, whole process", lambda d: d["whole"], 0.30, ref("whole"),
            "`python bench/one_step.py`, store exists"),
        row("1-step pipeline, whole process, first run", lambda d: d["whole_first"], None, None,
            "creates .conveyor/, the schema and the default stack"),
        row(f"{cfg.sleepers} × 1 s sleeping steps in parallel, whole process", lambda d: d["sleepers"], 1.5,
            ref("sleepers"), f"`python bench/fan_out.py {cfg.sleepers} --sleep 1`: one step feeding {cfg.sleepers}"),
    ]
    nd = data[current]["ndarray"]
    gib = f"{cfg.gib:g} GiB ndarray"
    if "skipped" in nd:
        rows.append(Row(f"{gib} from one step to the next", None, None, None, nd["skipped"] or ""))
    else:
        rows += [
            row(f"{gib} from one step to the next, in process", lambda d: d["ndarray"].get("inproc"), 1.5, None,
                "`bench/ndarray_handoff.py`: the pipeline call, make → use(sum)"),
            row(f"{gib} from one step to the next, through `local`", lambda d: d["ndarray"].get("local"), 2.5, None,
                "`bench/ndarray_handoff.py --operator local`"),
            row("  the machine's floor: fill, write, map and sum (no Conveyor)", lambda d: d["ndarray"].get("floor"),
                None, None, "`bench/ndarray_floor.py`, sampled before each pair of hand-offs: what persisting and "
                "reading back the array costs on this machine at that moment"),
            row("  peak RSS / array size, in process", lambda d: d["ndarray"].get("inproc_rss"), 1.2, None,
                "the largest peak RSS (VmHWM) of one process in its tree, over the array's bytes", unit="x"),
            row("  peak RSS / array size, through `local`", lambda d: d["ndarray"].get("local_rss"), 1.2, None,
                "the same, the `local` workers included", unit="x"),
        ]
    rows += [
        row(f"`conveyor run list`, {cfg.listed_runs:,} runs in the store", lambda d: d["run_list"], 0.3, None,
            "the console script as a whole process (default --limit 20)"),
        row(f"{cfg.fan_width:,}-step fan-out, whole process", lambda d: d["fan_out"], 6.0, ref("fan_out"),
            f"`python bench/fan_out.py {cfg.fan_width}`: one step feeding {cfg.fan_width:,}"),
        row(f"{cfg.fan_width:,}-step fan-out, peak RSS", lambda d: d["fan_out_rss"], 120 * MB, ref("fan_out_rss"),
            "ru_maxrss of that process (wait4)", unit="B"),
    ]
    return rows


def _cells(r: Row, compare: bool) -> list[str]:
    target = "≤ " + fmt(r.target, r.unit) if r.target else "-"
    cells = [r.metric, fmt(r.measured, r.unit), fmt_range(r.low, r.high, r.unit), target, r.verdict]
    if compare:
        ratio = r.measured / r.previous if r.measured is not None and r.previous else None
        cells += [fmt(r.previous, r.unit), f"{ratio:.2f}×" if ratio is not None else "-"]
    return [*cells, fmt(r.reference, r.unit), r.note]


def print_report(rows: list[Row], title: str, sections: dict[str, list[tuple[str, float]]],
                 previous: str | None, zenml_label: str) -> None:
    """The table (a REV column and the ratio this/REV with --compare), then the import breakdowns."""
    compare = previous is not None
    columns = [("metric", "left"), ("median", "right"), ("min–max", "right"), ("target", "right"),
               ("verdict", "center")]
    if compare:
        columns += [(previous, "right"), ("this/rev", "right")]
    columns += [(zenml_label, "right"), ("note", "left")]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text without rich
        print(title)
        print("  ".join(name for name, _ in columns))
        for r in rows:
            print("  ".join(_cells(r, compare)))
    else:
        console = Console(width=None if sys.stdout.isatty() else 200)
        table = Table(title=title)
        for name, just in columns:
            table.add_column(name, justify=just)  # type: ignore[arg-type]
        style = {"PASS": "green", "MISS": "bold red", "info": "dim"}
        for r in rows:
            cells = _cells(r, compare)
            cells[4] = f"[{style[r.verdict]}]{r.verdict}[/]"
            table.add_row(*cells)
        console.print(table)
    for heading, items in sections.items():
        print(f"\n{heading}")
        for name, seconds in items:
            print(f"  {seconds * 1000:7.1f} ms  {name}")
    sys.stdout.flush()
