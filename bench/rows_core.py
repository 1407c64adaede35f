"""The benchmark's core figures (issues 3 and 15): import time, per-step costs in process and through `local`, and
whole processes as a user runs them, each measured for one or two `Side`s (this tree, and the `--compare` revision).

Samples of the two sides alternate (or, for a figure measured inside one long process, the processes do), so that a
drift of the machine's load hits both alike. Every figure keeps its samples: a row shows their median and min-max.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import statistics
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    HERE,
    PYTHON,
    Side,
    env_for,
    project,
    remove_later,
    run,
    tree_peak_rss,
    wall,
    wall_rss,
)

__all__ = ["CoreConfig", "big_unavailable", "import_by_package", "import_top", "least_squares_slope", "measure_core",
           "warm_bytecode"]

Say = Callable[[str], None]
GIB = 1 << 30


@dataclass
class CoreConfig:
    """What to measure and how often (`runs` samples of each whole-process figure, `repeat` of each chain)."""

    runs: int = 5
    repeat: int = 5
    import_runs: int = 7
    sizes: list[int] = field(default_factory=lambda: [1, 10, 100, 300, 1000])
    local_steps: int = 20
    sleepers: int = 20
    fan_width: int = 1000
    listed_runs: int = 10_000
    big: bool = True
    gib: float = 1.0


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    """The slope of the least-squares line through (xs, ys)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _alternate(sides: list[Side], runs: int, once: Callable[[Side], Any]) -> dict[str, list[Any]]:
    """`runs` samples of `once` per side, the sides taking turns."""
    samples: dict[str, list[Any]] = {s.label: [] for s in sides}
    for _ in range(runs):
        for side in sides:
            samples[side.label].append(once(side))
    return samples


def warm_bytecode(side: Side) -> None:
    """Compile everything the measurements import into the private bytecode cache."""
    proj = project()
    env = env_for(proj, side)
    run([PYTHON, str(HERE / "one_step.py")], env)
    run([PYTHON, str(HERE / "workloads.py"), "linear", "--sizes", "2", "--repeat", "1", "--operator", "local"], env)
    run([PYTHON, str(HERE / "fan_out.py"), "2"], env)
    shutil.rmtree(proj, ignore_errors=True)


# -- import time ----------------------------------------------------------------------------------

def measure_import(sides: list[Side], runs: int) -> dict[str, dict[str, list[float]]]:
    """Samples of `python -c pass`, `import conveyor` and the SDK names per side, interleaved to share the noise."""
    proj = project()
    commands = {
        "bare": [PYTHON, "-c", "pass"],
        "import": [PYTHON, "-c", "import conveyor"],
        "sdk": [PYTHON, "-c", "from conveyor import step, pipeline, Client"],
    }
    out: dict[str, dict[str, list[float]]] = {s.label: {k: [] for k in commands} for s in sides}
    for side in sides:
        for cmd in commands.values():
            wall(cmd, env_for(proj, side))
    for _ in range(runs):
        for side in sides:
            for key, cmd in commands.items():
                out[side.label][key].append(wall(cmd, env_for(proj, side)))
    shutil.rmtree(proj, ignore_errors=True)
    return out


def _importtime(args: list[str], warm_first: bool = False) -> list[tuple[str, float, float, int]]:
    """(module, self s, cumulative s, depth) for each line of `python -X importtime ARGS`.

    With `warm_first`, ARGS run once before, so that the measured run finds the project's store created.
    """
    proj = project()
    if warm_first:
        run([PYTHON, *args], env_for(proj))
    proc = run([PYTHON, "-X", "importtime", *args], env_for(proj))
    shutil.rmtree(proj, ignore_errors=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S.*)$", line)
        if m:
            rows.append((m.group(4).strip(), int(m.group(1)) / 1e6, int(m.group(2)) / 1e6, len(m.group(3)) // 2))
    return rows


def import_top(statement: str, top: int) -> list[tuple[str, float]]:
    """The `top` imports by cumulative time under `python -X importtime -c statement`, nested ones indented."""
    rows = sorted(_importtime(["-c", statement]), key=lambda r: -r[2])[:top]
    return [("  " * depth + name, cum) for name, _self, cum, depth in rows]


def import_by_package(script: Path, top: int) -> list[tuple[str, float]]:
    """Import time of a script, self times summed per top-level package (stdlib modules each on their own)."""
    totals: dict[str, float] = defaultdict(float)
    for name, self_s, _cum, _depth in _importtime([str(script)], warm_first=True):
        totals[name.split(".")[0]] += self_s
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


# -- chains measured inside one process ------------------------------------------------------------

def _linear(side: Side, sizes: list[int], operator: str | None, repeat: int, proj: Path,
            warmup_sizes: list[int] | None = None) -> dict[int, list[float]]:
    """Run times per chain length, `repeat` each, measured inside one fresh process (in project `proj`) after
    warm-up runs."""
    cmd = [PYTHON, str(HERE / "workloads.py"), "linear", "--sizes", *map(str, sizes), "--repeat", str(repeat)]
    if operator:
        cmd += ["--operator", operator]
    if warmup_sizes is not None:
        cmd += ["--warmup-sizes", *map(str, warmup_sizes)]
    proc = run(cmd, env_for(proj, side))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {int(n): ts for n, ts in result["times"].items()}


def measure_chains(sides: list[Side], cfg: CoreConfig, say: Say) -> dict[str, dict[str, list[float]]]:
    """In process: the fixed cost (T1) and the per-step slope fitted over cfg.sizes, one fit per repetition.
    Through `local`: (T_n − T_1)/(n − 1) of a chain of cfg.local_steps, per repetition, minus the in-process slope.

    Each repetition is a fresh process after short warm-up runs, the sides taking turns, so that a slow minute of
    the machine hits both sides alike rather than all the repetitions of one of them. The repetitions of a side
    share its project, as the runs of one process did: only the first meets each chain's artifact names new."""
    sizes = sorted(set(cfg.sizes) | {1})
    n = cfg.local_steps
    times: dict[str, dict[int, list[float]]] = {s.label: {k: [] for k in sizes} for s in sides}
    local: dict[str, dict[int, list[float]]] = {s.label: {1: [], n: []} for s in sides}
    projects = {(s.label, kind): project() for s in sides for kind in ("in process", "local")}
    try:
        for rep in range(cfg.repeat):
            say(f"chains in process ({'/'.join(map(str, cfg.sizes))} steps) and on `local` (1/{n} steps), "
                f"repetition {rep + 1} of {cfg.repeat}, {' and '.join(s.label for s in sides)} in turn")
            for side in sides:
                for k, ts in _linear(side, sizes, None, 1, projects[side.label, "in process"],
                                     warmup_sizes=[k for k in sizes if k <= 10]).items():
                    times[side.label][k] += ts
                for k, ts in _linear(side, [1, n], "local", 1, projects[side.label, "local"]).items():
                    local[side.label][k] += ts
    finally:
        for proj in projects.values():
            remove_later(proj)
    out: dict[str, dict[str, list[float]]] = {}
    for side in sides:
        t, loc = times[side.label], local[side.label]
        slopes = [least_squares_slope(sizes, [t[k][i] for k in sizes]) for i in range(cfg.repeat)]
        in_process = statistics.median(slopes)
        local_per_step = [(loc[n][i] - loc[1][i]) / (n - 1) for i in range(cfg.repeat)]
        out[side.label] = {"fixed": t[1], "slope": slopes, "local_per_step": local_per_step,
                           "local_extra": [s - in_process for s in local_per_step],
                           "chain_medians": [statistics.median(t[k]) for k in sizes]}
    return out


# -- whole processes ------------------------------------------------------------------------------

def measure_whole(sides: list[Side], cfg: CoreConfig, say: Say) -> dict[str, dict[str, Any]]:
    """Whole processes, the sides taking turns: the 1-step pipeline (first run, then with the store existing), the
    parallel sleepers, and the wide fan-out (wall time and peak RSS)."""
    projects = {s.label: project() for s in sides}
    out: dict[str, dict[str, Any]] = {s.label: {} for s in sides}
    try:
        one = [PYTHON, str(HERE / "one_step.py")]
        for side in sides:  # creates .conveyor/, the schema and the default stack
            out[side.label]["whole_first"] = [wall(one, env_for(projects[side.label], side))]
        say(f"1-step pipeline as a whole process ({cfg.runs} runs)")
        for label, samples in _alternate(sides, cfg.runs,
                                         lambda s: wall(one, env_for(projects[s.label], s))).items():
            out[label]["whole"] = samples
        say(f"{cfg.sleepers} × 1 s sleeping steps in parallel, whole process ({cfg.runs} runs)")
        sleepers = [PYTHON, str(HERE / "fan_out.py"), str(cfg.sleepers), "--sleep", "1"]
        for label, samples in _alternate(sides, cfg.runs,
                                         lambda s: wall(sleepers, env_for(projects[s.label], s))).items():
            out[label]["sleepers"] = samples
        say(f"{cfg.fan_width}-step fan-out, whole process ({cfg.runs} runs)")
        fan = [PYTHON, str(HERE / "fan_out.py"), str(cfg.fan_width)]
        for label, pairs in _alternate(sides, cfg.runs,
                                       lambda s: wall_rss(fan, env_for(projects[s.label], s))).items():
            out[label]["fan_out"] = [p[0] for p in pairs]
            out[label]["fan_out_rss"] = [float(p[1]) for p in pairs]
    finally:
        for proj in projects.values():
            remove_later(proj)
    return out


def measure_run_list(sides: list[Side], cfg: CoreConfig, say: Say) -> dict[str, list[float]]:
    """`conveyor run list` as a whole process (the console script) on a store holding cfg.listed_runs runs, seeded
    by each side's own code (bench/seed_runs.py)."""
    cli = Path(PYTHON).with_name("conveyor")
    command = [str(cli)] if cli.exists() else \
        [PYTHON, "-c", "import sys; from conveyor.cli.main import cli; sys.exit(cli(prog_name='conveyor'))"]
    projects = {s.label: project() for s in sides}
    try:
        for side in sides:
            say(f"seeding {cfg.listed_runs} runs ({side.label})")
            run([PYTHON, str(HERE / "seed_runs.py"), str(cfg.listed_runs)], env_for(projects[side.label], side))
            wall([*command, "run", "list"], env_for(projects[side.label], side))
        say(f"`conveyor run list` with {cfg.listed_runs} runs ({cfg.runs} runs)")
        return _alternate(sides, cfg.runs, lambda s: wall([*command, "run", "list"], env_for(projects[s.label], s)))
    finally:
        for proj in projects.values():
            shutil.rmtree(proj, ignore_errors=True)


# -- the large ndarray hand-off -------------------------------------------------------------------

def big_unavailable(gib: float) -> str | None:
    """Why the ndarray hand-off cannot run here, or None: it needs about 3× the array free, on disk (the artifact
    store in a temporary project) and in memory."""
    need = 3 * gib * GIB
    free_disk = shutil.disk_usage(tempfile.gettempdir()).free  # what an unprivileged user may still write
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free_disk < need:
        return f"skipped: {free_disk / GIB:.1f} GiB free in {tempfile.gettempdir()}, needs {need / GIB:.1f} GiB"
    if available is not None and available < need:
        return f"skipped: {available / GIB:.1f} GiB of memory available, needs {need / GIB:.1f} GiB"
    if not (HERE / "ndarray_handoff.py").exists():
        return "skipped: bench/ndarray_handoff.py missing"
    return None


def measure_ndarray(sides: list[Side], cfg: CoreConfig) -> dict[str, dict[str, list[float]]]:
    """bench/ndarray_handoff.py (its own temporary project each time), in process and through `local`: seconds of
    the pipeline call, and the largest peak RSS of any one process of its tree over the array's size, per run."""
    out: dict[str, dict[str, list[float]]] = {s.label: defaultdict(list) for s in sides}

    def once(side: Side, operator: str | None) -> None:
        proj = project()  # the script makes its own project; this one only keeps env_for's from being shared
        cmd = [PYTHON, str(HERE / "ndarray_handoff.py"), "--gib", f"{cfg.gib:g}"]
        if operator:
            cmd += ["--operator", operator]
        try:
            proc, tree_peak = tree_peak_rss(cmd, env_for(proj, side))
        finally:
            shutil.rmtree(proj, ignore_errors=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if result.get("sum_ok") is False:
            raise RuntimeError(f"ndarray hand-off ({operator or 'in-process'}): the second step saw a wrong array")
        key = operator or "inproc"
        out[side.label][key].append(float(result["seconds"]))
        # the script's own figure (ru_maxrss: itself and its waited-for children), or a larger one sampled over its
        # process tree: a `local` worker that is never waited for holds the array without showing in ru_maxrss
        peak = max(result["peak_rss_bytes"], tree_peak)
        out[side.label][f"{key}_rss"].append(peak / result["array_bytes"])

    def floor() -> None:
        """The same work with no Conveyor (bench/ndarray_floor.py), sampled beside the hand-offs: the machine's
        own cost of touching that much fresh memory moves by seconds from one minute to the next."""
        proc = subprocess.run([PYTHON, str(HERE / "ndarray_floor.py"), "--gib", f"{cfg.gib:g}"], capture_output=True,
                              text=True, check=True)
        seconds = float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
        for side in sides:
            out[side.label]["floor"].append(seconds)

    for _ in range(cfg.runs):
        floor()
        for side in sides:
            once(side, None)
            once(side, "local")
    return {label: dict(d) for label, d in out.items()}


# -- everything -----------------------------------------------------------------------------------

def measure_core(sides: list[Side], cfg: CoreConfig, say: Say) -> dict[str, dict[str, Any]]:
    """Every core figure for every side: {side label: {figure: samples}} (import: {figure: {bare, import, sdk}})."""
    data: dict[str, dict[str, Any]] = {s.label: {} for s in sides}
    say(f"import time ({cfg.import_runs} runs of each)")
    for label, samples in measure_import(sides, cfg.import_runs).items():
        data[label]["import"] = samples
    for label, figures in measure_chains(sides, cfg, say).items():
        data[label].update(figures)
    for label, figures in measure_whole(sides, cfg, say).items():
        data[label].update(figures)
    for label, samples in measure_run_list(sides, cfg, say).items():
        data[label]["run_list"] = samples
    skipped = None if cfg.big else "skipped (--no-big)"
    skipped = skipped or big_unavailable(cfg.gib)
    if skipped is None:
        say(f"{cfg.gib:g} GiB ndarray hand-off, in process and through `local` ({cfg.runs} runs of each)")
        try:
            for label, figures in measure_ndarray(sides, cfg).items():
                data[label]["ndarray"] = figures
        except Exception as err:  # noqa: BLE001 - report it; the other figures still stand
            skipped = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}"
            say(f"ndarray hand-off {skipped}")
    for figures in data.values():
        figures.setdefault("ndarray", {"skipped": skipped})
    return data
