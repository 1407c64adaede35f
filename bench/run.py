"""Conveyor's benchmark (`make bench`): import time, fixed and per-step costs, the `local` step operator's overhead,
whole processes as a user runs them (issue 15's targets), then the engine sections (Slurm, SSH, Ray, Spark).

    .venv/bin/python bench/run.py [--json PATH] [--quick] [--compare REV] [--no-big] [--sizes 1 10 100 300 1000]
                                  [--local-steps 20] [--no-slurm] [--no-ssh] [--no-ray] [--no-spark] [--no-registry]

Each figure is the median of its samples (5 or more; 2 with --quick, for a smoke test), shown with their min-max,
its target (issues 3 and 15) and a verdict. Every measurement runs in fresh subprocesses with its own temporary
project (bench/common.py); bytecode is cached privately and warmed up first. The modules:

- bench/rows_core.py: the core figures (import time; chains in process and on `local`; the 1-step pipeline, the
  20 parallel sleepers and the 1,000-step fan-out as whole processes; `conveyor run list` over 10,000 runs; the
  1 GiB ndarray hand-off, skipped with --no-big or when memory or disk is short), and the -X importtime breakdowns;
- bench/report.py: the rows and the table; bench/engines.py: the engine sections (each runs only where its engine
  is installed, and otherwise reports why not), bench/registry_preflight.py the container registry's (issue 17);
- bench/compare.py: `--compare REV` checks REV out into a temporary git worktree and measures it too, sample for
  sample with this tree (its `src/` first on PYTHONPATH, the current bench/ scripts), adding a REV column and the
  ratio this/REV. The worktree is removed at the end;
- bench/zenml_live.py: with ZENML_PYTHON=/path/to/python (zenml[local] installed there), the ZenML column is
  measured live on the rows with a ZenML twin (bench/zenml/); otherwise it shows recorded ZenML 0.98 figures.

Profile a workload by hand with `bench/workloads.py --profile`; the scripts bench/one_step.py, bench/fan_out.py and
bench/ndarray_handoff.py run on their own too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when imported (tests)

from common import CURRENT, HERE, PYCACHE, Side, cpu_steal, journal_less_ext4, remove_left, steal_share
from compare import revision_tree
from dashboard import dashboard_rows, measure_dashboard
from engines import engine_sections
from report import core_rows, print_report
from rows_core import (
    CoreConfig,
    import_by_package,
    import_top,
    measure_core,
    warm_bytecode,
)
from zenml_live import measure_zenml, zenml_python

#: above this share of CPU time taken by the host (steal), the report says its timings are inflated
STEAL_NOTED = 0.05


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH", help="also write the results (every sample) as JSON to PATH")
    parser.add_argument("--quick", action="store_true", help="2 runs of everything, for a smoke test")
    parser.add_argument("--compare", metavar="REV", help="also measure git revision REV (a temporary worktree)")
    parser.add_argument("--no-big", action="store_true", help="skip the 1 GiB ndarray hand-off (needs 3 GiB free)")
    parser.add_argument("--gib", type=float, default=1.0, help=argparse.SUPPRESS)  # the hand-off's size, for tests
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100, 300, 1000],
                        help="chain lengths of the in-process slope fit (default 1 10 100 300 1000)")
    parser.add_argument("--local-steps", type=int, default=20,
                        help="length of the chain on the `local` step operator (default 20)")
    parser.add_argument("--fan-width", type=int, default=1000, help=argparse.SUPPRESS)  # for tests
    parser.add_argument("--listed-runs", type=int, default=10_000, help=argparse.SUPPRESS)  # for tests
    parser.add_argument("--no-dashboard", action="store_true", help="skip the dashboard rows (issue 16)")
    for engine, what in (("slurm", "Slurm"), ("ssh", "OpenSSH"), ("ray", "ray"), ("spark", "pyspark and Java"),
                         ("registry", "docker-registry")):
        parser.add_argument(f"--no-{engine}", action="store_true",
                            help=f"skip the {engine.capitalize() if engine != 'ssh' else 'SSH'} section even where "
                                 f"{what} is installed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    cfg = CoreConfig(runs=2 if quick else 5, repeat=2 if quick else 5, import_runs=3 if quick else 7,
                     sizes=args.sizes, local_steps=args.local_steps, fan_width=args.fan_width,
                     listed_runs=args.listed_runs, big=not args.no_big, gib=args.gib)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]  # the benchmark's own processes would count in a later reading
    steal_before = cpu_steal()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {msg}", file=sys.stderr, flush=True)

    zenml: dict[str, Any] | None = None
    zenml_error: str | None = None
    previous: str | None = None
    try:
        with contextlib.ExitStack() as stack:
            sides: list[Side] = [CURRENT]
            if args.compare:
                say(f"checking {args.compare} out into a temporary worktree")
                sides.append(stack.enter_context(revision_tree(args.compare)))
                previous = sides[1].label
            for side in sides:
                say(f"warming the bytecode cache ({side.label})")
                warm_bytecode(side)
            data = measure_core(sides, cfg, say)
        say("-X importtime breakdowns")
        sections = {
            "-X importtime `import conveyor`, by cumulative time:": import_top("import conveyor", 5),
            "-X importtime `python bench/one_step.py` (store exists), self time summed per top-level package:":
                import_by_package(HERE / "one_step.py", 10),
        }
        python = zenml_python()
        if python:
            try:
                zenml = measure_zenml(python, runs=cfg.runs, repeat=cfg.repeat, sleepers=cfg.sleepers,
                                      fan_width=cfg.fan_width, say=say)
            except Exception as err:  # noqa: BLE001 - report it; Conveyor's figures still stand
                zenml_error = f"{type(err).__name__}: {str(err)[:300]}"
                say(f"ZenML measurement failed: {zenml_error}")
        skip = {e for e in ("slurm", "ssh", "ray", "spark", "registry") if getattr(args, f"no_{e}")}
        engine_rows, engines_raw = engine_sections(skip, quick, say)
        dashboard = ({"skipped": "skipped (--no-dashboard)"} if args.no_dashboard
                     else measure_dashboard(cfg.runs, say, listed=args.listed_runs))
    finally:
        shutil.rmtree(PYCACHE, ignore_errors=True)
        remove_left()
    say("done")

    rows = [*core_rows(data, CURRENT.label, previous, cfg, zenml), *dashboard_rows(dashboard), *engine_rows]
    load = load_before
    steal = steal_share(steal_before, cpu_steal())
    title = (f"Conveyor benchmark — Python {platform.python_version()}, {os.cpu_count()} CPUs, "
             f"load average before {load:.1f}, took {time.perf_counter() - started:.0f} s"
             + (f", CPU steal {steal:.0%}" if steal is not None else "")
             + (" — --quick: 2 runs each, verdicts need 5" if quick else ""))
    zenml_label = f"ZenML {zenml['version']}" if zenml else "ZenML 0.98"
    print_report(rows, title, sections, previous, zenml_label)
    if zenml:
        print(f"\n{zenml_label} column: measured live with ZENML_PYTHON={python} (medians of {zenml['runs']} "
              f"whole processes; slope over 1/10/50-step chains, {zenml['repeat']} repetitions; the fan-out once).")
    else:
        why = f"measuring it failed ({zenml_error})" if zenml_error else "ZENML_PYTHON is not set"
        print(f"\nZenML 0.98 column: recorded figures from this machine kind ({why}); set ZENML_PYTHON to an "
              "interpreter with zenml[local] installed to measure it live.")
    if previous:
        print(f"Compared with {previous}: the same bench/ scripts on its src/, samples alternating with this tree's; "
              "this/rev < 1 means this tree is faster.")
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"\nNote: the machine was busy (load average {load:.1f} on {os.cpu_count()} CPUs); "
              "timings are inflated, run again when it is idle.")
    if steal is not None and steal > STEAL_NOTED:
        print(f"\nNote: this virtual machine's host took {steal:.0%} of its CPU time during the run (steal in "
              "/proc/stat); timings are inflated by the host's other guests, not by this code: run again later.")
    device = journal_less_ext4(os.path.realpath(tempfile.gettempdir()))
    if device:
        print(f"\nNote: the temporary directory is on ext4 without a journal ({device}). There, creating files within "
              "minutes of deleting many costs several times more (docs/performance.md); this benchmark removed its "
              "projects as it ended, so wait a few minutes before running it again.")
    if args.json:
        payload: dict[str, Any] = {
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "rows": [{**asdict(r), "verdict": r.verdict} for r in rows],
            "raw": {"core": data, "zenml": zenml if zenml else {"skipped": zenml_error or "ZENML_PYTHON not set"},
                    **engines_raw, "dashboard": dashboard, "load_average": load, "cpu_steal": steal, "journal_less_ext4": device, "importtime": sections, "compare": previous},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    failed = [r for r in rows if r.note.startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
