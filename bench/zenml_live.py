"""ZenML measured live (ZENML_PYTHON=/path/to/python with zenml[local] installed) for the rows that have a ZenML
twin: the 1-step pipeline as a whole process, the per-step slope in process, the parallel sleepers and the wide
fan-out (bench/zenml/*.py, the same shapes as Conveyor's scripts).

ZenML resolves a step's source relative to its repository, so the scripts are copied into a temporary repository
(`zenml init`) with its own ZENML_CONFIG_PATH (a fresh local SQLite store, the default stack: the local
orchestrator), removed at the end. ZenML is one to two orders of magnitude slower, so it gets fewer samples: up to
3 of each, chains of 1/10/50 steps, and the fan-out once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import HERE, run, wall, wall_rss
from rows_core import least_squares_slope

__all__ = ["ZENML_SIZES", "measure_zenml", "zenml_python"]

ZENML_SIZES = [1, 10, 50]


def zenml_python() -> str | None:
    """The interpreter ZENML_PYTHON names, or None when unset."""
    return os.environ.get("ZENML_PYTHON") or None


def _zenml_env(repo: Path) -> dict[str, str]:
    env = {**os.environ, "ZENML_CONFIG_PATH": str(repo / ".zenml-config"), "ZENML_ANALYTICS_OPT_IN": "false",
           "ZENML_LOGGING_VERBOSITY": "ERROR", "ZENML_ENABLE_RICH_TRACEBACK": "false", "AUTO_OPEN_DASHBOARD": "false"}
    for var in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "ZENML_STORE_URL", "ZENML_ACTIVE_STACK_ID"):
        env.pop(var, None)
    return env


def measure_zenml(python: str, *, runs: int, repeat: int, sleepers: int, fan_width: int,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Samples of each ZenML twin: {"whole", "slope", "sleepers", "fan_out", "fan_out_rss", "runs", "version"}."""
    runs, repeat = min(runs, 3), min(repeat, 3)
    repo = Path(tempfile.mkdtemp(prefix="conveyor-bench-zenml-"))
    try:
        for script in (HERE / "zenml").glob("*.py"):
            shutil.copy(script, repo / script.name)
        env = _zenml_env(repo)
        version = run([python, "-c", "import zenml; print(zenml.__version__)"], env, cwd=repo).stdout.strip()
        say(f"ZenML {version}: zenml init and a first run")
        cli = Path(python).with_name("zenml")
        zenml = [str(cli)] if cli.exists() else [python, "-c", "from zenml.cli.cli import cli; cli()"]
        run([*zenml, "init"], env, cwd=repo)
        one = [python, "one_step.py"]
        wall(one, env, cwd=repo)  # creates the store, registers the pipeline
        say(f"ZenML: 1-step pipeline as a whole process ({runs} runs)")
        whole = [wall(one, env, cwd=repo) for _ in range(runs)]
        say(f"ZenML: chains of {'/'.join(map(str, ZENML_SIZES))} steps in process ({repeat} repetitions)")
        proc = run([python, "linear.py", "--sizes", *map(str, ZENML_SIZES), "--repeat", str(repeat)], env, cwd=repo)
        times = {int(n): ts for n, ts in json.loads(proc.stdout.strip().splitlines()[-1])["times"].items()}
        slopes = [least_squares_slope(ZENML_SIZES, [times[n][i] for n in ZENML_SIZES]) for i in range(repeat)]
        say(f"ZenML: {sleepers} × 1 s sleeping steps ({runs} runs)")
        sleeping = [wall([python, "fan_out.py", str(sleepers), "--sleep", "1"], env, cwd=repo) for _ in range(runs)]
        say(f"ZenML: {fan_width}-step fan-out (1 run)")
        fan_s, fan_rss = wall_rss([python, "fan_out.py", str(fan_width)], env, cwd=repo)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return {"version": version, "runs": runs, "repeat": repeat, "whole": whole, "slope": slopes,
            "fixed": times[1], "sleepers": sleeping, "fan_out": [fan_s], "fan_out_rss": [float(fan_rss)]}
