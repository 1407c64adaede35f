"""Conveyor's benchmark (`make bench`): import time, fixed and per-step costs, the `local` step operator's overhead.

    .venv/bin/python bench/run.py [--json PATH] [--steps 50] [--local-steps 20] [--quick]

Every measurement runs in fresh subprocesses with its own temporary project (CONVEYOR_PROJECT_DIR) and
CONVEYOR_QUIET=1. Bytecode is cached in a private temporary directory (PYTHONPYCACHEPREFIX, and
PYTHONDONTWRITEBYTECODE dropped) and warmed up first, so the numbers are those of a normal installation and
nothing is written into the source tree. Targets come from issue 3; the reference numbers are ZenML 0.98's,
measured on this machine kind. Profile a workload by hand with `bench/workloads.py --profile`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
_PYCACHE = Path(tempfile.gettempdir(), f"conveyor-bench-pyc-{os.getpid()}")  # removed at the end of main()


@dataclass
class Row:
    """One line of the result table; times in seconds, `target` an upper bound."""

    metric: str
    measured: float | None
    target: float | None
    reference: float | None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None or self.measured is None:
            return "info"
        return "PASS" if self.measured <= self.target else "MISS"


# -- subprocess helpers ---------------------------------------------------------------------------

def _env(project: Path) -> dict[str, str]:
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(project), "CONVEYOR_QUIET": "1",
           "PYTHONPYCACHEPREFIX": str(_PYCACHE)}
    for var in ("CONVEYOR_STORE_URL", "CONVEYOR_STACK", "PYTHONDONTWRITEBYTECODE", "PYTHONPROFILEIMPORTTIME"):
        env.pop(var, None)
    return env


def _project() -> Path:
    return Path(tempfile.mkdtemp(prefix="conveyor-bench-"))


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    """Wall time of one process, start to exit."""
    t0 = time.perf_counter()
    _run(cmd, env)
    return time.perf_counter() - t0


def warm_bytecode() -> None:
    """Compile everything the measurements import into the private bytecode cache."""
    project = _project()
    env = _env(project)
    _run([PYTHON, str(HERE / "one_step.py")], env)
    _run([PYTHON, str(HERE / "workloads.py"), "linear", "--sizes", "2", "--repeat", "1", "--operator", "local"], env)
    shutil.rmtree(project, ignore_errors=True)


# -- measurements ---------------------------------------------------------------------------------

def measure_import(runs: int) -> dict[str, float]:
    """Medians of `python -c pass`, `import conveyor` and the SDK names, interleaved to share the noise."""
    project = _project()
    env = _env(project)
    commands = {
        "bare": [PYTHON, "-c", "pass"],
        "import": [PYTHON, "-c", "import conveyor"],
        "sdk": [PYTHON, "-c", "from conveyor import step, pipeline, Client"],
    }
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for cmd in commands.values():
        _wall(cmd, env)
    for _ in range(runs):
        for key, cmd in commands.items():
            samples[key].append(_wall(cmd, env))
    shutil.rmtree(project, ignore_errors=True)
    return {k: statistics.median(v) for k, v in samples.items()}


def _importtime(args: list[str], warm_first: bool = False) -> list[tuple[str, float, float, int]]:
    """(module, self s, cumulative s, depth) for each line of `python -X importtime ARGS`.

    With `warm_first`, ARGS run once before, so that the measured run finds the project's store created.
    """
    project = _project()
    if warm_first:
        _run([PYTHON, *args], _env(project))
    proc = _run([PYTHON, "-X", "importtime", *args], _env(project))
    shutil.rmtree(project, ignore_errors=True)
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


def measure_linear(sizes: list[int], operator: str | None, repeat: int) -> dict[int, float]:
    """Median run time per pipeline size, measured inside one fresh process after a warm-up run."""
    project = _project()
    cmd = [PYTHON, str(HERE / "workloads.py"), "linear", "--sizes", *map(str, sizes), "--repeat", str(repeat)]
    if operator:
        cmd += ["--operator", operator]
    proc = _run(cmd, _env(project))
    shutil.rmtree(project, ignore_errors=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {int(n): t for n, t in result["median"].items()}


def measure_whole_process(runs: int) -> tuple[list[float], float]:
    """(warm samples, first) wall times of `python bench/one_step.py`; warm = the project's store already exists."""
    project = _project()
    env = _env(project)
    cmd = [PYTHON, str(HERE / "one_step.py")]
    first = _wall(cmd, env)  # creates .conveyor/, the schema and the default stack
    warm = [_wall(cmd, env) for _ in range(runs)]
    shutil.rmtree(project, ignore_errors=True)
    return warm, first


# -- output ---------------------------------------------------------------------------------------

def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def print_report(rows: list[Row], title: str, sections: dict[str, list[tuple[str, float]]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text without rich
        print(title)
        print(f"{'metric':<46} {'measured':>10} {'target':>11} {'ZenML 0.98':>10}  verdict  note")
        for r in rows:
            target = "≤ " + _fmt(r.target) if r.target else "-"
            print(f"{r.metric:<46} {_fmt(r.measured):>10} {target:>11} {_fmt(r.reference):>10}  {r.verdict:<7}  {r.note}")
    else:
        console = Console(width=None if sys.stdout.isatty() else 150)
        table = Table(title=title)
        for col, just in (("metric", "left"), ("measured", "right"), ("target", "right"),
                          ("ZenML 0.98", "right"), ("verdict", "center"), ("note", "left")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        style = {"PASS": "green", "MISS": "bold red", "info": "dim"}
        for r in rows:
            table.add_row(r.metric, _fmt(r.measured), "≤ " + _fmt(r.target) if r.target else "-",
                          _fmt(r.reference), f"[{style[r.verdict]}]{r.verdict}[/]", r.note)
        console.print(table)
    for heading, items in sections.items():
        print(f"\n{heading}")
        for name, seconds in items:
            print(f"  {seconds * 1000:7.1f} ms  {name}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--steps", type=int, default=50, help="length of the in-process chain (default 50)")
    parser.add_argument("--local-steps", type=int, default=20,
                        help="length of the chain on the `local` step operator (default 20)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, for a smoke test")
    args = parser.parse_args(argv)
    import_runs, repeat, local_repeat, whole_runs = (3, 1, 1, 2) if args.quick else (7, 3, 2, 5)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        say("warming the bytecode cache")
        warm_bytecode()
        say(f"import time ({import_runs} runs of each)")
        imp = measure_import(import_runs)
        say(f"in-process chain: 1 and {args.steps} steps")
        inproc = measure_linear([1, args.steps], None, repeat)
        say(f"`local` step operator chain: 1 and {args.local_steps} steps")
        local = measure_linear([1, args.local_steps], "local", local_repeat)
        say(f"1-step pipeline as a whole process ({whole_runs} runs)")
        warm, first = measure_whole_process(whole_runs)
        say("-X importtime breakdowns")
        sections = {
            "-X importtime `import conveyor`, by cumulative time:": import_top("import conveyor", 5),
            "-X importtime `python bench/one_step.py` (store exists), self time summed per top-level package:":
                import_by_package(HERE / "one_step.py", 10),
        }
    finally:
        shutil.rmtree(_PYCACHE, ignore_errors=True)
    say("done")

    per_step = (inproc[args.steps] - inproc[1]) / (args.steps - 1)
    local_per_step = (local[args.local_steps] - local[1]) / (args.local_steps - 1)
    rows = [
        Row("import conveyor", imp["import"] - imp["bare"], 0.100, 1.9,
            f"median of {import_runs}, minus bare `python -c pass` ({_fmt(imp['bare'])})"),
        Row("from conveyor import step, pipeline, Client", imp["sdk"] - imp["bare"], None, None,
            "what a pipeline script pays before running"),
        Row("fixed cost: 1-step pipeline run, in process", inproc[1], None, 4.7, "store warm, cache off"),
        Row(f"per step, in process ({args.steps}-step chain)", per_step, 0.010, 0.088,
            f"(T{args.steps} − T1)/{args.steps - 1}; T{args.steps} = {_fmt(inproc[args.steps])}"),
        Row("extra per step, `local` step operator", local_per_step - per_step, 0.150, 4.1,
            f"{args.local_steps}-step chain: {_fmt(local_per_step)}/step in all"),
        Row("1-step pipeline, whole process", statistics.median(warm), 0.5, None,
            f"`python bench/one_step.py`, median of {whole_runs} (min {_fmt(min(warm))}), store exists"),
        Row("1-step pipeline, whole process, first run", first, None, None, "creates .conveyor/ and the schema"),
    ]
    load = load_before  # the benchmark's own processes would count in a later reading
    title = (f"Conveyor benchmark — Python {platform.python_version()}, {os.cpu_count()} CPUs, "
             f"load average before {load:.1f}, took {time.perf_counter() - started:.0f} s")
    print_report(rows, title, sections)
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"\nNote: the machine was busy (load average {load:.1f} on {os.cpu_count()} CPUs); "
              "timings are inflated, run again when it is idle.")
    if args.json:
        payload: dict[str, Any] = {
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "rows": [{**asdict(r), "verdict": r.verdict} for r in rows],
            "raw": {"import": imp, "inprocess": inproc, "local": local, "whole_process": {"warm": warm, "first": first},
                    "load_average": load,
                    "importtime": sections},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
