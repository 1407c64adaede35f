"""Conveyor's benchmark (`make bench`): import time, fixed and per-step costs, the `local` step operator's overhead.

    .venv/bin/python bench/run.py [--json PATH] [--local-steps 20] [--quick]

Every measurement runs in fresh subprocesses, each with its own temporary project (CONVEYOR_PROJECT_DIR) and
CONVEYOR_QUIET=1. Targets come from issue 3; the reference numbers are ZenML 0.98 measured on this machine kind.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable


@dataclass
class Row:
    """One line of the result table; times in seconds, `target` an upper bound."""

    metric: str
    measured: float | None
    target: float | None
    reference: float | None
    unit: str  # "ms" or "s": how to print
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None or self.measured is None:
            return "info"
        return "PASS" if self.measured <= self.target else "MISS"


# -- subprocess helpers ---------------------------------------------------------------------------

def _env(project: Path) -> dict[str, str]:
    env = {**os.environ, "CONVEYOR_PROJECT_DIR": str(project), "CONVEYOR_QUIET": "1"}
    for var in ("CONVEYOR_STORE_URL", "CONVEYOR_STACK"):
        env.pop(var, None)
    return env


def _project() -> Path:
    return Path(tempfile.mkdtemp(prefix="conveyor-bench-"))


def _wall(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    """Wall time of one process, start to exit; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def _median_wall(cmd: list[str], n: int, env: dict[str, str], cwd: Path | None = None) -> float:
    return statistics.median(_wall(cmd, env, cwd) for _ in range(n))


# -- measurements ---------------------------------------------------------------------------------

def measure_import(runs: int) -> tuple[float, float, float]:
    """(import conveyor, `from conveyor import step, pipeline, Client`, bare interpreter) medians, interleaved."""
    project = _project()
    env = _env(project)
    commands = {
        "bare": [PYTHON, "-c", "pass"],
        "import": [PYTHON, "-c", "import conveyor"],
        "sdk": [PYTHON, "-c", "from conveyor import step, pipeline, Client"],
    }
    samples: dict[str, list[float]] = {k: [] for k in commands}
    for cmd in commands.values():  # warm the file cache and .pyc files
        _wall(cmd, env)
    for _ in range(runs):
        for key, cmd in commands.items():
            samples[key].append(_wall(cmd, env))
    shutil.rmtree(project, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return med["import"] - med["bare"], med["sdk"] - med["bare"], med["bare"]


def import_time_top(statement: str, top: int) -> list[tuple[str, float]]:
    """The `top` modules by cumulative import time (s) under `python -X importtime -c statement`."""
    project = _project()
    proc = subprocess.run([PYTHON, "-X", "importtime", "-c", statement], env=_env(project),
                          capture_output=True, text=True, check=True)
    shutil.rmtree(project, ignore_errors=True)
    rows = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S.*)$", line)
        if m:
            rows.append((m.group(4).strip(), int(m.group(2)) / 1e6, len(m.group(3))))
    # Top-level imports only (least indentation), so that nested costs are not counted twice.
    indent = min((r[2] for r in rows), default=0)
    top_level = sorted(((name, cum) for name, cum, ind in rows if ind == indent), key=lambda r: -r[1])
    return top_level[:top]


def measure_linear(sizes: list[int], operator: str | None, repeat: int) -> dict[int, float]:
    """Median run time per pipeline size, measured inside one fresh process (after a warm-up run)."""
    project = _project()
    cmd = [PYTHON, str(HERE / "workloads.py"), "linear", "--sizes", *map(str, sizes), "--repeat", str(repeat)]
    if operator:
        cmd += ["--operator", operator]
    proc = subprocess.run(cmd, env=_env(project), capture_output=True, text=True)
    shutil.rmtree(project, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {int(n): t for n, t in result["median"].items()}


def measure_whole_process(runs: int) -> tuple[float, float]:
    """(warm, cold) wall time of `python bench/one_step.py`: warm = the project's store already exists."""
    project = _project()
    env = _env(project)
    cmd = [PYTHON, str(HERE / "one_step.py")]
    cold = _wall(cmd, env)  # creates .conveyor/, the schema and the default stack
    warm = _median_wall(cmd, runs, env)
    shutil.rmtree(project, ignore_errors=True)
    return warm, cold


# -- output ---------------------------------------------------------------------------------------

def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.2f} s"


def print_table(rows: list[Row], imports: list[tuple[str, float]], title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain fallback
        print(title)
        for r in rows:
            print(f"{r.metric:<52} {_fmt(r.measured, r.unit):>10} {_fmt(r.target, r.unit):>10} "
                  f"{_fmt(r.reference, r.unit):>10} {r.verdict:>5}  {r.note}")
    else:
        table = Table(title=title)
        for col, just in (("metric", "left"), ("measured", "right"), ("target", "right"),
                          ("ZenML 0.98", "right"), ("", "center"), ("note", "left")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        style = {"PASS": "green", "MISS": "bold red", "info": "dim"}
        for r in rows:
            table.add_row(r.metric, _fmt(r.measured, r.unit), "≤ " + _fmt(r.target, r.unit) if r.target else "-",
                          _fmt(r.reference, r.unit), f"[{style[r.verdict]}]{r.verdict}[/]", r.note)
        Console().print(table)
    if imports:
        print("\n-X importtime, `from conveyor import step, pipeline, Client`, top-level modules by cumulative time:")
        for name, cum in imports:
            print(f"  {cum * 1000:7.1f} ms  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--steps", type=int, default=50, help="length of the in-process linear pipeline")
    parser.add_argument("--local-steps", type=int, default=20, help="length of the `local` step operator pipeline")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke test)")
    args = parser.parse_args(argv)
    import_runs, repeat, whole_runs = (3, 1, 2) if args.quick else (7, 3, 5)
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {msg}", file=sys.stderr, flush=True)

    say("import time")
    t_import, t_sdk, t_bare = measure_import(import_runs)
    imports = import_time_top("from conveyor import step, pipeline, Client", 8)
    say(f"in-process linear pipeline: 1 and {args.steps} steps")
    inproc = measure_linear([1, args.steps], None, repeat)
    fixed = inproc[1]
    per_step = (inproc[args.steps] - inproc[1]) / (args.steps - 1)
    say(f"`local` step operator linear pipeline: 1 and {args.local_steps} steps")
    local = measure_linear([1, args.local_steps], "local", max(1, repeat - 1))
    local_per_step = (local[args.local_steps] - local[1]) / (args.local_steps - 1)
    say("1-step pipeline as a whole process")
    warm, cold = measure_whole_process(whole_runs)
    say("done")

    rows = [
        Row("import conveyor", t_import, 0.100, 1.9, "ms", f"bare interpreter {t_bare * 1000:.0f} ms subtracted"),
        Row("from conveyor import step, pipeline, Client", t_sdk, None, None, "ms"),
        Row("fixed cost (1-step pipeline run, in process)", fixed, None, 4.7, "s"),
        Row(f"per step, in process ({args.steps}-step chain)", per_step, 0.010, 0.088, "ms",
            f"T{args.steps} = {inproc[args.steps]:.3f} s"),
        Row("extra per step, `local` step operator", local_per_step - per_step, 0.150, 4.1, "ms",
            f"{args.local_steps}-step chain: {local_per_step * 1000:.0f} ms/step in all"),
        Row("1-step pipeline, whole process (store exists)", warm, 0.5, None, "s",
            f"median of {whole_runs}; `python bench/one_step.py`"),
        Row("1-step pipeline, whole process (first run)", cold, None, None, "s", "creates .conveyor/ and the schema"),
    ]
    title = (f"Conveyor benchmark — Python {platform.python_version()}, {os.cpu_count()} CPUs, "
             f"{time.perf_counter() - started:.0f} s")
    print_table(rows, imports, title)
    if args.json:
        payload: dict[str, Any] = {
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "rows": [{**asdict(r), "verdict": r.verdict} for r in rows],
            "raw": {"inprocess": inproc, "local": local, "import_top": imports},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
